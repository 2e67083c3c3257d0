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
import { drainThread, serveThread } from "./services.ts";
import { WorkerPool } from "./workers/pool.ts";
import type { DeliveryMode } from "./mode.ts";

/** A bound, serving gRPC port. */
export interface Serving {
  readonly port: number;
  /** The HTTP port (`notification-server.http`), when configured. */
  readonly httpPort?: number;
  /** Reported in SendResponse.instance_id (known once the port is bound). */
  setInstanceId(id: string): void;
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
  /** How Sends are delivered (src/mode.ts chooses it). */
  mode: DeliveryMode;
  metrics?: Metrics;
  logger: Logger;
  /** The serving worker's module (src/worker.ts, or a test's with injected faults); workers > 1 only. */
  workerModule?: URL;
}

/** Binds the gRPC port with `config.server.workers` threads; throws (nothing left running) if it cannot. */
export async function startServing(config: Config, options: ServingOptions): Promise<Serving> {
  const server = config.server;
  if (server.workers > 1) {
    if (!options.workerModule) throw new Error("workers > 1 needs the serving worker's module");
    const pool = await WorkerPool.start({
      server,
      count: server.workers,
      health: options.health.entries(),
      mode: options.mode,
      metrics: options.metrics !== undefined,
      logger: options.logger,
      module: options.workerModule,
      onRestart: () => options.metrics?.workerRestarts.inc(),
    });
    // Workers mirror the main thread's health entries.
    const unfollow = options.health.onChange((service, status) => pool.setHealth(service, status));
    return {
      port: pool.port,
      httpPort: pool.httpPort,
      setInstanceId: (id) => (pool.instanceId = id),
      subscribers: () => pool.subscribers,
      healthWatches: () => pool.healthWatches,
      workers: () => pool.serving,
      workerMetrics: () => pool.collectMetrics(),
      drain: (timeoutMs) => (unfollow(), pool.stop(timeoutMs)),
      abort: () => (unfollow(), pool.terminate()),
    };
  }
  let instanceId = "";
  const served = await serveThread({
    server,
    health: options.health,
    mode: options.mode,
    places: {
      subscribers: new LocalLimit(server.maxSubscribers),
      queuedBytes: new LocalLimit(server.subscriberQueueTotalBytes),
      connections: new LocalLimit(server.maxConnections),
      identities: new IdentityTable(identityTableMemory(identitySlots(server))),
    },
    warn: (line) => options.logger.warn(line),
    metrics: options.metrics,
    instanceId: () => instanceId,
  });
  return {
    port: served.bound.port,
    httpPort: served.web?.port,
    setInstanceId: (id) => (instanceId = id),
    subscribers: () => served.core.subscribers,
    healthWatches: () => options.health.watches,
    workers: () => 1,
    workerMetrics: () => Promise.resolve([]),
    drain: (timeoutMs) => drainThread(served, timeoutMs),
    abort: () => {
      void served.bound.stopListening();
      served.bound.server.forceShutdown();
      served.web?.abort();
      void served.thread.close?.();
    },
  };
}
