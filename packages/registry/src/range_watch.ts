/**
 * Reading and following key ranges in etcd, the rules that every view of etcd here shares
 * (discovery's instance lists, the cluster's recipient directory):
 *
 * - A read covers all ranges at one revision, in pages (a page over gRPC's 4 MiB message limit is
 *   read again in halves), so no number or size of records breaks it.
 * - A watch is a read at revision R and watchers from R + 1, so nothing falls between the two.
 *   Changes come out one batch per etcd revision (a transaction is one step, never half of it).
 * - After a dropped stream etcd3 resumes the watchers from their last revision + 1, which replays
 *   every change; a read once they are back (retried with capped, jittered backoff until it
 *   succeeds) checks that etcd did not go back in time. When it did (restored empty), or etcd
 *   cancelled the watchers (their resume revision was compacted), the watch resyncs: a fresh read
 *   comes out as a `reset`, and watching starts again from its revision + 1.
 * - Watch streams carry etcd's require-leader flag (see etcd_client.ts).
 */
import type { Etcd3, IKeyValue, Watcher } from "etcd3";
import { Buffer } from "node:buffer";
import { Backoff, sleep } from "./backoff.ts";
import { forgetCancelledWatcher, releaseWatcher } from "./watchers.ts";

/** One key, or every key under a prefix. */
export type KeyRange = { key: string } | { prefix: string };

/** Why a watch re-read etcd. */
export type ResyncReason = "disconnected" | "cancelled";

/** What a range watch yields: the whole contents, or the changes of one revision. */
export type RangeUpdate =
  | { kind: "reset"; entries: Map<string, string>; revision: bigint }
  | { kind: "changes"; changes: { key: string; value?: string }[]; revision: bigint };

/** Options for {@link watchRanges} and {@link readRanges}. */
export interface RangeOptions {
  signal?: AbortSignal;
  /** Keys per page when reading. @default 500 */
  pageSize?: number;
  /**
   * Told when a watch loses its stream or etcd cancels it (no `attempts`), and again once it is
   * back in step, with the number of reads that took.
   */
  onResync?: (event: { reason: ResyncReason; attempts?: number }) => void;
  /**
   * Retry the first read as well (same backoff) until it succeeds or `signal` aborts, instead of
   * throwing: for followers that must outlive an etcd blip at their start (the registrar's own key,
   * the peers' secret, the cluster's views). @default false: the first read's error is thrown
   */
  retryFirstRead?: boolean;
}

/** Every key and value in `ranges`, at one revision. */
export async function readRanges(
  client: Etcd3,
  ranges: readonly KeyRange[],
  pageSize = 500,
): Promise<{ entries: Map<string, string>; revision: bigint }> {
  const entries = new Map<string, string>();
  let revision: string | undefined;
  for (const range of ranges) {
    const key = Buffer.from("key" in range ? range.key : range.prefix);
    const end = "prefix" in range ? prefixEnd(range.prefix) : undefined;
    let from = key;
    let limit = end ? pageSize : 1;
    for (;;) {
      let page;
      try {
        page = await client.kv.range({ key: from, range_end: end, limit, revision });
      } catch (error) {
        // One page over gRPC's message limit (large values): halve it and read the page again.
        if (limit > 1 && /RESOURCE_EXHAUSTED|larger than max/i.test(String(error))) {
          limit = Math.max(1, Math.floor(limit / 2));
          continue;
        }
        throw error;
      }
      revision ??= page.header.revision;
      for (const kv of page.kvs) entries.set(kv.key.toString(), kv.value.toString());
      if (!end || !page.more || page.kvs.length === 0) break;
      from = Buffer.concat([page.kvs[page.kvs.length - 1].key, Buffer.from([0])]);
    }
  }
  return { entries, revision: BigInt(revision ?? 0) };
}

