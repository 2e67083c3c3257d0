/**
 * What a client may make one server connection hold, checked on the bytes it sends before Deno's
 * nghttp2 sees them (packages/http2_guard/src/http2_guard.ts feeds every server session's input through
 * {@link InboundLimiter}). Deno keeps up to 128 header pairs per stream whatever their size and
 * leaks what it kept when it refuses the stream, so a few KB/s of HPACK references to one large
 * header (a 16 KB block decodes to ~48 MB) took the service past 1.7 GB: no setting of node:http2
 * bounds it. Here every header block is sized as its bytes arrive, exactly as the decoder will size
 * it (hpack_size.ts): a block is cut once its decoded size passes the limit, and a client that keeps
 * to the SETTINGS we advertise is never cut. A cut names the offending frame: the complete frames
 * before it still reach nghttp2 and their requests are answered (see {@link InboundCut}).
 */
import { HeaderListMeter, HpackError } from "./hpack_size.ts";

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

/**
 * Why and where to cut a connection: the first `pass` bytes of the chunk (whole frames before the
 * offending one) are still handed to nghttp2, then the client is told with a GOAWAY naming
 * `lastStream`, the last stream whose request headers it sent whole, so it knows which calls were
 * taken (those are answered) and which to retry elsewhere.
 */
export interface InboundCut {
  reason: CutReason;
  /** Bytes at the start of the chunk to pass on before the cut. */
  pass: number;
  /** The last stream whose header block was passed whole (0: none). */
  lastStream: number;
  /** The HTTP/2 error code of the GOAWAY (RFC 9113 §7). */
  code: number;
}

/** RFC 9113 §7 error codes. */
export const H2_ERROR = { PROTOCOL: 0x1, COMPRESSION: 0x9, ENHANCE_YOUR_CALM: 0xb } as const;

const PREFACE_LENGTH = 24;
/** Streams a connection may have open and still open more while the heap is near its limit. */
export const STREAMS_UNDER_PRESSURE = 8;
const FRAME_HEADER = 9;
const TYPE = { HEADERS: 1, PUSH_PROMISE: 5, CONTINUATION: 9 };
const FLAG = { END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 };

/** Where the bytes of the current frame's payload go. */
const enum Part {
  /** A HEADERS frame's pad length and priority fields. */
  Prefix,
  /** Header block fragment: to the meter. */
  Fragment,
  /** Padding, or a payload we do not read. */
  Skip,
}

/**
 * One server connection's input, frame by frame across chunk boundaries: header blocks are
 * sized as they arrive ({@link HeaderListMeter}), new streams counted against what is open.
 * `check` says where and why to cut the connection, or undefined to let the chunk through.
 */
export class InboundLimiter {
  readonly #meter = new HeaderListMeter();
  /** Bytes of the client preface still to skip. */
  #preface = PREFACE_LENGTH;
  /** A frame header split across chunks. */
  readonly #head = new Uint8Array(FRAME_HEADER);
  #headLength = 0;
  #frameType = 0;
  #frameFlags = 0;
  #frameLength = 0;
  #frameStream = 0;
  /** Where the current frame starts in this chunk; 0 when it started in an earlier one. */
  #frameStart = 0;
  #part = Part.Skip;
  /** Payload bytes left in the current part, and after it. */
  #partLeft = 0;
  #padding = 0;
  #prefixRead = 0;
  /** The stream of the header block being read (HEADERS, then CONTINUATIONs), 0 when none. */
  #blockStream = 0;
  /** Where that block's HEADERS frame starts in this chunk; 0 when it started in an earlier one. */
  #blockStart = 0;
  #lastStream = 0;
  /** The last stream whose header block was read whole and within the limit. */
  #lastComplete = 0;
  #refused = 0;

  constructor(readonly limits: InboundLimits) {}

  /** Streams refused so far on this connection (over the concurrency limit). */
  get refused(): number {
    return this.#refused;
  }

