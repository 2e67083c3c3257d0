/**
 * NotificationService handlers. They answer with gRPC status codes and never throw:
 * INVALID_ARGUMENT for bad input, RESOURCE_EXHAUSTED past `maxSubscribers`, UNAVAILABLE once
 * shutdown has begun.
 */
import * as grpc from "@grpc/grpc-js";
import { StreamTracker } from "../streams.ts";
import { encodeNotification, invalidUtf8 } from "../protos.ts";
import { Hub, type Notification } from "./hub.ts";
import { recipientProblem, type SendInput, sendProblem } from "./validate.ts";

/** Bytes of notifications written to subscribers before yielding to other calls. */
const BYTES_PER_TURN = 64 * 1024;

/** Options for {@link NotificationService}. */
export interface NotificationServiceOptions {
  /** Reported in SendResponse.instance_id. */
  instanceId: string;
  /** @default 10000 */
  maxSubscribers?: number;
  /** Told of every accepted Send and how many streams it reached (for metrics). */
  onSent?: (delivered: number) => void;
  /**
   * Per Subscribe stream: notifications written but not yet taken by the client, in count and
   * bytes. Past either, the stream is ended with RESOURCE_EXHAUSTED ("subscriber too slow") and the
   * notification is not counted as delivered. @default 1000 notifications, 4 MiB
   */
  subscriberQueue?: { messages: number; bytes: number };
  /** Told when a notification is dropped because its subscriber was too slow (for metrics). */
  onDropped?: () => void;
}

/** Send/Subscribe over a {@link Hub}. */
export class NotificationService {
  readonly hub = new Hub<Uint8Array>();
  readonly #streams = new StreamTracker();
  /** Reported in SendResponse.instance_id; set once the advertised address is known. */
  instanceId: string;
  readonly #maxSubscribers: number;
  readonly #onSent: (delivered: number) => void;
  readonly #queue: { messages: number; bytes: number };
  readonly #onDropped: () => void;

  constructor(options: NotificationServiceOptions) {
    this.instanceId = options.instanceId;
    this.#maxSubscribers = options.maxSubscribers ?? 10_000;
    this.#onSent = options.onSent ?? (() => {});
    this.#queue = options.subscriberQueue ?? { messages: 1_000, bytes: 4 * 1024 * 1024 };
    this.#onDropped = options.onDropped ?? (() => {});
  }

  /** Ends every Subscribe stream with OK; new ones are refused with UNAVAILABLE. */
  endSubscriptions(): void {
    this.#streams.endAll();
  }

  handlers(): grpc.UntypedServiceImplementation {
    return {
      send: (call: grpc.ServerUnaryCall<SendInput, unknown>, callback: grpc.sendUnaryData<unknown>) => {
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
        // Encoded once for every stream (the Subscribe serializer passes bytes through), and
        // handed out about 256 KB per turn of the event loop so other calls get in between.
        const bytes = encodeNotification(notification);
        const slice = Math.max(1, Math.min(64, Math.floor(BYTES_PER_TURN / bytes.length)));
        void this.hub.publish(notification.recipient, bytes, slice).then((delivered) => {
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
      subscribe: (call: grpc.ServerWritableStream<{ recipient: string }, Uint8Array>) => {
        const problem = invalidUtf8(call.request) ?? recipientProblem(call.request.recipient);
        if (problem) {
          call.emit("error", { code: grpc.status.INVALID_ARGUMENT, details: problem });
          return;
        }
        if (this.hub.size >= this.#maxSubscribers) {
          call.emit("error", {
            code: grpc.status.RESOURCE_EXHAUSTED,
            details: `This instance already serves ${this.hub.size} subscribers (max-subscribers)`,
          });
          return;
        }
        let unsubscribe = () => {};
        if (!this.#streams.add(call as never, () => unsubscribe())) {
          call.emit("error", { code: grpc.status.UNAVAILABLE, details: "Server is shutting down" });
          return;
        }
        // Written but not yet taken by the client (a write completes when HTTP/2 flow control lets
        // it out): bounded, so one subscriber that stops reading cannot hold unbounded memory.
        let queued = 0;
        let queuedBytes = 0;
        let cut = false;
        unsubscribe = this.hub.subscribe(call.request.recipient, (bytes) => {
          if (cut || call.cancelled || call.destroyed) return false;
          if (queued + 1 > this.#queue.messages || queuedBytes + bytes.length > this.#queue.bytes) {
            cut = true;
            unsubscribe();
            this.#onDropped();
            call.emit("error", {
              code: grpc.status.RESOURCE_EXHAUSTED,
              details: `subscriber too slow: ${queued} notifications (${queuedBytes} bytes) not yet read`,
            });
            return false;
          }
          queued++;
          queuedBytes += bytes.length;
          call.write(bytes, () => {
            queued--;
            queuedBytes -= bytes.length;
          });
          return true;
        });
      },
    };
  }
}
