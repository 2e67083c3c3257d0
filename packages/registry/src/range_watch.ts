/**
 * Reading and following key ranges in etcd, the rules that every view of etcd here shares
 * (discovery's instance lists, the cluster's recipient directory):
 *
 * - A read covers all ranges at one revision, in pages (a page over gRPC's 4 MiB message limit is
 *   read again in halves), so no number or size of records breaks it.
 * - A watch is a read at revision R and watchers from R + 1, so nothing falls between the two.
 *   Changes come out one batch per etcd revision (a transaction is one step, never half of it).
 * - A revision arrives in one watch message whatever its size, within the client's receive limit
 *   (etcd_client.ts, 256 MiB by default; a lease revoked with 100 000 directory keys is ~9 MB).
 *   etcd's own fragmentation is not asked for (so no response holds part of a revision): etcd
 *   3.4 builds each fragment in time quadratic in its events (100 000 deletes took 13 s in three
 *   fragments, 1.4 s whole).
 * - After a dropped stream the watchers resume from the revision after the last one received,
 *   which replays every change. (etcd3 itself moves the resume point to each response's header
 *   revision + 1: after a response it could not receive, the next progress notification made it
 *   skip revisions without a word. We keep the point.) Reads once they are back (retried with
 *   capped, jittered backoff until they succeed) check that etcd did not go back in time: its
 *   revision is not below the last one seen, and at that revision the ranges hold as many keys as
 *   the view does (an etcd wiped or restored while the watch was away may have written past the
 *   revision already: the count tells it apart). When it did, or etcd cancelled the watchers (their
 *   resume revision was compacted), or a response cannot be received at all (over the receive
 *   limit), the watch resyncs: a fresh read comes out as a `reset`, and watching starts again from
 *   its revision + 1.
 * - Watch streams carry etcd's require-leader flag (see etcd_client.ts).
 */
import type { Etcd3, IKeyValue, IWatchResponse, Watcher } from "etcd3";
import type { EtcdClient } from "./etcd_client.ts";
import { Buffer } from "node:buffer";
import { Backoff, sleep } from "@notification-server/timing";
import { forgetCancelledWatcher, releaseWatcher } from "./watchers.ts";

/** One key, or every key under a prefix. */
export type KeyRange = { key: string } | { prefix: string };

/**
 * Why a watch re-read etcd: its stream dropped, etcd cancelled it (compaction), or a response was
 * too large to receive.
 */
export type ResyncReason = "disconnected" | "cancelled" | "too_large";

/** What a range watch yields: the whole contents, or the changes of one revision. */
export type RangeUpdate =
  | { kind: "reset"; entries: Map<string, string>; revision: bigint }
  | { kind: "changes"; changes: { key: string; value?: string }[]; revision: bigint };

