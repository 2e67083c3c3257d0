/**
 * One Subscribe stream, from admission to its end: its place in the instance's limits, its queue
 * bounds and cut-off, its token's expiry, and its feed (delivery.ts), which may replay stored
 * notifications before live ones. Written to a {@link SubscriberOutput}, which a transport provides
 * (serving/grpc_notifications.ts for gRPC). Ends streams with status codes; never throws.
 */
import { EPOCH_HEADER, RECOVERED_HEADER } from "@notification-server/client";
import type { Limit } from "../_util/limits.ts";
import { type Failure, Status } from "../_util/status.ts";
import type { Caller, CallerPolicy } from "../auth/callers.ts";
import { invalidUtf8 } from "./codec.ts";
import type { Delivery, FeedStart, StartAt } from "./delivery.ts";
import { recipientProblem } from "./validate.ts";

/**
 * A cut-off stream ends with its status after the data it has queued; a client that still does not
 * read gets its stream reset this long after, and what it held is freed.
 */
const CUT_GRACE_MS = 1_000;
/** Timers longer than 2^31-1 ms fire at once: long waits are taken in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The request as the transport decodes it (absent fields take their defaults). */
export interface SubscribeInput {
  recipient: string;
  recover?: boolean;
  position?: number;
  epoch?: string;
}

/** Where one stream is written: what a transport gives the core. */
export interface SubscriberOutput {
  /** The client left, or the stream is gone. */
  readonly gone: boolean;
  /** `listener` runs once when the stream ends, however it ends. */
  onEnd(listener: () => void): void;
  /** Response headers, once, before any notification: `recovered` and `epoch` when known. */
  start(headers: Record<string, string>): void;
  /** Writes one encoded Notification; `taken` runs once the client has taken it (flow control). */
  write(bytes: Uint8Array, taken: () => void): void;
  /** Ends the stream with `failure`, after what is queued. */
  fail(failure: Failure): void;
  /** Ends the stream with OK. */
  end(): void;
  /** Drops what is still queued and resets the stream, unless it has ended already. */
  reset(): void;
}

/** The streams open on one thread, so shutdown can end them (they never end by themselves). */
export class OpenStreams {
  readonly #open = new Set<SubscriberOutput>();
  #closed = false;

