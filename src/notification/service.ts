/**
 * The notification core: Send and Subscribe as functions of a caller and a request, whatever the
 * transport (serving/grpc_notifications.ts adapts it to grpc-js). It checks, in this order: the caller
 * policy (auth/callers.ts: UNAUTHENTICATED, PERMISSION_DENIED, or RESOURCE_EXHAUSTED for the
 * caller's own limits), then the request (INVALID_ARGUMENT); Subscribe then the rest of
 * subscriber_stream.ts. Delivery is the one seam below it (delivery.ts): the mesh or the broker,
 * chosen before the core is made. Answers are values with status codes; nothing here throws.
 */
import { type Limit, LocalLimit } from "../_util/limits.ts";
import { type Failure, Status } from "../_util/status.ts";
import { DEFAULTS } from "../config/defaults.ts";
import type { Caller, CallerPolicy } from "../auth/callers.ts";
import { encodeNotification, invalidUtf8 } from "./codec.ts";
import type { Delivery } from "./delivery.ts";
import { OpenStreams } from "../_util/open_streams.ts";
import { serveSubscriber, type SubscribeInput, type SubscriberOutput } from "./subscriber_stream.ts";
import { type SendInput, sendProblem } from "./validate.ts";

export type { Caller, Failure, SubscribeInput, SubscriberOutput };

/** What a Send answers (SendResponse). */
export interface Receipt {
  id: string;
  createdAtMs: number;
  /** Streams that took it (see delivery.ts's Sent). */
  delivered: number;
  instanceId: string;
  position: number;
  epoch: string;
  stored: boolean;
}

/** Options for {@link NotificationCore}. */
export interface NotificationCoreOptions {
  /** Where Sends go and streams are fed from: the mesh or the broker. */
  delivery: Delivery;
  /** Reported in SendResponse.instance_id ("" until the advertised address is known). */
  instanceId: () => string;
  /** Concurrent Subscribe streams across the instance (`max-subscribers`). @default 10000 here */
  subscribers?: Limit;
  /** Told of every accepted Send (for metrics). */
  onSent?: () => void;
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

/** One serving thread's Send and Subscribe. */
export class NotificationCore {
  readonly #delivery: Delivery;
  readonly #instanceId: () => string;
  readonly #streams = new OpenStreams();
  #open = 0;
  readonly #subscribers: Limit;
  readonly #onSent: () => void;
  readonly #onUnavailable: () => void;
  readonly #queue: { messages: number; bytes: number };
  readonly #queuedBytes: Limit;
  readonly #onDropped: () => void;
  readonly #callers?: CallerPolicy;

  constructor(options: NotificationCoreOptions) {
    this.#delivery = options.delivery;
    this.#instanceId = options.instanceId;
    this.#subscribers = options.subscribers ?? new LocalLimit(DEFAULTS.maxSubscribers);
    this.#onSent = options.onSent ?? (() => {});
    this.#onUnavailable = options.onUnavailable ?? (() => {});
    this.#queue = options.subscriberQueue ??
      { messages: DEFAULTS.subscriberQueue, bytes: DEFAULTS.subscriberQueueBytes };
    this.#queuedBytes = options.queuedBytes ?? new LocalLimit(DEFAULTS.subscriberQueueTotalBytes);
    this.#onDropped = options.onDropped ?? (() => {});
    this.#callers = options.callers;
  }

  /** Subscribe streams open and fed on this thread. */
  get subscribers(): number {
    return this.#open;
  }

  /** Ends every Subscribe stream with OK; new ones are refused with UNAVAILABLE. */
  endSubscriptions(): void {
    this.#streams.endAll();
  }

  /** Stores (broker) and delivers one notification; what became of it, or why not. */
  async send(caller: Caller, request: SendInput): Promise<Receipt | Failure> {
    const refused = this.#callers?.checksSends ? await this.#callers.send(caller) : undefined;
    if (refused) return { code: refused.code, details: refused.details };
    const problem = invalidUtf8(request) ?? sendProblem(request);
    if (problem) return { code: Status.INVALID_ARGUMENT, details: problem };
    const id = crypto.randomUUID();
    const createdAtMs = Date.now();
    const { recipient, title, body, data } = request;
    // Encoded once for every stream here and on every peer (the Subscribe serializer passes bytes
    // through).
    const bytes = encodeNotification({ id, recipient, title, body, data, createdAtMs });
    const sent = await this.#delivery.send(recipient, bytes);
    if ("unavailable" in sent) {
      this.#onUnavailable();
      return { code: Status.UNAVAILABLE, details: sent.unavailable };
    }
    this.#onSent();
    const { delivered, position, epoch, stored } = sent;
    return { id, createdAtMs, delivered, instanceId: this.#instanceId(), position, epoch, stored };
  }

  /** Serves one Subscribe stream into `output` until it ends. */
  subscribe(caller: Caller, request: SubscribeInput, output: SubscriberOutput): Promise<void> {
    return serveSubscriber(caller, request, output, {
      delivery: this.#delivery,
      streams: this.#streams,
      subscribers: this.#subscribers,
      queuedBytes: this.#queuedBytes,
      queue: this.#queue,
      callers: this.#callers,
      onDropped: this.#onDropped,
      onCount: (delta) => (this.#open += delta),
    });
  }
}
