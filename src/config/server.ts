/** The `notification-server:` section. */
import type { HostPort } from "@notification-server/registry";
import { DEFAULTS } from "./defaults.ts";
import { LOG_FORMATS, LOG_LEVELS } from "../_util/logger.ts";
import { type EnvName, quote, type Reader } from "./reader.ts";
import { readBroker } from "./broker.ts";
import { readHttp } from "./http.ts";
import { keyAlgorithms } from "./jwt_keys.ts";
import type { AuthConfig, ServerConfig, ServerTlsConfig } from "./types.ts";

const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const INSTANCE_ID = /^[A-Za-z0-9._:\[\]-]{1,253}$/;
const SERVER_KEYS = [
  "addr",
  "name",
  "advertise-addr",
  "instance-id",
  "metadata",
  "shutdown-timeout",
  "drain-delay",
  "max-subscribers",
  "max-connections",
  "handshake-timeout",
  "max-concurrent-streams",
  "max-header-list-size",
  "max-health-watches",
  "subscriber-queue",
  "subscriber-queue-bytes",
  "subscriber-queue-total-bytes",
  "peer-timeout",
  "workers",
  "metrics-addr",
  "log-format",
  "log-level",
  "tls",
  "auth",
  "broker",
  "http",
  "max-subscribers-per-connection",
  "max-subscribers-per-identity",
  "send-rate-per-identity",
  "max-recipients-per-send",
];

/** What is wrong with a service name, or undefined when it is one. */
export function serviceNameProblem(name: string): string | undefined {
  return SERVICE_NAME.test(name)
    ? undefined
    : `${quote(name.slice(0, 140))} is not a service name (letters, digits, '.', '_', '-'; at most 128)`;
}

export function readServer(
  r: Reader,
  raw: Record<string, unknown>,
  env: (name: EnvName) => string | undefined,
  metadataSource: Map<string, string>,
): ServerConfig {
  const s = "notification-server";
  r.noUnknownKeys(raw, s, SERVER_KEYS);
  const addrText = r.fromEnv(env, "NOTIFICATION_ADDR") ?? r.string(raw, s, "addr", true);
  const addr = r.hostPort(addrText, r.field(s, "addr", "NOTIFICATION_ADDR", env), false);
  const name = r.string(raw, s, "name", true)!;
  const nameProblem = serviceNameProblem(name);
  if (nameProblem) r.fail(`${s}.name`, nameProblem);
  const advertiseText = r.fromEnv(env, "NOTIFICATION_ADVERTISE_ADDR") ??
    r.string(raw, s, "advertise-addr");
  const advertiseAddr = advertiseText
    ? r.hostPort(
      advertiseText,
      r.field(s, "advertise-addr", "NOTIFICATION_ADVERTISE_ADDR", env),
      true,
    )
    : undefined;
  const instanceId = r.fromEnv(env, "NOTIFICATION_INSTANCE_ID") ??
    r.string(raw, s, "instance-id");
  if (instanceId && !INSTANCE_ID.test(instanceId)) {
    r.fail(
      r.field(s, "instance-id", "NOTIFICATION_INSTANCE_ID", env),
      `${quote(instanceId)} is not an instance id (letters, digits, '.', '_', ':', '-', '[', ']')`,
    );
  }
  const t = r.section(raw, s, "tls", [
    "cert-file",
    "key-file",
    "client-ca-file",
    "peer-ca-file",
    "peer-server-name",
  ]);
  const tls: ServerTlsConfig | undefined = t && {
    certFile: r.file(t, `${s}.tls`, "cert-file", true)!,
    keyFile: r.file(t, `${s}.tls`, "key-file", true)!,
    clientCaFile: r.file(t, `${s}.tls`, "client-ca-file"),
    peerCaFile: r.file(t, `${s}.tls`, "peer-ca-file"),
    peerServerName: r.string(t, `${s}.tls`, "peer-server-name"),
  };
  return {
    addr,
    name,
    advertiseAddr,
    instanceId: instanceId || undefined,
    metadata: r.metadata(raw["metadata"], `${s}.metadata`, metadataSource),
    shutdownTimeoutMs: r.duration(raw, s, "shutdown-timeout", DEFAULTS.shutdownTimeoutMs),
    drainDelayMs: r.duration(raw, s, "drain-delay", DEFAULTS.drainDelayMs),
    maxSubscribers: r.positiveInt(raw, s, "max-subscribers", DEFAULTS.maxSubscribers),
    maxConnections: r.positiveInt(raw, s, "max-connections", DEFAULTS.maxConnections),
    handshakeTimeoutMs: r.duration(raw, s, "handshake-timeout", DEFAULTS.handshakeTimeoutMs, {
      positive: true,
    }),
    maxConcurrentStreams: r.positiveInt(
      raw,
      s,
      "max-concurrent-streams",
      DEFAULTS.maxConcurrentStreams,
    ),
    maxHeaderListBytes: r.positiveInt(raw, s, "max-header-list-size", DEFAULTS.maxHeaderListBytes),
    maxHealthWatches: r.positiveInt(raw, s, "max-health-watches", DEFAULTS.maxHealthWatches),
    subscriberQueue: r.positiveInt(raw, s, "subscriber-queue", DEFAULTS.subscriberQueue),
    subscriberQueueBytes: r.size(raw, s, "subscriber-queue-bytes", DEFAULTS.subscriberQueueBytes),
    subscriberQueueTotalBytes: r.size(
      raw,
      s,
      "subscriber-queue-total-bytes",
      DEFAULTS.subscriberQueueTotalBytes,
    ),
    peerTimeoutMs: r.duration(raw, s, "peer-timeout", DEFAULTS.peerTimeoutMs, { positive: true }),
    workers: workers(r, raw, s),
    metricsAddr: metricsAddr(r, raw, s, addr),
    logFormat: r.oneOf(raw, s, "log-format", LOG_FORMATS, DEFAULTS.logFormat),
    logLevel: r.oneOf(raw, s, "log-level", LOG_LEVELS, DEFAULTS.logLevel),
    tls,
    auth: auth(r, raw, s),
    maxRecipientsPerSend: r.positiveInt(raw, s, "max-recipients-per-send", DEFAULTS.maxRecipientsPerSend, {
      max: 100_000,
    }),
    broker: readBroker(r, raw, s),
    http: readHttp(r, raw, s, { grpc: addr, metrics: metricsAddr(r, raw, s, addr), tls }),
    callerLimits: {
      subscribersPerConnection: r.positiveInt(
        raw,
        s,
        "max-subscribers-per-connection",
        DEFAULTS.maxSubscribersPerConnection,
      ),
      subscribersPerIdentity: r.positiveInt(
        raw,
        s,
        "max-subscribers-per-identity",
        DEFAULTS.maxSubscribersPerIdentity,
      ),
      sendsPerSecond: raw["send-rate-per-identity"] === 0
        ? 0
        : r.positiveInt(raw, s, "send-rate-per-identity", 0),
    },
  };
}

