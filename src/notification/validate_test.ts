import assert from "node:assert/strict";
import { LIMITS, recipientProblem, sendProblem } from "./validate.ts";

const ok = { recipient: "alice", title: "hi", body: "", data: {} };

Deno.test("sendProblem() accepts a normal notification", () => {
  assert.equal(sendProblem(ok), undefined);
});

Deno.test("sendProblem() names the field and the limit that was broken", () => {
  assert.equal(sendProblem({ ...ok, recipient: "" }), "recipient is required");
  assert.equal(sendProblem({ ...ok, title: "", body: "" }), "title or body is required");
  assert.match(
    sendProblem({ ...ok, body: "x".repeat(LIMITS.bodyBytes + 1) })!,
    /^body is 65537 bytes; the limit is 65536$/,
  );
  assert.match(sendProblem({ ...ok, title: "é".repeat(LIMITS.titleBytes) })!, /^title is 2048 bytes/);
  const many = Object.fromEntries(Array.from({ length: LIMITS.dataEntries + 1 }, (_, i) => [`k${i}`, "v"]));
  assert.match(sendProblem({ ...ok, data: many })!, /^data has 65 entries/);
  assert.match(
    sendProblem({ ...ok, data: { k: "v".repeat(LIMITS.dataValueBytes + 1) } })!,
    /^data\["k"\] is 4097 bytes/,
  );
});

Deno.test("recipientProblem() rejects control characters and oversize names", () => {
  assert.equal(recipientProblem("bob\n"), "recipient must not contain control characters");
  assert.match(recipientProblem("r".repeat(LIMITS.recipientBytes + 1))!, /limit is 256/);
});
