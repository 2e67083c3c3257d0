/**
 * The service's lifecycle, in one place. Start, top to bottom; each step puts its undo on one
 * stack, so stop is the exact reverse of start by construction (as Kratos's app.go reads):
 *
 *   start                                         stop (the first SIGINT/SIGTERM/SIGHUP, or an
 *                                                 unexpected error, which then exits 1)
 *   1. signal handlers                            remove them
 *   2. etcd answers; the delivery mode connects   close etcd; the broker's connection closes
 *      what it needs first (the broker: NATS and  after the drain
 *      its stream; src/mode.ts chooses the mode)
 *   3. gRPC port bound, and the HTTP port when    (a failed start stops them at once)
 *      configured (never advertise a port we
 *      could not bind)
 *   4. /metrics bound, when configured            close /metrics
 *   5. the mode joins (the mesh: the peers'       revoke the lease (the directory keys go with
 *      secret, the cluster, linked to the peers   it); the mesh: close the cluster, stop
 *      holding recipients, routed before served)  following the secret
 *   6. calls served                               refuse new calls, end streams, finish in-flight
 *                                                 calls within `shutdown-timeout` (the cluster
 *                                                 still forwards meanwhile)
 *   7. lease granted, record written, kept alive  health NOT_SERVING, deregister (delete our record;
 *                                                 the lease stays, so peers still route to our
 *                                                 subscribers), drain delay so watchers drop us
 *
 * A start that fails (or is stopped) part-way undoes what it did, in the same reverse order:
 * nothing stays registered. A second signal exits at once.
 */
import { advertisedAddress } from "./serving/advertise.ts";
import { formatDuration, sleep } from "@notification-server/timing";
import type { Config } from "./config/mod.ts";
import { http2Guard } from "@notification-server/http2-guard";
import type { Logger } from "./_util/logger.ts";
import { oneLine, onUncaught } from "./_util/errors.ts";
import {
  createEtcdClient,
  deadlineAfter,
  type DeregisterOutcome,
  EtcdRegistrar,
  formatHostPort,
  type ServiceInstance,
  waitForEtcd,
} from "@notification-server/registry";
import type { Etcd3 } from "etcd3";
import { NOTIFICATION_SERVICE, REGISTRATION_HEALTH, serviceHealth } from "./serving/services.ts";
import type { HealthService } from "./serving/health.ts";
import { type Serving, startServing } from "./serving/mod.ts";
import type { ModeStart } from "./serving/mode.ts";
import { mergedRegistry, Metrics, serveMetrics } from "./metrics/mod.ts";
import { deliveryMode } from "./mode.ts";

/** Signals that stop the service gracefully (SIGHUP: an SSH hang-up must not leave us registered). */
const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
const SIGNAL_EXIT: Record<(typeof STOP_SIGNALS)[number], number> = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 };
/** The serving workers' module (with `workers` > 1). */
const WORKER_MODULE = new URL("./worker.ts", import.meta.url);

/** Options for {@link runServer} beyond the config (tests use them). */
export interface RunOptions {
  /** The serving worker module (tests inject faults with their own). */
  workerModule?: URL;
}

/** How the run went, as the stop steps learn it. */
interface Run {
  /** Set once registered: until then stopping is undoing a start (no drain delay, no drain). */
  running: boolean;
  exitCode: number;
  withdrawn?: DeregisterOutcome;
  drained?: { outcome: "graceful" | "forced"; ms: number };
}

