import assert from "node:assert/strict";
import { H2_ERROR, type InboundCut, InboundLimiter, type InboundLimits } from "./http2_inbound.ts";
import { HeaderListMeter } from "./hpack_size.ts";
import {
  FLAG,
  FRAME,
  frame,
  grpcData,
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
const REQUEST = new Uint8Array(grpcRequestHeaders(PATH));
/** :method POST, :scheme http, :path, :authority localhost, content-type, te: trailers. */
const REQUEST_SIZE = (7 + 4) + (7 + 4) + (5 + PATH.length) + (10 + 9) + (12 + 16) + (2 + 8) + 6 * 32;

/** The cut, if any, of feeding `bytes` in chunks of `size`, with where it fell in all of `bytes`. */
function feed(bytes: Uint8Array, size: number, open = () => 0, limiter = new InboundLimiter(LIMITS)) {
  for (let at = 0; at < bytes.length; at += size) {
    const cut = limiter.check(bytes.subarray(at, at + size), open);
    if (cut) return { ...cut, at: at + cut.pass };
  }
  return undefined;
}

const join = (...parts: Uint8Array[]) => new Uint8Array(parts.flatMap((p) => [...p]));

/** A literal header without indexing, new name `x-pad`, raw value: `decoded` bytes decoded in all. */
function padding(decoded: number): Uint8Array {
  const value = decoded - 5 - 32;
  const length = value < 127 ? [value] : [0x7f, ...varint(value - 127)];
  return new Uint8Array([
    0x00,
    0x05,
    ...new TextEncoder().encode("x-pad"),
    ...length,
    ...new Array(value).fill(0x76),
  ]);
}

function varint(value: number): number[] {
  const out = [];
  for (; value >= 128; value >>>= 7) out.push((value & 0x7f) | 0x80);
  return [...out, value];
}

Deno.test("a gRPC request's headers measure exactly what HPACK counts, and pass in any chunking", () => {
  const meter = new HeaderListMeter();
  meter.write(REQUEST);
  assert.equal(meter.end(), REQUEST_SIZE);
  const bytes = join(PREFACE, headers(1, REQUEST, true), headers(3, REQUEST, true));
  for (const chunk of [1, 7, 9, 64, bytes.length]) {
    assert.equal(feed(bytes, chunk), undefined, `chunks of ${chunk}`);
  }
});

Deno.test("a header list of exactly the limit passes; one byte more is cut, in any chunking", () => {
  const fill = LIMITS.maxHeaderListBytes - REQUEST_SIZE;
  const exact = join(PREFACE, headers(1, join(REQUEST, padding(fill)), true));
  const over = join(PREFACE, headers(1, join(REQUEST, padding(fill + 1)), true));
  for (const chunk of [1, 100, 5_000, over.length]) {
    assert.equal(feed(exact, chunk), undefined, `exact, chunks of ${chunk}`);
    const cut = feed(over, chunk);
    assert.equal(cut?.reason, "header_list_size", `over, chunks of ${chunk}`);
    assert.equal(cut?.code, H2_ERROR.ENHANCE_YOUR_CALM);
  }
});

Deno.test("references to one big header are charged in full: the bomb and fat headers are cut", () => {
  for (const refs of [12_000, 120, 4]) {
    const bytes = join(PREFACE, headers(1, referenceBomb(PATH, 3_950, refs), false));
    for (const chunk of [1, 1000, bytes.length]) {
      assert.equal(feed(bytes, chunk)?.reason, "header_list_size", `${refs} references, chunks of ${chunk}`);
    }
  }
  // Three copies of a 3 950-byte header are under 16 KiB.
  assert.equal(feed(join(PREFACE, headers(1, referenceBomb(PATH, 3_950, 2), false)), 100), undefined);
});

Deno.test("a cut passes every whole request before the offending block, and names the last one", () => {
  const good = (stream: number) => join(headers(stream, REQUEST, false), grpcData(stream, new Uint8Array(3)));
  const bomb = headers(7, referenceBomb(PATH, 3_950, 12), false);
  const before = join(PREFACE, good(1), good(3), good(5));
  const bytes = join(before, bomb, good(9));
  // In one chunk: the three requests pass, the bomb and all after it do not.
  const cut = feed(bytes, bytes.length) as InboundCut & { at: number };
  assert.deepEqual({ at: cut.at, lastStream: cut.lastStream }, { at: before.length, lastStream: 5 });
  // Whatever the chunking, the cut falls on the bomb's first byte, or at the start of the chunk
  // that proves it too large when the bomb began in an earlier one (then already partly passed).
  for (const chunk of [1, 7, 100, 1_000]) {
    const cut = feed(bytes, chunk)!;
    assert.equal(cut.lastStream, 5, `chunks of ${chunk}`);
    assert.ok(
      cut.at >= before.length && cut.at <= before.length + bomb.length,
      `chunks of ${chunk}: ${cut.at}`,
    );
    if (cut.pass > 0) assert.equal(cut.at, before.length, `chunks of ${chunk}`);
  }
});

Deno.test("a header block spread over CONTINUATION frames is measured whole", () => {
  const block = referenceBomb(PATH, 3_950, 12);
  const [first, second] = [block.subarray(0, 3_000), block.subarray(3_000)];
  const bytes = join(
    PREFACE,
    frame(FRAME.HEADERS, FLAG.END_STREAM, 1, first),
    frame(9, FLAG.END_HEADERS, 1, second),
  );
  assert.equal(feed(bytes, 512)?.reason, "header_list_size");
  // Under the limit, split the same way: passes.
  const small = join(REQUEST, padding(1_000));
  const ok = join(
    PREFACE,
    frame(FRAME.HEADERS, FLAG.END_STREAM, 1, small.subarray(0, 50)),
    frame(9, 0, 1, small.subarray(50, 500)),
    frame(9, FLAG.END_HEADERS, 1, small.subarray(500)),
  );
  for (const chunk of [1, 13, ok.length]) assert.equal(feed(ok, chunk), undefined, `chunks of ${chunk}`);
});

Deno.test("a frame between a block's HEADERS and its CONTINUATION is a protocol error", () => {
  const bytes = join(
    PREFACE,
    frame(FRAME.HEADERS, 0, 1, REQUEST.subarray(0, 4)),
    frame(FRAME.PING, 0, 0, new Uint8Array(8)),
  );
  assert.deepEqual(
    { reason: feed(bytes, 100)?.reason, code: feed(bytes, 100)?.code },
    { reason: "protocol", code: H2_ERROR.PROTOCOL },
  );
});

Deno.test("padding and priority fields are not read as headers", () => {
  const payload = new Uint8Array([3, 0, 0, 0, 0, 16, ...REQUEST, 0, 0, 0]); // pad length 3, priority
  const bytes = join(
    PREFACE,
    frame(FRAME.HEADERS, 0x8 | 0x20 | FLAG.END_HEADERS | FLAG.END_STREAM, 1, payload),
  );
  for (const chunk of [1, 5, bytes.length]) assert.equal(feed(bytes, chunk), undefined, `chunks of ${chunk}`);
  // Padding longer than the frame: a protocol error.
  const bad = join(PREFACE, frame(FRAME.HEADERS, 0x8 | FLAG.END_HEADERS, 1, new Uint8Array([200, 0x82])));
  assert.equal(feed(bad, 100)?.reason, "protocol");
});

Deno.test("what nghttp2 refuses as a COMPRESSION_ERROR is cut before it: a reference outside the table", () => {
  const bytes = join(PREFACE, headers(1, REQUEST, true), headers(3, new Uint8Array([0xbe]), true));
  const cut = feed(bytes, bytes.length)!;
  assert.deepEqual(
    { reason: cut.reason, code: cut.code, lastStream: cut.lastStream },
    { reason: "protocol", code: H2_ERROR.COMPRESSION, lastStream: 1 },
  );
});

Deno.test("streams over the concurrency limit are counted; past the allowance the connection is cut", () => {
  const limiter = new InboundLimiter(LIMITS);
  assert.equal(limiter.check(PREFACE, () => 0), undefined);
  let sent = 0;
  const open = () => sent; // every stream stays open
  let cut;
  for (; sent < 200 && !cut; sent++) cut = limiter.check(headers(1 + 2 * sent, REQUEST, false), open);
  assert.equal(sent, LIMITS.maxConcurrentStreams + LIMITS.maxRefusedStreams + 1);
  assert.equal(cut?.reason, "refused_streams");
  assert.equal(cut?.pass, 0);
  assert.equal(limiter.refused, LIMITS.maxRefusedStreams + 1);
});

Deno.test("a client's PUSH_PROMISE is a protocol error", () => {
  assert.equal(
    feed(join(PREFACE, frame(5, FLAG.END_HEADERS, 1, new Uint8Array(4))), 100)?.reason,
    "protocol",
  );
});
