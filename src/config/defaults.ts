/**
 * Every default of the configuration, once: the config reader fills an absent field from here, and
 * a part built without a config (a test's server) takes the same value from here.
 */
import { DEFAULT_PREFIX } from "@notification-server/registry";

const MIB = 1024 * 1024;

export const DEFAULTS = {
  // notification-server
  shutdownTimeoutMs: 10_000,
  drainDelayMs: 1_000,
  peerTimeoutMs: 1_000,
  maxSubscribers: 10_000,
  maxConnections: 1_000,
  /** A connection that has not started a request by then is closed. */
  handshakeTimeoutMs: 10_000,
  /** What grpc-go and most HTTP/2 servers advertise. */
  maxConcurrentStreams: 100,
  /** gRPC's usual metadata bound is 8 KiB (grpc-java, grpc-go's default send side); twice that. */
  maxHeaderListBytes: 16_384,
  maxHealthWatches: 1_000,
  /** Per Subscribe stream, notifications the client has not read (Centrifugo's bound in bytes). */
  subscriberQueue: 1_000,
  subscriberQueueBytes: MIB,
  /** Across the instance. */
  subscriberQueueTotalBytes: 256 * MIB,
  maxSubscribersPerConnection: 100,
  maxSubscribersPerIdentity: 100,
  logFormat: "text",
  logLevel: "info",
  /** notification-server.auth: the scope a token needs to Send. */
  sendScope: "notifications:send",
  // notification-server.broker.nats
  brokerStream: "NOTIFICATIONS",
  brokerSubjectPrefix: "notifications",
  /** Notifications kept per recipient (JetStream's max_msgs_per_subject). */
  brokerHistorySize: 100,
  /** How long a notification is kept (JetStream's max_age): a day offline is recovered. */
  brokerHistoryTtlMs: 24 * 60 * 60 * 1000,
  brokerReplicas: 1,
  /** A Send whose store is not acknowledged by then answers UNAVAILABLE. */
  brokerPublishTimeoutMs: 2_000,
  /** How long an idempotency key is remembered (the broker's duplicate window; the mesh's too). */
  duplicateWindowMs: 2 * 60 * 1000,
  maxRecipientsPerSend: 1_000,
  // notification-server.http
  httpMaxBodyBytes: MIB,
  sseKeepaliveMs: 15_000,
  sseRetryMs: 2_000,
  // etcd
  etcdPrefix: DEFAULT_PREFIX,
  /** Apart from the registrations: the mesh's recipient directory. */
  directoryPrefix: "/notification-directory",
  layout: "instance",
  leaseTtlMs: 10_000,
  dialTimeoutMs: 5_000,
  startupTimeoutMs: 30_000,
} as const;
