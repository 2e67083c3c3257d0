/** The validated configuration, as the rest of the service sees it (read by mod.ts). */
import type { EtcdClientOptions, EtcdTlsOptions, HostPort, Layout } from "@notification-server/registry";
import type { LogFormat, LogLevel } from "../_util/logger.ts";

/** The default config path, relative to the working directory. */
export const DEFAULT_CONFIG_PATH = "config/platform/config.yaml";

export type { Layout };

/** TLS for the gRPC server. */
export interface ServerTlsConfig {
  certFile: string;
  keyFile: string;
  /** When set, clients must present a certificate signed by this CA. */
  clientCaFile?: string;
  /** CA that signed the other instances' certificates (cluster forwarding). @default clientCaFile */
  peerCaFile?: string;
  /** Name in every instance's certificate, checked when dialing a peer (Deno refuses an IP as the name). */
  peerServerName?: string;
}

/** `notification-server.auth`: who may Send and Subscribe (JWT bearer tokens). */
export interface AuthConfig {
  jwt: {
    /** HS256/384/512 secret (the file's bytes, a trailing newline dropped). */
    hmacSecretFile?: string;
    /** PEM public key (SPKI) for RS*, PS*, ES* or EdDSA tokens. */
    publicKeyFile?: string;
    /** A JWK Set; the key is chosen by the token's `kid` (rotation). */
    jwksFile?: string;
    /** Checked when set. */
    issuer?: string;
    /** Checked when set. */
    audience?: string;
  };
  /** A Send token's space-separated `scope` must contain this. @default "notifications:send" */
  sendScope: string;
}

/** Bounds per caller (identity: the token's `sub`, else the client's address). */
export interface CallerLimits {
  /** Subscribe streams one connection may hold. @default 100 */
  subscribersPerConnection: number;
  /**
   * Subscribe streams one token subject may hold on this instance, across its serving threads; with auth
   * only (a client address is no identity: NAT, gateways). @default 100
   */
  subscribersPerIdentity: number;
  /**
   * Sends per second one identity may make on this instance (its threads share one bucket, of twice
   * that); 0: unbounded. @default 0
   */
  sendsPerSecond: number;
}

/** `notification-server:` section. */
export interface ServerConfig {
  addr: HostPort;
  name: string;
  /** Address clients dial; derived from `addr` and the machine's interfaces when unset. */
  advertiseAddr?: HostPort;
  /** Defaults to the advertised host:port. */
  instanceId?: string;
  metadata: Readonly<Record<string, string>>;
  /** In-flight calls get this long after shutdown begins before they are cancelled. @default 10 s */
  shutdownTimeoutMs: number;
  /** Time between deregistration and refusing new calls, so watchers drop us first. @default 1 s */
  drainDelayMs: number;
  /** Bound on concurrent Subscribe streams. @default 10000 */
  maxSubscribers: number;
  /**
   * Bound on concurrent client connections; keep it below the open-file limit (`ulimit -n`) less
   * about 64 for etcd and files. @default 1000
   */
  maxConnections: number;
  /**
   * A client connection that has not started a request (its first HEADERS, after the HTTP/2 and TLS
   * handshakes) this long after it was accepted is closed. @default 10 s
   */
  handshakeTimeoutMs: number;
  /** Streams one connection may have open at once (advertised in SETTINGS). @default 100 */
  maxConcurrentStreams: number;
  /**
   * Largest decoded size of one request's headers in bytes (HPACK sizes: name + value + 32 per
   * field); a connection that sends more is cut. @default 16384
   */
  maxHeaderListBytes: number;
  /** Bound on concurrent Health/Watch streams. @default 1000 */
  maxHealthWatches: number;
  /** Per Subscribe stream, notifications not yet read before it is cut off. @default 1000 */
  subscriberQueue: number;
  /** The same bound in bytes. @default 1 MiB (Centrifugo's per-client queue default) */
  subscriberQueueBytes: number;
  /**
   * Bytes queued across every Subscribe stream of the instance (cut-off streams too, until they
   * close); a stream that is behind when it is spent is cut off. @default 256 MiB
   */
  subscriberQueueTotalBytes: number;
  /** A peer that has not answered a forwarded notification by then counts 0 for it. @default 1 s */
  peerTimeoutMs: number;
  /**
   * gRPC serving threads behind the one port and registration; 1 serves from the main thread.
   * @default the CPUs this process may use ("auto": cgroup quota honoured)
   */
  workers: number;
  /** Where `/metrics` is served (never the gRPC port); off when unset. */
  metricsAddr?: HostPort;
  /** @default "text" */
  logFormat: LogFormat;
  /** @default "info" */
  logLevel: LogLevel;
  tls?: ServerTlsConfig;
  /** Absent: anyone who can reach the port may Send and Subscribe (the original design). */
  auth?: AuthConfig;
  callerLimits: CallerLimits;
  /** Recipients one SendMany may name (`max-recipients-per-send`). @default 1000 */
  maxRecipientsPerSend: number;
  /** `broker:`; absent: the mesh (etcd directory and peer links), with no positions or history. */
  broker?: BrokerConfig;
  /** `http:`; absent: no HTTP port (gRPC only). */
  http?: HttpConfig;
}

