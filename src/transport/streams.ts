/**
 * Open server streams, so shutdown can end them: grpc-js's `tryShutdown` waits for every open
 * stream, and Subscribe and Health/Watch streams never end on their own.
 */
import type * as grpc from "@grpc/grpc-js";

/** A server-streaming call as the tracker needs it. */
export type ServerStream = grpc.ServerWritableStream<unknown, unknown>;

/** Tracks open server streams and ends them all on demand. */
export class StreamTracker {
  readonly #open = new Set<ServerStream>();
  #closed = false;

  /** Adds `call`; returns false (and leaves it alone) once `endAll` has run. */
  add(call: ServerStream, onEnd: () => void): boolean {
    if (this.#closed) return false;
    this.#open.add(call);
    const remove = () => {
      if (this.#open.delete(call)) onEnd();
    };
    call.on("cancelled", remove);
    call.on("close", remove);
    call.on("finish", remove);
    call.on("error", remove);
    return true;
  }

  get size(): number {
    return this.#open.size;
  }

  /** Ends every open stream with status OK; later `add` calls are refused. */
  endAll(): void {
    this.#closed = true;
    for (const call of [...this.#open]) {
      this.#open.delete(call);
      call.end();
    }
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
