/**
 * The etcd {@link Discovery}: `list` is one prefix read; `watch` yields full snapshots, starting
 * from the initial read's revision + 1 so nothing falls between read and watch.
 *
 * After every watch reconnect it re-reads the prefix and reconciles: etcd3 resumes from the last
 * revision + 1, which covers a restart with data kept, but an etcd restored empty has a lower
 * revision and would never deliver its deletions. If the revision went backwards (or the watch
 * was cancelled, e.g. compacted), the watch is restarted from the fresh read.
 */
import type { Etcd3, IKeyValue, Watcher } from "etcd3";
import { type Logger, silentLogger } from "../logger.ts";
import { decodeRecord, MalformedRecordError, serviceKey } from "./codec.ts";
import type { Discovery, ServiceInstance } from "./types.ts";

/** Options for {@link EtcdDiscovery}. */
export interface EtcdDiscoveryOptions {
  /** @default "/services" */
  prefix?: string;
  /** Where malformed-record warnings go. */
  logger?: Logger;
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

  constructor(client: Etcd3, options: EtcdDiscoveryOptions = {}) {
    this.#client = client;
    this.#prefix = options.prefix ?? "/services";
    this.#log = options.logger ?? silentLogger;
  }

  async list(name: string): Promise<ServiceInstance[]> {
    return sorted((await this.#read(name)).instances);
  }

  async *watch(name: string, options: { signal?: AbortSignal } = {}): AsyncGenerator<ServiceInstance[]> {
    const signal = options.signal;
    if (signal?.aborted) return;
    let state = await this.#read(name);
    let applied = state.revision; // highest revision reflected in `state`
    let last = snapshotKey(state.instances);
    yield sorted(state.instances);

    let dirty = false;
    let resync = false;
    let restart = false;
    let wake = () => {};
    const poke = () => {
      dirty = true;
      wake();
    };
    const onAbort = () => wake();
    signal?.addEventListener("abort", onAbort);

    const onEvent = (kv: IKeyValue, deleted: boolean) => {
      const rev = BigInt(kv.mod_revision);
      if (rev <= applied) return; // already in a fresher full read
      applied = rev;
      const key = kv.key.toString();
      if (deleted) {
        state.instances.delete(key);
      } else {
        const instance = this.#decode(name, key, kv.value.toString());
        if (instance) state.instances.set(key, instance);
        else state.instances.delete(key);
      }
      poke();
    };
    let everDisconnected = false;
    const start = (from: bigint): Watcher => {
      const watcher = this.#client.watch().prefix(serviceKey(this.#prefix, name)).startRevision(String(from))
        .watcher();
      watcher.on("put", (kv) => onEvent(kv, false));
      watcher.on("delete", (kv) => onEvent(kv, true));
      watcher.on("disconnected", () => (everDisconnected = true));
      watcher.on("connected", () => {
        if (everDisconnected) {
          resync = true;
          poke();
        }
      });
      // Without an 'error' listener etcd3 throws; a cancelled (compacted) watch is dropped for good.
      watcher.on("error", () => {
        resync = true;
        restart = true;
        poke();
      });
      return watcher;
    };
    let watcher = start(applied + 1n);

    try {
      while (!signal?.aborted) {
        if (!dirty) {
          await new Promise<void>((resolve) => (wake = resolve));
          wake = () => {};
          continue;
        }
        dirty = false;
        if (resync) {
          resync = false;
          let fresh: Read;
          try {
            fresh = await this.#read(name);
          } catch {
            // etcd is still away; the next reconnect (or error) tries again.
            continue;
          }
          if (restart || fresh.revision < applied) {
            restart = false;
            watcher.removeAllListeners();
            void watcher.cancel().catch(() => {});
            watcher = start(fresh.revision + 1n);
            applied = fresh.revision;
            state = fresh;
          } else if (fresh.revision >= applied) {
            applied = fresh.revision;
            state = fresh;
          }
        }
        const key = snapshotKey(state.instances);
        if (key !== last) {
          last = key;
          yield sorted(state.instances);
        }
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      watcher.removeAllListeners();
      watcher.on("error", () => {});
      await watcher.cancel().catch(() => {});
    }
  }

  async #read(name: string): Promise<Read> {
    const res = await this.#client.getAll().prefix(serviceKey(this.#prefix, name)).exec();
    const instances = new Map<string, ServiceInstance>();
    for (const kv of res.kvs) {
      const key = kv.key.toString();
      const instance = this.#decode(name, key, kv.value.toString());
      if (instance) instances.set(key, instance);
    }
    return { instances, revision: BigInt(res.header.revision) };
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

function sorted(instances: Map<string, ServiceInstance>): ServiceInstance[] {
  return [...instances.values()].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function snapshotKey(instances: Map<string, ServiceInstance>): string {
  return JSON.stringify(sorted(instances));
}
