/**
 * What travels on a `Cluster/Forward` stream (proto/cluster.proto), in one place: items one way,
 * acks the other. In code an item is a notification or a barrier; on the wire a barrier is still
 * an item with `barrier_revision` set and no notification, so instances of this and earlier versions
 * understand each other during a rolling restart.
 */

/** A notification for the peer's subscribers of `recipient`. */
export interface ForwardedNotification {
  kind: "notification";
  recipient: string;
  /** A notification.v1.Notification, encoded once by the instance that took the Send. */
  notification: Uint8Array;
}

/** Acknowledged once the peer's directory view has applied `revision` (or it cannot say). */
export interface Barrier {
  kind: "barrier";
  revision: bigint;
}

export type PeerItem = ForwardedNotification | Barrier;

/** An item as cluster.proto has it (proto-loader's field names). */
export interface WireItem {
  seq: number;
  recipient: string;
  notification: Uint8Array;
  barrierRevision?: number;
}

export interface Ack {
  seq: number;
  /** Subscribe streams that took the notification (0 for a barrier). */
  delivered: number;
}

const EMPTY = new Uint8Array(0);

export function toWire(seq: number, item: PeerItem): WireItem {
  return item.kind === "barrier"
    ? { seq, recipient: "", notification: EMPTY, barrierRevision: Number(item.revision) }
    : { seq, recipient: item.recipient, notification: item.notification };
}

export function fromWire(wire: WireItem): PeerItem {
  const revision = Number(wire.barrierRevision ?? 0);
  return revision > 0
    ? { kind: "barrier", revision: BigInt(revision) }
    : { kind: "notification", recipient: wire.recipient, notification: wire.notification };
}
