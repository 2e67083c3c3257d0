/**
 * Loads `config/platform/config.yaml` (plus environment overrides) into one frozen, validated
 * {@link Config}. Every problem becomes a {@link ConfigError} whose message is one line naming the
 * file, the field and what is wrong, e.g.
 * `config/platform/config.yaml: etcd.dial-timeout: "soon" is not a duration like 5s`.
 */
import { isMap, isScalar, parseDocument } from "yaml";
import { parseDuration } from "../../packages/registry/src/duration.ts";
import { type HostPort, isWildcard, parseHostPort } from "../../packages/registry/src/host_port.ts";
import type { EtcdClientOptions, EtcdTlsOptions } from "../../packages/registry/src/etcd_client.ts";
import type { Layout } from "../../packages/registry/src/types.ts";
import { availableCpus } from "./cpus.ts";
import { CONNECTION_DEFAULTS } from "../_util/limits.ts";
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from "../_util/logger.ts";

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
   * Subscribe streams one token subject may hold on this instance (per serving thread); with auth
   * only (a client address is no identity: NAT, gateways). @default 100
   */
  subscribersPerIdentity: number;
  /** Sends per second one identity may make, as a token bucket of twice that; 0: unbounded. @default 0 */
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
  /** A client connection that sends nothing for this long is closed. @default 10 s */
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

/** A configuration problem; `message` is the one line shown to the user. */
export class ConfigError extends Error {
  /** The file's `log-format` when it could be read, so the error is printed as the operator asked. */
  logFormat?: LogFormat;

  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConfigError";
  }
}

/** Environment variables that override the file, and the field each one replaces. */
export const ENV_OVERRIDES = {
  ETCD_ENDPOINTS: "etcd.endpoints",
  ETCD_USERNAME: "etcd.username",
  ETCD_PASSWORD: "etcd.password",
  NOTIFICATION_ADDR: "notification-server.addr",
  NOTIFICATION_ADVERTISE_ADDR: "notification-server.advertise-addr",
  NOTIFICATION_INSTANCE_ID: "notification-server.instance-id",
} as const;

type EnvName = keyof typeof ENV_OVERRIDES;

/** Options for {@link loadConfig}. */
export interface LoadConfigOptions {
  /** Environment lookup; defaults to `Deno.env.get`. Tests pass a map. */
  env?: (name: EnvName) => string | undefined;
}

const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/**
 * Longest duration any field takes. JavaScript timers overflow past 2^31-1 ms (24.8 days) and fire
 * at once, which spun a core and left a 41-day lease behind; nothing here needs more than a day.
 */
const MAX_DURATION_MS = 24 * 3_600_000;
const MIB = 1024 * 1024;
const MAX_METADATA_KEYS = 64;
const MAX_METADATA_KEY = 128;
const MAX_METADATA_VALUE = 512;
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
  "max-subscribers-per-connection",
  "max-subscribers-per-identity",
  "send-rate-per-identity",
];
const ETCD_KEYS = [
  "endpoints",
  "dial-timeout",
  "username",
  "password",
  "password-file",
  "lease-ttl",
  "prefix",
  "directory-prefix",
  "layout",
  "startup-timeout",
  "tls",
];

/** What is wrong with a service name, or undefined when it is one. */
export function serviceNameProblem(name: string): string | undefined {
  return SERVICE_NAME.test(name)
    ? undefined
    : `${quote(name.slice(0, 140))} is not a service name (letters, digits, '.', '_', '-'; at most 128)`;
}

/** Reads, parses and validates the config file at `path`. Throws {@link ConfigError}. */
export async function loadConfig(
  path: string,
  options: LoadConfigOptions = {},
): Promise<Config> {
  let text: string;
  try {
    text = await readBounded(path);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    const reason = error instanceof Deno.errors.NotFound
      ? "file not found (pass --config PATH or run from the repository root)"
      : `cannot read file: ${(error as Error).message}`;
    throw new ConfigError(`${path}: ${reason}`, { cause: error });
  }
  return parseConfig(text, path, options);
}