/**
 * `notification-server.http`: the web edge on a port of its own (src/web/): Connect and gRPC-Web
 * for the NotificationService, SSE, probes and the built-in page. It uses `tls` when that is set.
 */
export interface HttpConfig {
  addr: HostPort;
  /** Origins (`https://app.example.com`, or `*`) whose pages may call it from a browser. @default none */
  allowedOrigins: string[];
  /** Whether `GET /` serves the built-in page. @default true */
  page: boolean;
  /** Largest request body; larger ones get 413. @default 1 MiB */
  maxBodyBytes: number;
  /** An idle SSE stream gets a comment this often, so that proxies keep it open. @default 15 s */
  sseKeepaliveMs: number;
  /** What an SSE stream tells EventSource to wait before it reconnects (`retry:`). @default 2 s */
  sseRetryMs: number;
}

/** `notification-server.broker.nats`: NATS JetStream stores every notification with a position. */
export interface BrokerConfig {
  nats: {
    /** host:port of one or more NATS servers (a client finds the rest of a cluster by itself). */
    servers: string[];
    user?: string;
    password?: string;
    token?: string;
    /** An NKey seed file (the user's `SU…` seed). */
    nkeySeedFile?: string;
    /** A `.creds` file (JWT and NKey seed, as `nsc` writes it). */
    credsFile?: string;
    /** TLS towards NATS; `caFile` alone verifies the server, with cert/key the client proves itself. */
    tls?: { caFile?: string; certFile?: string; keyFile?: string };
    /** JetStream stream name. @default "NOTIFICATIONS" */
    stream: string;
    /** Subjects are `<prefix>.in.<token>` (stored) and `<prefix>.live.<token>` (broker/subjects.ts). @default "notifications" */
    subjectPrefix: string;
    /** Notifications kept per recipient. @default 100 */
    historySize: number;
    /** How long a notification is kept; 0 keeps it until history-size pushes it out. @default 24h */
    historyTtlMs: number;
    /** Copies of the stream in a NATS cluster (1, 3 or 5). @default 1 */
    replicas: number;
    /** A Send not acknowledged as stored by then answers UNAVAILABLE. @default 2s */
    publishTimeoutMs: number;
    /** A Send repeated with the same idempotency key within this answers the first one (JetStream's duplicate window). @default 2 min */
    duplicateWindowMs: number;
  };
}

/** TLS towards etcd. */
export type EtcdTlsConfig = EtcdTlsOptions;

/** `etcd:` section: how to reach etcd (the registry's client options), and where to register. */
export interface EtcdConfig extends EtcdClientOptions {
  /** @default 10 */
  leaseTtlSeconds: number;
  /** @default "/services" */
  prefix: string;
  /** Where the recipient directory lives (apart from `prefix`). @default "/notification-directory" */
  directoryPrefix: string;
  /** @default "instance" */
  layout: Layout;
  /** How long start-up keeps retrying an unreachable etcd; 0 waits forever. @default 30 s */
  startupTimeoutMs: number;
}

/** The whole validated configuration. */
export interface Config {
  /** The file it came from, as given. */
  path: string;
  server: ServerConfig;
  etcd: EtcdConfig;
}
