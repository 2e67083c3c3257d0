/**
 * Reading typed fields out of parsed YAML: every problem is a {@link ConfigError} naming the file
 * and the dotted field. What parsing needs of the machine (is a file readable, a secret file's
 * text, the CPUs) comes through {@link ConfigIO}, so the parse itself is pure.
 */
import { parseDuration } from "../_util/duration.ts";
import { type HostPort, isWildcard, parseHostPort } from "@notification-server/registry";
import type { LogFormat } from "../_util/logger.ts";
import { availableCpus } from "./cpus.ts";

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

export type EnvName = keyof typeof ENV_OVERRIDES;

/** What parsing asks of the machine: the file and CPU resolution, apart from the parse. */
export interface ConfigIO {
  /** Why `path` cannot be read as a file, or undefined when it can. */
  fileProblem(path: string): string | undefined;
  /** A secret file's text (etcd.password-file). */
  readText(path: string): string;
  /** CPUs this process may use (`workers: auto`). */
  cpus(): number;
}

/** The real machine. */
export const SYSTEM_IO: ConfigIO = {
  fileProblem(path) {
    try {
      if (!Deno.statSync(path).isFile) return `${quote(path)} is not a file`;
      Deno.openSync(path).close(); // readable; the consumer reads it once, later
      return undefined;
    } catch (error) {
      return `${quote(path)} cannot be read: ${(error as Error).message}`;
    }
  },
  readText: (path) => Deno.readTextFileSync(path),
  cpus: () => availableCpus(),
};

/**
 * Longest duration any field takes. JavaScript timers overflow past 2^31-1 ms (24.8 days) and fire
 * at once, which spun a core and left a 41-day lease behind; nothing here needs more than a day.
 */
const MAX_DURATION_MS = 24 * 3_600_000;
export const MIB = 1024 * 1024;
const MAX_METADATA_KEYS = 64;
const MAX_METADATA_KEY = 128;
const MAX_METADATA_VALUE = 512;

/** Reads typed fields out of parsed YAML, failing with the file and the dotted field name. */
export class Reader {
  readonly #path: string;
  readonly io: ConfigIO;
  constructor(path: string, io: ConfigIO = SYSTEM_IO) {
    this.#path = path;
    this.io = io;
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
    const problem = this.io.fileProblem(path);
    if (problem) this.fail(`${section}.${key}`, problem);
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

  /** A duration ("250ms", "5s", "1.5m", or 0) in ms; `positive` refuses 0. */
  duration(
    raw: Record<string, unknown>,
    section: string,
    key: string,
    fallback: number,
    { positive = false, maxMs = MAX_DURATION_MS }: { positive?: boolean; maxMs?: number } = {},
  ): number {
    const value = raw[key];
    if (value === undefined || value === null || value === "") return fallback;
    const ms = typeof value === "string" ? parseDuration(value) : value === 0 ? 0 : undefined;
    if (ms === undefined) {
      this.fail(`${section}.${key}`, `${quote(String(value))} is not a duration like 5s`);
    }
    if (positive && ms === 0) this.fail(`${section}.${key}`, `${quote(String(value))} must be more than 0`);
    if (ms > maxMs) {
      this.fail(`${section}.${key}`, `${quote(String(value))} is above the maximum of ${formatHours(maxMs)}`);
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

  /** A whole number from 1 (to `max`); `or` names the other word the field takes, for the message. */
  positiveInt(
    raw: Record<string, unknown>,
    section: string,
    key: string,
    fallback: number,
    limits: { max?: number; or?: string } = {},
  ): number {
    const value = raw[key];
    if (value === undefined || value === null) return fallback;
    const max = limits.max ?? Infinity;
    if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > max) {
      const range = limits.max ? `from 1 to ${limits.max}` : ">= 1";
      this.fail(
        `${section}.${key}`,
        `${quote(String(value))} is not ${limits.or ? `${limits.or} or ` : ""}a whole number ${range}`,
      );
    }
    return value;
  }

  /** An optional sub-section (`tls:`, `auth:`): undefined when absent, else a mapping of `known` keys. */
  section(
    raw: Record<string, unknown>,
    parent: string,
    key: string,
    known: readonly string[],
  ): Record<string, unknown> | undefined {
    const value = raw[key];
    if (value === undefined || value === null) return undefined;
    const section = this.map(value, `${parent}.${key}`, true);
    this.noUnknownKeys(section, `${parent}.${key}`, known);
    return section;
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

export function quote(value: string): string {
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

function formatHours(ms: number): string {
  return `${ms / 3_600_000}h`;
}
