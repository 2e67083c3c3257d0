/**
 * Idempotency keys (SendRequest.idempotency_key): what a delivery remembers a Send by. A key covers
 * one recipient's copy, so the key it is remembered by is the caller's key and the recipient
 * together, hashed to a fixed size (JetStream's Nats-Msg-Id, the mesh's table of recent Sends).
 */
import { createHash } from "node:crypto";

/** A Send that must go out once per key. */
export interface Once {
  /** {@link onceKey} of the caller's key and the recipient. */
  key: string;
  /** This Send's notification, answered by a repeat within the window. */
  id: string;
  createdAtMs: number;
}

/** The key a delivery remembers `recipient`'s copy of a Send with `idempotencyKey` by. */
export function onceKey(idempotencyKey: string, recipient: string): string {
  return createHash("sha256").update(idempotencyKey).update("\0").update(recipient).digest("base64url");
}
