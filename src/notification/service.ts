/**
 * NotificationService handlers. They answer with gRPC status codes and never throw. Subscribe checks,
 * in this order: the caller policy (auth/callers.ts: UNAUTHENTICATED, PERMISSION_DENIED, or
 * RESOURCE_EXHAUSTED for the caller's own limits), the request (INVALID_ARGUMENT), a client that left
 * meanwhile, the instance's `maxSubscribers` (RESOURCE_EXHAUSTED), and shutdown (UNAVAILABLE); once
 * open, a stream ends with RESOURCE_EXHAUSTED when its queue is full, and UNAUTHENTICATED when its
 * token expires. Send checks the caller policy, then the request.
 */
import * as grpc from "@grpc/grpc-js";
import { type Limit, LocalLimit } from "../_util/limits.ts";
import { DEFAULTS } from "../config/defaults.ts";
import type { CallerPolicy } from "../auth/callers.ts";
import { resetStream, StreamTracker } from "../transport/streams.ts";
import { encodeNotification, invalidUtf8 } from "./codec.ts";
import { Hub, type Notification } from "./hub.ts";
import { Holders, type Reach, type Routing } from "./routing.ts";
import { recipientProblem, type SendInput, sendProblem } from "./validate.ts";

/** Bytes of notifications written to subscribers before yielding to other calls. */
const BYTES_PER_TURN = 64 * 1024;
/**
 * A cut-off stream ends with trailers after the data it has queued; a client that still does not
 * read gets its stream reset this long after (ENHANCE_YOUR_CALM, which clients report as
 * RESOURCE_EXHAUSTED), and what it held is freed.
 */
const CUT_GRACE_MS = 1_000;
/** Timers longer than 2^31-1 ms fire at once: long waits are taken in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** HTTP/2 ENHANCE_YOUR_CALM. */
const ENHANCE_YOUR_CALM = 0xb;

/** Options for {@link NotificationService}. */
export interface NotificationServiceOptions {
  /** Reported in SendResponse.instance_id. */
  instanceId: string;
  /** Concurrent Subscribe streams across the instance (`max-subscribers`). @default 10000 here */
  subscribers?: Limit;
  /** Told of every accepted Send and how many streams it reached (for metrics). */
  onSent?: (delivered: number) => void;
  /**
   * Per Subscribe stream: notifications written but not yet taken by the client, in count and
   * bytes. Past either, the stream is ended with RESOURCE_EXHAUSTED ("subscriber too slow") and the
   * notification is not counted as delivered. @default 1000 notifications, 1 MiB (Centrifugo's default)
   */
  subscriberQueue?: { messages: number; bytes: number };
  /**
   * Bytes queued across every Subscribe stream of the instance, cut-off streams included
   * (`subscriber-queue-total-bytes`). A stream that is behind when the budget is spent is cut off.
   * @default 256 MiB
   */
  queuedBytes?: Limit;
  /** Who may Send and Subscribe, and how much one caller may take; absent: anyone, unbounded. */
  callers?: CallerPolicy;
  /** Told when a notification is dropped because its subscriber was too slow (for metrics). */
  onDropped?: () => void;
}

/** The hub's single holder at its hop: this thread. */
const HERE = "here";

/** Send/Subscribe over a {@link Hub}, and beyond this thread through {@link Routing}. */
export class NotificationService {
  readonly hub = new Hub<Uint8Array>();
  readonly #holders = new Holders<typeof HERE>();
  readonly #streams = new StreamTracker();
  /** Reported in SendResponse.instance_id; set once the advertised address is known. */
  instanceId: string;
  readonly #subscribers: Limit;
  readonly #onSent: (delivered: number) => void;
  readonly #queue: { messages: number; bytes: number };
  readonly #queuedBytes: Limit;
  readonly #onDropped: () => void;
  readonly #callers?: CallerPolicy;

  constructor(options: NotificationServiceOptions) {
    this.instanceId = options.instanceId;
    this.#subscribers = options.subscribers ?? new LocalLimit(DEFAULTS.maxSubscribers);
    this.#onSent = options.onSent ?? (() => {});
    this.#queue = options.subscriberQueue ??
      { messages: DEFAULTS.subscriberQueue, bytes: DEFAULTS.subscriberQueueBytes };
    this.#queuedBytes = options.queuedBytes ?? new LocalLimit(DEFAULTS.subscriberQueueTotalBytes);
    this.#onDropped = options.onDropped ?? (() => {});
    this.#callers = options.callers;
    this.hub.onRecipient = (recipient, present) => {
      if (present) void this.#holders.hold(recipient, HERE);
      else this.#holders.release(recipient, HERE);
    };
  }

  /**
   * The next hop from now on (the worker pool, or the cluster on one thread); recipients that
   * already have subscribers are announced to it. Set once the instance id is known.
   */
  set routing(next: Routing) {
    this.#holders.next = next;
  }

  /**
   * The one delivery path: this thread's subscribers, then, when `reach` is given, the next hop
   * as far as it says (routing.ts). `bytes` come from `encodeNotification`.
   */
  deliver(recipient: string, bytes: Uint8Array, reach?: Reach): Promise<number> {
    const slice = Math.max(1, Math.min(64, Math.floor(BYTES_PER_TURN / bytes.length)));
    const here = this.hub.publish(recipient, bytes, slice);
    if (!reach) return here;
    const beyond = this.#holders.next.route(recipient, bytes, reach);
    return Promise.all([here, beyond]).then(([a, b]) => a + b);
  }

