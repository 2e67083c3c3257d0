/**
 * HTTP/2 frames built by hand, as an attacker on the network sends them (no HTTP/2 library would
 * let us send these): for the abuse tests and `deno task bench --only attacks`. Loopback only.
 */

import { CUT_GRACE_MS } from "../../packages/http2_guard/src/http2_guard.ts";

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

/**
 * Holds `streams` open streams on each of `connections` connections, every one with ~12 KB of
 * headers (a 3 950-byte header and two references to it: under the header limit, so only memory
 * pressure can stop it). Resolves once all is sent, with how many connections are still open and
 * a function that closes them.
 */
export async function holdStreams(
  port: number,
  options: { connections: number; streams: number },
): Promise<{ open(): number; close(): void }> {
  const block = referenceBomb("/grpc.health.v1.Health/Check", 3_950, 2);
  const conns: { conn: Deno.Conn; closed: boolean }[] = [];
  await Promise.all(Array.from({ length: options.connections }, async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const entry = { conn, closed: false };
    conns.push(entry);
    void drain(conn).then(() => (entry.closed = true));
    if (!await send(conn, PREFACE)) return;
    for (let i = 0; i < options.streams && !entry.closed; i++) {
      if (!await send(conn, headers(1 + 2 * i, block, false))) return;
    }
  }));
  return {
    open: () => conns.filter((c) => !c.closed).length,
    close: () => {
      for (const { conn } of conns) {
        try {
          conn.close();
        } catch { /* closed by the server */ }
      }
    },
  };
}

/** SETTINGS parameters (RFC 9113 §6.5.2) used here. */
export const SETTING = { MAX_CONCURRENT_STREAMS: 3, INITIAL_WINDOW_SIZE: 4, MAX_HEADER_LIST_SIZE: 6 };

/** A SETTINGS frame with `values` (id -> value). */
export function settings(values: Record<number, number>): Uint8Array {
  const entries = Object.entries(values);
  const payload = new Uint8Array(6 * entries.length);
  const view = new DataView(payload.buffer);
  entries.forEach(([id, value], i) => {
    view.setUint16(6 * i, Number(id));
    view.setUint32(6 * i + 2, value);
  });
  return frame(FRAME.SETTINGS, 0, 0, payload);
}

/** Reads frames from `conn` until the server's first (non-ACK) SETTINGS; its parameters. */
export async function serverSettings(conn: Deno.Conn): Promise<Map<number, number>> {
  let bytes = new Uint8Array(0);
  const buffer = new Uint8Array(16 * 1024);
  for (;;) {
    while (bytes.length >= 9) {
      const length = (bytes[0] << 16) | (bytes[1] << 8) | bytes[2];
      if (bytes.length < 9 + length) break;
      if (bytes[3] === FRAME.SETTINGS && (bytes[4] & FLAG.ACK) === 0) {
        const view = new DataView(bytes.buffer, bytes.byteOffset + 9, length);
        const values = new Map<number, number>();
        for (let at = 0; at + 6 <= length; at += 6) values.set(view.getUint16(at), view.getUint32(at + 2));
        return values;
      }
      bytes = bytes.slice(9 + length);
    }
    const n = await conn.read(buffer);
    if (n === null) throw new Error("closed before the server's SETTINGS");
    bytes = new Uint8Array([...bytes, ...buffer.subarray(0, n)]);
  }
}

/**
 * A client that opens no receive window (INITIAL_WINDOW_SIZE 0) and pipelines `calls`
 * Health/Check calls on one connection: no response can be sent, so every call stays open.
 * Resolves with how many were written before the server closed the connection, and whether it did
 * (the server reads and drops what comes after a cut until it closes).
 */
export async function pipelineWithoutWindow(
  port: number,
  calls: number,
): Promise<{ written: number; cut: boolean }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let closed = false;
  const reading = drain(conn).then(() => (closed = true));
  const block = new Uint8Array(grpcRequestHeaders("/grpc.health.v1.Health/Check"));
  let written = 0;
  let open = await send(
    conn,
    new Uint8Array([...PREFACE.subarray(0, 24), ...settings({ [SETTING.INITIAL_WINDOW_SIZE]: 0 })]),
  );
  // 100 calls per write: HEADERS then an empty gRPC message that ends the stream.
  for (let batch = 0; open && !closed && written < calls; batch++) {
    const frames: Uint8Array[] = [];
    for (let i = 0; i < 100 && written + i < calls; i++) {
      const stream = 1 + 2 * (written + i);
      frames.push(headers(stream, block, false), grpcData(stream, new Uint8Array()));
    }
    open = await send(conn, new Uint8Array(frames.flatMap((f) => [...f])));
    if (open) written += frames.length / 2;
    await new Promise((r) => setTimeout(r, 1));
  }
  // A cut connection is closed once the calls it had sent whole are answered, or after the grace.
  await Promise.race([reading, new Promise((r) => setTimeout(r, CUT_GRACE_MS + 1_000))]);
  const cut = closed;
  try {
    conn.close();
  } catch { /* closed by the server */ }
  return { written, cut };
}

/**
 * `count` Subscribe streams for `recipient` that never read: the client's receive window is 0
 * (SETTINGS INITIAL_WINDOW_SIZE), so the server can queue notifications for them but never send
 * them. 100 streams per connection (the server's limit). Returns a function that closes them all.
 */
export async function stalledSubscribers(
  port: number,
  recipient: string,
  count: number,
): Promise<() => void> {
  const name = encoder.encode(recipient);
  const request = new Uint8Array([0x0a, name.length, ...name]); // SubscribeRequest.recipient
  const block = new Uint8Array(grpcRequestHeaders("/notification.v1.NotificationService/Subscribe"));
  const conns: Deno.Conn[] = [];
  for (let opened = 0; opened < count; opened += 100) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conns.push(conn);
    void drain(conn);
    const frames: number[] = [...PREFACE.subarray(0, 24), ...settings({ [SETTING.INITIAL_WINDOW_SIZE]: 0 })];
    for (let i = 0; i < Math.min(100, count - opened); i++) {
      frames.push(...headers(1 + 2 * i, block, false), ...grpcData(1 + 2 * i, request));
    }
    await send(conn, new Uint8Array(frames));
  }
  return () => {
    for (const conn of conns) {
      try {
        conn.close();
      } catch { /* closed by the server */ }
    }
  };
}
