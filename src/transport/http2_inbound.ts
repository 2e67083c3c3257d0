/**
 * What a client may make one server connection hold, checked on the bytes it sends before Deno's
 * nghttp2 sees them (packages/registry/src/http2_guard.ts feeds every server session's input through
 * {@link InboundLimiter}). Deno keeps up to 128 header pairs per stream whatever their size and
 * leaks what it kept when it refuses the stream, so a few KB/s of HPACK references to one large
 * header (a 16 KB block decodes to ~48 MB) took the service past 1.7 GB: no setting of node:http2
 * bounds it. Here every header block's decoded size is counted with HPACK's own rule (name +
 * value + 32 per field, as SETTINGS_MAX_HEADER_LIST_SIZE counts) without decoding it: indexed
 * fields cost the size of their table entry, Huffman strings are charged at their largest
 * decoded length (8/5 of their wire length), and a reference this meter cannot place is charged
 * the whole table. The counts are upper bounds, so a legitimate client is never cut for less than
 * the limit; a connection whose block passes it is cut before any of it is decoded.
 */

/** Why a connection was cut (the `reason` label of the metric). */
export type CutReason =
  | "header_list_size"
  | "refused_streams"
  | "protocol"
  /** Refused at once: `max-connections` reached. */
  | "max_connections"
  /** No request within `handshake-timeout`. */
  | "no_request"
  /** The thread's heap is near V8's limit (memory_pressure.ts): a stream opened, or the heaviest. */
  | "memory";

/** Limits on one connection's input. */
export interface InboundLimits {
  /** Largest decoded header list of one request, in bytes (HPACK sizes). */
  maxHeaderListBytes: number;
  /** Streams open at once; the server advertises it and nghttp2 refuses more. */
  maxConcurrentStreams: number;
  /** Streams refused for being over `maxConcurrentStreams` before the connection is cut. */
  maxRefusedStreams: number;
  /**
   * Told of every new stream; while it answers true (the heap is near its limit,
   * memory_pressure.ts), a connection that opens a stream while holding more than a few is cut.
   */
  streamsOpened?: (n: number) => boolean;
}

const PREFACE_LENGTH = 24;
/** Streams a connection may have open and still open more while the heap is near its limit. */
export const STREAMS_UNDER_PRESSURE = 8;
const FRAME_HEADER = 9;
/** A HEADERS frame's pad length byte, up to 255 bytes of padding and 5 of priority. */
const MAX_PADDING = 261;
const TYPE = { HEADERS: 1, PUSH_PROMISE: 5, CONTINUATION: 9 };
const FLAG = { END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 };
/** RFC 7541 §4.1: each entry costs its name, its value and 32 bytes. */
const ENTRY_OVERHEAD = 32;
/** The largest static-table entry (`access-control-allow-origin`, `accept-encoding: gzip, deflate`). */
const STATIC_ENTRY_MAX = ENTRY_OVERHEAD + 27 + 13;
const STATIC_ENTRIES = 61;
/** The decoder's table size until SETTINGS say otherwise (we never raise it). */
const DEFAULT_TABLE = 4096;

/**
 * The decoded size of HPACK header blocks, as upper bounds, and the dynamic table they build
 * (one per connection: the table outlives each block).
 */
export class HeaderBlockMeter {
  /** Upper bounds of the dynamic table's entry sizes, newest first. */
  readonly #entries: number[] = [];
  #used = 0;
  #capacity = DEFAULT_TABLE;

  /** The decoded size of `block` (an upper bound); "malformed" if it cannot be parsed. */
  measure(block: Uint8Array): number | "malformed" {
    let total = 0;
    let at = 0;
    const int = (prefix: number): number => {
      const max = (1 << prefix) - 1;
      let value = block[at++] & max;
      if (value < max) return value;
      for (let shift = 0;; shift += 7) {
        if (at >= block.length || shift > 28) throw new RangeError("bad integer");
        const byte = block[at++];
        value += (byte & 0x7f) * 2 ** shift;
        if ((byte & 0x80) === 0) return value;
      }
    };
    /** Skips a string literal; its largest decoded length. */
    const string = (): number => {
      if (at >= block.length) throw new RangeError("truncated string");
      const huffman = (block[at] & 0x80) !== 0;
      const length = int(7);
      at += length;
      if (at > block.length) throw new RangeError("truncated string");
      return huffman ? Math.ceil(length * 8 / 5) : length;
    };
    /** The size of the entry at `index` (static or dynamic); the largest table when unknown. */
    const entry = (index: number): number => {
      if (index <= STATIC_ENTRIES) return STATIC_ENTRY_MAX;
      return this.#entries[index - STATIC_ENTRIES - 1] ?? DEFAULT_TABLE;
    };
    try {
      while (at < block.length) {
        const first = block[at];
        if (first & 0x80) {
          const index = int(7);
          if (index === 0) return "malformed";
          total += entry(index);
        } else if (first & 0x40) {
          const index = int(6);
          const name = index === 0 ? string() : entry(index) - ENTRY_OVERHEAD;
          const size = name + string() + ENTRY_OVERHEAD;
          total += size;
          this.#add(size);
        } else if (first & 0x20) {
          this.#resize(Math.min(int(5), DEFAULT_TABLE));
        } else {
          const index = int(4);
          const name = index === 0 ? string() : entry(index) - ENTRY_OVERHEAD;
          total += name + string() + ENTRY_OVERHEAD;
        }
      }
    } catch {
      return "malformed";
    }
    return total;
  }

