import assert from "node:assert/strict";
import { IdentityTable, identityTableMemory, releaseWorkerIdentities } from "./identity_table.ts";

Deno.test("two threads' views share one count per identity: the bound holds across them", () => {
  const memory = identityTableMemory(1_000, 2);
  const [one, two] = [new IdentityTable(memory, 0), new IdentityTable(memory, 1)];
  assert.ok(one.tryAcquire("frank", 3));
  assert.ok(two.tryAcquire("frank", 3));
  assert.ok(one.tryAcquire("frank", 3));
  assert.equal(two.tryAcquire("frank", 3), false, "the fourth, on either thread");
  assert.equal(one.tryAcquire("frank", 3), false);
  assert.ok(two.tryAcquire("grace", 3), "another identity is apart");
  two.release("frank");
  assert.ok(one.tryAcquire("frank", 3), "a place given back on one thread serves the other");
  two.release("frank"); // thread two holds none now: what it did not take, it cannot give back
  assert.equal(one.held("frank"), 3);
});

Deno.test("a worker that dies gives back what it held", () => {
  const memory = identityTableMemory(1_000, 2);
  const [one, two] = [new IdentityTable(memory, 0), new IdentityTable(memory, 1)];
  one.tryAcquire("frank", 5);
  two.tryAcquire("frank", 5);
  two.tryAcquire("frank", 5);
  releaseWorkerIdentities(memory, 1);
  assert.equal(one.held("frank"), 1);
});

Deno.test("one bucket per identity across threads: a burst of two seconds' worth, then the rate", () => {
  const memory = identityTableMemory(1_000, 2);
  const [one, two] = [new IdentityTable(memory, 0), new IdentityTable(memory, 1)];
  const t = 1_000_000;
  let taken = 0;
  for (let i = 0; i < 40; i++) if ((i % 2 ? one : two).take("backend", 5, t)) taken++;
  assert.equal(taken, 10, "2 s x 5/s, whichever thread");
  assert.equal(one.take("backend", 5, t + 100), false, "0.5 tokens back after 100 ms");
  assert.equal(two.take("backend", 5, t + 300), true, "1.5 tokens back after 300 ms");
  assert.equal(one.take("other", 5, t), true, "another identity has its own bucket");
});

Deno.test("slots of idle identities are taken again: a flood of names cannot fill the table", () => {
  const memory = identityTableMemory(1_024, 1);
  const table = new IdentityTable(memory);
  const t = 5_000_000;
  // 50 000 names, each sending once: each slot is idle again 2 s later.
  for (let i = 0; i < 50_000; i++) table.take(`name-${i}`, 1, t + Math.floor(i / 1_000) * 2_000);
  // An identity holding subscriptions keeps its slot through it all.
  assert.ok(table.tryAcquire("keeper", 1));
  for (let i = 0; i < 50_000; i++) table.take(`more-${i}`, 1, t + 200_000 + Math.floor(i / 1_000) * 2_000);
  assert.equal(table.held("keeper"), 1);
  assert.equal(table.tryAcquire("keeper", 1), false, "still bounded");
});
