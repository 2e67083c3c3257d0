/**
 * One Subscribe stream, from admission to its end: its place in the instance's limits, its queue
 * bounds and cut-off, its token's expiry, and its feed (delivery.ts), which may replay stored
 * notifications before live ones. Written to a {@link SubscriberOutput}, which a transport provides
 * (serving/grpc_notifications.ts for gRPC). Ends streams with status codes; never throws.
 */
import { EPOCH_HEADER, RECOVERED_HEADER } from "@notification-server/client";
import type { Limit } from "../_util/limits.ts";
import type { Endable, OpenStreams } from "../_util/open_streams.ts";
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
export interface SubscriberOutput extends Endable {
  /** The client left, or the stream is gone. */
  readonly gone: boolean;
  /** Response headers, once, before any notification: `recovered` and `epoch` when known. */
  start(headers: Record<string, string>): void;
  /** Writes one encoded Notification; `taken` runs once the client has taken it (flow control). */
  write(bytes: Uint8Array, taken: () => void): void;
  /** Ends the stream with `failure`, after what is queued. */
  fail(failure: Failure): void;
  /** Drops what is still queued and resets the stream, unless it has ended already. */
  reset(): void;
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
  const admitted = await admit(caller, request, out, places);
  if (admitted) follow(request.recipient, out, places, admitted);
}

/** A stream let in: where it starts, when its token expires, and what gives its places back. */
interface Admission {
  from?: StartAt;
  expiresAtMs?: number;
  /** Gives back the caller's places and the instance's (once). */
  release(): void;
}

/**
 * The checks before a stream opens, in order: the caller policy, the request (INVALID_ARGUMENT), a
 * recovery asked of a delivery without positions (FAILED_PRECONDITION), a client that left meanwhile,
 * and `max-subscribers` (RESOURCE_EXHAUSTED). Each refusal ends `out` with its status and gives back
 * what was taken before it.
 */
async function admit(
  caller: Caller,
  request: SubscribeInput,
  out: SubscriberOutput,
  places: SubscriberPlaces,
): Promise<Admission | undefined> {
  // Who is asking comes first: a caller without a valid token learns nothing about its input.
  const admitted = places.callers ? await places.callers.subscribe(caller, request.recipient) : undefined;
  if (admitted && "code" in admitted) {
    out.fail({ code: admitted.code, details: admitted.details });
    return undefined;
  }
  const refuse = (failure?: Failure) => {
    admitted?.release();
    if (failure) out.fail(failure);
    return undefined;
  };
  const problem = invalidUtf8(request) ?? recipientProblem(request.recipient);
  if (problem) return refuse({ code: Status.INVALID_ARGUMENT, details: problem });
  const from = startAt(request);
  if (from && !places.delivery.positions) {
    return refuse({
      code: Status.FAILED_PRECONDITION,
      details:
        "recover needs a broker that keeps history: this instance runs without one (set notification-server.broker.nats)",
    });
  }
  if (out.gone) return refuse(); // the client left while its token was being checked
  const limit = places.subscribers;
  if (!limit.tryAcquire()) {
    return refuse({
      code: Status.RESOURCE_EXHAUSTED,
      details: `This instance already serves ${limit.max} subscribers (max-subscribers)`,
    });
  }
  places.onCount(1);
  let released = false;
  return {
    from,
    expiresAtMs: admitted?.expiresAtMs,
    release: () => {
      if (released) return;
      released = true;
      limit.release();
      places.onCount(-1);
      admitted?.release();
    },
  };
}

/**
 * What one stream has written that its client has not taken yet (a write completes when HTTP/2
 * flow control lets it out): bounded per stream, and across streams by the instance's budget, which
 * a stream gives back as its writes complete or, at the latest, when it closes. Replayed
 * notifications count the same as live ones.
 */
class StreamQueue {
  messages = 0;
  bytes = 0;
  /** Bytes of ours the instance's budget holds now. */
  #budgeted = 0;
  /** Waiting for {@link room}. */
  #roomWaiters: (() => void)[] = [];
  readonly #bounds: { messages: number; bytes: number };
  readonly #budget: Limit;

  constructor(bounds: { messages: number; bytes: number }, budget: Limit) {
    this.#bounds = bounds;
    this.#budget = budget;
  }

