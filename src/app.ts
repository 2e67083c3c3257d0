/**
 * The service's lifecycle, in one place. Start, top to bottom; each step puts its undo on one
 * stack, so stop is the exact reverse of start by construction (as Kratos's app.go reads):
 *
 *   start                                         stop (the first SIGINT/SIGTERM/SIGHUP, or an
 *                                                 unexpected error, which then exits 1)
 *   1. signal handlers                            remove them
 *   2. etcd client, etcd answers; with a broker:  close the broker connection (after the drain),
 *      NATS connected, the stream as configured   close etcd
 *   3. gRPC port bound (never advertise a port    (a failed start stops it at once)
 *      we could not bind)
 *   4. /metrics bound, when configured            close /metrics
 *   5. mesh only (cluster/join.ts): the peers'    revoke the lease (the directory keys go with
 *      secret, the cluster, routed before served  it), stop following the secret, close the cluster
 *   6. calls served, delivered through the mesh   refuse new calls, end streams, finish in-flight
 *      or the broker (notification/delivery.ts)   calls within `shutdown-timeout` (the cluster
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
import {
  createEtcdClient,
  deadlineAfter,
  type DeregisterOutcome,
  EtcdRegistrar,
  formatHostPort,
  type ServiceInstance,
  waitForEtcd,
} from "@notification-server/registry";
import { brokerHooks, NOTIFICATION_SERVICE, REGISTRATION_HEALTH, serviceHealth } from "./serving/services.ts";
import { startServing } from "./serving/mod.ts";
import { mergedRegistry, Metrics, serveMetrics } from "./metrics/mod.ts";
import { joinMesh } from "./cluster/join.ts";
import { BrokerDelivery } from "./broker/broker_delivery.ts";
import { describeTtl } from "./broker/connection.ts";

export { NOTIFICATION_SERVICE, REGISTRATION_HEALTH };

/** Signals that stop the service gracefully (SIGHUP: an SSH hang-up must not leave us registered). */
const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
const SIGNAL_EXIT: Record<(typeof STOP_SIGNALS)[number], number> = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 };

/** Options for {@link runServer} beyond the config (tests use them). */
export interface RunOptions {
  /** The serving worker module (tests inject faults with their own). */
  workerModule?: URL;
}