  /** Tracks `output` until it ends; false (and left alone) once {@link endAll} has run. */
  add(output: SubscriberOutput): boolean {
    if (this.#closed) return false;
    this.#open.add(output);
    output.onEnd(() => this.#open.delete(output));
    return true;
  }

  /** Ends every open stream with OK; later {@link add} calls are refused. */
  endAll(): void {
    this.#closed = true;
    for (const output of [...this.#open]) {
      this.#open.delete(output);
      output.end();
    }
  }
}

/** What every stream of one thread shares. */
export interface SubscriberPlaces {
  delivery: Delivery;
  streams: OpenStreams;
  /** Concurrent streams across the instance (`max-subscribers`). */
  subscribers: Limit;
  /** Bytes queued across the instance's streams (`subscriber-queue-total-bytes`). */
  queuedBytes: Limit;
  /** Per stream: notifications and bytes written but not yet taken by the client. */
  queue: { messages: number; bytes: number };
  callers?: CallerPolicy;
  /** Told when a stream is cut off as too slow (for metrics). */
  onDropped: () => void;
  /** Streams open and fed now, up or down by one. */
  onCount: (delta: 1 | -1) => void;
}

/** Serves one Subscribe stream until it ends. */
export async function serveSubscriber(
  caller: Caller,
  request: SubscribeInput,
  out: SubscriberOutput,
  places: SubscriberPlaces,
): Promise<void> {
  // Who is asking comes first: a caller without a valid token learns nothing about its input.
  const admitted = places.callers ? await places.callers.subscribe(caller, request.recipient) : undefined;
  if (admitted && "code" in admitted) {
    out.fail({ code: admitted.code, details: admitted.details });
    return;
  }
  const problem = invalidUtf8(request) ?? recipientProblem(request.recipient);
  if (problem) {
    admitted?.release();
    out.fail({ code: Status.INVALID_ARGUMENT, details: problem });
    return;
  }
  const from = startAt(request);
  if (from && !places.delivery.positions) {
    admitted?.release();
    out.fail({
      code: Status.FAILED_PRECONDITION,
      details:
        "recover needs a broker that keeps history: this instance runs without one (set notification-server.broker.nats)",
    });
    return;
  }
  if (out.gone) {
    admitted?.release(); // the client left while its token was being checked
    return;
  }
  const limit = places.subscribers;
  if (!limit.tryAcquire()) {
    admitted?.release();
    out.fail({
      code: Status.RESOURCE_EXHAUSTED,
      details: `This instance already serves ${limit.max} subscribers (max-subscribers)`,
    });
    return;
  }
  places.onCount(1);
  let removed = false;
  let stopFeed = () => {};
  // Written but not yet taken by the client (a write completes when HTTP/2 flow control lets it
  // out): bounded per stream, and across streams by the instance's budget, which a stream gives
  // back as its writes complete or, at the latest, when it closes. Replayed notifications count
  // the same as live ones.
  let queued = 0;
  let queuedBytes = 0;
  let budgeted = 0;
  const budget = places.queuedBytes;
  let cut = false;
  const leave = () => {
    stopFeed();
    if (removed) return;
    removed = true;
    limit.release();
    places.onCount(-1);
  };
  let expiry: ReturnType<typeof setTimeout> | undefined;
  const closed = () => {
    leave();
    admitted?.release();
    clearTimeout(expiry);
    budget.release(budgeted);
    budgeted = 0;
  };
  if (!places.streams.add(out)) {
    closed();
    out.fail({ code: Status.UNAVAILABLE, details: "Server is shutting down" });
    return;
  }
  out.onEnd(closed);
  if (admitted?.expiresAtMs !== undefined) {
    // The stream lives as long as its token: the client subscribes again with a fresh one.
    // `closed` releases whatever the stream holds by then (feed, limits).
    const endWithToken = () => {
      const left = admitted.expiresAtMs! - Date.now();
      if (left > 0) {
        expiry = setTimeout(endWithToken, Math.min(left, MAX_TIMER_MS));
        return false;
      }
      closed();
      out.fail({ code: Status.UNAUTHENTICATED, details: "token expired: subscribe again" });
      return true;
    };
    // A token accepted within the clock skew but already past its exp: nothing more is taken.
    if (endWithToken()) return;
  }
  const cutOff = (why: string) => {
    cut = true;
    leave();
    places.onDropped();
    out.fail({
      code: Status.RESOURCE_EXHAUSTED,
      details: `subscriber too slow: ${queued} notifications (${queuedBytes} bytes) not yet read${why}`,
    });
    // The status waits behind the queued data; a client that does not read gets a reset.
    setTimeout(() => out.reset(), CUT_GRACE_MS);
  };
  // Response headers are the "ready" signal: sent once a Send to any instance reaches this stream,
  // so a client can send right after them; a recovering stream's say whether it lost nothing.
  let headersSent = false;
  const sendHeaders = (start: FeedStart) => {
    if (headersSent || out.gone) return;
    headersSent = true;
    const headers: Record<string, string> = {};
    if (start.recovered !== undefined) headers[RECOVERED_HEADER] = String(start.recovered);
    if (start.epoch) headers[EPOCH_HEADER] = start.epoch;
    out.start(headers);
  };
  const stop = places.delivery.open(request.recipient, {
    ready: sendHeaders,
    write: (bytes) => {
      if (cut || out.gone) return false;
      if (queued + 1 > places.queue.messages || queuedBytes + bytes.length > places.queue.bytes) {
        cutOff("");
        return false;
      }
      const taken = budget.tryAcquire(bytes.length);
      if (!taken && queued > 0) {
        cutOff(" (the instance's subscriber-queue-total-bytes is spent)");
        return false;
      }
      queued++;
      queuedBytes += bytes.length;
      if (taken) budgeted += bytes.length;
      // The mesh may write before its stream is routed everywhere: the headers go first then.
      sendHeaders({});
      out.write(bytes, () => {
        queued--;
        queuedBytes -= bytes.length;
        if (taken && budgeted >= bytes.length) {
          budgeted -= bytes.length;
          budget.release(bytes.length);
        }
      });
      return true;
    },
    fail: (reason) => {
      if (removed) return;
      closed();
      out.fail({ code: Status.UNAVAILABLE, details: reason });
    },
  }, from);
  if (removed) stop();
  else stopFeed = stop;
}

/** Where a recovering stream starts; undefined for live only. */
function startAt(request: SubscribeInput): StartAt | undefined {
  if (!request.recover) return undefined;
  return { position: Number(request.position ?? 0), epoch: request.epoch ?? "" };
}
