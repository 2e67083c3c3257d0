/**
 * The notification's format on the wire, beyond what protobufjs does: a notification is encoded
 * once for every stream and peer it goes to, and the string fields of requests and forwarded
 * notifications are checked for invalid UTF-8 on the wire bytes (protobufjs would decode them to
 * U+FFFD). The field numbers below are notification.proto's (packages/client/proto).
 */
import { Buffer } from "node:buffer";
import type { Notification } from "@notification-server/client";
import { services } from "../transport/protos.ts";

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
  5: "idempotency_key",
};
const SEND_MANY_STRINGS: StringFields = { ...SEND_STRINGS, 1: "recipients" };
const SUBSCRIBE_STRINGS: StringFields = { 1: "recipient" };
const REQUEST_STRINGS = { Send: SEND_STRINGS, SendMany: SEND_MANY_STRINGS, Subscribe: SUBSCRIBE_STRINGS };
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
 * A request decoder that also marks the first string field of `request`'s wire bytes that is not
 * UTF-8 (see {@link invalidUtf8}).
 */
export function checkedDecoder(
  method: keyof typeof REQUEST_STRINGS,
  decode: (bytes: Buffer) => object,
): (bytes: Buffer) => object {
  const strings = REQUEST_STRINGS[method];
  return (bytes) => {
    const request = decode(bytes) as Record<symbol, string>;
    const bad = firstInvalidUtf8(bytes, strings);
    if (bad) request[INVALID_UTF8] = bad;
    return request;
  };
}
