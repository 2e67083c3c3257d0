/**
 * Loads `config/platform/config.yaml` (plus environment overrides) into one frozen, validated
 * {@link Config}. Every problem becomes a {@link ConfigError} whose message is one line naming the
 * file, the field and what is wrong, e.g.
 * `config/platform/config.yaml: etcd.dial-timeout: "soon" is not a duration like 5s`.
 */
import { isMap, isScalar, parseDocument } from "yaml";
import { LOG_FORMATS, type LogFormat } from "../_util/logger.ts";
import { readEtcd } from "./etcd.ts";
import { ConfigError, type ConfigIO, type EnvName, Reader } from "./reader.ts";
import { readServer } from "./server.ts";
import type { Config } from "./types.ts";

export * from "./types.ts";
export { ConfigError, type ConfigIO, ENV_OVERRIDES, SYSTEM_IO } from "./reader.ts";
export { serviceNameProblem } from "./server.ts";

/** Options for {@link loadConfig}. */
export interface LoadConfigOptions {
  /** Environment lookup; defaults to `Deno.env.get`. Tests pass a map. */
  env?: (name: EnvName) => string | undefined;
  /** File and CPU resolution; defaults to the real machine. Tests pass their own. */
  io?: ConfigIO;
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
  const r = new Reader(path, options.io);
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

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object") {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
