/**
 * grpc-js server streams in {@link OpenStreams}, so shutdown can end them: grpc-js's `tryShutdown`
 * waits for every open stream, and Subscribe and Health/Watch streams never end on their own.
 */
import type * as grpc from "@grpc/grpc-js";
import { OpenStreams } from "../_util/open_streams.ts";

/** A server-streaming call as the tracker needs it. */
export type ServerStream = grpc.ServerWritableStream<unknown, unknown>;

/** However a server stream ends, one of these comes. */
const END_EVENTS = ["cancelled", "close", "finish", "error"] as const;

/** Runs `listener` once when `call` ends, however it ends. */
export function onCallEnd(call: ServerStream, listener: () => void): void {
  let ended = false;
  const once = () => {
    if (ended) return;
    ended = true;
    listener();
  };
  for (const event of END_EVENTS) call.on(event, once);
}

/** Tracks open server streams and ends them all on demand. */
export class StreamTracker {
  readonly #open = new OpenStreams();

  /** Adds `call`; returns false (and leaves it alone) once `endAll` has run. */
  add(call: ServerStream, onEnd: () => void): boolean {
    return this.#open.add({ onEnd: (listener) => onCallEnd(call, listener), end: () => call.end() }, onEnd);
  }

  get size(): number {
    return this.#open.size;
  }

  /** Ends every open stream with status OK; later `add` calls are refused. */
  endAll(): void {
    this.#open.endAll();
  }
}

/** The part of grpc-js's private call state used by {@link resetStream} (grpc-js is pinned). */
interface WithHttp2Stream {
  call?: { stream?: { close?(code: number): void; closed?: boolean } };
}

/**
 * Resets a server call's HTTP/2 stream with `code` (RST_STREAM), dropping whatever it still has
 * queued: the one way to end a stream whose client stopped reading, since trailers wait behind
 * the queued data. Returns false if grpc-js's internals changed (the cut-off subscriber test in
 * tests/grpc_service_test.ts sees the reset, so it pins this).
 */
export function resetStream(call: object, code: number): boolean {
  const stream = (call as WithHttp2Stream).call?.stream;
  if (typeof stream?.close !== "function") return false;
  if (!stream.closed) stream.close(code);
  return true;
}
