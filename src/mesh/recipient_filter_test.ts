import assert from "node:assert/strict";
import { RecipientFilter } from "./recipient_filter.ts";

// A filter with no holds of its own (a worker's before it subscribes) reads what every holder counted.
Deno.test("the recipient filter counts holders and is shared through its buffer", () => {
  const main = new RecipientFilter();
  const worker = new RecipientFilter(main.buffer);
  assert.equal(worker.heldElsewhere("alice"), false);
  main.add("alice");
  main.add("alice");
  assert.ok(worker.heldElsewhere("alice"));
  main.remove("alice");
  assert.ok(worker.heldElsewhere("alice"), "one holder left");
  main.remove("alice");
  assert.equal(worker.heldElsewhere("alice"), false);
});

Deno.test("the recipient filter errs only upwards: 10 000 held recipients are all seen", () => {
  const filter = new RecipientFilter();
  const held = Array.from({ length: 10_000 }, (_, i) => `user-${i}`);
  for (const r of held) filter.add(r);
  assert.ok(held.every((r) => filter.heldElsewhere(r)));
  const strangers = Array.from({ length: 10_000 }, (_, i) => `stranger-${i}`);
  const falsePositives = strangers.filter((r) => filter.heldElsewhere(r)).length;
  // 10 000 of 2^20 buckets taken: about 95 expected; a hash whose low bits cluster gave 228.
  assert.ok(falsePositives < 150, `false positives: ${falsePositives} of 10 000`);
});

Deno.test("leaving: every worker takes the long way for every recipient; counts never touch the switch", () => {
  const main = new RecipientFilter();
  const worker = new RecipientFilter(main.buffer);
  for (let i = 0; i < 100_000; i++) main.add(`r-${i}`);
  for (let i = 0; i < 100_000; i++) main.remove(`r-${i}`);
  assert.equal(worker.heldElsewhere("nobody"), false, "nobody holds it: the short way");
  main.setLeaving();
  assert.equal(worker.heldElsewhere("nobody"), true, "leaving: the long way");
});