/** Larger config files are refused: nobody writes one, and /dev/zero would be read for ever. */
const MAX_CONFIG_BYTES = 1024 * 1024;

/** Reads a regular file of at most {@link MAX_CONFIG_BYTES} (a FIFO would block start-up). */
async function readBounded(path: string): Promise<string> {
  const info = await Deno.stat(path);
  if (!info.isFile) {
    throw new ConfigError(`${path}: not a regular file (a config file must be a plain YAML file)`);
  }
  using file = await Deno.open(path);
  const buffer = new Uint8Array(MAX_CONFIG_BYTES + 1);
  let length = 0;
  for (;;) {
    const n = await file.read(buffer.subarray(length));
    if (n === null) break;
    length += n;
    if (length > MAX_CONFIG_BYTES) {
      throw new ConfigError(`${path}: larger than ${MAX_CONFIG_BYTES / 1024} KiB; is this the config file?`);
    }
  }
  return new TextDecoder().decode(buffer.subarray(0, length));
}

/** Validates YAML text as a config; `path` names the source in messages. Throws {@link ConfigError}. */
export function parseConfig(
  text: string,
  path: string,
  options: LoadConfigOptions = {},
): Config {
  const env = options.env ?? ((name: EnvName) => Deno.env.get(name));
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0];
    const where = first.linePos ? `line ${first.linePos[0].line}` : "YAML";
    const reason = first.message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
    throw new ConfigError(`${path}: ${where}: invalid YAML: ${reason}`);
  }
  const r = new Reader(path);
  let js: unknown;
  try {
    js = doc.toJS(); // throws on alias bombs ("Excessive alias count"), among others
  } catch (error) {
    throw new ConfigError(`${path}: invalid YAML: ${(error as Error).message.split("\n")[0]}`);
  }
  try {
    return readRoot(r, js, path, doc, env);
  } catch (error) {
    if (error instanceof ConfigError) error.logFormat = peekLogFormat(js);
    throw error;
  }
}

/** `notification-server.log-format` if it is one, read leniently from a config that failed. */
function peekLogFormat(js: unknown): LogFormat | undefined {
  const section = (js as Record<string, unknown> | null)?.["notification-server"];
  const value = (section as Record<string, unknown> | null)?.["log-format"];
  return LOG_FORMATS.find((f) => f === value);
}

function readRoot(
  r: Reader,
  js: unknown,
  path: string,
  doc: ReturnType<typeof parseDocument>,
  env: (name: EnvName) => string | undefined,
): Config {
  const root = r.map(js ?? {}, "", true);
  r.noUnknownKeys(root, "", ["notification-server", "etcd"]);
  const server = readServer(
    r,
    r.map(root["notification-server"], "notification-server", true),
    env,
    metadataAsWritten(doc.getIn(["notification-server", "metadata"], true)),
  );
  const etcd = readEtcd(r, r.map(root["etcd"], "etcd", true), env);
  return deepFreeze({ path, server, etcd });
}

/**
 * Metadata values as the user typed them: YAML would read `version: 1.10` as the number 1.1 and
 * `0x1F` as 31. Values that are not plain scalars are left for the reader to reject.
 */
function metadataAsWritten(node: unknown): Map<string, string> {
  const written = new Map<string, string>();
  if (!isMap(node)) return written;
  for (const pair of node.items) {
    if (isScalar(pair.key) && isScalar(pair.value) && typeof pair.value.source === "string") {
      written.set(String(pair.key.value), pair.value.source);
    }
  }
  return written;
}