/** Follows `ranges`: a `reset` first, then one `changes` per revision, resyncing as described above. */
export async function* watchRanges(
  client: Etcd3,
  ranges: readonly KeyRange[],
  options: RangeOptions = {},
): AsyncGenerator<RangeUpdate> {
  const { signal, pageSize = 500 } = options;
  const onResync = options.onResync ?? (() => {});
  if (signal?.aborted) return;
  let first: { entries: Map<string, string>; revision: bigint };
  if (options.retryFirstRead) {
    const fresh = await readUntilDone(client, ranges, pageSize, signal);
    if (!fresh) return; // aborted
    first = fresh.read;
  } else first = await readRanges(client, ranges, pageSize);
  /** The last full read's revision: events at or below it are in it already. */
  let base = first.revision;
  /** Highest revision seen: the base, then every event since. */
  let seen = base;
  yield { kind: "reset", ...first };

  let wake = () => {};
  const poke = () => wake();
  signal?.addEventListener("abort", poke);
  /** Events not handed out yet, in revision order. */
  let pending: { revision: bigint; key: string; value?: string }[] = [];
  let head = 0;
  let away = false;
  let verify = false;
  let resync: ResyncReason | undefined;
  let watchers: Watcher[] = [];
  /** Watchers from `from`; `generation` makes events of watchers already let go harmless. */
  let generation = 0;
  const start = (from: bigint) => {
    const mine = ++generation;
    const current = () => mine === generation;
    const onEvent = (kv: IKeyValue, deleted: boolean) => {
      const revision = BigInt(kv.mod_revision);
      if (!current() || revision <= base) return;
      if (revision > seen) seen = revision;
      pending.push({ revision, key: kv.key.toString(), value: deleted ? undefined : kv.value.toString() });
      poke();
    };
    watchers = ranges.map((range) => {
      const builder = "key" in range ? client.watch().key(range.key) : client.watch().prefix(range.prefix);
      const watcher = builder.startRevision(String(from)).watcher();
      watcher.on("put", (kv) => onEvent(kv, false));
      watcher.on("delete", (kv) => onEvent(kv, true));
      watcher.on("disconnected", () => {
        if (!current() || away) return;
        away = true;
        onResync({ reason: "disconnected" });
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
        onResync({ reason: "cancelled" });
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
  start(base + 1n);

  try {
    while (!signal?.aborted) {
      if (resync || verify) {
        const reason: ResyncReason = resync ?? "disconnected";
        const full = resync !== undefined;
        verify = false;
        if (full) await letGo();
        const fresh = await readUntilDone(client, ranges, pageSize, signal);
        if (!fresh) break; // aborted
        onResync({ reason, attempts: fresh.attempts });
        if (resync === undefined && fresh.read.revision >= seen) continue; // the resumed watch holds
        resync = undefined;
        if (!full) await letGo();
        base = seen = fresh.read.revision;
        pending = [];
        head = 0;
        start(base + 1n);
        yield { kind: "reset", ...fresh.read };
        continue;
      }
      if (head < pending.length) {
        const revision = pending[head].revision;
        const changes: { key: string; value?: string }[] = [];
        for (; head < pending.length && pending[head].revision === revision; head++) {
          changes.push({ key: pending[head].key, value: pending[head].value });
        }
        if (head === pending.length) {
          pending = [];
          head = 0;
        }
        yield { kind: "changes", changes, revision };
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
async function readUntilDone(
  client: Etcd3,
  ranges: readonly KeyRange[],
  pageSize: number,
  signal?: AbortSignal,
): Promise<{ read: { entries: Map<string, string>; revision: bigint }; attempts: number } | undefined> {
  const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 });
  for (let attempts = 1; !signal?.aborted; attempts++) {
    try {
      return { read: await readRanges(client, ranges, pageSize), attempts };
    } catch {
      await sleep(backoff.next(), signal);
    }
  }
  return undefined;
}

/** The end of etcd's range for every key starting with `prefix` (prefix + 1 in its last byte). */
function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  end[end.length - 1]++; // prefixes here end in "/", never 0xff
  return end;
}

/** Waits for a view fed by {@link watchRanges} to reflect a revision. */
export class RevisionGate {
  #revision = 0n;
  readonly #waiters = new Set<{ revision: bigint; resolve: (ok: boolean) => void }>();

  get revision(): bigint {
    return this.#revision;
  }

  /** The view now reflects `revision`. */
  advance(revision: bigint): void {
    this.#revision = revision;
    for (const waiter of [...this.#waiters]) if (waiter.revision <= revision) waiter.resolve(true);
  }

  /** Resolves true once the view reflects `revision`, false after `timeoutMs` or `close()`. */
  reached(revision: bigint, timeoutMs: number): Promise<boolean> {
    if (this.#revision >= revision) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = {
        revision,
        resolve: (ok: boolean) => {
          clearTimeout(timer);
          this.#waiters.delete(waiter);
          resolve(ok);
        },
      };
      const timer = setTimeout(() => waiter.resolve(false), timeoutMs);
      this.#waiters.add(waiter);
    });
  }

  close(): void {
    for (const waiter of [...this.#waiters]) waiter.resolve(false);
  }
}
