/**
 * The etcd {@link Discovery}: `list` is one consistent read; `watch` yields full snapshots.
 *
 * A watch is a read at revision R and watchers from R + 1, so nothing falls between the two.
 * After a dropped stream etcd3 resumes the watchers from their last revision + 1, which replays
 * every change; a read once they are back (retried with capped, jittered backoff until it
 * succeeds) checks that etcd did not go back in time. When it did (restored empty), or etcd
 * cancelled the watchers (their resume revision was compacted), the watch resyncs: it lets them
 * go, and watches again from a fresh read's revision + 1.
 *
 * Exactly our keys are read and watched: `<prefix>/<name>` (the service layout) and everything
 * under `<prefix>/<name>/` (the instance layout), never `<prefix>/<name>2/...`; large ranges are
 * read in pages at one revision, so many instances never hit the 4 MiB message limit.
 */
import type { Etcd3, IKeyValue, Watcher } from "etcd3";
import { Buffer } from "node:buffer";
import { Backoff, sleep } from "../backoff.ts";
import { type Logger, silentLogger } from "../logger.ts";
import { decodeRecord, MalformedRecordError, serviceKey } from "./codec.ts";
import type { Discovery, ServiceInstance } from "./types.ts";
import { forgetCancelledWatcher, releaseWatcher } from "./watchers.ts";

/** Why a watch re-read the registry. */
export type ResyncReason = "disconnected" | "cancelled";

/** Options for {@link EtcdDiscovery}. */
export interface EtcdDiscoveryOptions {
  /** @default "/services" */
  prefix?: string;
  /** Where malformed-record warnings go. */
  logger?: Logger;
  /** Keys per page when reading; a page etcd finds too large is read again in halves. @default 500 */
  pageSize?: number;
  /**
   * Told when a watch loses its stream or etcd cancels it (no `attempts`), and again once it is
   * back in step, with the number of reads that took (for logs and metrics).
   */
  onResync?: (event: { reason: ResyncReason; attempts?: number }) => void;
}

interface Read {
  instances: Map<string, ServiceInstance>;
  revision: bigint;
}

/** Finds instances registered in etcd under `<prefix>/<name>` (both layouts). */
export class EtcdDiscovery implements Discovery {
  readonly #client: Etcd3;
  readonly #prefix: string;
  readonly #log: Logger;
  readonly #pageSize: number;
  readonly #onResync: NonNullable<EtcdDiscoveryOptions["onResync"]>;

  constructor(client: Etcd3, options: EtcdDiscoveryOptions = {}) {
    this.#client = client;
    this.#prefix = options.prefix ?? "/services";
    this.#log = options.logger ?? silentLogger;
    this.#pageSize = options.pageSize ?? 500;
    this.#onResync = options.onResync ?? (() => {});
  }

