/** The `etcd:` section. */
import { DEFAULT_MAX_RESPONSE_BYTES, parseHostPort } from "@notification-server/registry";
import { DEFAULTS } from "./defaults.ts";
import { type EnvName, quote, type Reader } from "./reader.ts";
import type { EtcdConfig, EtcdTlsConfig } from "./types.ts";

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
  "max-response-size",
  "tls",
];

export function readEtcd(
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
  if (!password && passwordFile) password = r.io.readText(passwordFile).replace(/\r?\n$/, "");
  if (username && !password) {
    r.fail(`${s}.password`, "expected a password (or password-file, or ETCD_PASSWORD) with etcd.username");
  }
  const ttlMs = r.duration(raw, s, "lease-ttl", DEFAULTS.leaseTtlMs);
  if (ttlMs < 1000 || ttlMs % 1000 !== 0) {
    r.fail(`${s}.lease-ttl`, `${quote(String(raw["lease-ttl"]))} is not a whole number of seconds >= 1s`);
  }
  const prefix = r.string(raw, s, "prefix") ?? DEFAULTS.etcdPrefix;
  if (!prefix.startsWith("/") || (prefix.length > 1 && prefix.endsWith("/"))) {
    r.fail(`${s}.prefix`, `${quote(prefix)} must start with '/' and not end with '/'`);
  }
  const directoryPrefix = r.string(raw, s, "directory-prefix") ?? DEFAULTS.directoryPrefix;
  if (!directoryPrefix.startsWith("/") || directoryPrefix.endsWith("/")) {
    r.fail(`${s}.directory-prefix`, `${quote(directoryPrefix)} must start with '/' and not end with '/'`);
  }
  if (directoryPrefix === prefix || directoryPrefix.startsWith(`${prefix}/`)) {
    r.fail(
      `${s}.directory-prefix`,
      `${quote(directoryPrefix)} must not be inside etcd.prefix ${quote(prefix)}`,
    );
  }
  const layout = r.string(raw, s, "layout") ?? DEFAULTS.layout;
  if (layout !== "instance" && layout !== "service") {
    r.fail(`${s}.layout`, `${quote(layout)} is not one of "instance", "service"`);
  }
  const t = r.section(raw, s, "tls", ["ca-file", "cert-file", "key-file", "server-name"]);
  let tls: EtcdTlsConfig | undefined;
  if (t) {
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
    dialTimeoutMs: r.duration(raw, s, "dial-timeout", DEFAULTS.dialTimeoutMs, { positive: true }),
    username: username || undefined,
    password: password || undefined,
    leaseTtlSeconds: ttlMs / 1000,
    prefix: prefix === "/" ? "" : prefix,
    directoryPrefix,
    layout,
    startupTimeoutMs: r.duration(raw, s, "startup-timeout", DEFAULTS.startupTimeoutMs),
    maxResponseBytes: r.size(raw, s, "max-response-size", DEFAULT_MAX_RESPONSE_BYTES),
    tls,
  };
}