function auth(r: Reader, raw: Record<string, unknown>, s: string): AuthConfig | undefined {
  const a = r.section(raw, s, "auth", ["jwt", "send-scope"]);
  if (!a) return undefined;
  const section = `${s}.auth.jwt`;
  const j = r.map(a["jwt"], section, true);
  r.noUnknownKeys(j, section, ["hmac-secret-file", "public-key-file", "jwks-file", "issuer", "audience"]);
  const jwt = {
    hmacSecretFile: r.file(j, section, "hmac-secret-file"),
    publicKeyFile: r.file(j, section, "public-key-file"),
    jwksFile: r.file(j, section, "jwks-file"),
    issuer: r.string(j, section, "issuer"),
    audience: r.string(j, section, "audience"),
  };
  const sources = (["hmac-secret-file", "public-key-file", "jwks-file"] as const).filter((k) =>
    j[k] !== undefined
  );
  if (sources.length !== 1) {
    r.fail(
      section,
      `expected one of hmac-secret-file, public-key-file or jwks-file, found ${
        sources.length === 0 ? "none" : sources.join(" and ")
      }`,
    );
  }
  const [source] = sources;
  const path = (jwt.hmacSecretFile ?? jwt.publicKeyFile ?? jwt.jwksFile)!;
  try {
    // Read once here so that a bad key is a config error (the verifier reads it the same way).
    keyAlgorithms(source, r.io.readText(path));
  } catch (error) {
    r.fail(`${section}.${source}`, `${quote(path)} ${(error as Error).message}`);
  }
  return { jwt, sendScope: r.string(a, `${s}.auth`, "send-scope") ?? DEFAULTS.sendScope };
}

/** More threads than this only add memory: every one holds its own copy of the gRPC stack. */
const MAX_WORKERS = 256;

function workers(r: Reader, raw: Record<string, unknown>, s: string): number {
  if (raw["workers"] === "auto") return r.io.cpus();
  return r.positiveInt(raw, s, "workers", r.io.cpus(), { max: MAX_WORKERS, or: "auto" });
}

function metricsAddr(
  r: Reader,
  raw: Record<string, unknown>,
  s: string,
  grpcAddr: HostPort,
): HostPort | undefined {
  const text = r.string(raw, s, "metrics-addr");
  if (!text) return undefined;
  const parsed = r.hostPort(text, `${s}.metrics-addr`, false);
  if (parsed.port !== 0 && parsed.port === grpcAddr.port) {
    r.fail(`${s}.metrics-addr`, `${quote(text)} is the gRPC port; metrics need an address of their own`);
  }
  return parsed;
}
