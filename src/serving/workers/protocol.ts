/**
 * Messages between the main thread and its serving workers. The main thread owns etcd, the
 * registration, the cluster and health; workers serve gRPC and ask the main thread for what only
 * it knows (which workers and instances hold a recipient's subscribers).
 */
import type { IdentityTableMemory } from "../../auth/identity_table.ts";
import type { ServerConfig } from "../../config/mod.ts";
import type { ServingStatus } from "../health.ts";
import type { MetricsJson } from "../../metrics/mod.ts";
import type { Reach } from "../../notification/routing.ts";

/** Counters every worker of the instance shares (see limits.ts). */
export interface SharedLimits {
  subscribers: SharedArrayBuffer;
  healthWatches: SharedArrayBuffer;
  connections: SharedArrayBuffer;
  /** Bytes queued to subscribers (`subscriber-queue-total-bytes`). */
  queuedBytes: SharedArrayBuffer;
}

/** What every worker shares besides the counters. */
export interface SharedTables {
  /** Per-identity subscriptions and Send buckets (auth/identity_table.ts). */
  identities: IdentityTableMemory;
}

/** The first message a worker gets. */
export interface WorkerStart {
  type: "start";
  /** 0-based; the slot in the shared limits. */
  index: number;
  /** Restarts of this slot so far (0 for the first start). */
  generation: number;
  /** The port every worker binds with SO_REUSEPORT (resolved by the main thread). */
  port: number;
  server: ServerConfig;
  limits: SharedLimits;
  tables: SharedTables;
  /** The {@link RecipientFilter}'s buffer. */
  filter: SharedArrayBuffer;
  health: Record<string, ServingStatus>;
  /** Whether `/metrics` is served (workers then record and report). */
  metrics: boolean;
  /** Reported in SendResponse.instance_id; empty until the address is known. */
  instanceId: string;
  /** Forward is on for callers proving membership with one of these (absent: off for now). */
  peerSecrets?: string[];
}

/** Main thread → worker. */
export type ToWorker =
  | WorkerStart
  | { type: "instance"; instanceId: string }
  | { type: "health"; service: string; status: ServingStatus }
  /** Cluster/Forward on, for callers proving membership with one of `secrets`. */
  | { type: "peerSecrets"; secrets: string[] }
  /** Deliver to this worker's subscribers of `recipient`; answered with `delivered`. */
  | { type: "deliver"; id: number; recipient: string; bytes: Uint8Array }
  /** The answer to a worker's `request`. */
  | { type: "reply"; id: number; value: number | boolean }
  | { type: "metrics"; id: number }
  /** Drain: refuse new calls, end streams, finish in-flight calls within `timeoutMs`. */
  | { type: "stop"; timeoutMs: number };

/** What a worker asks the main thread, each answered by a `reply` with the same id. */
export type WorkerRequest =
  /**
   * The worker delivered to its own subscribers; deliver to the other workers' and, when `reach` is
   * the cluster, to the other instances. The reply is how many streams took it.
   */
  | { call: "route"; recipient: string; bytes: Uint8Array; reach: Reach }
  /** This worker got its first subscriber of `recipient`; replied once every instance routes it. */
  | { call: "subscribed"; recipient: string }
  /** Whether the instance's directory view reached `revision` (a peer's barrier); boolean reply. */
  | { call: "reached"; revision: bigint };

/** Worker → main thread. */
export type FromWorker =
  | { type: "listening"; port: number }
  /** Start-up failed; `bind` when the port could not be bound. */
  | { type: "failed"; message: string; bind: boolean }
  | ({ type: "request"; id: number } & WorkerRequest)
  | { type: "unsubscribed"; recipient: string }
  | { type: "delivered"; id: number; count: number }
  | { type: "metrics"; id: number; metrics: MetricsJson }
  | { type: "stopped"; outcome: "graceful" | "forced" }
  /** A line for the main thread to log (workers write none of their own). */
  | { type: "warn"; message: string }
  /** An uncaught error or unhandled rejection: the worker ends itself and is replaced. */
  | { type: "crashed"; reason: string };
