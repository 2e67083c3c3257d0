/**
 * The gRPC services one serving thread hosts (Notification, Health, Cluster), with metrics, built
 * the same way on the main thread (workers: 1) and in every worker.
 */
import type { ServerConfig } from "../config/mod.ts";
import { HealthService } from "./health.ts";
import type { Limit } from "../_util/limits.ts";
import type { Metrics } from "../metrics/mod.ts";
import { NotificationService } from "../notification/service.ts";
import { notificationServerDefinition } from "../notification/codec.ts";
import { forwardService } from "../cluster/forward_service.ts";
import {
  type BoundServer,
  type ServeLimits,
  type ServerServices,
  startGrpcServer,
} from "../transport/server.ts";
import type { Routing } from "../notification/routing.ts";
import type { Delivery } from "../notification/delivery.ts";
import type { BrokerHooks } from "../broker/broker_delivery.ts";
import { describePressure } from "../transport/connection_cuts.ts";
import { cutReporter } from "../metrics/mod.ts";
import { StreamTracker } from "../transport/streams.ts";
import { CallerPolicy, refusalLine } from "../auth/callers.ts";
import { CountedWarning } from "../_util/counted_warning.ts";
import type { IdentityTable } from "../auth/identity_table.ts";

/** The fully qualified name health reports the notification service under. */
export const NOTIFICATION_SERVICE = "notification.v1.NotificationService";
/** Health entry that is SERVING only while our record is in etcd. */
export const REGISTRATION_HEALTH = "registration";

/** The service's health entries, as it starts: serving, not registered yet. */
export function serviceHealth(server: ServerConfig): HealthService {
  return new HealthService({
    "": "SERVING",
    // SERVING once the instance can route (app.ts): before, a Send would miss other instances.
    [NOTIFICATION_SERVICE]: "NOT_SERVING",
    [REGISTRATION_HEALTH]: "NOT_SERVING",
  }, { maxWatches: server.maxHealthWatches });
}

/** Options for {@link buildServices}. */
export interface ServicesOptions {
  server: ServerConfig;
  health: HealthService;
  subscribers: Limit;
  /** The instance's budget of bytes queued to subscribers (`subscriber-queue-total-bytes`). */
  queuedBytes: Limit;
  metrics?: Metrics;
  /** Where this thread's WARN lines go (refused calls). */
  warn: (message: string) => void;
  /** Per-identity subscriptions and Send buckets, shared by the instance's threads. */
  identities: IdentityTable;
  /** For a peer's barrier: whether this instance's directory view reached `revision`. */
  reached: (revision: bigint) => Promise<boolean>;
}

/** One thread's services, and how to end their streams on shutdown. */
export interface Services {
  notifications: NotificationService;
  handlers: ServerServices;
  /** Turns Forward on: callers must prove membership with one of `secrets` (peer_secret.ts). */
  setPeerSecrets(secrets: readonly string[]): void;
  /** Ends Subscribe, Health/Watch and peers' Forward streams (they never end by themselves). */
  endStreams(): void;
}