  #add(size: number): void {
    this.#entries.unshift(size);
    this.#used += size;
    this.#evict();
  }

  #resize(capacity: number): void {
    this.#capacity = capacity;
    this.#evict();
  }

  #evict(): void {
    while (this.#used > this.#capacity && this.#entries.length > 0) this.#used -= this.#entries.pop()!;
  }
}

/**
 * One server connection's input, frame by frame across chunk boundaries: header blocks are
 * measured ({@link HeaderBlockMeter}), new streams counted against what is open. `check` says
 * why to cut the connection, or undefined to let the chunk through.
 */
export class InboundLimiter {
  readonly #meter = new HeaderBlockMeter();
  /** Bytes of the client preface still to skip. */
  #preface = PREFACE_LENGTH;
  /** A frame header split across chunks. */
  #head = new Uint8Array(FRAME_HEADER);
  #headLength = 0;
  /** Payload bytes of the current frame still to come, and what to do with them. */
  #remaining = 0;
  #collect = false;
  /** The header block being assembled (HEADERS then CONTINUATIONs). */
  #block: Uint8Array[] = [];
  #blockLength = 0;
  #frameFlags = 0;
  #frameType = 0;
  #frameLength = 0;
  #lastStream = 0;
  #refused = 0;

  constructor(readonly limits: InboundLimits) {}

  /** Streams refused so far on this connection (over the concurrency limit). */
  get refused(): number {
    return this.#refused;
  }

  /**
   * Reads `chunk`; `openStreams` says how many streams the session has open before it. Returns
   * the reason to cut the connection, or undefined.
   */
  check(chunk: Uint8Array, openStreams: () => number): CutReason | undefined {
    let at = 0;
    let opened = 0;
    if (this.#preface > 0) {
      const skip = Math.min(this.#preface, chunk.length);
      this.#preface -= skip;
      at = skip;
    }
    while (at < chunk.length) {
      if (this.#remaining === 0 && this.#headLength < FRAME_HEADER) {
        const take = Math.min(FRAME_HEADER - this.#headLength, chunk.length - at);
        this.#head.set(chunk.subarray(at, at + take), this.#headLength);
        this.#headLength += take;
        at += take;
        if (this.#headLength < FRAME_HEADER) break;
        const reason = this.#startFrame();
        if (reason) return reason;
        if (this.#frameType === TYPE.HEADERS && this.#isNewStream()) opened++;
        if (this.#remaining === 0) {
          const done = this.#endFrame();
          if (done) return done;
        }
        continue;
      }
      const take = Math.min(this.#remaining, chunk.length - at);
      if (this.#collect) {
        this.#blockLength += take;
        if (this.#blockLength > this.limits.maxHeaderListBytes + MAX_PADDING) {
          // The wire bytes alone already pass the limit: decoded, they are at least as many.
          return "header_list_size";
        }
        this.#block.push(chunk.slice(at, at + take));
      }
      this.#remaining -= take;
      at += take;
      if (this.#remaining === 0) {
        const done = this.#endFrame();
        if (done) return done;
      }
    }
    // Under memory pressure a connection may still open a stream while it holds only a few (a
    // client's calls go on); one holding more is what fills the heap, and is cut.
    const pressed = opened > 0 && (this.limits.streamsOpened?.(opened) ?? false);
    if (pressed && openStreams() + opened > STREAMS_UNDER_PRESSURE) return "memory";
    if (opened > 0) {
      // Of the streams this chunk opens, those past the limit are the ones nghttp2 will refuse.
      const over = Math.min(opened, openStreams() + opened - this.limits.maxConcurrentStreams);
      if (over > 0) this.#refused += over;
      if (this.#refused > this.limits.maxRefusedStreams) return "refused_streams";
    }
    return undefined;
  }

  #stream(): number {
    return new DataView(this.#head.buffer).getUint32(5) & 0x7fffffff;
  }

  #isNewStream(): boolean {
    const stream = this.#stream();
    if (stream <= this.#lastStream) return false;
    this.#lastStream = stream;
    return true;
  }

  #startFrame(): CutReason | undefined {
    const head = this.#head;
    this.#frameLength = (head[0] << 16) | (head[1] << 8) | head[2];
    this.#frameType = head[3];
    this.#frameFlags = head[4];
    this.#remaining = this.#frameLength;
    this.#collect = false;
    if (this.#frameType === TYPE.PUSH_PROMISE) return "protocol";
    if (this.#frameType === TYPE.HEADERS) {
      this.#block = [];
      this.#blockLength = 0;
      this.#collect = true;
    } else if (this.#frameType === TYPE.CONTINUATION) {
      this.#collect = true;
    }
    return undefined;
  }

  /** A frame's payload is complete: measure the header block once it is whole. */
  #endFrame(): CutReason | undefined {
    this.#headLength = 0;
    const type = this.#frameType;
    if (type !== TYPE.HEADERS && type !== TYPE.CONTINUATION) return undefined;
    if (type === TYPE.HEADERS) {
      const payload = concat(this.#block, this.#blockLength);
      let start = 0;
      let pad = 0;
      if (this.#frameFlags & FLAG.PADDED) pad = payload[start++] ?? 0;
      if (this.#frameFlags & FLAG.PRIORITY) start += 5;
      if (start + pad > payload.length) return "protocol";
      this.#block = [payload.subarray(start, payload.length - pad)];
      this.#blockLength = payload.length - start - pad;
    }
    if ((this.#frameFlags & FLAG.END_HEADERS) === 0) return undefined;
    const size = this.#meter.measure(concat(this.#block, this.#blockLength));
    this.#block = [];
    this.#blockLength = 0;
    if (size === "malformed") return "protocol";
    return size > this.limits.maxHeaderListBytes ? "header_list_size" : undefined;
  }
}

function concat(parts: Uint8Array[], length: number): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
