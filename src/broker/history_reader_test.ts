import assert from "node:assert/strict";
import { BATCH, type Batch, HistoryReader } from "./history_reader.ts";
import type { Positioned } from "./positioned_feed.ts";

/** A recipient's history at `positions`, counting how it is read. */
function history(positions: number[], options: { batchesFail?: boolean } = {}) {
  const calls = { direct: 0, batches: [] as number[] };
  const at = (position: number): Positioned => ({
    position,
    prev: undefined,
    bytes: new Uint8Array([position]),
  });
  const source = {
    readAfter(position: number) {
      calls.direct++;
      const next = positions.find((p) => p > position);
      return Promise.resolve(next === undefined ? undefined : at(next));
    },
    readFrom(position: number): Promise<Batch> {
      calls.batches.push(position);
      if (options.batchesFail) return Promise.reject(new Error("no consumers here"));
      const from = positions.filter((p) => p >= position);
      return Promise.resolve({ items: from.slice(0, BATCH).map(at), more: from.length > BATCH });
    },
  };
  return { reader: new HistoryReader(source), calls };
}

/** Reads everything after `from`, as a feed does. */
async function readAll(reader: HistoryReader, from = 0): Promise<number[]> {
  const read: number[] = [];
  for (let position = from;;) {
    const next = await reader.readAfter(position);
    if (!next) return read;
    read.push(next.position);
    position = next.position;
  }
}

Deno.test("a short gap is read one at a time; a long one in batches, in order, each once", async () => {
  const short = history([2, 5, 9]);
  assert.deepEqual(await readAll(short.reader), [2, 5, 9]);
  assert.deepEqual(short.calls, { direct: 4, batches: [] });

  const positions = Array.from({ length: 1_200 }, (_, i) => 3 * i + 1);
  const long = history(positions);
  assert.deepEqual(await readAll(long.reader), positions);
  assert.ok(long.calls.direct <= 10, `${long.calls.direct} direct reads`);
  assert.equal(long.calls.batches.length, 3, "8 direct, then batches of 500 from a stored position on");
  assert.equal(long.calls.batches[0], positions[7]);
});

Deno.test("a read after a position the batch has passed, or before it, is still the first stored after it", async () => {
  const positions = Array.from({ length: 100 }, (_, i) => i + 1);
  const { reader } = history(positions);
  let position = 0;
  for (let i = 0; i < 10; i++) position = (await reader.readAfter(position))!.position;
  assert.equal((await reader.readAfter(40))?.position, 41, "a jump ahead (a live one written meanwhile)");
  assert.equal((await reader.readAfter(5))?.position, 6, "a jump back");
});

Deno.test("a batch that fails leaves the reads to direct gets", async () => {
  const positions = Array.from({ length: 30 }, (_, i) => i + 1);
  const { reader, calls } = history(positions, { batchesFail: true });
  assert.deepEqual(await readAll(reader), positions);
  assert.ok(calls.batches.length >= 1);
});
