/**
 * Messages between the main thread and its serving workers. The main thread owns etcd, the
 * registration and health; workers serve. What the delivery mode's two sides say to each other
 * (serving/mode.ts) travels as `mode` bodies that only the mode reads.
 */
import type { IdentityTableMemory } from "../../auth/identity_table.ts";
import type { ServerConfig } from "../../config/mod.ts";
import type { ServingStatus } from "../health.ts";
import type { MetricsJson } from "../../metrics/mod.ts";

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
  /** The same for the HTTP port, when configured. */
  httpPort?: number;
  server: ServerConfig;
  limits: SharedLimits;
  tables: SharedTables;
  /** What the mode's pool side gives each worker (PoolSide.workerStart). */
  mode: unknown;
  health: Record<string, ServingStatus>;
  /** Whether `/metrics` is served (workers then record and report). */
  metrics: boolean;
  /** Reported in SendResponse.instance_id; empty until the address is known. */
  instanceId: string;
}

/** Main thread → worker. */
export type ToWorker =
  | WorkerStart
  | { type: "instance"; instanceId: string }
  | { type: "health"; service: string; status: ServingStatus }
  /** For the mode's thread side; answered with `answer` when it has an id. */
  | { type: "mode"; id?: number; body: unknown }
  /** The answer to a worker's `ask`. */
  | { type: "reply"; id: number; value: unknown }
  | { type: "metrics"; id: number }
  /** Drain: refuse new calls, end streams, finish in-flight calls within `timeoutMs`. */
  | { type: "stop"; timeoutMs: number };

/** Worker → main thread. */
export type FromWorker =
  | { type: "listening"; port: number; httpPort?: number }
  /** Start-up failed; `bind` when the port could not be bound. */
  | { type: "failed"; message: string; bind: boolean }
  /** For the mode's pool side: asked (with an id, answered by `reply`) or told. */
  | { type: "ask"; id: number; body: unknown }
  | { type: "tell"; body: unknown }
  /** The mode's thread side answering a `mode` message with an id. */
  | { type: "answer"; id: number; value: unknown }
  | { type: "metrics"; id: number; metrics: MetricsJson }
  | { type: "stopped"; outcome: "graceful" | "forced" }
  /** A line for the main thread to log (workers write none of their own). */
  | { type: "warn"; message: string }
  /** An uncaught error or unhandled rejection: the worker ends itself and is replaced. */
  | { type: "crashed"; reason: string };
