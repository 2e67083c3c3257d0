import assert from "node:assert/strict";
import { setImmediate } from "node:timers";
import { Hub } from "./hub.ts";

Deno.test("publish() to many subscribers lets other work run between slices, and counts who took it", async () => {
  const hub = new Hub<string>();
  const order: string[] = [];
  for (let i = 0; i < 200; i++) hub.subscribe("r", () => void order.push(`d${i}`));
  hub.subscribe("r", () => false); // its stream is already gone: not counted
  // Work that is waiting when the fan-out starts (another call's turn) must not wait for all of it.
  setImmediate(() => order.push("other call"));
  const delivered = await hub.publish("r", "n");
  assert.equal(delivered, 200);
  const other = order.indexOf("other call");
  assert.ok(
    other > 0 && other < 200,
    `the other call ran at ${other}, between slices, not after the fan-out`,
  );
  assert.equal(order.filter((e) => e.startsWith("d")).length, 200);
});

Deno.test("publish() skips a subscriber that left during a fan-out", async () => {
  const hub = new Hub<string>();
  let late = 0;
  const unsubscribers: (() => void)[] = [];
  for (let i = 0; i < 100; i++) unsubscribers.push(hub.subscribe("r", () => void late++));
  setImmediate(() => unsubscribers[99]()); // leaves after the first slice went out
  assert.equal(await hub.publish("r", "n", 10), 99);
  assert.equal(late, 99);
});