/** Options for {@link watchRanges} and {@link readRanges}. */
export interface RangeOptions {
  /** Ends the watch (the generator returns). */
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

/**
 * Read operations for `ranges`, to ride in a transaction (its reads see exactly its revision);
 * {@link entriesOf} takes their results. Unpaged: for small ranges (a service's instances).
 */
export function rangeOps(
  ranges: readonly KeyRange[],
): { request_range: { key: Buffer; range_end?: Buffer } }[] {
  return ranges.map((range) => ({
    request_range: "key" in range
      ? { key: Buffer.from(range.key) }
      : { key: Buffer.from(range.prefix), range_end: prefixEnd(range.prefix) },
  }));
}

/** Every key and value that the read operations of a transaction ({@link rangeOps}) returned. */
export function entriesOf(
  responses: { response_range?: { kvs: { key: { toString(): string }; value: { toString(): string } }[] } }[],
): Map<string, string> {
  const entries = new Map<string, string>();
  for (const response of responses) {
    for (const kv of response.response_range?.kvs ?? []) entries.set(kv.key.toString(), kv.value.toString());
  }
  return entries;
}

/** Follows `ranges`: a `reset` first, then one `changes` per revision, resyncing as described above. */
export async function* watchRanges(
  client: EtcdClient,
  ranges: readonly KeyRange[],
  options: RangeOptions = {},
): AsyncGenerator<RangeUpdate> {
  const { signal, pageSize = 500 } = options;
  const onResync = options.onResync ?? (() => {});
  if (signal?.aborted) return;
  let first: { entries: Map<string, string>; revision: bigint };
  if (options.retryFirstRead) {
    const fresh = await untilDone(() => readRanges(client, ranges, pageSize), signal);
    if (!fresh) return; // aborted
    first = fresh.result;
  } else first = await readRanges(client, ranges, pageSize);
  /** The last full read's revision: events at or below it are in it already. */
  let base = first.revision;
  /** Highest revision seen: the base, then every event since. */
  let seen = base;
  /** Keys in the view at `seen` (a put of version 1 adds one, a delete takes one). */
  let count = first.entries.size;
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
      if (deleted) count--;
      else if (kv.version === "1") count++;
      pending.push({ revision, key: kv.key.toString(), value: deleted ? undefined : kv.value.toString() });
      poke();
    };
    watchers = ranges.map((range) => {
      const builder = "key" in range ? client.watch().key(range.key) : client.watch().prefix(range.prefix);
      const watcher = builder.startRevision(String(from)).watcher();
      // The resume point is ours (see the header): etcd3's own would skip revisions.
      (watcher as unknown as { updateRevision(): void }).updateRevision = () => {};
      watcher.on("data", (res: IWatchResponse) => {
        if (!current()) return;
        const events = res.events;
        let last = 0n;
        for (const event of events) {
          onEvent(event.kv, event.type === "Delete");
          const revision = BigInt(event.kv.mod_revision);
          if (revision > last) last = revision;
        }
        // With events: past the last of them (a catching-up watcher gets old revisions under a new
        // header). Without (a progress notification): etcd promises that every later event is
        // above the header's revision.
        const past = events.length > 0 ? last : BigInt(res.header.revision);
        if (past + 1n > BigInt(watcher.request.start_revision ?? 0)) {
          watcher.request.start_revision = String(past + 1n);
        }
      });
      watcher.on("disconnected", (error?: Error) => {
        if (!current()) return;
        if (/RESOURCE_EXHAUSTED|larger than max/i.test(String(error))) {
          // It would come again, and again: read everything instead, and say so.
          if (resync) return;
          resync = "too_large";
          onResync({ reason: "too_large" });
          poke();
          return;
        }
        if (away || resync) return; // a resync already under way covers it
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
        if (!full) {
          // Back after a dropped stream: the watchers resumed where they were. Whether etcd is still
          // where we left it (not restored to an older state) one count-only read says; the ranges
          // are read again only if it is not.
          const now = await untilDone(() => inStep(client, ranges, seen, count), signal);
          if (!now) break; // aborted
          if (now.result) {
            onResync({ reason, attempts: now.attempts });
            continue; // the resumed watch holds
          }
        }
        if (full) await letGo();
        const fresh = await untilDone(() => readRanges(client, ranges, pageSize), signal);
        if (!fresh) break; // aborted
        onResync({ reason, attempts: fresh.attempts });
        resync = undefined;
        if (!full) await letGo();
        base = seen = fresh.result.revision;
        count = fresh.result.entries.size;
        pending = [];
        head = 0;
        start(base + 1n);
        yield { kind: "reset", ...fresh.result };
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

/** Tries `read` until it succeeds (capped, jittered backoff) or `signal` aborts (undefined). */
async function untilDone<T>(
  read: () => Promise<T>,
  signal?: AbortSignal,
): Promise<{ result: T; attempts: number } | undefined> {
  const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 });
  for (let attempts = 1; !signal?.aborted; attempts++) {
    try {
      return { result: await read(), attempts };
    } catch {
      await sleep(backoff.next(), signal);
    }
  }
  return undefined;
}

/**
 * Whether etcd still holds what the view was built from: at revision `seen` the ranges hold
 * `count` keys (count-only reads: no keys or values come back).
 */
async function inStep(
  client: Etcd3,
  ranges: readonly KeyRange[],
  seen: bigint,
  count: number,
): Promise<boolean> {
  let held = 0;
  for (const range of ranges) {
    const key = Buffer.from("key" in range ? range.key : range.prefix);
    const end = "prefix" in range ? prefixEnd(range.prefix) : undefined;
    let page;
    try {
      page = await client.kv.range({ key, range_end: end, count_only: true, revision: String(seen) });
    } catch (error) {
      // Compacted past it (or a revision etcd has not reached: gone back in time): not in step.
      if (/compacted|future revision/i.test(String(error))) return false;
      throw error;
    }
    held += Number(page.count);
  }
  return held === count;
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

  /** The revision the view reflects now. */
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

  /** Every wait ends now, answering false. */
  close(): void {
    for (const waiter of [...this.#waiters]) waiter.resolve(false);
  }
}
