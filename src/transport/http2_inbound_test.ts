import assert from "node:assert/strict";
import { HeaderBlockMeter, InboundLimiter, type InboundLimits } from "./http2_inbound.ts";
import {
  FLAG,
  FRAME,
  frame,
  grpcRequestHeaders,
  headers,
  PREFACE,
  referenceBomb,
} from "../../tests/helpers/h2_attack.ts";

const LIMITS: InboundLimits = {
  maxHeaderListBytes: 16_384,
  maxConcurrentStreams: 100,
  maxRefusedStreams: 10,
};
const PATH = "/grpc.health.v1.Health/Check";

/** Feeds `bytes` to a fresh limiter in chunks of `size`; the first reason to cut, if any. */
function feed(bytes: Uint8Array, size: number, open = () => 0, limiter = new InboundLimiter(LIMITS)) {
  for (let at = 0; at < bytes.length; at += size) {
    const reason = limiter.check(bytes.subarray(at, at + size), open);
    if (reason) return reason;
  }
  return undefined;
}

const join = (...parts: Uint8Array[]) => new Uint8Array(parts.flatMap((p) => [...p]));

Deno.test("a gRPC request's headers measure what HPACK counts and pass, in any chunking", () => {
  const block = new Uint8Array(grpcRequestHeaders(PATH));
  const size = new HeaderBlockMeter().measure(block);
  // 6 fields of 32 bytes each, plus names and values (static entries charged at their largest).
  assert.ok(typeof size === "number" && size > 6 * 32 && size < 1_000, `measured ${size}`);
  const bytes = join(PREFACE, headers(1, block, true), headers(3, block, true));
  for (const chunk of [1, 7, 9, 64, bytes.length]) {
    assert.equal(feed(bytes, chunk), undefined, `chunks of ${chunk}`);
  }
});

Deno.test("references to one big header are charged in full: the bomb and fat headers are cut", () => {
  const meter = new HeaderBlockMeter();
  const fat = meter.measure(referenceBomb(PATH, 3_950, 120));
  assert.ok(typeof fat === "number" && fat >= 121 * (3_950 + 6 + 32), `measured ${fat}`);
  for (const refs of [12_000, 120, 4]) {
    const bytes = join(PREFACE, headers(1, referenceBomb(PATH, 3_950, refs), false));
    for (const chunk of [1, 1000, bytes.length]) {
      assert.equal(feed(bytes, chunk), "header_list_size", `${refs} references, chunks of ${chunk}`);
    }
  }
  // Three copies of a 3 950-byte header are under 16 KiB.
  assert.equal(feed(join(PREFACE, headers(1, referenceBomb(PATH, 3_950, 2), false)), 100), undefined);
});

Deno.test("a header block spread over CONTINUATION frames is measured whole", () => {
  const block = referenceBomb(PATH, 3_950, 12);
  const [first, second] = [block.subarray(0, 3_000), block.subarray(3_000)];
  const bytes = join(
    PREFACE,
    frame(FRAME.HEADERS, FLAG.END_STREAM, 1, first),
    frame(9, FLAG.END_HEADERS, 1, second),
  );
  assert.equal(feed(bytes, 512), "header_list_size");
});

Deno.test("padding and priority fields are not read as headers", () => {
  const block = new Uint8Array(grpcRequestHeaders(PATH));
  const payload = new Uint8Array([3, 0, 0, 0, 0, 16, ...block, 0, 0, 0]); // pad length 3, priority
  const bytes = join(
    PREFACE,
    frame(FRAME.HEADERS, 0x8 | 0x20 | FLAG.END_HEADERS | FLAG.END_STREAM, 1, payload),
  );
  assert.equal(feed(bytes, 5), undefined);
});

Deno.test("Huffman strings are charged at their largest decoded length", () => {
  // Literal, new name "x" (raw), value of 100 Huffman-coded bytes: at most 160 characters.
  const block = new Uint8Array([0x00, 0x01, 0x78, 0x80 | 100, ...new Array(100).fill(0xff)]);
  assert.equal(new HeaderBlockMeter().measure(block), 1 + 160 + 32);
});

Deno.test("a reference to an entry the meter does not hold is charged the whole table", () => {
  assert.equal(new HeaderBlockMeter().measure(new Uint8Array([0xbe])), 4096);
  assert.equal(new HeaderBlockMeter().measure(new Uint8Array([0x80])), "malformed");
});

Deno.test("streams over the concurrency limit are counted; past the allowance the connection is cut", () => {
  const limiter = new InboundLimiter(LIMITS);
  const block = new Uint8Array(grpcRequestHeaders(PATH));
  assert.equal(limiter.check(PREFACE, () => 0), undefined);
  let sent = 0;
  const open = () => sent; // every stream stays open
  let reason;
  for (; sent < 200 && !reason; sent++) reason = limiter.check(headers(1 + 2 * sent, block, false), open);
  assert.equal(sent, LIMITS.maxConcurrentStreams + LIMITS.maxRefusedStreams + 1);
  assert.equal(reason, "refused_streams");
  assert.equal(limiter.refused, LIMITS.maxRefusedStreams + 1);
});

Deno.test("a client's PUSH_PROMISE is a protocol error", () => {
  assert.equal(feed(join(PREFACE, frame(5, FLAG.END_HEADERS, 1, new Uint8Array(4))), 100), "protocol");
});
