/**
 * NATS subjects for recipients. A recipient is any UTF-8 text up to its limit, but a subject token
 * may not hold '.', '*', '>' or spaces: the token is the recipient's UTF-8 bytes in base64url (no
 * padding), so every recipient has exactly one subject and no two share one.
 *
 *   <prefix>.in.<token>     where Send stores (the stream's subjects)
 *   <prefix>.live.<token>   where the stream republishes each stored one, with its position
 */
import { Buffer } from "node:buffer";

export function recipientToken(recipient: string): string {
  return Buffer.from(recipient, "utf8").toString("base64url");
}

export function storedSubject(prefix: string, recipient: string): string {
  return `${prefix}.in.${recipientToken(recipient)}`;
}

export function liveSubject(prefix: string, recipient: string): string {
  return `${prefix}.live.${recipientToken(recipient)}`;
}

export function storedSubjects(prefix: string): string {
  return `${prefix}.in.>`;
}

export function liveSubjects(prefix: string): string {
  return `${prefix}.live.>`;
}