/** Runs the service until a signal stops it; resolves with the exit code. Startup errors throw. */
export async function runServer(config: Config, log: Logger, options: RunOptions = {}): Promise<number> {
  log.info(`Using config file: ${config.path}`);
  warnIfUnguarded(log);
  const steps = new AsyncDisposableStack();
  const run: Run = { running: false, exitCode: 0 };
  // 1. Signals. A bug or a library fault (etcd3 throwing inside its stream handlers) must not end
  // the process registered: it is logged, and the service stops the normal way, then exits 1.
  const stop = steps.use(listenForStopSignals(log));
  steps.use(onUncaught((reason) => {
    run.exitCode = 1;
    log.error(`Unexpected error: ${oneLine(reason)}; deregistering and exiting`, { error: oneLine(reason) });
    stop.request();
  }));
  try {
    // 2. etcd, then what the delivery mode needs before serving: one start-up budget for all.
    const metrics = config.server.metricsAddr ? new Metrics({ live: true }) : undefined;
    const etcd = createEtcdClient({ ...config.etcd, observe: metrics?.observeEtcd });
    steps.defer(() => etcd.close());
    const deadline = deadlineAfter(config.etcd.startupTimeoutMs);
    await waitForEtcd(etcd, { endpoints: config.etcd.endpoints, deadline, signal: stop.signal });
    const health = serviceHealth(config.server);
    const mode = deliveryMode(config.server);
    const start: ModeStart = { config, etcd, health, metrics, log, deadline, signal: stop.signal };
    await mode.connect(steps, start);

    // 3. The gRPC port, on the main thread or in workers.
    const workerModule = options.workerModule ?? WORKER_MODULE;
    const serving = await startServing(config, { health, mode, metrics, logger: log, workerModule });
    steps.defer(() => void (run.running || serving.abort()));
    if (serving.workers() > 1) {
      log.info(`Serving gRPC from ${serving.workers()} workers on one port`, { workers: serving.workers() });
    }

    // 4. /metrics.
    if (metrics) await serveMetricsOf(steps, config, metrics, serving, log);

    // 5. Who we are, and the mode joins: a Send here reaches subscribers anywhere from now on.
    const instance = describeInstance(config, serving.port, log);
    serving.setInstanceId(instance.id);
    const registrar = registrarFor(etcd, config, health, metrics, log);
    await mode.join(steps, start, instance, registrar);
    health.set(NOTIFICATION_SERVICE, mode.available ? "SERVING" : "NOT_SERVING");
    // After the drain, the registration's lease goes (step 7 deleted the record but kept it), and
    // with it this instance's recipient directory: peers route by it, so until now a Send through
    // a peer still reached the subscribers that were moving away from here.
    steps.defer(() => registrar.releaseLease());

    // 6. Calls are served. Stopping drains them while the mesh still forwards (it closes after).
    steps.defer(async () => {
      if (!run.running) return;
      const started = Date.now();
      const outcome = await serving.drain(config.server.shutdownTimeoutMs);
      run.drained = { outcome, ms: Date.now() - started };
    });

    // 7. Registration. Undone before anything else, whether the start got this far or not.
    steps.defer(async () => {
      mode.leave();
      if (run.running) {
        log.info("Shutting down server...");
        health.setAllNotServing();
      }
      run.withdrawn = await registrar.deregister({ keepLease: run.running });
      if (!run.running) return;
      logWithdrawn(log, run.withdrawn, registrar.key, config.etcd.leaseTtlSeconds);
      await sleep(config.server.drainDelayMs);
    });
    await registrar.register(instance, { signal: stop.signal, deadline });
    run.running = true;
    if (!stop.signal.aborted) {
      logServing(log, config, registrar, instance, serving);
      await stop.stopped;
    }
  } catch (error) {
    await steps.disposeAsync();
    if (!stop.signal.aborted) throw error;
    log.info(
      run.withdrawn === "unreachable"
        ? `Stopped during start-up; etcd unreachable, a record written meanwhile expires within ${config.etcd.leaseTtlSeconds}s`
        : "Stopped during start-up; nothing is registered",
    );
    return run.exitCode;
  }
  await steps.disposeAsync();
  logStopped(log, config, run.drained);
  return run.exitCode;
}

/** Step 4: /metrics, with the workers' metrics merged into each scrape. */
async function serveMetricsOf(
  steps: AsyncDisposableStack,
  config: Config,
  metrics: Metrics,
  serving: Serving,
  log: Logger,
): Promise<void> {
  if (!config.server.metricsAddr) return;
  metrics.setLive(serving);
  const own = metrics.registry;
  const server = await serveMetrics(
    config.server.metricsAddr,
    async () => mergedRegistry(own, await serving.workerMetrics()),
  );
  steps.defer(() => server.close());
  const addr = formatHostPort({ host: config.server.metricsAddr.host || "0.0.0.0", port: server.port });
  log.info(`Metrics on http://${addr}/metrics`, { addr });
}

/** The registration, reporting its state to health and metrics. */
function registrarFor(
  etcd: Etcd3,
  config: Config,
  health: HealthService,
  metrics: Metrics | undefined,
  log: Logger,
): EtcdRegistrar {
  metrics?.registrationState.set(0);
  return new EtcdRegistrar(etcd, {
    prefix: config.etcd.prefix,
    layout: config.etcd.layout,
    leaseTtlSeconds: config.etcd.leaseTtlSeconds,
    callTimeoutMs: config.etcd.dialTimeoutMs,
    logger: log,
    onStateChange: (state) => {
      health.set(REGISTRATION_HEALTH, state === "registered" ? "SERVING" : "NOT_SERVING");
      metrics?.registrationState.set(state === "registered" ? 1 : 0);
    },
    onEvent: (event) => {
      if (!metrics) return;
      if (event === "lost") metrics.registrationsLost.inc();
      else if (event === "restored") metrics.registrationsRestored.inc();
      else if (event === "keepaliveFailed") metrics.keepaliveFailures.inc();
      else metrics.etcdWatchDisconnects.inc();
    },
  });
}

