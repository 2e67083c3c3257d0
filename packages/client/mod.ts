/**
 * The client side of notification-server: dial it (by address, or as `etcd:///<name>` through the
 * registry, round-robin over its instances), call Send, and {@link subscribe} to a recipient with a
 * subscription that outlives instances (hand-over before an instance stops, re-subscription with
 * backoff after a fault). The service's contract is `proto/notification.proto`, also embedded here
 * ({@link NOTIFICATION_PROTO}) so that the client works wherever it is loaded from.
 *
 * @example Follow one recipient's notifications
 * ```ts
 * import { subscribe } from "@notification-server/client";
 *
 * for await (const n of subscribe({
 *   etcd: { endpoints: ["localhost:2379"], dialTimeoutMs: 5_000 },
 *   name: "notification-server",
 *   recipient: "alice",
 * })) {
 *   console.log(n.title);
 * }
 * ```
 *
 * @module
 */
export { subscribe, type SubscribeOptions } from "./src/subscribe.ts";
export {
  bearer,
  type CallMetadata,
  type ChannelCredentials,
  type ChannelOptions,
  dialNotifications,
  type DialOptions,
  EPOCH_HEADER,
  type Notification,
  notificationClient,
  type NotificationClientConstructor,
  type NotificationServiceClient,
  RECOVERED_HEADER,
} from "./src/notification_client.ts";
export { NOTIFICATION_PROTO } from "./src/notification_proto.ts";
