import assert from "node:assert/strict";
import { MAX_WAITING, type Positioned, PositionedFeed } from "./positioned_feed.ts";

/** A recipient's stored notifications (what JetStream would hold), read as the feed reads them. */
function history(positions: number[], options: { dropped?: number[]; unknownPrev?: number[] } = {}) {
  const stored = new Map<number, Positioned>();
  positions.forEach((position, i) => {
    const prev = options.unknownPrev?.includes(position) ? undefined : i === 0 ? 0 : positions[i - 1];
    stored.set(position, { position, prev, bytes: new Uint8Array([position >> 8, position & 0xff]) });
  });
  for (const d of options.dropped ?? []) stored.delete(d);
  let reads = 0;
  return {
    get: (p: number) => stored.get(p)!,
    reads: () => reads,
    readAfter: async (after: number) => {
      reads++;
      await new Promise((r) => setTimeout(r, 1));
      return [...stored.values()].filter((n) => n.position > after).sort((a, b) =>
        a.position - b.position
      )[0];
    },
  };
}

function feedOver(h: ReturnType<typeof history>) {
  const written: number[] = [];
  const lost: [number, number][] = [];
  const feed = new PositionedFeed({
    readAfter: h.readAfter,
    write: (bytes) => (written.push(bytes[0] * 256 + bytes[1]), true),
    fail: (reason) => assert.fail(reason),
    onLost: (after, before) => lost.push([after, before]),
  });
  return { feed, written, lost };
}

const settle = () => new Promise((r) => setTimeout(r, 30));

Deno.test("live notifications that follow each other are written at once, without reading the store", () => {
  const h = history([3, 7, 9]);
  const { feed, written } = feedOver(h);
  feed.start(3, false);
  assert.equal(feed.offer(h.get(7)), true);
  assert.equal(feed.offer(h.get(9)), true);
  assert.deepEqual(written, [7, 9]);
  assert.equal(h.reads(), 0);
  // A copy that arrives again (the live copy after the Send's own) is not written twice.
  assert.equal(feed.offer(h.get(9)), true);
  assert.deepEqual(written, [7, 9]);
});

Deno.test("a live notification after a gap is written after what the store holds in between", async () => {
  const h = history([3, 7, 9, 12]);
  const { feed, written, lost } = feedOver(h);
  feed.start(3, false);
  feed.offer(h.get(12)); // 7 and 9 were missed live (a reconnect)
  await settle();
  assert.deepEqual(written, [7, 9, 12]);
  assert.deepEqual(lost, []);
});

Deno.test("a catch-up writes what the store holds after the start, then live ones, each once and in order", async () => {
  const h = history([2, 4, 6, 8, 10]);
  const { feed, written } = feedOver(h);
  feed.offer(h.get(8)); // live ones arriving while the stream starts wait for it
  feed.offer(h.get(10));
  feed.start(2, true);
  feed.offer(h.get(6)); // a live copy of one the catch-up also reads
  await settle();
  assert.deepEqual(written, [4, 6, 8, 10]);
});

Deno.test("what history dropped is written past and reported, once", async () => {
  const h = history([1, 2, 3, 4, 5], { dropped: [2, 3] });
  const { feed, written, lost } = feedOver(h);
  feed.start(1, true);
  await settle();
  assert.deepEqual(written, [4, 5]);
  assert.deepEqual(lost, [[1, 4]]);
});

Deno.test("one without its predecessor (read from the store) is written in its turn, not reported lost", async () => {
  const h = history([1, 2, 3], { unknownPrev: [2] });
  const { feed, written, lost } = feedOver(h);
  feed.start(1, false);
  feed.offer(h.get(2));
  feed.offer(h.get(3));
  await settle();
  assert.deepEqual(written, [2, 3]);
  assert.deepEqual(lost, []);
});

Deno.test("a stream that cannot take more stops the feed", async () => {
  const h = history([1, 2, 3]);
  const written: number[] = [];
  const feed = new PositionedFeed({
    readAfter: h.readAfter,
    write: (bytes) => (written.push(bytes[0] * 256 + bytes[1]), false),
    fail: () => {},
  });
  feed.start(0, true);
  await settle();
  assert.deepEqual(written, [1]);
  assert.equal(feed.closed, true);
  assert.equal(feed.offer(h.get(2)), false);
});

Deno.test("a store that cannot be read ends the stream with the reason", async () => {
  let failed = "";
  const feed = new PositionedFeed({
    readAfter: () => Promise.reject(new Error("timeout")),
    write: () => true,
    fail: (reason) => (failed = reason),
  });
  feed.start(5, true);
  await settle();
  assert.match(failed, /history could not be read: timeout/);
  assert.equal(feed.closed, true);
});

Deno.test("live ones arriving during a long replay are held up to a bound, then read from the store", async () => {
  const positions = Array.from({ length: 3_000 }, (_, i) => i + 1);
  const h = history(positions);
  const { feed, written } = feedOver(h);
  feed.start(0, true); // a replay of 3 000, one read at a time
  let most = 0;
  for (const p of positions.slice(500)) {
    feed.offer(h.get(p)); // their live copies, all at once
    most = Math.max(most, feed.waiting);
  }
  assert.ok(most <= MAX_WAITING, `${most} held`);
  const deadline = Date.now() + 20_000;
  while (written.length < positions.length && Date.now() < deadline) await settle();
  assert.deepEqual(written, positions, "each once, in order");
});