function readServer(
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
  const tlsRaw = raw["tls"];
  let tls: ServerTlsConfig | undefined;
  if (tlsRaw !== undefined && tlsRaw !== null) {
    const t = r.map(tlsRaw, `${s}.tls`, true);
    r.noUnknownKeys(t, `${s}.tls`, [
      "cert-file",
      "key-file",
      "client-ca-file",
      "peer-ca-file",
      "peer-server-name",
    ]);
    tls = {
      certFile: r.file(t, `${s}.tls`, "cert-file", true)!,
      keyFile: r.file(t, `${s}.tls`, "key-file", true)!,
      clientCaFile: r.file(t, `${s}.tls`, "client-ca-file"),
      peerCaFile: r.file(t, `${s}.tls`, "peer-ca-file"),
      peerServerName: r.string(t, `${s}.tls`, "peer-server-name"),
    };
  }
  return {
    addr,
    name,
    advertiseAddr,
    instanceId: instanceId || undefined,
    metadata: r.metadata(raw["metadata"], `${s}.metadata`, metadataSource),
    shutdownTimeoutMs: r.duration(raw, s, "shutdown-timeout", 10_000),
    drainDelayMs: r.duration(raw, s, "drain-delay", 1_000),
    maxSubscribers: r.positiveInt(raw, s, "max-subscribers", 10_000),
    maxConnections: r.positiveInt(raw, s, "max-connections", CONNECTION_DEFAULTS.maxConnections),
    handshakeTimeoutMs: r.duration(raw, s, "handshake-timeout", CONNECTION_DEFAULTS.handshakeTimeoutMs, true),
    maxConcurrentStreams: r.positiveInt(
      raw,
      s,
      "max-concurrent-streams",
      CONNECTION_DEFAULTS.maxConcurrentStreams,
    ),
    maxHeaderListBytes: r.positiveInt(raw, s, "max-header-list-size", CONNECTION_DEFAULTS.maxHeaderListBytes),
    maxHealthWatches: r.positiveInt(raw, s, "max-health-watches", 1_000),
    subscriberQueue: r.positiveInt(raw, s, "subscriber-queue", 1_000),
    subscriberQueueBytes: r.size(raw, s, "subscriber-queue-bytes", MIB),
    subscriberQueueTotalBytes: r.size(raw, s, "subscriber-queue-total-bytes", 256 * MIB),
    peerTimeoutMs: r.duration(raw, s, "peer-timeout", 1_000, true),
    workers: workers(r, raw, s),
    metricsAddr: metricsAddr(r, raw, s, addr),
    logFormat: r.oneOf(raw, s, "log-format", LOG_FORMATS, "text"),
    logLevel: r.oneOf(raw, s, "log-level", LOG_LEVELS, "info"),
    tls,
    auth: auth(r, raw, s),
    callerLimits: {
      subscribersPerConnection: r.positiveInt(raw, s, "max-subscribers-per-connection", 100),
      subscribersPerIdentity: r.positiveInt(raw, s, "max-subscribers-per-identity", 100),
      sendsPerSecond: raw["send-rate-per-identity"] === 0
        ? 0
        : r.positiveInt(raw, s, "send-rate-per-identity", 0),
    },
  };
}

function auth(r: Reader, raw: Record<string, unknown>, s: string): AuthConfig | undefined {
  if (raw["auth"] === undefined || raw["auth"] === null) return undefined;
  const a = r.map(raw["auth"], `${s}.auth`);
  r.noUnknownKeys(a, `${s}.auth`, ["jwt", "send-scope"]);
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
  if (!jwt.hmacSecretFile && !jwt.publicKeyFile && !jwt.jwksFile) {
    r.fail(section, "expected one of hmac-secret-file, public-key-file or jwks-file, found none");
  }
  return { jwt, sendScope: r.string(a, `${s}.auth`, "send-scope") ?? "notifications:send" };
}

/** More threads than this only add memory: every one holds its own copy of the gRPC stack. */
const MAX_WORKERS = 256;

function workers(r: Reader, raw: Record<string, unknown>, s: string): number {
  const value = raw["workers"];
  if (value === undefined || value === null || value === "auto") return availableCpus();
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > MAX_WORKERS) {
    r.fail(`${s}.workers`, `${quote(String(value))} is not auto or a whole number from 1 to ${MAX_WORKERS}`);
  }
  return value;
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