/** Runs the service until a signal stops it; resolves with the exit code. Startup errors throw. */
export async function runServer(config: Config, log: Logger, options: RunOptions = {}): Promise<number> {
  log.info(`Using config file: ${config.path}`);
  warnIfUnguarded(log);
  const steps = new AsyncDisposableStack();
  /** Set once registered: until then stopping is undoing a start (no drain delay, no drain). */
  let running = false;
  let exitCode = 0;
  let withdrawn: DeregisterOutcome | undefined;
  let drained: { outcome: "graceful" | "forced"; ms: number } | undefined;
  // 1. Signals. A bug or a library fault (etcd3 throwing inside its stream handlers) must not end
  // the process registered: it is logged, and the service stops the normal way, then exits 1.
  const stop = steps.use(listenForStopSignals(log));
  steps.use(stop.guard((reason) => {
    exitCode = 1;
    log.error(`Unexpected error: ${describeUnexpected(reason)}; deregistering and exiting`, {
      error: describeUnexpected(reason),
    });
  }));
  try {
    // 2. etcd. One start-up budget for reaching etcd and registering, not one each.
    const metrics = config.server.metricsAddr ? new Metrics({ live: true }) : undefined;
    const etcd = createEtcdClient({ ...config.etcd, observe: metrics?.observeEtcd });
    steps.defer(() => etcd.close());
    const deadline = deadlineAfter(config.etcd.startupTimeoutMs);
    await waitForEtcd(etcd, { endpoints: config.etcd.endpoints, deadline, signal: stop.signal });

    // 2b. The broker, when configured: every Send is stored there first, so nothing is served,
    // and nothing registered, before it answers (within the same start-up budget).
    const health = serviceHealth(config.server);
    /** Once stopping, the broker coming back must not turn health to SERVING again. */
    let leaving = false;
    const brokerConfig = config.server.broker?.nats;
    const threadHooks = brokerConfig ? brokerHooks(metrics, (line) => log.warn(line)) : {};
    const broker = brokerConfig
      ? await BrokerDelivery.connect(brokerConfig, {
        name: config.server.name,
        deadline,
        signal: stop.signal,
        hooks: {
          ...threadHooks,
          onConnection: (connected) => {
            threadHooks.onConnection?.(connected);
            const servers = brokerConfig.servers.join(",");
            if (connected) log.info(`Broker reconnected: ${servers}`);
            else log.warn(`Broker unreachable: Sends answer UNAVAILABLE until it is back (${servers})`);
            if (!leaving) health.set(NOTIFICATION_SERVICE, connected ? "SERVING" : "NOT_SERVING");
          },
        },
      })
      : undefined;
    if (broker && brokerConfig) {
      steps.defer(() => broker.close());
      log.info(
        `Broker: NATS JetStream stream ${brokerConfig.stream} on ${
          brokerConfig.servers.join(",")
        } (epoch ${broker.epoch}, history ${brokerConfig.historySize} per recipient, ${
          describeTtl(brokerConfig)
        }, replicas ${brokerConfig.replicas})`,
        { stream: brokerConfig.stream, epoch: broker.epoch },
      );
    }

    // 3. The gRPC port, on the main thread or in workers.
    const serving = await startServing(config, {
      health,
      metrics,
      logger: log,
      workerModule: options.workerModule,
      broker,
    });
    steps.defer(() => void (running || serving.abort()));
    metrics?.setLive(serving);
    if (serving.workers() > 1) {
      log.info(`Serving gRPC from ${serving.workers()} workers on one port`, { workers: serving.workers() });
    }

    // 4. /metrics.
    if (metrics && config.server.metricsAddr) {
      const own = metrics.registry;
      const server = await serveMetrics(
        config.server.metricsAddr,
        async () => mergedRegistry(own, await serving.workerMetrics()),
      );
      steps.defer(() => server.close());
      const addr = formatHostPort({ host: config.server.metricsAddr.host || "0.0.0.0", port: server.port });
      log.info(`Metrics on http://${addr}/metrics`, { addr });
    }

    // 5. Who we are, and the cluster (forwarding to the instances holding a recipient).
    const instance = describeInstance(config, serving.port, log);
    serving.setInstanceId(instance.id);
    const registrar = new EtcdRegistrar(etcd, {
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
    metrics?.registrationState.set(0);
    // With a broker, delivery between instances goes through it: no directory, no peer links.
    const cluster = broker ? undefined : await joinMesh(steps, {
      config,
      etcd,
      instance,
      serving,
      registrar,
      metrics,
      log,
      deadline,
      signal: stop.signal,
    });
    // Routed: Sends here reach subscribers anywhere (the registration follows).
    health.set(NOTIFICATION_SERVICE, !broker || broker.connected ? "SERVING" : "NOT_SERVING");

    // After the drain, the registration's lease goes (step 7 deleted the record but kept it), and
    // with it this instance's recipient directory: peers route by it, so until now a Send through
    // a peer still reached the subscribers that were moving away from here.
    steps.defer(() => registrar.releaseLease());

    // 6. From here calls are served with delivery to peers. Stopping drains them while the
    // cluster still forwards (it closes after this step).
    steps.defer(async () => {
      if (!running) return;
      const started = Date.now();
      const outcome = await serving.drain(config.server.shutdownTimeoutMs);
      drained = { outcome, ms: Date.now() - started };
    });

    // 7. Registration. Undone before anything else, whether the start got this far or not.
    steps.defer(async () => {
      leaving = true;
      if (running) {
        log.info("Shutting down server...");
        health.setAllNotServing();
      }
      // Sends that still reach us while we leave go to every peer (see Cluster.leave).
      cluster?.leave();
      serving.leave();
      withdrawn = await registrar.deregister({ keepLease: running });
      if (!running) return;
      logWithdrawn(log, withdrawn, registrar.key, config.etcd.leaseTtlSeconds);
      await sleep(config.server.drainDelayMs);
    });
    await registrar.register(instance, { signal: stop.signal, deadline });
    running = true;
    if (!stop.signal.aborted) {
      log.info(
        `Service registered to etcd: ${registrar.key} -> ${instance.addr} (lease ${registrar.leaseId}, ttl ${config.etcd.leaseTtlSeconds}s)`,
        {
          key: registrar.key,
          addr: instance.addr,
          lease: registrar.leaseId,
          ttl_s: config.etcd.leaseTtlSeconds,
        },
      );
      const listening = formatHostPort({ host: config.server.addr.host || "0.0.0.0", port: serving.port });
      log.info(`gRPC server listening on ${listening}`, { addr: listening, workers: serving.workers() });
      if (!config.server.auth) {
        log.warn(
          `No auth configured: anyone who can reach ${listening} can send to and subscribe on any recipient (set notification-server.auth)`,
        );
      } else if (!config.server.tls) {
        log.warn(
          `Auth without TLS: bearer tokens travel in clear on ${listening}, and anyone who sees one can use it until it expires (set notification-server.tls)`,
        );
      }
      await stop.stopped;
    }
  } catch (error) {
    await steps.disposeAsync();
    if (!stop.signal.aborted) throw error;
    log.info(
      withdrawn === "unreachable"
        ? `Stopped during start-up; etcd unreachable, a record written meanwhile expires within ${config.etcd.leaseTtlSeconds}s`
        : "Stopped during start-up; nothing is registered",
    );
    return exitCode;
  }
  await steps.disposeAsync();
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
  return exitCode;
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

function describeUnexpected(reason: unknown): string {
  const text = reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason);
  return text.split("\n")[0];
}

/**
 * Ctrl+C signals the whole process group, and `deno task` (and scripts/dev.ts) forward it to the
 * service too, so one keypress arrives twice within milliseconds. A repeat inside this window is
 * the same event, not a request to force.
 */
const DUPLICATE_SIGNAL_MS = 300;

/**
 * First SIGINT/SIGTERM/SIGHUP aborts `signal` and resolves `stopped`; a later one exits at once.
 * `guard` turns uncaught errors and unhandled rejections into the same stop.
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
    guard(onUnexpected: (reason: unknown) => void) {
      const onError = (event: ErrorEvent) => {
        event.preventDefault();
        onUnexpected(event.error ?? event.message);
        requestStop();
      };
      const onRejection = (event: PromiseRejectionEvent) => {
        event.preventDefault();
        onUnexpected(event.reason);
        requestStop();
      };
      globalThis.addEventListener("error", onError);
      globalThis.addEventListener("unhandledrejection", onRejection);
      return {
        [Symbol.dispose]: () => {
          globalThis.removeEventListener("error", onError);
          globalThis.removeEventListener("unhandledrejection", onRejection);
        },
      };
    },
    [Symbol.dispose]: () => {
      for (const { name, handler } of handlers) Deno.removeSignalListener(name, handler);
    },
  };
}
