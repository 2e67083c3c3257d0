/**
 * The client side of `notification.v1.NotificationService` (proto/notification.proto, which the
 * service serves too, embedded in notification_proto.ts): the message a subscriber receives and the
 * generated client constructor.
 */
import "@notification-server/http2-guard";
import "@notification-server/http2-guard";
import * as grpc from "@grpc/grpc-js";
import { ROUND_ROBIN_SERVICE_CONFIG } from "@notification-server/registry";
import { fromJSON } from "@grpc/proto-loader";
import protobuf from "protobufjs";
import { NOTIFICATION_PROTO } from "./notification_proto.ts";

/** A delivered notification, as `Subscribe` streams it. */
export interface Notification {
  /** Unique id, set by the instance that took the Send. */
  id: string;
  /** Whose notification it is. */
  recipient: string;
  /** Short text. */
  title: string;
  /** Longer text. */
  body: string;
  /** Application key/value pairs. */
  data: Record<string, string>;
  /** When the Send was accepted, in epoch milliseconds. */
  createdAtMs: number;
  /**
   * With a broker: where it is stored (0 without one); a subscriber resumes after the last it got
   * (SubscribeRequest.recover). Received notifications always have it.
   */
  position?: number;
  /** The epoch `position` belongs to ("" without a broker). */
  epoch?: string;
}

/** gRPC call metadata: grpc-js's `Metadata`, which every grpc-js call takes. */
export type CallMetadata = grpc.Metadata;

/** How a channel dials: grpc-js credentials (`grpc.credentials.createSsl(...)` for TLS). */
export type ChannelCredentials = grpc.ChannelCredentials;

/** grpc-js channel options (e.g. `grpc.ssl_target_name_override`). */
export type ChannelOptions = grpc.ChannelOptions;

/**
 * Call metadata carrying `token` as `authorization: Bearer <token>` (what a service with `auth`
 * requires), or empty metadata without one. grpc-js sends call credentials over TLS only, so
 * metadata is the way that works on plaintext channels too.
 */
export function bearer(token?: string): CallMetadata {
  const metadata = new grpc.Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

/** A generated client class (grpc-js `ServiceClientConstructor`): `new` it with a target. */
export type NotificationClientConstructor = grpc.ServiceClientConstructor;
/**
 * A NotificationService client (a grpc-js `Client`): `send(request, metadata, callback)`,
 * `subscribe(request, metadata)`, and grpc-js's own methods.
 */
export interface NotificationServiceClient {
  /** Closes the channel. */
  close(): void;
  /** The generated methods and grpc-js's `Client` methods. */
  [method: string]: CallableFunction;
}

let client: NotificationClientConstructor | undefined;

/** The `NotificationService` client constructor, loaded once. */
export function notificationClient(): NotificationClientConstructor {
  if (!client) {
    // Field names in camelCase, as proto-loader's loadSync gives them with keepCase: false.
    const { root } = protobuf.parse(NOTIFICATION_PROTO, { keepCase: false });
    const definition = fromJSON(root.toJSON(), {
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const loaded = grpc.loadPackageDefinition(definition) as unknown as {
      notification: { v1: { NotificationService: grpc.ServiceClientConstructor } };
    };
    client = loaded.notification.v1.NotificationService;
  }
  return client;
}

/** How {@link dialNotifications} dials: plaintext unless `credentials` say otherwise. */
export interface DialOptions {
  /** TLS or other credentials. @default plaintext */
  credentials?: ChannelCredentials;
  /** grpc-js channel options, besides the round-robin service config set here. */
  channelOptions?: ChannelOptions;
}

/**
 * A NotificationService client for `target` (`etcd:///<name>` through the resolver, or an address),
 * round robin over the instances with UNAVAILABLE retried on another: the one way our clients
 * (the CLI's send, subscribe()) dial the service.
 */
export function dialNotifications(
  target: string,
  options: DialOptions = {},
): NotificationServiceClient {
  const Client = notificationClient();
  return new Client(target, options.credentials ?? grpc.credentials.createInsecure(), {
    ...options.channelOptions,
    "grpc.service_config": ROUND_ROBIN_SERVICE_CONFIG,
  }) as unknown as grpc.Client & Record<string, CallableFunction>;
}

/**
 * Response header of a Subscribe with `recover` (notification.proto, SubscribeRequest): whether the
 * stream starts with nothing missed, "true" or "false".
 */
export const RECOVERED_HEADER = "notification-recovered";
/** Response header of a Subscribe with a broker: the epoch the stream's positions belong to. */
export const EPOCH_HEADER = "notification-epoch";
