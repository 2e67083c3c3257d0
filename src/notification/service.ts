/**
 * NotificationService handlers. They answer with gRPC status codes and never throw:
 * INVALID_ARGUMENT for bad input, RESOURCE_EXHAUSTED past `maxSubscribers`, UNAVAILABLE once
 * shutdown has begun.
 */
import * as grpc from "@grpc/grpc-js";
import { StreamTracker } from "../streams.ts";
import { Hub, type Notification } from "./hub.ts";
import { recipientProblem, type SendInput, sendProblem } from "./validate.ts";

/** Options for {@link NotificationService}. */
export interface NotificationServiceOptions {
  /** Reported in SendResponse.instance_id. */
  instanceId: string;
  /** @default 10000 */
  maxSubscribers?: number;
}

/** Send/Subscribe over a {@link Hub}. */
export class NotificationService {
  readonly hub = new Hub();
  readonly #streams = new StreamTracker();
  /** Reported in SendResponse.instance_id; set once the advertised address is known. */
  instanceId: string;
  readonly #maxSubscribers: number;

  constructor(options: NotificationServiceOptions) {
    this.instanceId = options.instanceId;
    this.#maxSubscribers = options.maxSubscribers ?? 10_000;
  }

  /** Ends every Subscribe stream with OK; new ones are refused with UNAVAILABLE. */
  endSubscriptions(): void {
    this.#streams.endAll();
  }

  handlers(): grpc.UntypedServiceImplementation {
    return {
      send: (call: grpc.ServerUnaryCall<SendInput, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const req = call.request;
        const problem = sendProblem(req);
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
        const delivered = this.hub.publish(notification);
        callback(null, {
          id: notification.id,
          createdAtMs: notification.createdAtMs,
          delivered,
          instanceId: this.instanceId,
        });
      },
      subscribe: (call: grpc.ServerWritableStream<{ recipient: string }, Notification>) => {
        const problem = recipientProblem(call.request.recipient);
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
        unsubscribe = this.hub.subscribe(call.request.recipient, (n) => call.write(n));
      },
    };
  }
}
