/**
 * NotificationService handlers. They answer with gRPC status codes and never throw. Subscribe checks,
 * in this order: the caller policy (auth/callers.ts: UNAUTHENTICATED, PERMISSION_DENIED, or
 * RESOURCE_EXHAUSTED for the caller's own limits), the request (INVALID_ARGUMENT), a recovery asked of
 * an instance without a broker (FAILED_PRECONDITION), a client that left meanwhile, the instance's
 * `maxSubscribers` (RESOURCE_EXHAUSTED), and shutdown (UNAVAILABLE); once open, a stream ends with
 * RESOURCE_EXHAUSTED when its queue is full, UNAUTHENTICATED when its token expires, and UNAVAILABLE
 * when its feed cannot go on (subscriber_stream.ts). Send checks the caller policy, then the request;
 * with a broker it answers UNAVAILABLE for what was not stored.
 */
import * as grpc from "@grpc/grpc-js";
import { type Limit, LocalLimit } from "../_util/limits.ts";
import { DEFAULTS } from "../config/defaults.ts";
import type { CallerPolicy } from "../auth/callers.ts";
import { StreamTracker } from "../transport/streams.ts";
import { encodeNotification, invalidUtf8 } from "./codec.ts";
import type { Delivery } from "./delivery.ts";
import { Hub, type Notification } from "./hub.ts";
import { MeshDelivery } from "./mesh_delivery.ts";
import { Holders, type Reach, type Routing } from "./routing.ts";
import { serveSubscriber, type SubscribeInput } from "./subscriber_stream.ts";
import { type SendInput, sendProblem } from "./validate.ts";

/** Options for {@link NotificationService}. */
export interface NotificationServiceOptions {
  /** Reported in SendResponse.instance_id. */
  instanceId: string;
  /** Concurrent Subscribe streams across the instance (`max-subscribers`). @default 10000 here */
  subscribers?: Limit;
  /** Told of every accepted Send and how many streams it reached (for metrics). */
  onSent?: (delivered: number) => void;
  /** Told of every Send refused as not stored (the broker unreachable; for metrics). */
  onUnavailable?: () => void;
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

/**
 * Send/Subscribe over this thread's {@link Delivery}: the mesh (its {@link Hub}, and beyond this
 * thread through {@link Routing}) unless a broker is set.
 */
export class NotificationService {
  readonly hub = new Hub<Uint8Array>();
  readonly #holders = new Holders<typeof HERE>();
  readonly #mesh = new MeshDelivery(this.hub, this.#holders);
  #delivery: Delivery = this.#mesh;
  readonly #streams = new StreamTracker();
  #open = 0;
  /** Reported in SendResponse.instance_id; set once the advertised address is known. */
  instanceId: string;
  readonly #subscribers: Limit;
  readonly #onSent: (delivered: number) => void;
  readonly #onUnavailable: () => void;
  readonly #queue: { messages: number; bytes: number };
  readonly #queuedBytes: Limit;
  readonly #onDropped: () => void;
  readonly #callers?: CallerPolicy;

  constructor(options: NotificationServiceOptions) {
    this.instanceId = options.instanceId;
    this.#subscribers = options.subscribers ?? new LocalLimit(DEFAULTS.maxSubscribers);
    this.#onSent = options.onSent ?? (() => {});
    this.#onUnavailable = options.onUnavailable ?? (() => {});
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
   * The mesh's next hop from now on (the worker pool, or the cluster on one thread); recipients that
   * already have subscribers are announced to it. Set once the instance id is known.
   */
  set routing(next: Routing) {
    this.#holders.next = next;
  }

  /** Delivers through a broker instead of the mesh; set before the first call is served. */
  set delivery(delivery: Delivery) {
    this.#delivery = delivery;
  }

  /** Subscribe streams open and fed on this thread. */
  get subscribers(): number {
    return this.#open;
  }

  /**
   * The mesh's delivery path for what arrives from beyond this thread (a peer's Forward, the worker
   * pool): this thread's subscribers, then the next hop as far as `reach` says (routing.ts).
   */
  deliver(recipient: string, bytes: Uint8Array, reach?: Reach): Promise<number> {
    return this.#mesh.deliver(recipient, bytes, reach);
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
        // bytes through).
        const sent = await this.#delivery.send(notification.recipient, encodeNotification(notification));
        if ("unavailable" in sent) {
          this.#onUnavailable();
          callback({ code: grpc.status.UNAVAILABLE, details: sent.unavailable });
          return;
        }
        this.#onSent(sent.delivered);
        callback(null, {
          id: notification.id,
          createdAtMs: notification.createdAtMs,
          delivered: sent.delivered,
          instanceId: this.instanceId,
          position: sent.position,
          epoch: sent.epoch,
          stored: sent.stored,
        });
      },
      // Written with bytes that encodeNotification made; the server's serializer passes them through.
      subscribe: (call: grpc.ServerWritableStream<SubscribeInput, Uint8Array>) =>
        serveSubscriber(call, {
          delivery: this.#delivery,
          streams: this.#streams,
          subscribers: this.#subscribers,
          queuedBytes: this.#queuedBytes,
          queue: this.#queue,
          callers: this.#callers,
          onDropped: this.#onDropped,
          onCount: (delta) => (this.#open += delta),
        }),
    };
  }
}
