import assert from "node:assert/strict";
import { OtherThreadStreams, PoolStreamCounts, type StreamCounts } from "./instance_streams.ts";

/** Two workers and the pool between them, messages passed as the worker pool passes them. */
function pair() {
  const pool = new PoolStreamCounts();
  const workers: OtherThreadStreams[] = [];
  const broadcast = (counts: StreamCounts) => workers.forEach((w) => w.receive(structuredClone(counts)));
  for (const worker of [1, 2]) {
    workers.push(
      new OtherThreadStreams(worker, (counts) => broadcast(pool.told(worker, counts)), pool.known()),
    );
  }
  return { pool, workers, broadcast };
}

const turn = () => new Promise((resolve) => setTimeout(resolve, 1));

Deno.test("each worker sees the other's streams, not its own, once a turn has passed", async () => {
  const { workers: [one, two] } = pair();
  one.changed("alice", 1);
  one.changed("alice", 2); // told once, with the last count
  two.changed("alice", 1);
  two.changed("bob", 3);
  assert.deepEqual([one.streams("alice"), two.streams("alice")], [0, 0], "nothing before the turn");
  await turn();
  assert.deepEqual([one.streams("alice"), one.streams("bob"), two.streams("alice")], [1, 3, 2]);
  two.changed("bob", 0);
  await turn();
  assert.equal(one.streams("bob"), 0);
});

Deno.test("a retired worker's streams are gone; a worker started later learns what is held", async () => {
  const { pool, workers: [one, two], broadcast } = pair();
  two.changed("alice", 4);
  await turn();
  assert.equal(one.streams("alice"), 4);
  const late = new OtherThreadStreams(3, () => {}, pool.known());
  assert.equal(late.streams("alice"), 4);
  broadcast(pool.retired(2));
  assert.equal(one.streams("alice"), 0);
  assert.deepEqual(pool.known(), []);
});
