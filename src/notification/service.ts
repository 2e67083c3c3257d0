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
}

/** Send/Subscribe over a {@link Hub}. */
export class NotificationService {
  readonly hub = new Hub<Uint8Array>();
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
        void this.hub.publish(notification.recipient, bytes, slice).then((delivered) =>
          callback(null, {
            id: notification.id,
            createdAtMs: notification.createdAtMs,
            delivered,
            instanceId: this.instanceId,
          })
        );
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
        unsubscribe = this.hub.subscribe(call.request.recipient, (bytes) => {
          if (call.cancelled || call.destroyed) return false;
          call.write(bytes);
          return true;
        });
      },
    };
  }
}
