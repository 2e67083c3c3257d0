/**
 * The etcd {@link Discovery}: `list` is one consistent read; `watch` yields full snapshots, one per
 * etcd revision that changed the list. Reading, paging, resuming and resyncing follow the rules in
 * range_watch.ts.
 *
 * Exactly our keys are read and watched: `<prefix>/<name>` (the service layout) and everything
 * under `<prefix>/<name>/` (the instance layout), never `<prefix>/<name>2/...`.
 *
 * One etcd watch per name, shared by every concurrent `watch(name)` of this object (as go-zero keeps
 * one per key): a grpc-js channel through the resolver and the code beside it that follows the
 * same service cost one watch, not one each. A late watcher starts from the latest snapshot.
 */
import type { Etcd3 } from "etcd3";
import { type Logger, silentLogger } from "./logger.ts";
import { decodeRecord, DEFAULT_PREFIX, MalformedRecordError, serviceKey } from "./codec.ts";
import { type KeyRange, readRanges, type ResyncReason, watchRanges } from "./range_watch.ts";
import type { Discovery, ServiceInstance } from "./types.ts";

export type { ResyncReason } from "./range_watch.ts";

/** Options for {@link EtcdDiscovery}. */
export interface EtcdDiscoveryOptions {
  /** Key prefix of every service. @default "/services" */
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
  /**
   * `watch` retries its first read until etcd answers instead of throwing (for a follower that must
   * not stop, such as the cluster's membership). @default false
   */
  retryFirstRead?: boolean;
}

/** One etcd watch of a name and the watchers it feeds. */
interface SharedWatch {
  latest?: ServiceInstance[];
  /** Each watcher's own queue of snapshots (none is skipped), or the error that ended the watch. */
  listeners: Set<(next: ServiceInstance[] | Error) => void>;
  abort: AbortController;
}

/** Finds instances registered in etcd under `<prefix>/<name>` (both layouts). */
export class EtcdDiscovery implements Discovery {
  readonly #client: Etcd3;
  readonly #shared = new Map<string, SharedWatch>();
  readonly #prefix: string;
  readonly #log: Logger;
  readonly #pageSize: number;
  readonly #onResync: EtcdDiscoveryOptions["onResync"];
  readonly #retryFirstRead: boolean;

  /** Reads through `client` (not closed by discovery). */
  constructor(client: Etcd3, options: EtcdDiscoveryOptions = {}) {
    this.#client = client;
    this.#prefix = options.prefix ?? DEFAULT_PREFIX;
    this.#log = options.logger ?? silentLogger;
    this.#pageSize = options.pageSize ?? 500;
    this.#onResync = options.onResync;
    this.#retryFirstRead = options.retryFirstRead ?? false;
  }

  async list(name: string): Promise<ServiceInstance[]> {
    const { entries } = await readRanges(this.#client, this.ranges(name), this.#pageSize);
    return this.instancesIn(name, entries);
  }

  /** `name`'s instances in `entries` read from {@link ranges} (e.g. inside a transaction). */
  instancesIn(name: string, entries: Map<string, string>): ServiceInstance[] {
    const instances = new Map<string, ServiceInstance>();
    for (const [key, value] of entries) this.#apply(instances, name, key, value);
    return sorted(instances);
  }

  /** Snapshots of `name`'s instances: the current one first, then one per change, until `signal`. */
  async *watch(name: string, options: { signal?: AbortSignal } = {}): AsyncGenerator<ServiceInstance[]> {
    const signal = options.signal;
    if (signal?.aborted) return;
    const shared = this.#join(name);
    const queue: (ServiceInstance[] | Error)[] = shared.latest ? [shared.latest] : [];
    let wake = () => {};
    const listener = (next: ServiceInstance[] | Error) => {
      queue.push(next);
      wake();
    };
    const onAbort = () => wake();
    shared.listeners.add(listener);
    signal?.addEventListener("abort", onAbort);
    try {
      while (!signal?.aborted) {
        const next = queue.shift();
        if (next instanceof Error) throw next;
        if (next) yield next;
        else await new Promise<void>((resolve) => (wake = resolve));
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      shared.listeners.delete(listener);
      if (shared.listeners.size === 0 && this.#shared.get(name) === shared) {
        this.#shared.delete(name);
        shared.abort.abort();
      }
    }
  }

  /** The watch of `name`, started by its first watcher. */
  #join(name: string): SharedWatch {
    let shared = this.#shared.get(name);
    if (shared) return shared;
    const created: SharedWatch = { listeners: new Set(), abort: new AbortController() };
    this.#shared.set(name, shared = created);
    void (async () => {
      try {
        for await (const snapshot of this.#follow(name, created.abort.signal)) {
          created.latest = snapshot;
          for (const listener of created.listeners) listener(snapshot);
        }
      } catch (error) {
        if (this.#shared.get(name) === created) this.#shared.delete(name);
        for (const listener of created.listeners) listener(error as Error);
      }
    })();
    return created;
  }

  async *#follow(name: string, signal: AbortSignal): AsyncGenerator<ServiceInstance[]> {
    let instances = new Map<string, ServiceInstance>();
    let last: string | undefined;
    const updates = watchRanges(this.#client, this.ranges(name), {
      signal,
      pageSize: this.#pageSize,
      onResync: this.#onResync,
      retryFirstRead: this.#retryFirstRead,
    });
    for await (const update of updates) {
      if (update.kind === "reset") {
        instances = new Map();
        for (const [key, value] of update.entries) this.#apply(instances, name, key, value);
      } else {
        for (const { key, value } of update.changes) this.#apply(instances, name, key, value);
      }
      const key = snapshotKey(instances);
      if (key !== last) {
        last = key;
        yield sorted(instances);
      }
    }
  }

  /** The keys `name`'s records live at (both layouts). */
  ranges(name: string): KeyRange[] {
    const base = serviceKey(this.#prefix, name);
    return [{ key: base }, { prefix: `${base}/` }];
  }

  /** Puts (or, for a deletion or a record it cannot read, removes) one key's instance. */
  #apply(
    instances: Map<string, ServiceInstance>,
    name: string,
    key: string,
    value: string | undefined,
  ): void {
    let instance: ServiceInstance | undefined;
    if (value !== undefined) {
      try {
        instance = decodeRecord(this.#prefix, name, key, value);
      } catch (error) {
        if (!(error instanceof MalformedRecordError)) throw error;
        this.#log.warn(error.message);
      }
    }
    if (instance) instances.set(key, instance);
    else instances.delete(key);
  }
}

function sorted(instances: Map<string, ServiceInstance>): ServiceInstance[] {
  return [...instances.values()].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function snapshotKey(instances: Map<string, ServiceInstance>): string {
  return JSON.stringify(sorted(instances));
}
