/**
 * The service's lifecycle, top to bottom. Start: config is loaded by the caller → etcd answers →
 * gRPC port bound (never advertise a port we could not bind) → `/metrics` bound when configured →
 * the peers' secret read from etcd and the cluster started (forwarding) → lease granted and record
 * written → keep-alive and self-healing in the background. Stop (the first SIGINT/SIGTERM/SIGHUP,
 * or an unexpected error, which then exits 1) runs in reverse: health NOT_SERVING → deregister
 * (delete our record, revoke the lease) → drain delay so watchers drop us → refuse new calls, end
 * streams, finish in-flight calls within `shutdown-timeout` → stop watching the peers' secret, close
 * the cluster → close `/metrics` → close etcd. A second signal exits at once.
 */
import { advertisedAddress } from "./serving/advertise.ts";
import { sleep } from "../packages/registry/src/backoff.ts";
import type { Config } from "./config/mod.ts";
import { formatDuration } from "../packages/registry/src/duration.ts";
import { HealthService } from "./serving/health.ts";
import { http2Guard } from "../packages/registry/src/http2_guard.ts";
import type { Logger } from "./_util/logger.ts";
import {
  createEtcdClient,
  deadlineAfter,
  describeEtcdError,
  waitForEtcd,
} from "../packages/registry/src/etcd_client.ts";
import { EtcdRegistrar } from "../packages/registry/src/etcd_registrar.ts";
import type { ServiceInstance } from "../packages/registry/src/types.ts";
import { peerCredentials } from "./transport/server.ts";
import { NOTIFICATION_SERVICE } from "./serving/services.ts";
import { type Serving, startServing } from "./serving/mod.ts";
import { formatHostPort } from "../packages/registry/src/host_port.ts";
import { mergedRegistry, Metrics, type MetricsServer, serveMetrics } from "./metrics/mod.ts";
import { Cluster } from "./cluster/cluster.ts";
import { PEER_SECRET_PREFIX, PeerSecret } from "./cluster/peer_secret.ts";

export { NOTIFICATION_SERVICE };
/** Health entry that is SERVING only while our record is in etcd. */
export const REGISTRATION_HEALTH = "registration";

