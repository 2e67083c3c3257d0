/**
 * Loads the service's protos once, for server and clients: notification.v1 (the client package's,
 * from the one loader both sides use), cluster.v1 (internal) and the standard grpc.health.v1.
 */
// The HTTP/2 crash guard and GOAWAY-free closing, in every process that speaks gRPC (see the package).
import "@notification-server/http2-guard";
import { type Notification, notificationClient } from "@notification-server/client";
import * as grpc from "@grpc/grpc-js";
import { loadSync, type PackageDefinition } from "@grpc/proto-loader";
import { Buffer } from "node:buffer";
import { join } from "node:path";

/**
 * The `proto/` directory (health and cluster; notification.proto is the client package's, embedded
 * in it); `deno compile` embeds it with `--include proto`.
 */
export const PROTO_DIR = join(import.meta.dirname ?? ".", "..", "..", "proto");

let cached: PackageDefinition | undefined;

/** The package definition for health and cluster. */
function packageDefinition(): PackageDefinition {
  cached ??= loadSync(["grpc/health/v1/health.proto", "cluster.proto"], {
    includeDirs: [PROTO_DIR],
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return cached;
}

type Loaded = {
  notification: { cluster: { v1: { Cluster: grpc.ServiceClientConstructor } } };
  grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
};

type Services = {
  Notification: grpc.ServiceClientConstructor;
  Health: grpc.ServiceClientConstructor;
  Cluster: grpc.ServiceClientConstructor;
};
let constructors: Services | undefined;

/** Service constructors (clients) and definitions (servers), built once. */
export function services(): Services {
  if (!constructors) {
    const loaded = grpc.loadPackageDefinition(packageDefinition()) as unknown as Loaded;
    constructors = {
      Notification: notificationClient(),
      Health: loaded.grpc.health.v1.Health,
      Cluster: loaded.notification.cluster.v1.Cluster,
    };
  }
  return constructors;
}

/** Encodes a Notification message once, for writing to many Subscribe streams. */
export function encodeNotification(notification: object): Uint8Array {
  return services().Notification.service.Subscribe.responseSerialize(notification);
}

const INVALID_UTF8 = Symbol("invalidUtf8");

/** Set by the server's request decoder: the first string field whose bytes were not UTF-8. */
export function invalidUtf8(request: object): string | undefined {
  const field = (request as { [INVALID_UTF8]?: string })[INVALID_UTF8];
  return field === undefined ? undefined : `${field} is not valid UTF-8`;
}

/** String fields by number, and map fields as nested specs (a map entry is key 1, value 2). */
interface StringFields {
  [field: number]: string | StringFields;
}
const SEND_STRINGS: StringFields = {
  1: "recipient",
  2: "title",
  3: "body",
  4: { 1: "data key", 2: "data value" },
};
const SUBSCRIBE_STRINGS: StringFields = { 1: "recipient" };
const NOTIFICATION_STRINGS: StringFields = {
  1: "id",
  2: "recipient",
  3: "title",
  4: "body",
  5: { 1: "data key", 2: "data value" },
};

/**
 * A Notification's encoded bytes (as a peer forwards them), decoded; or what is wrong with them:
 * not the message, or a string field that is not valid UTF-8 (the wire bytes are checked, since
 * protobufjs would decode them to U+FFFD).
 */
export function decodeNotification(bytes: Uint8Array): Notification | string {
  let notification: Notification;
  try {
    notification = services().Notification.service.Subscribe.responseDeserialize(
      Buffer.from(bytes),
    ) as Notification;
  } catch {
    return "it is not a notification.v1.Notification message";
  }
  const bad = firstInvalidUtf8(bytes, NOTIFICATION_STRINGS);
  return bad ? `${bad} is not valid UTF-8` : notification;
}
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The first string field in `bytes` that is not valid UTF-8. protobufjs decodes such bytes to
 * U+FFFD, so different raw recipients would collide on one name; the wire bytes are checked instead.
 * A message too broken to walk is left for protobufjs to reject.
 */
function firstInvalidUtf8(bytes: Uint8Array, fields: StringFields): string | undefined {
  let at = 0;
  const varint = (): number => {
    let value = 0;
    for (let shift = 0; at < bytes.length && shift < 35; shift += 7) {
      const b = bytes[at++];
      value += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return value;
    }
    throw new RangeError("bad varint");
  };
  try {
    while (at < bytes.length) {
      const tag = varint();
      const wire = tag % 8;
      const spec = fields[Math.floor(tag / 8)];
      if (wire === 0) varint();
      else if (wire === 1) at += 8;
      else if (wire === 5) at += 4;
      else if (wire === 2) {
        const length = varint();
        const value = bytes.subarray(at, at + length);
        at += length;
        if (typeof spec === "string") {
          try {
            strictUtf8.decode(value);
          } catch {
            return spec;
          }
        } else if (spec) {
          const nested = firstInvalidUtf8(value, spec);
          if (nested) return nested;
        }
      } else return undefined;
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/**
 * The NotificationService definition for servers: requests are checked for invalid UTF-8 (see
 * {@link invalidUtf8}) and Subscribe writes accept bytes already encoded by {@link encodeNotification}.
 */
export function notificationServerDefinition(): grpc.ServiceDefinition {
  const service = services().Notification.service;
  const checked = (
    method: grpc.MethodDefinition<object, object>,
    strings: StringFields,
  ): grpc.MethodDefinition<object, object> => ({
    ...method,
    requestDeserialize: (bytes: Buffer) => {
      const request = method.requestDeserialize(bytes) as Record<symbol, string>;
      const bad = firstInvalidUtf8(bytes, strings);
      if (bad) request[INVALID_UTF8] = bad;
      return request;
    },
  });
  const subscribe = checked(service.Subscribe, SUBSCRIBE_STRINGS);
  const serialize = subscribe.responseSerialize;
  return {
    ...service,
    Send: checked(service.Send, SEND_STRINGS),
    Subscribe: {
      ...subscribe,
      responseSerialize: (value: object) =>
        value instanceof Uint8Array ? Buffer.from(value) : serialize(value),
    },
  };
}