/** The lines that say the service is up, and what it is open to. */
function logServing(
  log: Logger,
  config: Config,
  registrar: EtcdRegistrar,
  instance: ServiceInstance,
  serving: Serving,
): void {
  const ttl = config.etcd.leaseTtlSeconds;
  log.info(
    `Service registered to etcd: ${registrar.key} -> ${instance.addr} (lease ${registrar.leaseId}, ttl ${ttl}s)`,
    { key: registrar.key, addr: instance.addr, lease: registrar.leaseId, ttl_s: ttl },
  );
  const listening = formatHostPort({ host: config.server.addr.host || "0.0.0.0", port: serving.port });
  log.info(`gRPC server listening on ${listening}`, { addr: listening, workers: serving.workers() });
  const http = config.server.http;
  let ports = listening;
  if (http && serving.httpPort !== undefined) {
    const addr = formatHostPort({ host: http.addr.host || "0.0.0.0", port: serving.httpPort });
    const url = `${config.server.tls ? "https" : "http"}://${addr}`;
    log.info(`HTTP (Connect, gRPC-Web, SSE${http.page ? ", page" : ""}) listening on ${url}`, { addr, url });
    ports = `${listening} or ${addr}`;
  }
  if (!config.server.auth) {
    log.warn(
      `No auth configured: anyone who can reach ${ports} can send to and subscribe on any recipient (set notification-server.auth)`,
    );
  } else if (!config.server.tls) {
    log.warn(
      `Auth without TLS: bearer tokens travel in clear on ${ports}, and anyone who sees one can use it until it expires (set notification-server.tls)`,
    );
  }
}

function logStopped(log: Logger, config: Config, drained: Run["drained"]): void {
  if (drained?.outcome === "forced") {
    log.warn(
      `Server stopped: calls still running after ${
        formatDuration(config.server.shutdownTimeoutMs)
      } were cancelled`,
    );
  } else if (drained) {
    log.info(`Server stopped gracefully (drained in ${formatDuration(drained.ms)})`, {
      duration_ms: drained.ms,
    });
  }
}

function warnIfUnguarded(log: Logger): void {
  const guard = http2Guard();
  if (guard.installed) return;
  log.warn(
    `HTTP/2 crash guard not installed (${guard.reason}): a client closing its connection can crash this process (denoland/deno#36788); run it under a supervisor`,
    { reason: guard.reason },
  );
}

/** The record this instance registers: its advertised address, and its id (the address by default). */
function describeInstance(config: Config, port: number, log: Logger): ServiceInstance {
  const advertised = advertisedAddress(config.server.addr, port, config.server.advertiseAddr);
  if (advertised.derivedFrom) log.info(`Advertising ${advertised.addr} (from ${advertised.derivedFrom})`);
  return {
    id: config.server.instanceId ?? advertised.addr,
    name: config.server.name,
    addr: advertised.addr,
    metadata: config.server.metadata,
  };
}

function logWithdrawn(log: Logger, outcome: DeregisterOutcome, key: string, ttlSeconds: number): void {
  if (outcome === "unreachable") {
    log.warn(`Service not deregistered (etcd unreachable): ${key} expires within ${ttlSeconds}s`, { key });
  } else {
    log.info(
      `Service deregistered from etcd: ${key}${outcome === "absent" ? " (no record of ours was left)" : ""}`,
      { key },
    );
  }
}

/**
 * Ctrl+C signals the whole process group, and `deno task` (and scripts/dev.ts) forward it to the
 * service too, so one keypress arrives twice within milliseconds. A repeat inside this window is
 * the same event, not a request to force.
 */
const DUPLICATE_SIGNAL_MS = 300;

/**
 * First SIGINT/SIGTERM/SIGHUP aborts `signal` and resolves `stopped`; a later one exits at once.
 * `request` is the same stop without a signal.
 */
function listenForStopSignals(log: Logger) {
  const controller = new AbortController();
  let firstAt = 0;
  let resolveStopped: () => void = () => {};
  const stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
  const requestStop = () => {
    if (controller.signal.aborted) return;
    firstAt = Date.now();
    controller.abort();
    resolveStopped();
  };
  const handlers = STOP_SIGNALS.map((name) => {
    const handler = () => {
      if (controller.signal.aborted) {
        if (Date.now() - firstAt < DUPLICATE_SIGNAL_MS) return;
        log.error(`Received ${name} again during shutdown; exiting now`);
        Deno.exit(SIGNAL_EXIT[name]);
      }
      requestStop();
    };
    Deno.addSignalListener(name, handler);
    return { name, handler };
  });
  return {
    signal: controller.signal,
    stopped,
    /** Stops the service as a signal would (an unexpected error). */
    request: requestStop,
    [Symbol.dispose]: () => {
      for (const { name, handler } of handlers) Deno.removeSignalListener(name, handler);
    },
  };
}
