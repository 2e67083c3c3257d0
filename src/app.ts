/**
 * The service's lifecycle, top to bottom. Start: config is loaded by the caller → etcd answers →
 * gRPC port bound (never advertise a port we could not bind) → lease granted and record written →
 * keep-alive and self-healing in the background. Stop (first SIGINT/SIGTERM) runs in reverse:
 * health NOT_SERVING → deregister (delete our record, revoke the lease) → drain delay so watchers
 * drop us → refuse new calls, end streams, finish in-flight calls within `shutdown-timeout` →
 * close etcd. A second signal exits at once.
 */
import { advertisedAddress } from "./advertise.ts";
import { sleep } from "./backoff.ts";
import type { Config } from "./config.ts";
import { formatDuration } from "./duration.ts";
import { HealthService } from "./health.ts";
import type { Logger } from "./logger.ts";
import { NotificationService } from "./notification/service.ts";
import { createEtcdClient, deadlineAfter, waitForEtcd } from "./registry/etcd_client.ts";
import { EtcdRegistrar } from "./registry/etcd_registrar.ts";
import type { ServiceInstance } from "./registry/types.ts";
import { type BoundServer, startGrpcServer, stopGrpcServer } from "./server.ts";

/** The fully qualified name health reports the notification service under. */
export const NOTIFICATION_SERVICE = "notification.v1.NotificationService";
/** Health entry that is SERVING only while our record is in etcd. */
export const REGISTRATION_HEALTH = "registration";

const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

/** Runs the service until a signal stops it; resolves with the exit code. Startup errors throw. */
export async function runServer(config: Config, log: Logger): Promise<number> {
  log.info(`Using config file: ${config.path}`);
  const stop = listenForStopSignals(log);
  const etcd = createEtcdClient(config.etcd);
  const health = new HealthService({
    "": "SERVING",
    [NOTIFICATION_SERVICE]: "SERVING",
    [REGISTRATION_HEALTH]: "NOT_SERVING",
  });
  const notifications = new NotificationService({
    instanceId: "",
    maxSubscribers: config.server.maxSubscribers,
  });
  const registrar = new EtcdRegistrar(etcd, {
    prefix: config.etcd.prefix,
    layout: config.etcd.layout,
    leaseTtlSeconds: config.etcd.leaseTtlSeconds,
    logger: log,
    onStateChange: (state) =>
      health.set(REGISTRATION_HEALTH, state === "registered" ? "SERVING" : "NOT_SERVING"),
  });
  let bound: BoundServer | undefined;
  try {
    // One start-up budget for reaching etcd and registering, not one each.
    const deadline = deadlineAfter(config.etcd.startupTimeoutMs);
    await waitForEtcd(etcd, { endpoints: config.etcd.endpoints, deadline, signal: stop.signal });
    if (stop.signal.aborted) return 0;
    bound = await startGrpcServer(config.server.addr, {
      notification: notifications.handlers(),
      health: health.handlers(),
    }, config.server.tls);
    const advertised = advertisedAddress(config.server.addr, bound.port, config.server.advertiseAddr);
    if (advertised.derivedFrom) log.info(`Advertising ${advertised.addr} (from ${advertised.derivedFrom})`);
    const instance: ServiceInstance = {
      id: config.server.instanceId ?? advertised.addr,
      name: config.server.name,
      addr: advertised.addr,
      metadata: config.server.metadata,
    };
    notifications.instanceId = instance.id;
    await registrar.register(instance, { signal: stop.signal, deadline });
    if (!stop.signal.aborted) {
      log.info(
        `Service registered to etcd: ${registrar.key} -> ${instance.addr} (lease ${registrar.leaseId}, ttl ${config.etcd.leaseTtlSeconds}s)`,
      );
      log.info(`gRPC server listening on ${config.server.addr.host || "0.0.0.0"}:${bound.port}`);
      await stop.stopped;
    }
  } catch (error) {
    // Undo a partial start in reverse; nothing stays registered.
    await registrar.deregister();
    bound?.server.forceShutdown();
    etcd.close();
    stop.dispose();
    if (stop.signal.aborted) return 0;
    throw error;
  }

  log.info("Shutting down server...");
  health.setAllNotServing();
  const outcome = await registrar.deregister();
  if (outcome === "unreachable") {
    log.warn(
      `Service not deregistered (etcd unreachable): ${registrar.key} expires within ${config.etcd.leaseTtlSeconds}s`,
    );
  } else {
    log.info(
      `Service deregistered from etcd: ${registrar.key}${
        outcome === "absent" ? " (no record of ours was left)" : ""
      }`,
    );
  }
  await sleep(config.server.drainDelayMs);
  const started = Date.now();
  const stopped = await stopGrpcServer(bound.server, config.server.shutdownTimeoutMs, () => {
    notifications.endSubscriptions();
    health.endWatches();
  });
  etcd.close();
  stop.dispose();
  if (stopped === "forced") {
    log.warn(
      `Server stopped: calls still running after ${
        formatDuration(config.server.shutdownTimeoutMs)
      } were cancelled`,
    );
  } else {
    log.info(`Server stopped gracefully (drained in ${formatDuration(Date.now() - started)})`);
  }
  return 0;
}

/**
 * Ctrl+C signals the whole process group, and `deno task` (and scripts/dev.ts) forward it to the
 * service too, so one keypress arrives twice within milliseconds. A repeat inside this window is
 * the same event, not a request to force.
 */
const DUPLICATE_SIGNAL_MS = 300;

/** First SIGINT/SIGTERM aborts `signal` and resolves `stopped`; a later one exits at once. */
function listenForStopSignals(log: Logger) {
  const controller = new AbortController();
  let firstAt = 0;
  let resolveStopped: () => void = () => {};
  const stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
  const handlers = (["SIGINT", "SIGTERM"] as const).map((name) => {
    const handler = () => {
      if (controller.signal.aborted) {
        if (Date.now() - firstAt < DUPLICATE_SIGNAL_MS) return;
        log.error(`Received ${name} again during shutdown; exiting now`);
        Deno.exit(SIGNAL_EXIT[name]);
      }
      firstAt = Date.now();
      controller.abort();
      resolveStopped();
    };
    Deno.addSignalListener(name, handler);
    return { name, handler };
  });
  return {
    signal: controller.signal,
    stopped,
    dispose: () => {
      for (const { name, handler } of handlers) Deno.removeSignalListener(name, handler);
    },
  };
}