  /**
   * Reads `chunk`; `openStreams` says how many streams the session had open before it. Returns
   * where and why to cut the connection, or undefined to pass the whole chunk.
   */
  check(chunk: Uint8Array, openStreams: () => number): InboundCut | undefined {
    let at = 0;
    let opened = 0;
    if (this.#preface > 0) {
      at = Math.min(this.#preface, chunk.length);
      this.#preface -= at;
    }
    // Frames and blocks that began in an earlier chunk have had their start passed already.
    this.#frameStart = 0;
    this.#blockStart = 0;
    try {
      while (at < chunk.length) {
        if (this.#headLength < FRAME_HEADER) {
          if (this.#headLength === 0) this.#frameStart = at;
          const take = Math.min(FRAME_HEADER - this.#headLength, chunk.length - at);
          this.#head.set(chunk.subarray(at, at + take), this.#headLength);
          this.#headLength += take;
          at += take;
          if (this.#headLength < FRAME_HEADER) break;
          const problem = this.#startFrame();
          if (problem) return problem;
          if (this.#frameType === TYPE.HEADERS && this.#frameStream > this.#lastStream) {
            this.#lastStream = this.#frameStream;
            opened++;
            const refused = this.#newStream(openStreams() + opened);
            if (refused) return refused;
          }
        } else {
          const take = Math.min(this.#partLeft, chunk.length - at);
          if (this.#part === Part.Fragment) {
            this.#meter.write(chunk.subarray(at, at + take));
            if (this.#meter.atLeast > this.limits.maxHeaderListBytes) {
              return this.#cutBlock("header_list_size");
            }
          } else if (this.#part === Part.Prefix && take > 0) {
            if (this.#prefixRead === 0 && this.#frameFlags & FLAG.PADDED) this.#padding = chunk[at];
            this.#prefixRead += take;
          }
          this.#partLeft -= take;
          at += take;
        }
        const problem = this.#nextPart();
        if (problem) return problem;
      }
    } catch (error) {
      if (error instanceof HpackError) return this.#cutBlock("protocol", H2_ERROR.COMPRESSION);
      throw error;
    }
    return undefined;
  }

  /** A stream is opened with `open` streams open in all: whether to cut for it. */
  #newStream(open: number): InboundCut | undefined {
    // Under memory pressure a connection may still open a stream while it holds only a few (a
    // client's calls go on); one holding more is what fills the heap, and is cut.
    const pressed = this.limits.streamsOpened?.(1) ?? false;
    if (pressed && open > STREAMS_UNDER_PRESSURE) return this.#cutFrame("memory", H2_ERROR.ENHANCE_YOUR_CALM);
    // Those past the limit are the ones nghttp2 will refuse.
    if (open > this.limits.maxConcurrentStreams) this.#refused++;
    if (this.#refused > this.limits.maxRefusedStreams) {
      return this.#cutFrame("refused_streams", H2_ERROR.ENHANCE_YOUR_CALM);
    }
    return undefined;
  }

  #startFrame(): InboundCut | undefined {
    const head = this.#head;
    this.#frameLength = (head[0] << 16) | (head[1] << 8) | head[2];
    this.#frameType = head[3];
    this.#frameFlags = head[4];
    this.#frameStream = new DataView(head.buffer).getUint32(5) & 0x7fffffff;
    this.#part = Part.Skip;
    this.#partLeft = this.#frameLength;
    this.#padding = 0;
    this.#prefixRead = 0;
    const type = this.#frameType;
    // RFC 9113 §6.10: nothing may come between a block's frames (nghttp2 ends the connection).
    if (this.#blockStream !== 0 && (type !== TYPE.CONTINUATION || this.#frameStream !== this.#blockStream)) {
      return this.#cutBlock("protocol", H2_ERROR.PROTOCOL);
    }
    if (type === TYPE.PUSH_PROMISE) return this.#cutFrame("protocol", H2_ERROR.PROTOCOL);
    if (type === TYPE.CONTINUATION) {
      if (this.#blockStream === 0) return this.#cutFrame("protocol", H2_ERROR.PROTOCOL);
      this.#part = Part.Fragment;
    } else if (type === TYPE.HEADERS) {
      if (this.#frameStream === 0) return this.#cutFrame("protocol", H2_ERROR.PROTOCOL);
      this.#blockStream = this.#frameStream;
      this.#blockStart = this.#frameStart;
      const prefix = (this.#frameFlags & FLAG.PADDED ? 1 : 0) + (this.#frameFlags & FLAG.PRIORITY ? 5 : 0);
      if (prefix > this.#frameLength) return this.#cutBlock("protocol", H2_ERROR.PROTOCOL);
      this.#part = Part.Prefix;
      this.#partLeft = prefix;
    }
    return undefined;
  }

  /** The current part is read: on to the next, or to the next frame. */
  #nextPart(): InboundCut | undefined {
    while (this.#headLength === FRAME_HEADER && this.#partLeft === 0) {
      if (this.#part === Part.Prefix) {
        const prefix = this.#prefixRead;
        const fragment = this.#frameLength - prefix - this.#padding;
        if (fragment < 0) return this.#cutBlock("protocol", H2_ERROR.PROTOCOL);
        this.#part = Part.Fragment;
        this.#partLeft = fragment;
      } else if (this.#part === Part.Fragment && this.#padding > 0) {
        this.#part = Part.Skip;
        this.#partLeft = this.#padding;
        this.#padding = 0;
      } else {
        this.#headLength = 0;
        return this.#endFrame();
      }
    }
    return undefined;
  }

  /** A frame is read whole: a header block that ends here is sized. */
  #endFrame(): InboundCut | undefined {
    const type = this.#frameType;
    if (type !== TYPE.HEADERS && type !== TYPE.CONTINUATION) return undefined;
    if ((this.#frameFlags & FLAG.END_HEADERS) === 0) return undefined;
    const size = this.#meter.end();
    if (size > this.limits.maxHeaderListBytes) return this.#cutBlock("header_list_size");
    this.#lastComplete = Math.max(this.#lastComplete, this.#blockStream);
    this.#blockStream = 0;
    return undefined;
  }

  /** Cuts before the header block being read (its HEADERS frame and all after). */
  #cutBlock(reason: CutReason, code: number = H2_ERROR.ENHANCE_YOUR_CALM): InboundCut {
    return {
      reason,
      pass: this.#blockStream === 0 ? this.#frameStart : this.#blockStart,
      lastStream: this.#lastComplete,
      code,
    };
  }

  /** Cuts before the current frame. */
  #cutFrame(reason: CutReason, code: number): InboundCut {
    return { reason, pass: this.#frameStart, lastStream: this.#lastComplete, code };
  }
}
