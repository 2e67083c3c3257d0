/**
 * The notification core: Send, SendMany and Subscribe as functions of a caller and a request,
 * whatever the transport (serving/grpc_notifications.ts adapts it to grpc-js, web/ to Connect,
 * gRPC-Web and SSE). It checks, in this order: the caller
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
import {
  type Content,
  contentProblem,
  recipientProblem,
  type SendInput,
  type SendManyInput,
  sendProblem,
} from "./validate.ts";
import { onceKey } from "./once.ts";

export type { Caller, Failure, SendInput, SendManyInput, SubscribeInput, SubscriberOutput };

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

/** One SendMany result as SendResponse carries it: a receipt, or its failure in `code` and `error`. */
export function sendManyResult(result: Receipt | Failure): Receipt & { code: number; error: string } {
  if ("code" in result) {
    return {
      id: "",
      createdAtMs: 0,
      delivered: 0,
      instanceId: "",
      position: 0,
      epoch: "",
      stored: false,
      code: result.code,
      error: result.details,
    };
  }
  return { ...result, code: 0, error: "" };
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
  /** Recipients one SendMany may name (`max-recipients-per-send`). @default 1000 */
  maxRecipientsPerSend?: number;
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
  readonly #maxRecipients: number;

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
    this.#maxRecipients = options.maxRecipientsPerSend ?? DEFAULTS.maxRecipientsPerSend;
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
    return await this.#sendTo(request.recipient, request);
  }

  /**
   * One notification to each of `request.recipients` (a repeated one once), as one call for the
   * caller policy: a result per entry, in order; a recipient that is not valid or not stored fails
   * alone. All copies start in one turn, so the mesh forwards them in one batch per peer and the
   * broker stores them in parallel.
   */
  async sendMany(caller: Caller, request: SendManyInput): Promise<(Receipt | Failure)[] | Failure> {
    const refused = this.#callers?.checksSends ? await this.#callers.send(caller) : undefined;
    if (refused) return { code: refused.code, details: refused.details };
    const count = request.recipients.length;
    const problem = invalidUtf8(request) ??
      (count === 0 ? "recipients is required" : undefined) ??
      (count > this.#maxRecipients
        ? `${count} recipients; the limit is ${this.#maxRecipients} (max-recipients-per-send)`
        : undefined) ??
      contentProblem(request);
    if (problem) return { code: Status.INVALID_ARGUMENT, details: problem };
    const results = new Map<string, Promise<Receipt | Failure>>();
    for (const recipient of request.recipients) {
      if (results.has(recipient)) continue;
      const bad = recipientProblem(recipient);
      results.set(
        recipient,
        bad
          ? Promise.resolve({ code: Status.INVALID_ARGUMENT, details: bad })
          : this.#sendTo(recipient, request),
      );
    }
    return await Promise.all(request.recipients.map((recipient) => results.get(recipient)!));
  }

  /** One copy, checked already: encoded once for every stream and peer (the serializer passes bytes through). */
  async #sendTo(recipient: string, content: Content): Promise<Receipt | Failure> {
    const id = crypto.randomUUID();
    const createdAtMs = Date.now();
    const { title, body, data, idempotencyKey } = content;
    const bytes = encodeNotification({ id, recipient, title, body, data, createdAtMs });
    const once = idempotencyKey ? { key: onceKey(idempotencyKey, recipient), id, createdAtMs } : undefined;
    const sent = await this.#delivery.send(recipient, bytes, once);
    if ("unavailable" in sent) {
      this.#onUnavailable();
      return { code: Status.UNAVAILABLE, details: sent.unavailable };
    }
    if (!sent.first) this.#onSent();
    const { delivered, position, epoch, stored, first } = sent;
    return {
      id: first?.id ?? id,
      createdAtMs: first?.createdAtMs ?? createdAtMs,
      delivered,
      instanceId: this.#instanceId(),
      position,
      epoch,
      stored,
    };
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
