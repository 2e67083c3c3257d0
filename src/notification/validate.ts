/** Input limits for Send and Subscribe (documented in the README), and for what peers forward. */
import { decodeNotification } from "./codec.ts";

/** The limits, in UTF-8 bytes where the field is text. */
export const LIMITS = {
  recipientBytes: 256,
  titleBytes: 1024,
  bodyBytes: 64 * 1024,
  dataEntries: 64,
  dataKeyBytes: 128,
  dataValueBytes: 4096,
  idempotencyKeyBytes: 128,
} as const;

/** What one notification says, whoever it goes to. */
export interface Content {
  title: string;
  body: string;
  data: Record<string, string>;
  /** SendRequest.idempotency_key ("" or absent: none). */
  idempotencyKey?: string;
}

/** A Send request as proto-loader hands it over. */
export interface SendInput extends Content {
  recipient: string;
}

/** A SendMany request. */
export interface SendManyInput extends Content {
  recipients: string[];
}

const encoder = new TextEncoder();
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

function bytes(text: string): number {
  return encoder.encode(text).length;
}

/** Returns the problem with a recipient, or undefined when it is valid. */
export function recipientProblem(recipient: string): string | undefined {
  if (recipient === "") return "recipient is required";
  if (bytes(recipient) > LIMITS.recipientBytes) {
    return `recipient is ${bytes(recipient)} bytes; the limit is ${LIMITS.recipientBytes}`;
  }
  if (CONTROL.test(recipient)) return "recipient must not contain control characters";
  return undefined;
}

/** Returns the first problem with a Send request, or undefined when it is valid. */
export function sendProblem(req: SendInput): string | undefined {
  return recipientProblem(req.recipient) ?? contentProblem(req);
}

/** Returns the first problem with what a notification says (and its key), or undefined. */
export function contentProblem(req: Content): string | undefined {
  const key = req.idempotencyKey ?? "";
  if (bytes(key) > LIMITS.idempotencyKeyBytes) {
    return `idempotency_key is ${bytes(key)} bytes; the limit is ${LIMITS.idempotencyKeyBytes}`;
  }
  if (CONTROL.test(key)) return "idempotency_key must not contain control characters";
  if (req.title === "" && req.body === "") return "title or body is required";
  if (bytes(req.title) > LIMITS.titleBytes) {
    return `title is ${bytes(req.title)} bytes; the limit is ${LIMITS.titleBytes}`;
  }
  if (bytes(req.body) > LIMITS.bodyBytes) {
    return `body is ${bytes(req.body)} bytes; the limit is ${LIMITS.bodyBytes}`;
  }
  const entries = Object.entries(req.data);
  if (entries.length > LIMITS.dataEntries) {
    return `data has ${entries.length} entries; the limit is ${LIMITS.dataEntries}`;
  }
  for (const [key, value] of entries) {
    if (key === "" || bytes(key) > LIMITS.dataKeyBytes) {
      return `data key ${JSON.stringify(key.slice(0, 40))} must be 1 to ${LIMITS.dataKeyBytes} bytes`;
    }
    if (bytes(value) > LIMITS.dataValueBytes) {
      return `data[${JSON.stringify(key)}] is ${bytes(value)} bytes; the limit is ${LIMITS.dataValueBytes}`;
    }
  }
  return undefined;
}

/**
 * What is wrong with a notification a peer forwarded for `recipient` (its encoded bytes), or
 * undefined: it must decode, be valid UTF-8, be for that recipient and pass Send's own limits, as
 * if it had been sent here. Subscribers must never receive bytes no Send could have produced.
 */
export function forwardedProblem(recipient: string, bytes: Uint8Array): string | undefined {
  const notification = decodeNotification(bytes);
  if (typeof notification === "string") return notification;
  if (notification.recipient !== recipient) {
    return `it is for ${JSON.stringify(notification.recipient.slice(0, 64))}, not ${
      JSON.stringify(recipient.slice(0, 64))
    }`;
  }
  if (notification.id === "" || notification.id.length > 64) return "its id must be 1 to 64 characters";
  return sendProblem(notification);
}
