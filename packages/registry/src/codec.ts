/**
 * The one definition of what lands in etcd, for both layouts.
 *
 * - `instance` (default): `<prefix>/<name>/<id>` -> `{"Op":0,"Addr":"host:port","Metadata":"{...}"}`,
 *   the JSON etcd's Go naming package (`clientv3/naming`, `client/v3/naming/endpoints`) reads, so
 *   Go clients resolve `etcd:///<prefix>/<name>` to our instances. Metadata is a JSON *string*:
 *   the Go resolver hands it to grpc-go as address metadata, and round_robin uses addresses as
 *   map keys, so an object there panics ("hash of unhashable type map[string]interface {}",
 *   etcd-io/etcd#19700); a string is hashable. Empty metadata is left out. Older records with
 *   Metadata as an object (or null) are still read.
 * - `service` (the original design): `<prefix>/<name>` -> `host:port` as plain text.
 */
import { parseHostPort } from "./host_port.ts";
import type { Layout, ServiceInstance } from "./types.ts";

/** Where every service's records are kept unless configured otherwise (etcd.prefix). */
export const DEFAULT_PREFIX = "/services";

/** The key this instance is stored under. */
export function instanceKey(prefix: string, layout: Layout, instance: ServiceInstance): string {
  return layout === "service"
    ? serviceKey(prefix, instance.name)
    : `${serviceKey(prefix, instance.name)}/${instance.id}`;
}

/** `<prefix>/<name>`: the service-layout key and the parent of instance-layout keys. */
export function serviceKey(prefix: string, name: string): string {
  return `${prefix}/${name}`;
}

/** The value stored for this instance. */
export function encodeInstance(layout: Layout, instance: ServiceInstance): string {
  if (layout === "service") return instance.addr;
  // Field names and Op=0 (Add) are etcd naming's `Update`; Metadata is opaque to it (see above).
  const record: Record<string, unknown> = { Op: 0, Addr: instance.addr };
  if (Object.keys(instance.metadata).length > 0) record.Metadata = JSON.stringify(instance.metadata);
  return JSON.stringify(record);
}

/** A stored record that could not be read; discovery skips it with a warning. */
export class MalformedRecordError extends Error {
  constructor(key: string, problem: string) {
    super(`Skipping malformed record at ${quoteCapped(key)}: ${problem}`);
    this.name = "MalformedRecordError";
  }
}

/**
 * Reads a stored record under `<prefix>/<name>` back into an instance, or returns undefined for
 * keys that belong to another service (`<prefix>/<name>-other/...`) or are nested deeper.
 * Throws {@link MalformedRecordError} for a value it cannot read.
 */
export function decodeRecord(
  prefix: string,
  name: string,
  key: string,
  value: string,
): ServiceInstance | undefined {
  const base = serviceKey(prefix, name);
  if (key === base) {
    const addr = value.trim();
    if (!isDialable(addr)) throw new MalformedRecordError(key, `${quoteCapped(value)} is not host:port`);
    return { id: addr, name, addr, metadata: {} };
  }
  if (!key.startsWith(`${base}/`)) return undefined;
  const id = key.slice(base.length + 1);
  if (id === "" || id.includes("/")) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    // A plain host:port under an instance key is what hand-written and older records look like.
    if (isDialable(value.trim())) return { id, name, addr: value.trim(), metadata: {} };
    throw new MalformedRecordError(
      key,
      `${quoteCapped(value.slice(0, 80))} is neither JSON nor host:port`,
    );
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new MalformedRecordError(key, "expected a JSON object with Addr");
  }
  const record = parsed as Record<string, unknown>;
  if (record.Op === 1) return undefined; // a Delete marker
  if (record.Op !== undefined && record.Op !== 0) {
    throw new MalformedRecordError(key, `Op ${quoteCapped(record.Op)} is neither 0 (add) nor 1 (delete)`);
  }
  if (typeof record.Addr !== "string" || !isDialable(record.Addr)) {
    throw new MalformedRecordError(key, `Addr ${quoteCapped(record.Addr)} is not host:port`);
  }
  return { id, name, addr: record.Addr, metadata: toStringMap(record.Metadata) };
}

/** A value for a warning line: JSON-quoted (so control characters are escaped) and cut short. */
function quoteCapped(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 80)}...` : text;
}

/** Metadata as we write it (a JSON string of an object) or as older records have it (an object). */
function toStringMap(value: unknown): Record<string, string> {
  if (typeof value === "string") {
    try {
      value = JSON.parse(value);
    } catch {
      return {}; // some other registrant's opaque string
    }
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) return {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) out[k] = typeof v === "string" ? v : JSON.stringify(v);
  return out;
}

function isDialable(addr: string): boolean {
  const parsed = parseHostPort(addr);
  return typeof parsed !== "string" && parsed.host !== "" && parsed.port !== 0;
}