export function buildServices(options: ServicesOptions): Services {
  const { metrics, health } = options;
  const refusals = new CountedWarning(options.warn, refusalLine);
  const notifications = new NotificationService({
    instanceId: "",
    subscribers: options.subscribers,
    queuedBytes: options.queuedBytes,
    onSent: (delivered) => {
      metrics?.notificationsSent.inc();
      // With a broker, `delivered` is this thread's share only: each stream's write is counted
      // where it happens instead (brokerHooks).
      if (!options.server.broker) metrics?.notificationsDelivered.inc(delivered);
    },
    onUnavailable: () => metrics?.sendsUnavailable.inc(),
    subscriberQueue: { messages: options.server.subscriberQueue, bytes: options.server.subscriberQueueBytes },
    callers: new CallerPolicy({
      auth: options.server.auth,
      limits: options.server.callerLimits,
      identities: options.identities,
      onRefused: (reason, peer) => {
        metrics?.callsRefused.inc({ reason });
        refusals.add(reason, peer);
      },
    }),
    onDropped: () => metrics?.notificationsDropped.inc(),
  });
  const peerStreams = new StreamTracker();
  // Forwarding is off (Forward answers UNIMPLEMENTED) until the cluster hands over its secrets.
  let peerSecrets: readonly string[] | undefined;
  const forward = forwardService({
    deliver: (recipient, bytes) => {
      metrics?.notificationsReceived.inc();
      // The peer sent it to every other instance itself: it goes no further than this one.
      return notifications.deliver(recipient, bytes, "instance");
    },
    reached: options.reached,
    streams: peerStreams,
    peers: { name: options.server.name, self: () => notifications.instanceId, secrets: () => peerSecrets },
  });
  return {
    notifications,
    setPeerSecrets: (secrets) => {
      peerSecrets = secrets;
      forward.recheck();
    },
    handlers: {
      notification: metrics?.instrument(NOTIFICATION_SERVICE, notifications.handlers()) ??
        notifications.handlers(),
      notificationDefinition: notificationServerDefinition(),
      health: metrics?.instrument("grpc.health.v1.Health", health.handlers()) ?? health.handlers(),
      cluster: forward.handlers,
    },
    endStreams() {
      notifications.endSubscriptions();
      health.endWatches();
      peerStreams.endAll();
    },
  };
}

/**
 * One serving thread's connection bounds from the config: `connections` is the thread's view of
 * `max-connections` (shared by the workers), `warn` where its cut and pressure lines go.
 */
export function threadLimits(options: {
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

/**
 * One serving thread, wired the same way on the main thread and in each worker: its services over
 * `places`, routed by `routing` from the first call on, served on `port` (the configured one by
 * default; workers share theirs with `reusePort`).
 */
export async function serveThread(options: {
  server: ServerConfig;
  health: HealthService;
  places: ThreadPlaces;
  warn: (message: string) => void;
  metrics?: Metrics;
  reached: (revision: bigint) => Promise<boolean>;
  instanceId?: string;
  routing?: Routing;
  /** Delivery through the broker instead of the mesh (config `broker`). */
  delivery?: Delivery;
  port?: number;
  reusePort?: boolean;
}): Promise<{ services: Services; bound: BoundServer }> {
  const { server, places, warn, metrics } = options;
  const services = buildServices({
    server,
    health: options.health,
    subscribers: places.subscribers,
    queuedBytes: places.queuedBytes,
    identities: places.identities,
    warn,
    metrics,
    reached: options.reached,
  });
  if (options.instanceId !== undefined) services.notifications.instanceId = options.instanceId;
  if (options.routing) services.notifications.routing = options.routing;
  if (options.delivery) services.notifications.delivery = options.delivery;
  const bound = await startGrpcServer({
    addr: { host: server.addr.host, port: options.port ?? server.addr.port },
    services: services.handlers,
    tls: server.tls,
    limits: threadLimits({ server, connections: places.connections, warn, metrics }),
    reusePort: options.reusePort,
  });
  return { services, bound };
}

/**
 * What one thread's broker connection reports: metrics, and WARN lines through `warn`. Made just
 * before the thread connects, which either succeeds or ends the start: connected from then on.
 */
export function brokerHooks(metrics: Metrics | undefined, warn: (line: string) => void): BrokerHooks {
  metrics?.brokerConnected.set(1);
  return {
    onConnection: (connected) => metrics?.brokerConnected.set(connected ? 1 : 0),
    onStored: (ms) => metrics?.brokerStoreSeconds.observe(ms / 1000),
    onReplay: (recovered) => metrics?.brokerReplays.inc({ recovered: String(recovered) }),
    onGap: () => metrics?.brokerHistoryGaps.inc(),
    onWritten: () => metrics?.notificationsDelivered.inc(),
    warn,
  };
}