  /** Ends every Subscribe stream with OK; new ones are refused with UNAVAILABLE. */
  endSubscriptions(): void {
    this.#streams.endAll();
  }

  handlers(): grpc.UntypedServiceImplementation {
    return {
      send: async (call: grpc.ServerUnaryCall<SendInput, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const refused = this.#callers?.checksSends ? await this.#callers.send(call) : undefined;
        if (refused) {
          callback({ code: refused.code, details: refused.details });
          return;
        }
        const req = call.request;
        const problem = invalidUtf8(req) ?? sendProblem(req);
        if (problem) {
          callback({ code: grpc.status.INVALID_ARGUMENT, details: problem });
          return;
        }
        const notification: Notification = {
          id: crypto.randomUUID(),
          recipient: req.recipient,
          title: req.title,
          body: req.body,
          data: req.data,
          createdAtMs: Date.now(),
        };
        // Encoded once for every stream here and on every peer (the Subscribe serializer passes
        // bytes through); handed out about 64 KB per turn of the event loop so other calls get in.
        const bytes = encodeNotification(notification);
        void this.deliver(notification.recipient, bytes, "cluster").then((delivered) => {
          this.#onSent(delivered);
          callback(null, {
            id: notification.id,
            createdAtMs: notification.createdAtMs,
            delivered,
            instanceId: this.instanceId,
          });
        });
      },
      // Written with bytes that encodeNotification made; the server's serializer passes them through.
      subscribe: async (call: grpc.ServerWritableStream<{ recipient: string }, Uint8Array>) => {
        // Who is asking comes first: a caller without a valid token learns nothing about its input.
        const admitted = this.#callers
          ? await this.#callers.subscribe(call, call.request.recipient)
          : undefined;
        if (admitted && "code" in admitted) {
          call.emit("error", { code: admitted.code, details: admitted.details });
          return;
        }
        const problem = invalidUtf8(call.request) ?? recipientProblem(call.request.recipient);
        if (problem) {
          admitted?.release();
          call.emit("error", { code: grpc.status.INVALID_ARGUMENT, details: problem });
          return;
        }
        if (call.cancelled) {
          admitted?.release(); // the client left while its token was being checked
          return;
        }
        const limit = this.#subscribers;
        if (!limit.tryAcquire()) {
          admitted?.release();
          call.emit("error", {
            code: grpc.status.RESOURCE_EXHAUSTED,
            details: `This instance already serves ${limit.max} subscribers (max-subscribers)`,
          });
          return;
        }
        let removed = false;
        let unsubscribe = () => {};
        // Written but not yet taken by the client (a write completes when HTTP/2 flow control lets
        // it out): bounded per stream, and across streams by the instance's budget, which a stream
        // gives back as its writes complete or, at the latest, when it closes.
        let queued = 0;
        let queuedBytes = 0;
        let budgeted = 0;
        const budget = this.#queuedBytes;
        let cut = false;
        const leave = () => {
          unsubscribe();
          if (removed) return;
          removed = true;
          limit.release();
        };
        let expiry: ReturnType<typeof setTimeout> | undefined;
        const closed = () => {
          leave();
          admitted?.release();
          clearTimeout(expiry);
          budget.release(budgeted);
          budgeted = 0;
        };
        if (!this.#streams.add(call as never, closed)) {
          closed();
          call.emit("error", { code: grpc.status.UNAVAILABLE, details: "Server is shutting down" });
          return;
        }
        if (admitted?.expiresAtMs !== undefined) {
          // The stream lives as long as its token: the client subscribes again with a fresh one.
          // `closed` releases whatever the stream holds by then (hub, directory, limits).
          const endWithToken = () => {
            const left = admitted.expiresAtMs! - Date.now();
            if (left > 0) {
              expiry = setTimeout(endWithToken, Math.min(left, MAX_TIMER_MS));
              return false;
            }
            closed();
            call.emit("error", {
              code: grpc.status.UNAUTHENTICATED,
              details: "token expired: subscribe again",
            });
            return true;
          };
          // A token accepted within the clock skew but already past its exp: nothing more is taken.
          if (endWithToken()) return;
        }
        const cutOff = (why: string) => {
          cut = true;
          leave();
          this.#onDropped();
          call.emit("error", {
            code: grpc.status.RESOURCE_EXHAUSTED,
            details: `subscriber too slow: ${queued} notifications (${queuedBytes} bytes) not yet read${why}`,
          });
          // The trailers wait behind the queued data; a client that does not read gets a reset.
          setTimeout(() => {
            if (!call.writableFinished && !call.destroyed) resetStream(call, ENHANCE_YOUR_CALM);
          }, CUT_GRACE_MS);
        };
        const recipient = call.request.recipient;
        unsubscribe = this.hub.subscribe(recipient, (bytes) => {
          if (cut || call.cancelled || call.destroyed) return false;
          if (queued + 1 > this.#queue.messages || queuedBytes + bytes.length > this.#queue.bytes) {
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
          call.write(bytes, () => {
            queued--;
            queuedBytes -= bytes.length;
            if (taken && budgeted >= bytes.length) {
              budgeted -= bytes.length;
              budget.release(bytes.length);
            }
          });
          return true;
        });
        // Response headers are the "ready" signal: sent once a Send to any instance reaches this
        // stream (its recipient is in the directory), so a client can send right after them.
        void this.#holders.ready(recipient).then(() => {
          if (!call.cancelled && !call.destroyed) call.sendMetadata(new grpc.Metadata());
        });
      },
    };
  }
}
