import assert from "node:assert/strict";
import { RecentSendsTable } from "./recent_sends.ts";

const SENT = { id: "n-1", createdAtMs: 1, delivered: 2 };

Deno.test("a key is claimed once; repeats get the first's answer, waiting while it goes", async () => {
  const table = new RecentSendsTable();
  assert.equal(await table.claim("k"), undefined, "the first");
  const waiting = table.claim("k");
  table.settle("k", SENT);
  assert.deepEqual(await waiting, SENT);
  assert.deepEqual(await table.claim("k"), SENT);
  assert.equal(await table.claim("other"), undefined);
});

Deno.test("a first Send that did not go out leaves the key to the next one", async () => {
  const table = new RecentSendsTable();
  assert.equal(await table.claim("k"), undefined);
  const waiting = table.claim("k");
  table.settle("k", undefined);
  assert.equal(await waiting, undefined, "the repeat that waited goes out itself");
  table.settle("k", SENT);
  assert.deepEqual(await table.claim("k"), SENT);
});

Deno.test("keys expire after the window, and the oldest settled ones go past the bound", async () => {
  const table = new RecentSendsTable({ windowMs: 30, maxKeys: 2 });
  await table.claim("a");
  table.settle("a", SENT);
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(await table.claim("a"), undefined, "expired");
  table.settle("a", SENT);
  await table.claim("b");
  table.settle("b", SENT);
  await table.claim("c");
  assert.equal(table.size, 2, "bounded");
  assert.equal(await table.claim("a"), undefined, "the oldest went first");
});
