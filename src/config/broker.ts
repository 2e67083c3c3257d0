/** `notification-server.broker`: where notifications are stored with positions (NATS JetStream). */
import { DEFAULTS } from "./defaults.ts";
import { quote, type Reader } from "./reader.ts";
import type { BrokerConfig } from "./types.ts";

const NATS_KEYS = [
  "servers",
  "user",
  "password",
  "token",
  "nkey-seed-file",
  "creds-file",
  "tls",
  "stream",
  "subject-prefix",
  "history-size",
  "history-ttl",
  "replicas",
  "publish-timeout",
  "duplicate-window",
];

/** A year: history is not a timer here (JetStream's max_age), so the 24 h bound of timers does not apply. */
const MAX_HISTORY_TTL_MS = 365 * 24 * 3_600_000;
/** JetStream refuses these in a stream name (they would be subject tokens or paths). */
const STREAM_NAME = /^[A-Za-z0-9_-]{1,64}$/;
/** Dot-separated tokens without wildcards: the recipient's token is appended. */
const SUBJECT_PREFIX = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
/** A NATS server address: host:port, or a nats:// / tls:// URL. */
const SERVER = /^((nats|tls):\/\/)?[^\s/]+(:\d{1,5})?$/;

export function readBroker(
  r: Reader,
  raw: Record<string, unknown>,
  parent: string,
): BrokerConfig | undefined {
  const b = r.section(raw, parent, "broker", ["nats"]);
  if (!b) return undefined;
  const s = `${parent}.broker.nats`;
  const n = r.map(b["nats"], s, true);
  r.noUnknownKeys(n, s, NATS_KEYS);
  const servers = r.stringList(n["servers"], `${s}.servers`);
  if (servers.length === 0) r.fail(`${s}.servers`, 'expected at least one server like "localhost:4222"');
  for (const server of servers) {
    if (!SERVER.test(server)) r.fail(`${s}.servers`, `${quote(server)} is not a server like localhost:4222`);
  }
  const stream = r.string(n, s, "stream") ?? DEFAULTS.brokerStream;
  if (!STREAM_NAME.test(stream)) {
    r.fail(`${s}.stream`, `${quote(stream)} is not a stream name (letters, digits, '_', '-'; at most 64)`);
  }
  const subjectPrefix = r.string(n, s, "subject-prefix") ?? DEFAULTS.brokerSubjectPrefix;
  if (!SUBJECT_PREFIX.test(subjectPrefix)) {
    r.fail(
      `${s}.subject-prefix`,
      `${quote(subjectPrefix)} is not a subject prefix like "notifications" (no wildcards)`,
    );
  }
  const replicas = r.positiveInt(n, s, "replicas", DEFAULTS.brokerReplicas, { max: 5 });
  const user = r.string(n, s, "user");
  const password = r.string(n, s, "password");
  if ((user === undefined) !== (password === undefined)) {
    r.fail(`${s}.${user === undefined ? "user" : "password"}`, "missing (user and password go together)");
  }
  const token = r.string(n, s, "token");
  const nkeySeedFile = r.file(n, s, "nkey-seed-file");
  const credsFile = r.file(n, s, "creds-file");
  const ways = [user, token, nkeySeedFile, credsFile].filter((w) => w !== undefined).length;
  if (ways > 1) r.fail(s, "more than one of user/password, token, nkey-seed-file, creds-file; give one");
  const t = r.section(n, s, "tls", ["ca-file", "cert-file", "key-file"]);
  const tls = t && {
    caFile: r.file(t, `${s}.tls`, "ca-file"),
    certFile: r.file(t, `${s}.tls`, "cert-file"),
    keyFile: r.file(t, `${s}.tls`, "key-file"),
  };
  if (tls && (tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    r.fail(
      `${s}.tls.${tls.certFile === undefined ? "cert-file" : "key-file"}`,
      "missing (cert-file and key-file go together)",
    );
  }
  const historyTtlMs = r.duration(n, s, "history-ttl", DEFAULTS.brokerHistoryTtlMs, {
    maxMs: MAX_HISTORY_TTL_MS,
  });
  const duplicateWindowMs = r.duration(n, s, "duplicate-window", DEFAULTS.duplicateWindowMs, {
    positive: true,
  });
  if (historyTtlMs > 0 && duplicateWindowMs > historyTtlMs) {
    r.fail(
      `${s}.duplicate-window`,
      "is longer than history-ttl (JetStream keeps no key longer than the message)",
    );
  }
  return {
    nats: {
      servers,
      user,
      password,
      token,
      nkeySeedFile,
      credsFile,
      tls,
      stream,
      subjectPrefix,
      historySize: r.positiveInt(n, s, "history-size", DEFAULTS.brokerHistorySize, { max: 1_000_000 }),
      historyTtlMs,
      duplicateWindowMs,
      replicas: replicas === 1 || replicas === 3 || replicas === 5
        ? replicas
        : r.fail(`${s}.replicas`, `${replicas} is not 1, 3 or 5 (JetStream needs a majority)`),
      publishTimeoutMs: r.duration(n, s, "publish-timeout", DEFAULTS.brokerPublishTimeoutMs, {
        positive: true,
      }),
    },
  };
}
