/**
 * The client side of `notification.v1.NotificationService` (proto/notification.proto, which the
 * service serves too): the message a subscriber receives and the generated client constructor.
 */
import "./http2_guard.ts";
import "./http2_close.ts";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { join } from "node:path";

/** The package's `proto/` directory (`deno compile` embeds it with `--include`). */
export const REGISTRY_PROTO_DIR: string = join(import.meta.dirname ?? ".", "..", "proto");

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
}

let client: grpc.ServiceClientConstructor | undefined;

/** The `NotificationService` client constructor, loaded once. */
export function notificationClient(): grpc.ServiceClientConstructor {
  if (!client) {
    const definition = loadSync("notification.proto", {
      includeDirs: [REGISTRY_PROTO_DIR],
      keepCase: false,
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