/** How long stopping waits for the cluster's etcd watches to be cancelled before closing etcd anyway. */
const CLUSTER_CLOSE_GRACE_MS = 200;

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
  const guard = http2Guard();
  if (!guard.installed) {
    log.warn(
      `HTTP/2 crash guard not installed (${guard.reason}): a client closing its connection can crash this process (denoland/deno#36788); run it under a supervisor`,
      { reason: guard.reason },
    );
  }
  const stop = listenForStopSignals(log);
  // A bug or a library fault (etcd3 throwing inside its stream handlers) must not end the process
  // registered: it is logged, and the service stops the normal way, then exits 1.
  let exitCode = 0;
  const unexpected = stop.guard((reason) => {
    exitCode = 1;
    log.error(`Unexpected error: ${describeUnexpected(reason)}; deregistering and exiting`, {
      error: describeUnexpected(reason),
    });
  });
  // Served here or mirrored into every worker; the registration entry follows the one registration.
  let serving: Serving | undefined;
  const health = new HealthService({
    "": "SERVING",
    [NOTIFICATION_SERVICE]: "SERVING",
    [REGISTRATION_HEALTH]: "NOT_SERVING",
  }, {
    maxWatches: config.server.maxHealthWatches,
    onChange: (service, status) => serving?.setHealth(service, status),
  });
  const metrics = config.server.metricsAddr
    ? new Metrics({
      live: {
        subscribers: () => serving?.subscribers() ?? 0,
        healthWatches: () => serving?.healthWatches() ?? 0,
        workers: () => serving?.workers() ?? 0,
      },
    })
    : undefined;
  const etcd = createEtcdClient({ ...config.etcd, observe: metrics?.observeEtcd });
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
      // The directory lives under the registration's lease: a new lease means writing it again.
      if (event === "restored") cluster?.publisher.setLease(registrar.leaseId);
      if (!metrics) return;
      if (event === "lost") metrics.registrationsLost.inc();
      else if (event === "restored") metrics.registrationsRestored.inc();
      else if (event === "keepaliveFailed") metrics.keepaliveFailures.inc();
      else metrics.etcdWatchDisconnects.inc();
    },
  });
  metrics?.registrationState.set(0);
  let cluster: Cluster | undefined;
  let peerSecret: PeerSecret | undefined;
  let metricsServer: MetricsServer | undefined;
  try {
    // One start-up budget for reaching etcd and registering, not one each.
    const deadline = deadlineAfter(config.etcd.startupTimeoutMs);
    await waitForEtcd(etcd, { endpoints: config.etcd.endpoints, deadline, signal: stop.signal });
    serving = await startServing(config, {
      health,
      metrics,
      logger: log,
      reached: (revision) => cluster?.reached(revision) ?? Promise.resolve(false),
      workerModule: options.workerModule,
    });
    if (serving.workers() > 1) {
      log.info(`Serving gRPC from ${serving.workers()} workers on one port`, { workers: serving.workers() });
    }
    if (config.server.metricsAddr) {
      const own = metrics!.registry;
      const threads = serving;
      metricsServer = await serveMetrics(
        config.server.metricsAddr,
        async () => mergedRegistry(own, await threads.workerMetrics()),
      );
      const host = config.server.metricsAddr.host || "0.0.0.0";
      log.info(`Metrics on http://${formatHostPort({ host, port: metricsServer.port })}/metrics`, {
        addr: formatHostPort({ host, port: metricsServer.port }),
      });
    }
    const advertised = advertisedAddress(config.server.addr, serving.port, config.server.advertiseAddr);
    if (advertised.derivedFrom) log.info(`Advertising ${advertised.addr} (from ${advertised.derivedFrom})`);
    const instance: ServiceInstance = {
      id: config.server.instanceId ?? advertised.addr,
      name: config.server.name,
      addr: advertised.addr,
      metadata: config.server.metadata,
    };
    serving.setInstanceId(instance.id);
    const peers = peerCredentials(config.server.tls);
    // Forward is refused to anyone who cannot prove membership; the secret lives in etcd.
    const secret = "off" in peers ? peers.off : await PeerSecret.load(
      etcd,
      config.server.name,
      (secrets) => serving?.setPeerSecrets(secrets),
    ).catch((error: Error) =>
      `cannot read or create the peers' secret at ${PEER_SECRET_PREFIX}/${config.server.name} (${
        describeEtcdError(error)
      }): give the instances' etcd user readwrite on that key`
    );
    if (typeof secret === "string" || "off" in peers) {
      log.warn(`Cluster forwarding is off (each instance delivers to its own subscribers only): ${secret}`);
    } else {
      peerSecret = secret;
      cluster = new Cluster(etcd, {
        peerCredential: () => secret.credential(),
        name: config.server.name,
        instanceId: instance.id,
        registryPrefix: config.etcd.prefix,
        directoryPrefix: config.etcd.directoryPrefix,
        peerTimeoutMs: config.server.peerTimeoutMs,
        credentials: peers.credentials,
        serverName: peers.serverName,
        logger: log,
        onForwarded: (n) => metrics?.notificationsForwarded.inc(n),
        onResync: (watch, event) => {
          if (event.attempts === undefined) metrics?.etcdWatchResyncs.inc({ watch, reason: event.reason });
        },
      });
      serving.setCluster(cluster);
    }
    await registrar.register(instance, { signal: stop.signal, deadline });
    cluster?.publisher.setLease(registrar.leaseId);
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
      }
      await stop.stopped;
    }
  } catch (error) {
    // Undo a partial start in reverse; nothing stays registered.
    const undone = await registrar.deregister();
    serving?.abort();
    peerSecret?.close();
    await Promise.race([cluster?.close(), sleep(CLUSTER_CLOSE_GRACE_MS)]);
    await metricsServer?.close();
    etcd.close();
    stop.dispose();
    unexpected.dispose();
    if (stop.signal.aborted) {
      log.info(
        undone === "unreachable"
          ? `Stopped during start-up; etcd unreachable, a record written meanwhile expires within ${config.etcd.leaseTtlSeconds}s`
          : "Stopped during start-up; nothing is registered",
      );
      return exitCode;
    }
    throw error;
  }

  log.info("Shutting down server...");
  health.setAllNotServing();
  const outcome = await registrar.deregister();
  if (outcome === "unreachable") {
    log.warn(
      `Service not deregistered (etcd unreachable): ${registrar.key} expires within ${config.etcd.leaseTtlSeconds}s`,
      { key: registrar.key },
    );
  } else {
    log.info(
      `Service deregistered from etcd: ${registrar.key}${
        outcome === "absent" ? " (no record of ours was left)" : ""
      }`,
      { key: registrar.key },
    );
  }
  await sleep(config.server.drainDelayMs);
  const started = Date.now();
  const stopped = await serving.drain(config.server.shutdownTimeoutMs);
  const drained = Date.now() - started;
  // etcd is closed right after, so its watch cancels need no confirmation: a frozen etcd would hold
  // the exit up to a second per watch.
  peerSecret?.close();
  await Promise.race([cluster?.close(), sleep(CLUSTER_CLOSE_GRACE_MS)]);
  await metricsServer?.close();
  etcd.close();
  stop.dispose();
  unexpected.dispose();
  if (stopped === "forced") {
    log.warn(
      `Server stopped: calls still running after ${
        formatDuration(config.server.shutdownTimeoutMs)
      } were cancelled`,
    );
  } else {
    log.info(`Server stopped gracefully (drained in ${formatDuration(drained)})`, { duration_ms: drained });
  }
  return exitCode;
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
        dispose: () => {
          globalThis.removeEventListener("error", onError);
          globalThis.removeEventListener("unhandledrejection", onRejection);
        },
      };
    },
    dispose: () => {
      for (const { name, handler } of handlers) Deno.removeSignalListener(name, handler);
    },
  };
}
