/**
 * The gRPC services one serving thread hosts (Notification over the core, Health, and the mode's
 * Cluster service), with metrics, built the same way on the main thread (workers: 1) and in every
 * worker.
 */
import type { ServerConfig } from "../config/mod.ts";
import { HealthService } from "./health.ts";
import type { Limit } from "../_util/limits.ts";
import type { Metrics } from "../metrics/mod.ts";
import { NotificationCore } from "../notification/service.ts";
import {
  type BoundServer,
  type ServeLimits,
  type ServerServices,
  startGrpcServer,
  stopGrpcServer,
} from "../transport/server.ts";
import { describePressure } from "../transport/connection_cuts.ts";
import { cutReporter } from "../metrics/mod.ts";
import { CallerPolicy, refusalLine } from "../auth/callers.ts";
import { CountedWarning } from "../_util/counted_warning.ts";
import type { IdentityTable } from "../auth/identity_table.ts";
import { notificationHandlers, notificationServerDefinition } from "./grpc_notifications.ts";
import type { DeliveryMode, PoolChannel, ThreadDelivery } from "./mode.ts";
import { type HttpEdge, startHttp } from "../web/server.ts";

/** The fully qualified name health reports the notification service under. */
export const NOTIFICATION_SERVICE = "notification.v1.NotificationService";
/** Health entry that is SERVING only while our record is in etcd. */
export const REGISTRATION_HEALTH = "registration";

/** The service's health entries, as it starts: serving, not registered yet. */
export function serviceHealth(server: ServerConfig): HealthService {
  return new HealthService({
    "": "SERVING",
    // SERVING once the delivery mode has joined (app.ts): before, a Send could miss other instances.
    [NOTIFICATION_SERVICE]: "NOT_SERVING",
    [REGISTRATION_HEALTH]: "NOT_SERVING",
  }, { maxWatches: server.maxHealthWatches });
}

/** One thread's services, and how to end their streams on shutdown. */
export interface Services {
  core: NotificationCore;
  handlers: ServerServices;
  /** Ends Subscribe, Health/Watch and the mode's own streams (they never end by themselves). */
  endStreams(): void;
}

/** The services of one thread over `thread`'s delivery. */
function buildServices(options: {
  server: ServerConfig;
  health: HealthService;
  places: ThreadPlaces;
  thread: ThreadDelivery;
  instanceId: () => string;
  metrics?: Metrics;
  warn: (message: string) => void;
}): Services {
  const { server, metrics, health, places, thread } = options;
  const refusals = new CountedWarning(options.warn, refusalLine);
  const core = new NotificationCore({
    delivery: thread.delivery,
    instanceId: options.instanceId,
    subscribers: places.subscribers,
    queuedBytes: places.queuedBytes,
    onSent: () => metrics?.notificationsSent.inc(),
    onUnavailable: () => metrics?.sendsUnavailable.inc(),
    subscriberQueue: { messages: server.subscriberQueue, bytes: server.subscriberQueueBytes },
    maxRecipientsPerSend: server.maxRecipientsPerSend,
    callers: new CallerPolicy({
      auth: server.auth,
      limits: server.callerLimits,
      identities: places.identities,
      onRefused: (reason, peer) => {
        metrics?.callsRefused.inc({ reason });
        refusals.add(reason, peer);
      },
    }),
    onDropped: () => metrics?.notificationsDropped.inc(),
  });
  const notification = notificationHandlers(core);
  return {
    core,
    handlers: {
      notification: metrics?.instrument(NOTIFICATION_SERVICE, notification) ?? notification,
      notificationDefinition: notificationServerDefinition(),
      health: metrics?.instrument("grpc.health.v1.Health", health.handlers()) ?? health.handlers(),
      cluster: thread.cluster,
    },
    endStreams() {
      core.endSubscriptions();
      health.endWatches();
      thread.endStreams?.();
    },
  };
}

/**
 * One serving thread's connection bounds from the config: `connections` is the thread's view of
 * `max-connections` (shared by the workers), `warn` where its cut and pressure lines go.
 */
function threadLimits(options: {
  server: ServerConfig;
  connections: Limit;
  warn: (message: string) => void;
  metrics?: Metrics;
}): ServeLimits {
  const { server, connections, warn, metrics } = options;
  return {
    connections,
    handshakeTimeoutMs: server.handshakeTimeoutMs,
    maxConcurrentStreams: server.maxConcurrentStreams,
    maxHeaderListBytes: server.maxHeaderListBytes,
    onAccept: () => metrics?.connectionsAccepted.inc(),
    onCut: cutReporter(warn, metrics),
    onPressure: (active, fraction) => warn(describePressure(active, fraction)),
  };
}

/**
 * What one serving thread counts against: its own limits when it is the only one, or its view of
 * the instance's shared ones (each worker).
 */
export interface ThreadPlaces {
  subscribers: Limit;
  queuedBytes: Limit;
  connections: Limit;
  identities: IdentityTable;
}

/** One serving thread, bound: its services, its ports, and its side of the delivery mode. */
export interface ServedThread extends Services {
  bound: BoundServer;
  /** The HTTP port (`notification-server.http`), when configured. */
  web?: HttpEdge;
  thread: ThreadDelivery;
}

/**
 * One serving thread, wired the same way on the main thread and in each worker: its side of the
 * delivery mode, its services over `places`, served on `port` (the configured one by default;
 * workers share theirs with `reusePort`), and the HTTP edge over the same core on `httpPort`, when
 * configured. Nothing stays open if it cannot bind.
 */
export async function serveThread(options: {
  server: ServerConfig;
  health: HealthService;
  places: ThreadPlaces;
  mode: DeliveryMode;
  warn: (message: string) => void;
  metrics?: Metrics;
  instanceId: () => string;
  /** In a worker: the mode's way to the main thread. */
  pool?: PoolChannel;
  port?: number;
  httpPort?: number;
  reusePort?: boolean;
}): Promise<ServedThread> {
  const { server, warn, metrics } = options;
  const thread = await options.mode.thread({
    server,
    metrics,
    warn,
    instanceId: options.instanceId,
    pool: options.pool,
  });
  try {
    const services = buildServices({ ...options, thread });
    const bound = await startGrpcServer({
      addr: { host: server.addr.host, port: options.port ?? server.addr.port },
      services: services.handlers,
      tls: server.tls,
      limits: threadLimits({ server, connections: options.places.connections, warn, metrics }),
      reusePort: options.reusePort,
    });
    let web: HttpEdge | undefined;
    try {
      web = server.http && await startHttp({
        http: server.http,
        tls: server.tls,
        core: services.core,
        ready: () => options.health.status(NOTIFICATION_SERVICE) === "SERVING",
        maxHeaderListBytes: server.maxHeaderListBytes,
        metrics,
        port: options.httpPort,
        reusePort: options.reusePort,
      });
    } catch (error) {
      bound.server.forceShutdown();
      throw error;
    }
    return { ...services, bound, web, thread };
  } catch (error) {
    await thread.close?.();
    throw error;
  }
}

/**
 * Drains one thread, both ports at once (see stopGrpcServer; HTTP streams end with the gRPC ones),
 * then closes its side of the mode.
 */
export async function drainThread(served: ServedThread, timeoutMs: number): Promise<"graceful" | "forced"> {
  const web = served.web?.drain(timeoutMs);
  const outcome = await stopGrpcServer(served.bound, timeoutMs, served.endStreams);
  const webOutcome = await web;
  await served.thread.close?.();
  return webOutcome === "forced" ? "forced" : outcome;
}
