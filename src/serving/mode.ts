/**
 * What serving asks of a delivery mode: the mesh (src/mesh/) or the broker (src/broker/), chosen
 * once per process by src/mode.ts. Serving knows neither: each serving thread gets its
 * {@link ThreadDelivery}; with workers, the main thread holds the mode's {@link PoolSide}, and the
 * two talk through the worker pool with messages only the mode reads. The lifecycle's steps that
 * belong to a mode (the broker connects before serving, the mesh joins its peers after) are
 * app.ts's, through the same object.
 */
import type * as grpc from "@grpc/grpc-js";
import type { Etcd3 } from "etcd3";
import type { EtcdRegistrar, ServiceInstance } from "@notification-server/registry";
import type { Config, ServerConfig } from "../config/mod.ts";
import type { Logger } from "../_util/logger.ts";
import type { Metrics } from "../metrics/mod.ts";
import type { Delivery } from "../notification/delivery.ts";
import type { HealthService } from "./health.ts";

/** What one serving thread's side of the mode is made with. */
export interface ThreadSetup {
  server: ServerConfig;
  metrics?: Metrics;
  /** Where the thread's WARN lines go. */
  warn: (line: string) => void;
  /** The instance id ("" until the advertised address is known). */
  instanceId: () => string;
  /** In a worker: the mode's way to its pool side on the main thread. */
  pool?: PoolChannel;
}

/** A worker's way to the mode's side on the main thread. */
export interface PoolChannel {
  /** The worker's number, from 1 (log lines, connection names). */
  worker: number;
  /** What the pool side gave every worker at its start ({@link PoolSide.workerStart}). */
  start: unknown;
  /** Asks the pool side; resolves with its answer. */
  ask(body: unknown): Promise<unknown>;
  /** Tells the pool side, expecting no answer. */
  tell(body: unknown): void;
}

/** One serving thread's delivery, and what the mode serves beside the Notification service. */
export interface ThreadDelivery {
  delivery: Delivery;
  /** The internal Cluster service (the mesh's Forward), served but never listed. */
  cluster?: grpc.UntypedServiceImplementation;
  /** A message from the pool side (a worker's); its answer goes back when it asked. */
  receive?(body: unknown): Promise<unknown>;
  /** Ends the mode's own streams (peers' Forward) as the thread drains. */
  endStreams?(): void;
  /** After the thread drained. */
  close?(): Promise<void>;
}

/** The main thread's way to its workers, for the pool side. */
export interface Workers {
  /** Asks worker `index`'s thread side; undefined if it is not serving (or stops meanwhile). */
  ask(index: number, body: unknown): Promise<unknown>;
  /** Tells every worker, and every worker started later through {@link PoolSide.workerStart}. */
  broadcast(body: unknown): void;
}

/** The mode's side on the main thread when workers serve. */
export interface PoolSide {
  /** What each worker is started with (structured-cloneable). */
  workerStart(): unknown;
  /** Worker `index` asks (its {@link PoolChannel.ask}). */
  answer(index: number, body: unknown): Promise<unknown>;
  /** Worker `index` tells (its {@link PoolChannel.tell}). */
  told(index: number, body: unknown): void;
  /** Worker `index` is gone: whatever it held is let go. */
  retired(index: number): void;
}

/** What the mode's lifecycle steps need (app.ts). */
export interface ModeStart {
  config: Config;
  etcd: Etcd3;
  health: HealthService;
  metrics?: Metrics;
  log: Logger;
  /** The start-up budget (etcd.startup-timeout), as a deadline; none: no bound. */
  deadline?: number;
  signal: AbortSignal;
}

export interface DeliveryMode {
  /**
   * Before serving (app.ts step 2): what must answer before any call is served (the broker).
   * Undone on `steps`.
   */
  connect(steps: AsyncDisposableStack, start: ModeStart): Promise<void>;
  /** One serving thread's side (the main thread's with `workers: 1`, or a worker's). */
  thread(setup: ThreadSetup): Promise<ThreadDelivery>;
  /** The main thread's side when workers serve (undefined: workers need nothing of each other). */
  pool(workers: Workers): PoolSide | undefined;
  /**
   * After the port is bound, before registering (step 5): resolves once a Send here reaches every
   * subscriber in the cluster. Undone on `steps`.
   */
  join(
    steps: AsyncDisposableStack,
    start: ModeStart,
    instance: ServiceInstance,
    registrar: EtcdRegistrar,
  ): Promise<void>;
  /** Whether Sends can be taken now (the notification service's health). */
  readonly available: boolean;
  /** The instance deregistered and drains (step 7). */
  leave(): void;
}
