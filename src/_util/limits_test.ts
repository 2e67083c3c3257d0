import assert from "node:assert/strict";
import { LocalLimit, releaseWorker, SharedLimit, sharedLimitBuffer, sharedUsed } from "./limits.ts";

Deno.test("a local limit admits up to max and takes back releases", () => {
  const limit = new LocalLimit(2);
  assert.ok(limit.tryAcquire());
  assert.ok(limit.tryAcquire());
  assert.equal(limit.tryAcquire(), false);
  limit.release();
  assert.ok(limit.tryAcquire());
  assert.equal(limit.used, 2);
});

Deno.test("a shared limit holds across workers, and a crashed worker's places come back", () => {
  const buffer = sharedLimitBuffer(2);
  const a = new SharedLimit(buffer, 3, 0);
  const b = new SharedLimit(buffer, 3, 1);
  assert.ok(a.tryAcquire());
  assert.ok(a.tryAcquire());
  assert.ok(b.tryAcquire());
  assert.equal(b.tryAcquire(), false, "the instance is full, though worker 1 holds only one");
  assert.equal(sharedUsed(buffer), 3);
  releaseWorker(buffer, 0);
  assert.equal(sharedUsed(buffer), 1);
  assert.ok(b.tryAcquire());
  b.release();
  b.release();
  assert.equal(b.used, 0);
});