function readEtcd(
  r: Reader,
  raw: Record<string, unknown>,
  env: (name: EnvName) => string | undefined,
): EtcdConfig {
  const s = "etcd";
  r.noUnknownKeys(raw, s, ETCD_KEYS);
  if (env("ETCD_ENDPOINTS") === "") {
    // Set but empty is a broken deployment variable, not a request for the file's endpoints.
    r.fail(`${s}.endpoints (from ETCD_ENDPOINTS)`, "set but empty: unset it or give host:port[,host:port]");
  }
  const envEndpoints = r.fromEnv(env, "ETCD_ENDPOINTS");
  const endpointsField = r.field(s, "endpoints", "ETCD_ENDPOINTS", env);
  const endpoints = envEndpoints !== undefined
    ? envEndpoints.split(",").map((e) => e.trim()).filter((e) => e !== "")
    : r.stringList(raw["endpoints"], endpointsField);
  if (endpoints.length === 0) r.fail(endpointsField, "expected at least one endpoint like localhost:2379");
  for (const endpoint of endpoints) {
    const bare = endpoint.replace(/^https?:\/\//, "");
    const hp = parseHostPort(bare);
    if (typeof hp === "string" || hp.host === "" || hp.port === 0) {
      r.fail(endpointsField, `${quote(endpoint)} is not an endpoint like localhost:2379`);
    }
  }
  const username = r.fromEnv(env, "ETCD_USERNAME") ?? r.string(raw, s, "username");
  let password = r.fromEnv(env, "ETCD_PASSWORD") ?? r.string(raw, s, "password");
  const passwordFile = r.file(raw, s, "password-file");
  if (!password && passwordFile) password = Deno.readTextFileSync(passwordFile).replace(/\r?\n$/, "");
  if (username && !password) {
    r.fail(`${s}.password`, "expected a password (or password-file, or ETCD_PASSWORD) with etcd.username");
  }
  const ttlMs = r.duration(raw, s, "lease-ttl", 10_000);
  if (ttlMs < 1000 || ttlMs % 1000 !== 0) {
    r.fail(`${s}.lease-ttl`, `${quote(String(raw["lease-ttl"]))} is not a whole number of seconds >= 1s`);
  }
  const prefix = r.string(raw, s, "prefix") ?? "/services";
  if (!prefix.startsWith("/") || (prefix.length > 1 && prefix.endsWith("/"))) {
    r.fail(`${s}.prefix`, `${quote(prefix)} must start with '/' and not end with '/'`);
  }
  const directoryPrefix = r.string(raw, s, "directory-prefix") ?? "/notification-directory";
  if (!directoryPrefix.startsWith("/") || directoryPrefix.endsWith("/")) {
    r.fail(`${s}.directory-prefix`, `${quote(directoryPrefix)} must start with '/' and not end with '/'`);
  }
  if (directoryPrefix === prefix || directoryPrefix.startsWith(`${prefix}/`)) {
    r.fail(
      `${s}.directory-prefix`,
      `${quote(directoryPrefix)} must not be inside etcd.prefix ${quote(prefix)}`,
    );
  }
  const layout = r.string(raw, s, "layout") ?? "instance";
  if (layout !== "instance" && layout !== "service") {
    r.fail(`${s}.layout`, `${quote(layout)} is not one of "instance", "service"`);
  }
  const tlsRaw = raw["tls"];
  let tls: EtcdTlsConfig | undefined;
  if (tlsRaw !== undefined && tlsRaw !== null) {
    const t = r.map(tlsRaw, `${s}.tls`, true);
    r.noUnknownKeys(t, `${s}.tls`, ["ca-file", "cert-file", "key-file", "server-name"]);
    tls = {
      caFile: r.file(t, `${s}.tls`, "ca-file", true)!,
      certFile: r.file(t, `${s}.tls`, "cert-file"),
      keyFile: r.file(t, `${s}.tls`, "key-file"),
      serverName: r.string(t, `${s}.tls`, "server-name") || undefined,
    };
    if (Boolean(tls.certFile) !== Boolean(tls.keyFile)) {
      r.fail(`${s}.tls`, "cert-file and key-file go together: set both or neither");
    }
    // Deno's TLS refuses an IP address as the server name, which grpc-js would send for an IP endpoint.
    const ipEndpoint = endpoints.find((e) => {
      const hp = parseHostPort(e.replace(/^https?:\/\//, ""));
      return typeof hp !== "string" && (hp.host.includes(":") || /^[\d.]+$/.test(hp.host));
    });
    if (ipEndpoint && !tls.serverName) {
      r.fail(
        `${s}.tls.server-name`,
        `required with an IP endpoint (${quote(ipEndpoint)}): set it to a DNS name in etcd's certificate`,
      );
    }
  }
  return {
    endpoints,
    dialTimeoutMs: r.duration(raw, s, "dial-timeout", 5_000, true),
    username: username || undefined,
    password: password || undefined,
    leaseTtlSeconds: ttlMs / 1000,
    prefix: prefix === "/" ? "" : prefix,
    directoryPrefix,
    layout,
    startupTimeoutMs: r.duration(raw, s, "startup-timeout", 30_000),
    tls,
  };
}

/** Reads typed fields out of parsed YAML, failing with the file and the dotted field name. */
class Reader {
  readonly #path: string;
  constructor(path: string) {
    this.#path = path;
  }

  fail(field: string, problem: string): never {
    throw new ConfigError(`${this.#path}: ${field ? `${field}: ` : ""}${problem}`);
  }

  field(section: string, key: string, envName: EnvName, env: (n: EnvName) => string | undefined) {
    return env(envName) !== undefined && env(envName) !== ""
      ? `${section}.${key} (from ${envName})`
      : `${section}.${key}`;
  }

  fromEnv(env: (n: EnvName) => string | undefined, name: EnvName): string | undefined {
    const value = env(name);
    return value === undefined || value === "" ? undefined : value;
  }

  map(value: unknown, field: string, required = false): Record<string, unknown> {
    if (value === undefined || value === null) {
      if (required) this.fail(field, "missing section");
      return {};
    }
    if (typeof value !== "object" || Array.isArray(value)) {
      this.fail(field, `expected a mapping, found ${describe(value)}`);
    }
    return value as Record<string, unknown>;
  }

  noUnknownKeys(raw: Record<string, unknown>, section: string, known: readonly string[]) {
    for (const key of Object.keys(raw)) {
      if (!known.includes(key)) {
        const field = section ? `${section}.${key}` : key;
        this.fail(field, `unknown key (expected one of: ${known.join(", ")})`);
      }
    }
  }

  string(
    raw: Record<string, unknown>,
    section: string,
    key: string,
    required = false,
  ): string | undefined {
    const value = raw[key];
    if (value === undefined || value === null || value === "") {
      if (required) this.fail(`${section}.${key}`, "missing (required)");
      return undefined;
    }
    if (typeof value !== "string") {
      this.fail(`${section}.${key}`, `expected a string, found ${describe(value)}`);
    }
    return value;
  }

  file(
    raw: Record<string, unknown>,
    section: string,
    key: string,
    required = false,
  ): string | undefined {
    const path = this.string(raw, section, key, required);
    if (path === undefined) return undefined;
    try {
      if (!Deno.statSync(path).isFile) this.fail(`${section}.${key}`, `${quote(path)} is not a file`);
      Deno.openSync(path).close(); // readable; the consumer reads it once, later
    } catch (error) {
      if (error instanceof ConfigError) throw error;
      this.fail(`${section}.${key}`, `${quote(path)} cannot be read: ${(error as Error).message}`);
    }
    return path;
  }

  stringList(value: unknown, field: string): string[] {
    if (value === undefined || value === null) this.fail(field, "missing (required)");
    if (!Array.isArray(value)) {
      this.fail(field, `expected a list like ["localhost:2379"], found ${describe(value)}`);
    }
    return value.map((item, i) => {
      if (typeof item !== "string") this.fail(`${field}[${i}]`, `expected a string, found ${describe(item)}`);
      return item;
    });
  }

  /** Instance metadata: strings as written, within Consul's limits (64 keys, 128/512 chars). */
  metadata(value: unknown, field: string, written: Map<string, string>): Record<string, string> {
    const raw = this.map(value, field);
    const entries = Object.entries(raw);
    if (entries.length > MAX_METADATA_KEYS) {
      this.fail(field, `${entries.length} keys; at most ${MAX_METADATA_KEYS}`);
    }
    const out: Record<string, string> = {};
    for (const [k, v] of entries) {
      if (typeof v !== "string" && typeof v !== "number" && typeof v !== "boolean") {
        this.fail(`${field}.${clip(k)}`, `expected a string value, found ${describe(v)}`);
      }
      if (k.length > MAX_METADATA_KEY) {
        this.fail(`${field}.${clip(k)}`, `key longer than ${MAX_METADATA_KEY}`);
      }
      const text = typeof v === "string" ? v : written.get(k) ?? String(v);
      if (text.length > MAX_METADATA_VALUE) {
        this.fail(`${field}.${k}`, `value of ${text.length} characters; at most ${MAX_METADATA_VALUE}`);
      }
      out[k] = text;
    }
    return out;
  }

  duration(
    raw: Record<string, unknown>,
    section: string,
    key: string,
    fallback: number,
    positive = false,
  ): number {
    const value = raw[key];
    if (value === undefined || value === null || value === "") return fallback;
    const ms = typeof value === "string" ? parseDuration(value) : value === 0 ? 0 : undefined;
    if (ms === undefined) {
      this.fail(`${section}.${key}`, `${quote(String(value))} is not a duration like 5s`);
    }
    if (positive && ms === 0) this.fail(`${section}.${key}`, `${quote(String(value))} must be more than 0`);
    if (ms > MAX_DURATION_MS) {
      this.fail(`${section}.${key}`, `${quote(String(value))} is above the maximum of 24h`);
    }
    return ms;
  }

  oneOf<T extends string>(
    raw: Record<string, unknown>,
    section: string,
    key: string,
    allowed: readonly T[],
    fallback: T,
  ): T {
    const value = this.string(raw, section, key);
    if (value === undefined) return fallback;
    const found = allowed.find((a) => a === value);
    if (!found) {
      this.fail(
        `${section}.${key}`,
        `${quote(value)} is not one of ${allowed.map((a) => quote(a)).join(", ")}`,
      );
    }
    return found;
  }

  /** A size in bytes: a whole number, or one with KiB / MiB ("512KiB", "4MiB"). */
  size(raw: Record<string, unknown>, section: string, key: string, fallback: number): number {
    const value = raw[key];
    if (value === undefined || value === null) return fallback;
    const match = /^(\d+)\s*(KiB|MiB)?$/.exec(String(value).trim());
    const bytes = match ? Number(match[1]) * (match[2] === "MiB" ? MIB : match[2] === "KiB" ? 1024 : 1) : NaN;
    if (!Number.isSafeInteger(bytes) || bytes < 1 || bytes > 1024 * MIB) {
      this.fail(
        `${section}.${key}`,
        `${quote(String(value))} is not a size like 4MiB, 512KiB or 65536 (at most 1024MiB)`,
      );
    }
    return bytes;
  }

  positiveInt(raw: Record<string, unknown>, section: string, key: string, fallback: number): number {
    const value = raw[key];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
      this.fail(`${section}.${key}`, `${quote(String(value))} is not a whole number >= 1`);
    }
    return value;
  }

  hostPort(text: string | undefined, field: string, needConcrete: boolean): HostPort {
    const parsed = parseHostPort(text ?? "");
    if (typeof parsed === "string") this.fail(field, parsed);
    if (needConcrete && (parsed.host === "" || parsed.port === 0 || isWildcard(parsed.host))) {
      this.fail(
        field,
        `${quote(text ?? "")} is not an address clients can dial (need a concrete host and port)`,
      );
    }
    return parsed;
  }
}

function quote(value: string): string {
  return JSON.stringify(value);
}

/** A user's value in an error line, cut to a readable length. */
function clip(value: string): string {
  return value.length > 40 ? `${value.slice(0, 40)}...` : value;
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return "a list";
  if (value === null) return "nothing";
  if (typeof value === "object") return "a mapping";
  return `${typeof value} ${quote(String(value))}`;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object") {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
