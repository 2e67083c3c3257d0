/**
 * What the mesh's two sides say through the worker pool (serving/mode.ts carries them unread): a
 * worker asks the main thread to route beyond it and about keyed Sends (the instance's one table of
 * them), and the main thread hands a worker what other workers, or peers through the main thread,
 * deliver to its subscribers.
 */
import type { Reach } from "./routing.ts";
import type { Remembered } from "./recent_sends.ts";

/** A worker asks the main thread; answered with a number (route), nothing (subscribed) or a boolean. */
export type MeshAsk =
  /**
   * The worker delivered to its own subscribers; deliver to the other workers' and, when `reach` is
   * the cluster, to the other instances. The answer is how many streams took it.
   */
  | { call: "route"; recipient: string; bytes: Uint8Array; reach: Reach }
  /** This worker got its first subscriber of `recipient`; answered once every instance routes it. */
  | { call: "subscribed"; recipient: string }
  /** Whether the instance's directory view reached `revision` (a peer's barrier). */
  | { call: "reached"; revision: bigint }
  /** A keyed Send (recent_sends.ts): the first one's answer, or nothing when this is the first. */
  | { call: "claim"; key: string };

/**
 * A worker tells the main thread: it no longer holds `unsubscribed`; or what the first Send with
 * `settled` answered (absent when it did not go out).
 */
export type MeshTell = { unsubscribed: string } | { settled: string; sent?: Remembered };

/** The main thread to a worker: deliver to its own subscribers (answered with the count), and news. */
export type ToMeshWorker =
  | { deliver: { recipient: string; bytes: Uint8Array } }
  | { peerSecrets: string[] }
  /** The instance joined the mesh: Sends are taken from now on. */
  | { joined: true };

/** What each worker starts with. */
export interface MeshWorkerStart {
  /** The {@link RecipientFilter}'s buffer. */
  filter: SharedArrayBuffer;
  /** Forward is on for callers proving membership with one of these (absent: off for now). */
  peerSecrets?: string[];
  /** Whether the instance joined the mesh already (a worker restarted later). */
  joined: boolean;
}
