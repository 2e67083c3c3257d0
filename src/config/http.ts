/** The `notification-server.http` section: the web edge's port and its bounds (src/web/). */
import type { HostPort } from "@notification-server/registry";
import { DEFAULTS } from "./defaults.ts";
import { quote, type Reader } from "./reader.ts";
import type { HttpConfig, ServerTlsConfig } from "./types.ts";

const HTTP_KEYS = ["addr", "cors", "page", "max-body-size", "sse-keepalive", "sse-retry"];
/** `https://host[:port]`, `http://…`, or `*`: what a browser sends as Origin. */
const ORIGIN = /^(\*|https?:\/\/[A-Za-z0-9.\-\[\]:]+)$/;

/** The ports this one must not take. */
interface OtherPorts {
  grpc: HostPort;
  metrics?: HostPort;
  tls?: ServerTlsConfig;
}

export function readHttp(
  r: Reader,
  raw: Record<string, unknown>,
  parent: string,
  others: OtherPorts,
): HttpConfig | undefined {
  const h = r.section(raw, parent, "http", HTTP_KEYS);
  if (!h) return undefined;
  const s = `${parent}.http`;
  const text = r.string(h, s, "addr", true)!;
  const addr = r.hostPort(text, `${s}.addr`, false);
  for (const [name, other] of [["gRPC", others.grpc], ["metrics", others.metrics]] as const) {
    if (other && addr.port !== 0 && addr.port === other.port) {
      r.fail(`${s}.addr`, `${quote(text)} is the ${name} port; HTTP needs a port of its own`);
    }
  }
  if (others.tls?.clientCaFile) {
    r.fail(
      s,
      "the HTTP port cannot ask browsers for client certificates (tls.client-ca-file is set): serve gRPC only, or verify clients with tokens (auth)",
    );
  }
  const cors = h["cors"] === undefined || h["cors"] === null ? {} : r.map(h["cors"], `${s}.cors`);
  r.noUnknownKeys(cors, `${s}.cors`, ["allowed-origins"]);
  const allowedOrigins = cors["allowed-origins"] === undefined
    ? []
    : r.stringList(cors["allowed-origins"], `${s}.cors.allowed-origins`);
  for (const origin of allowedOrigins) {
    if (!ORIGIN.test(origin)) {
      r.fail(
        `${s}.cors.allowed-origins`,
        `${quote(origin)} is not an origin like "https://app.example.com" (scheme and host, no path) or "*"`,
      );
    }
  }
  const page = h["page"] ?? true;
  if (typeof page !== "boolean") r.fail(`${s}.page`, `expected true or false, found ${quote(String(page))}`);
  return {
    addr,
    allowedOrigins,
    page,
    maxBodyBytes: r.size(h, s, "max-body-size", DEFAULTS.httpMaxBodyBytes),
    sseKeepaliveMs: r.duration(h, s, "sse-keepalive", DEFAULTS.sseKeepaliveMs, { positive: true }),
    sseRetryMs: r.duration(h, s, "sse-retry", DEFAULTS.sseRetryMs, { positive: true }),
  };
}