  /**
   * Takes `size` bytes more and returns what to run once the client has them, or says why not (a
   * string): the stream's own bound, or the instance's budget spent while this stream is behind.
   */
  take(size: number): (() => void) | string {
    if (this.messages + 1 > this.#bounds.messages || this.bytes + size > this.#bounds.bytes) return "";
    const budgeted = this.#budget.tryAcquire(size);
    if (!budgeted && this.messages > 0) return " (the instance's subscriber-queue-total-bytes is spent)";
    this.messages++;
    this.bytes += size;
    if (budgeted) this.#budgeted += size;
    return () => {
      this.messages--;
      this.bytes -= size;
      if (budgeted && this.#budgeted >= size) {
        this.#budgeted -= size;
        this.#budget.release(size);
      }
      if (this.#roomWaiters.length > 0 && this.#halfEmpty()) this.#wakeRoomWaiters();
    };
  }

  /** Resolves once at most half of the stream's bounds is taken (at once when it is). */
  room(): Promise<void> {
    if (this.#halfEmpty()) return Promise.resolve();
    return new Promise((resolve) => this.#roomWaiters.push(resolve));
  }

  #halfEmpty(): boolean {
    return this.messages <= this.#bounds.messages / 2 && this.bytes <= this.#bounds.bytes / 2;
  }

  #wakeRoomWaiters(): void {
    for (const wake of this.#roomWaiters.splice(0)) wake();
  }

  /** The stream closed: whatever the budget still holds of it goes back, and no one waits for room. */
  releaseAll(): void {
    this.#budget.release(this.#budgeted);
    this.#budgeted = 0;
    this.#wakeRoomWaiters();
  }
}

/**
 * Feeds an admitted stream from the delivery until it ends: UNAVAILABLE when the server is shutting
 * down or the feed cannot go on, UNAUTHENTICATED when its token expires, RESOURCE_EXHAUSTED when its
 * client is too slow (cut off), OK when the server drains.
 */
function follow(
  recipient: string,
  out: SubscriberOutput,
  places: SubscriberPlaces,
  admitted: Admission,
): void {
  const queue = new StreamQueue(places.queue, places.queuedBytes);
  let left = false;
  let cut = false;
  let stopFeed = () => {};
  let cancelExpiry = () => {};
  const leave = () => {
    stopFeed();
    left = true;
    admitted.release();
  };
  const closed = () => {
    leave();
    cancelExpiry();
    queue.releaseAll();
  };
  if (!places.streams.add(out, closed)) {
    closed();
    out.fail({ code: Status.UNAVAILABLE, details: "Server is shutting down" });
    return;
  }
  // The stream lives as long as its token: the client subscribes again with a fresh one. A token
  // accepted within the clock skew but already past its exp takes nothing more.
  const expired = () => {
    closed();
    out.fail({ code: Status.UNAUTHENTICATED, details: "token expired: subscribe again" });
  };
  if (admitted.expiresAtMs !== undefined) {
    if (admitted.expiresAtMs <= Date.now()) return expired();
    cancelExpiry = atExpiry(admitted.expiresAtMs, expired);
  }
  const cutOff = (why: string) => {
    cut = true;
    leave();
    places.onDropped();
    out.fail({
      code: Status.RESOURCE_EXHAUSTED,
      details:
        `subscriber too slow: ${queue.messages} notifications (${queue.bytes} bytes) not yet read${why}`,
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
  const stop = places.delivery.open(recipient, {
    ready: sendHeaders,
    write: (bytes) => {
      if (cut || out.gone) return false;
      const taken = queue.take(bytes.length);
      if (typeof taken === "string") {
        cutOff(taken);
        return false;
      }
      // The mesh may write before its stream is routed everywhere: the headers go first then.
      sendHeaders({});
      out.write(bytes, taken);
      return true;
    },
    fail: (reason) => {
      if (left) return;
      closed();
      out.fail({ code: Status.UNAVAILABLE, details: reason });
    },
    room: () => queue.room(),
  }, admitted.from);
  if (left) stop();
  else stopFeed = stop;
}

/** Runs `expire` once `atMs` (epoch ms) has passed; returns what cancels it. */
function atExpiry(atMs: number, expire: () => void): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const check = () => {
    const remaining = atMs - Date.now();
    if (remaining > 0) timer = setTimeout(check, Math.min(remaining, MAX_TIMER_MS));
    else expire();
  };
  check();
  return () => clearTimeout(timer);
}

/** Where a recovering stream starts; undefined for live only. */
function startAt(request: SubscribeInput): StartAt | undefined {
  if (!request.recover) return undefined;
  return { position: Number(request.position ?? 0), epoch: request.epoch ?? "" };
}