  async list(name: string): Promise<ServiceInstance[]> {
    return sorted((await this.#read(name)).instances);
  }

  async *watch(name: string, options: { signal?: AbortSignal } = {}): AsyncGenerator<ServiceInstance[]> {
    const signal = options.signal;
    if (signal?.aborted) return;
    let state = await this.#read(name);
    let last = snapshotKey(state.instances);
    yield sorted(state.instances);

    let wake = () => {};
    let changed = false;
    /** Events not applied yet, in revision order; applied one revision at a time. */
    let pending: { revision: bigint; key: string; instance?: ServiceInstance }[] = [];
    let head = 0;
    /** Highest revision reflected in `state`: its read, then every event applied since. */
    let seen = state.revision;
    let away = false;
    let verify = false;
    let resync: ResyncReason | undefined;
    const poke = () => wake();
    signal?.addEventListener("abort", poke);

    let watchers: Watcher[] = [];
    /** Watchers from `from`; `generation` makes events of watchers already let go harmless. */
    let generation = 0;
    const start = (from: bigint) => {
      const mine = ++generation;
      const current = () => mine === generation;
      const onEvent = (kv: IKeyValue, deleted: boolean) => {
        // Events at or below the last full read are in it already; every later one is applied,
        // including several of one revision (a transaction, a prefix delete, one lease expiring).
        const revision = BigInt(kv.mod_revision);
        if (!current() || revision <= state.revision) return;
        if (revision > seen) seen = revision;
        const key = kv.key.toString();
        const instance = deleted ? undefined : this.#decode(name, key, kv.value.toString());
        pending.push({ revision, key, instance });
        poke();
      };
      const base = serviceKey(this.#prefix, name);
      watchers = [
        this.#client.watch().key(base),
        this.#client.watch().prefix(`${base}/`),
      ].map((builder) => {
        const watcher = builder.startRevision(String(from)).watcher();
        watcher.on("put", (kv) => onEvent(kv, false));
        watcher.on("delete", (kv) => onEvent(kv, true));
        // etcd3 resumes a dropped watch from its last revision + 1, which replays every change
        // unless etcd itself went back in time (restored empty): a read after reconnecting checks.
        watcher.on("disconnected", () => {
          if (!current() || away) return;
          away = true;
          this.#onResync({ reason: "disconnected" });
        });
        watcher.on("connected", () => {
          if (!current() || !away) return;
          away = false;
          verify = true;
          poke();
        });
        watcher.on("error", () => {
          // Cancelled by etcd (resume revision compacted): the changes since are lost to it.
          forgetCancelledWatcher(watcher);
          if (!current() || resync) return;
          resync = "cancelled";
          this.#onResync({ reason: "cancelled" });
          poke();
        });
        return watcher;
      });
    };
    const letGo = async () => {
      generation++;
      const old = watchers;
      watchers = [];
      await Promise.all(old.map(releaseWatcher));
    };
    start(state.revision + 1n);

    try {
      while (!signal?.aborted) {
        if (resync || verify) {
          const reason: ResyncReason = resync ?? "disconnected";
          const full = resync !== undefined;
          verify = false;
          if (full) await letGo();
          const fresh = await this.#readUntilDone(name, signal);
          if (!fresh) break; // aborted
          this.#onResync({ reason, attempts: fresh.attempts });
          if (resync === undefined && fresh.read.revision >= seen) continue; // the resumed watch holds
          resync = undefined;
          if (!full) await letGo();
          state = fresh.read;
          seen = state.revision;
          pending = [];
          head = 0;
          start(state.revision + 1n);
          changed = true;
        }
        if (!changed && head < pending.length) {
          // One snapshot per revision: a transaction's changes together, a replayed backlog in steps.
          const revision = pending[head].revision;
          for (; head < pending.length && pending[head].revision === revision; head++) {
            const { key, instance } = pending[head];
            if (instance) state.instances.set(key, instance);
            else state.instances.delete(key);
          }
          if (head === pending.length) {
            pending = [];
            head = 0;
          }
          changed = true;
        }
        if (changed) {
          changed = false;
          const key = snapshotKey(state.instances);
          if (key !== last) {
            last = key;
            yield sorted(state.instances);
          }
          continue;
        }
        await new Promise<void>((resolve) => (wake = resolve));
        wake = () => {};
      }
    } finally {
      signal?.removeEventListener("abort", poke);
      await letGo();
    }
  }

  /** Reads until a read succeeds (capped, jittered backoff) or `signal` aborts (undefined). */
  async #readUntilDone(
    name: string,
    signal?: AbortSignal,
  ): Promise<{ read: Read; attempts: number } | undefined> {
    const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 });
    for (let attempts = 1; !signal?.aborted; attempts++) {
      try {
        return { read: await this.#read(name), attempts };
      } catch {
        await sleep(backoff.next(), signal);
      }
    }
    return undefined;
  }

  /** The service-layout key, then every key under `<key>/` in pages, all at one revision. */
  async #read(name: string): Promise<Read> {
    const base = serviceKey(this.#prefix, name);
    const instances = new Map<string, ServiceInstance>();
    const add = (kvs: IKeyValue[]) => {
      for (const kv of kvs) {
        const key = kv.key.toString();
        const instance = this.#decode(name, key, kv.value.toString());
        if (instance) instances.set(key, instance);
      }
    };
    const exact = await this.#client.kv.range({ key: Buffer.from(base) });
    const revision = exact.header.revision;
    add(exact.kvs);
    const under = `${base}/`;
    const end = prefixEnd(under);
    let from = Buffer.from(under);
    let limit = this.#pageSize;
    for (;;) {
      let page;
      try {
        page = await this.#client.kv.range({ key: from, range_end: end, limit, revision });
      } catch (error) {
        // One page over gRPC's message limit (large values): halve it and read the page again.
        if (limit > 1 && /RESOURCE_EXHAUSTED|larger than max/i.test(String(error))) {
          limit = Math.max(1, Math.floor(limit / 2));
          continue;
        }
        throw error;
      }
      add(page.kvs);
      if (!page.more || page.kvs.length === 0) break;
      from = Buffer.concat([page.kvs[page.kvs.length - 1].key, Buffer.from([0])]);
    }
    return { instances, revision: BigInt(revision) };
  }

  #decode(name: string, key: string, value: string): ServiceInstance | undefined {
    try {
      return decodeRecord(this.#prefix, name, key, value);
    } catch (error) {
      if (!(error instanceof MalformedRecordError)) throw error;
      this.#log.warn(error.message);
      return undefined;
    }
  }
}

/** The end of etcd's range for every key starting with `prefix` (prefix + 1 in its last byte). */
function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  end[end.length - 1]++; // prefixes here end in "/", never 0xff
  return end;
}

function sorted(instances: Map<string, ServiceInstance>): ServiceInstance[] {
  return [...instances.values()].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function snapshotKey(instances: Map<string, ServiceInstance>): string {
  return JSON.stringify(sorted(instances));
}
