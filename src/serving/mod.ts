/**
 * Where gRPC is served: on the main thread (`workers: 1`) or by a pool of workers sharing the
 * port. app.ts drives both through {@link Serving}, so the lifecycle reads the same either way.
 */
import { identitySlots, IdentityTable, identityTableMemory } from "../auth/identity_table.ts";
import type { Config } from "../config/mod.ts";
import type { HealthService } from "./health.ts";
import { LocalLimit } from "../_util/limits.ts";
import type { Logger } from "../_util/logger.ts";
import type { Metrics, MetricsJson } from "../metrics/mod.ts";
import { stopGrpcServer } from "../transport/server.ts";
import { serveThread } from "./services.ts";
import { WorkerPool } from "./workers/pool.ts";
import type { PeerRouting } from "../notification/routing.ts";
import type { BrokerDelivery } from "../broker/broker_delivery.ts";

/** A bound, serving gRPC port. */
export interface Serving {
  readonly port: number;
  /** Reported in SendResponse.instance_id (known once the port is bound). */
  setInstanceId(id: string): void;
  /** Delivery to the other instances from now on. */
  setCluster(cluster: PeerRouting): void;
  /** The instance is leaving the cluster: every Send goes to the cluster (no shortcut past it). */
  leave(): void;
  /** Turns Cluster/Forward on for callers proving membership with one of `secrets`. */
  setPeerSecrets(secrets: readonly string[]): void;
  subscribers(): number;
  healthWatches(): number;
  /** Workers serving now (1 on the main thread). */
  workers(): number;
  /** Metrics recorded outside the main thread's registry (the workers'). */
  workerMetrics(): Promise<MetricsJson[]>;
  /** Refuse new calls, end streams, finish in-flight calls within `timeoutMs`. */
  drain(timeoutMs: number): Promise<"graceful" | "forced">;
  /** Stops at once (a failed start-up). */
  abort(): void;
}

/** What {@link startServing} needs besides the config. */
export interface ServingOptions {
  health: HealthService;
  metrics?: Metrics;
  logger: Logger;
  /** Worker module override (tests inject faults with it). */
  workerModule?: URL;
  /**
   * The main thread's broker connection, when the config has one: it serves the main thread's
   * calls (workers: 1); each worker dials its own.
   */
  broker?: BrokerDelivery;
}

/** Binds the gRPC port with `config.server.workers` threads; throws (nothing left running) if it cannot. */
export async function startServing(config: Config, options: ServingOptions): Promise<Serving> {
  const server = config.server;
  if (server.workers > 1) {
    const pool = await WorkerPool.start({
      server,
      count: server.workers,
      health: options.health.entries(),
      metrics: options.metrics !== undefined,
      logger: options.logger,
      module: options.workerModule,
      onRestart: () => options.metrics?.workerRestarts.inc(),
    });
    // Workers mirror the main thread's health entries.
    const unfollow = options.health.onChange((service, status) => pool.setHealth(service, status));
    return {
      port: pool.port,
      setInstanceId: (id) => (pool.instanceId = id),
      setCluster: (cluster) => (pool.cluster = cluster),
      leave: () => pool.leave(),
      setPeerSecrets: (secrets) => pool.setPeerSecrets(secrets),
      subscribers: () => pool.subscribers,
      healthWatches: () => pool.healthWatches,
      workers: () => pool.serving,
      workerMetrics: () => pool.collectMetrics(),
      drain: (timeoutMs) => (unfollow(), pool.stop(timeoutMs)),
      abort: () => (unfollow(), pool.terminate()),
    };
  }
  // A peer's barrier asks the cluster, once there is one (workers ask the pool, which asks it).
  let cluster: PeerRouting | undefined;
  const { services, bound } = await serveThread({
    server,
    health: options.health,
    places: {
      subscribers: new LocalLimit(server.maxSubscribers),
      queuedBytes: new LocalLimit(server.subscriberQueueTotalBytes),
      connections: new LocalLimit(server.maxConnections),
      identities: new IdentityTable(identityTableMemory(identitySlots(server))),
    },
    warn: (line) => options.logger.warn(line),
    metrics: options.metrics,
    delivery: options.broker,
    reached: (revision) => cluster?.reached(revision) ?? Promise.resolve(false),
  });
  const { notifications } = services;
  return {
    port: bound.port,
    setInstanceId: (id) => (notifications.instanceId = id),
    // One thread: every Send reaches the cluster already.
    leave: () => {},
    setCluster: (next) => {
      cluster = next;
      notifications.routing = next;
    },
    setPeerSecrets: (secrets) => services.setPeerSecrets(secrets),
    subscribers: () => notifications.subscribers,
    healthWatches: () => options.health.watches,
    workers: () => 1,
    workerMetrics: () => Promise.resolve([]),
    drain: (timeoutMs) => stopGrpcServer(bound, timeoutMs, services.endStreams),
    abort: () => {
      void bound.stopListening();
      bound.server.forceShutdown();
    },
  };
}
