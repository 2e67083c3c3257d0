/**
 * Which instances hold subscribers of which recipient: one etcd key per (recipient, instance),
 *
 *   <directory-prefix>/<service>/<recipient, URI-encoded>/<instance-id>  ->  <instance-id>
 *
 * written under that instance's own lease when it gets the first subscriber of a recipient,
 * deleted with the last one, and gone with the lease if the instance dies or deregisters. The
 * prefix is not the registration prefix, so discovery and the resolver never see these keys.
 *
 * {@link DirectoryPublisher} writes this instance's keys, batched into transactions;
 * {@link DirectoryView} keeps every instance's keys in memory from a watch, so the Send path
 * never reads etcd.
 */
import type { Etcd3 } from "etcd3";
import { Buffer } from "node:buffer";
import { Backoff, sleep } from "@notification-server/timing";
import {
  describeEtcdError,
  entriesOf,
  type KeyRange,
  type Logger,
  rangeOps,
  type RangeOptions,
  type RangeUpdate,
  RevisionGate,
  silentLogger,
  watchRanges,
} from "@notification-server/registry";

/** etcd refuses transactions of more operations than this (its --max-txn-ops default). */
const MAX_TXN_OPS = 128;

/**
 * Keys per page when the directory is read. etcd 3.4 visits every remaining key of the range for
 * each limited page, so a read costs pages x keys: at 100 000 keys, pages of 500 took 3.9 s and
 * pages of 5 000 0.7 s (issue measurements). Directory entries are ~90 bytes: 5 000 make ~450 KB,
 * well under gRPC's 4 MiB (a larger page is halved and read again anyway).
 */
const DIRECTORY_PAGE = 5_000;

/** `<prefix>/<service>/`: every directory key of a service is under it. */
export function directoryRoot(prefix: string, service: string): string {
  return `${prefix}/${service}/`;
}

/** The key of `instanceId` holding `recipient` (under that instance's lease; its value is the id). */
export function directoryKey(root: string, recipient: string, instanceId: string): string {
  return `${root}${encodeURIComponent(recipient)}/${instanceId}`;
}

/** What a key under `root` says ({@link directoryKey} read back); undefined for a key not of ours. */
function parseDirectoryKey(
  root: string,
  key: string,
): { recipient: string; instance: string } | undefined {
  const rest = key.slice(root.length);
  const cut = rest.lastIndexOf("/");
  if (cut <= 0) return undefined;
  try {
    return { recipient: decodeURIComponent(rest.slice(0, cut)), instance: rest.slice(cut + 1) };
  } catch {
    return undefined;
  }
}

/** Writes this instance's directory keys under its current lease. */
export class DirectoryPublisher {
  readonly #client: Etcd3;
  readonly #root: string;
  readonly #instanceId: string;
  readonly #log: Logger;
  /** Recipients with local subscribers, and whether their key is written under the current lease. */
  readonly #recipients = new Map<string, { written: boolean; waiters: ((published: Published) => void)[] }>();
  /** The revision at which the latest write committed. */
  #revision = 0n;
  /** Recipients whose key must be written (under the current lease): the work, not a scan for it. */
  readonly #unwritten = new Set<string>();
  /** Recipients whose key must go. */
  readonly #removed = new Set<string>();
  #lease?: string;
  #flushing?: Promise<void>;
  #closed = false;
  readonly #alsoRead: readonly KeyRange[];

  constructor(
    client: Etcd3,
    options: {
      root: string;
      instanceId: string;
      logger?: Logger;
      /** Ranges read in each write's transaction, at its revision (the members, for the barrier). */
      alsoRead?: readonly KeyRange[];
    },
  ) {
    this.#client = client;
    this.#root = options.root;
    this.#instanceId = options.instanceId;
    this.#log = options.logger ?? silentLogger;
    this.#alsoRead = options.alsoRead ?? [];
  }

  /**
   * Publishes under `lease` (the registration's; after a re-registration, the new one): every
   * key is written again. Undefined holds writes back until a lease is known.
   */
  setLease(lease: string | undefined): void {
    this.#lease = lease;
    for (const [recipient, state] of this.#recipients) {
      state.written = false;
      this.#unwritten.add(recipient);
    }
    this.#schedule();
  }

  /**
   * The first local subscriber of `recipient` arrived; resolves once its key is in etcd, with a
   * revision at or after the one that wrote it, and what `alsoRead` held at that revision when this
   * call's own write brought it (not when the key was there already).
   */
  add(recipient: string): Promise<Published> {
    this.#removed.delete(recipient);
    let state = this.#recipients.get(recipient);
    if (!state) {
      this.#recipients.set(recipient, state = { written: false, waiters: [] });
      this.#unwritten.add(recipient);
    }
    if (state.written) return Promise.resolve({ revision: this.#revision });
    const waiting = state;
    this.#schedule();
    return new Promise((resolve) => waiting.waiters.push(resolve));
  }

  /** The last local subscriber of `recipient` left. */
  remove(recipient: string): void {
    const state = this.#recipients.get(recipient);
    this.#recipients.delete(recipient);
    for (const wake of state?.waiters ?? []) wake({ revision: this.#revision });
    this.#unwritten.delete(recipient);
    this.#removed.add(recipient);
    this.#schedule();
  }

  /** Stops writing (the lease, revoked after the drain, removes the keys). */
  close(): void {
    this.#closed = true;
    for (const state of this.#recipients.values()) {
      for (const wake of state.waiters.splice(0)) wake({ revision: this.#revision });
    }
  }

  #schedule(): void {
    if (this.#flushing || this.#closed) return;
    // Everything asked for in this turn goes out together.
    this.#flushing = new Promise<void>((resolve) => setTimeout(resolve, 0)).then(() => this.#flush()).finally(
      () => {
        this.#flushing = undefined;
        if (this.#hasWork()) this.#schedule();
      },
    );
  }

  #hasWork(): boolean {
    if (this.#closed || !this.#lease) return false;
    return this.#removed.size > 0 || this.#unwritten.size > 0;
  }

  async #flush(): Promise<void> {
    const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 });
    while (this.#hasWork()) {
      const lease = this.#lease!;
      const reads = rangeOps(this.#alsoRead);
      const batchPuts = take(this.#unwritten, MAX_TXN_OPS - reads.length);
      const batchDeletes = take(this.#removed, MAX_TXN_OPS - reads.length - batchPuts.length);
      let committed: string;
      let read: Map<string, string>;
      try {
        const key = (r: string) => Buffer.from(directoryKey(this.#root, r, this.#instanceId));
        const result = await this.#client.kv.txn({
          compare: [],
          success: [
            ...batchPuts.map((r) => ({
              request_put: { key: key(r), value: Buffer.from(this.#instanceId), lease },
            })),
            ...batchDeletes.map((r) => ({ request_delete_range: { key: key(r) } })),
            ...reads,
          ],
          failure: [],
        });
        committed = result.header.revision;
        read = entriesOf(result.responses.slice(batchPuts.length + batchDeletes.length));
        backoff.reset();
      } catch (error) {
        if (this.#closed) return;
        this.#log.warn(`Writing the recipient directory failed: ${describeEtcdError(error)} (retrying)`);
        await sleep(backoff.next());
        continue;
      }
      if (this.#lease !== lease) continue; // re-registered meanwhile: written under the old lease
      this.#revision = BigInt(committed);
      for (const r of batchDeletes) if (!this.#recipients.has(r)) this.#removed.delete(r);
      for (const r of batchPuts) {
        const state = this.#recipients.get(r);
        if (!state) continue;
        this.#unwritten.delete(r);
        state.written = true;
        for (const wake of state.waiters.splice(0)) wake({ revision: this.#revision, read });
      }
    }
  }
}

/** A recipient's key is in etcd: from this revision on, with what was read beside the write. */
export interface Published {
  revision: bigint;
  read?: Map<string, string>;
}

/** Every instance's directory keys, kept in memory from a watch. */
export class DirectoryView {
  readonly #byRecipient = new Map<string, Set<string>>();
  /** Entries per instance, to tell when an instance holds none any more. */
  readonly #perInstance = new Map<string, number>();
  readonly #onInstanceGone: (instance: string) => void;
  readonly #root: string;
  readonly #abort = new AbortController();
  readonly #following: Promise<void>;
  readonly #gate = new RevisionGate();
  #ready!: () => void;
  /** Resolves once the first full read is in. */
  readonly ready = new Promise<void>((resolve) => (this.#ready = resolve));
  /**
   * Told of every entry (recipient, instance) that appears or goes, before the view's revision
   * moves on. On a resync the new entries are told before the old ones go, so a count kept from
   * this never dips below the truth.
   */
  onEntry: (recipient: string, instance: string, present: boolean) => void = () => {};

  constructor(
    client: Etcd3,
    options: {
      root: string;
      logger?: Logger;
      onResync?: RangeOptions["onResync"];
      /** Told when the last entry of an instance goes (its lease ended, or it unsubscribed all). */
      onInstanceGone?: (instance: string) => void;
    },
  ) {
    const root = this.#root = options.root;
    this.#onInstanceGone = options.onInstanceGone ?? (() => {});
    const log = options.logger ?? silentLogger;
    this.#following = (async () => {
      const updates = watchRanges(client, [{ prefix: root }], {
        signal: this.#abort.signal,
        pageSize: DIRECTORY_PAGE,
        onResync: options.onResync,
        retryFirstRead: true,
      });
      try {
        for await (const update of updates) this.#apply(update);
      } catch (error) {
        if (!this.#abort.signal.aborted) {
          log.error(`Recipient directory watch ended: ${describeEtcdError(error)}`);
        }
      }
    })();
  }

  /** Instances with subscribers of `recipient` (ours included). */
  instancesFor(recipient: string): ReadonlySet<string> {
    return this.#byRecipient.get(recipient) ?? EMPTY;
  }

  /** Every entry now: [recipient, instance] for each instance that holds the recipient. */
  *entries(): Iterable<[string, string]> {
    for (const [recipient, instances] of this.#byRecipient) {
      for (const instance of instances) yield [recipient, instance];
    }
  }

  /** Whether `instance` holds any recipient in this view. */
  holds(instance: string): boolean {
    return this.#perInstance.has(instance);
  }

  /** Recipients known, and the etcd revision the view reflects (for tests and metrics). */
  get size(): { recipients: number; revision: bigint } {
    return { recipients: this.#byRecipient.size, revision: this.#gate.revision };
  }

  /** Resolves true once the view reflects `revision`, false after `timeoutMs`. */
  reached(revision: bigint, timeoutMs: number): Promise<boolean> {
    return this.#gate.reached(revision, timeoutMs);
  }

  async close(): Promise<void> {
    this.#abort.abort();
    this.#gate.close();
    await this.#following;
  }

  #apply(update: RangeUpdate): void {
    if (update.kind === "reset") {
      const old = [...this.entries()];
      const instances = [...this.#perInstance.keys()];
      this.#byRecipient.clear();
      this.#perInstance.clear();
      for (const key of update.entries.keys()) this.#set(key, true);
      for (const [recipient, instance] of old) this.onEntry(recipient, instance, false);
      for (const instance of instances) if (!this.#perInstance.has(instance)) this.#onInstanceGone(instance);
      this.#ready();
    } else {
      for (const { key, value } of update.changes) this.#set(key, value !== undefined);
    }
    this.#gate.advance(update.revision);
  }

  #set(key: string, present: boolean): void {
    const entry = parseDirectoryKey(this.#root, key);
    if (!entry) return;
    const { recipient, instance } = entry;
    let set = this.#byRecipient.get(recipient);
    if (present) {
      if (!set) this.#byRecipient.set(recipient, set = new Set());
      if (set.has(instance)) return;
      set.add(instance);
      this.#perInstance.set(instance, (this.#perInstance.get(instance) ?? 0) + 1);
      this.onEntry(recipient, instance, true);
    } else if (set?.delete(instance)) {
      if (set.size === 0) this.#byRecipient.delete(recipient);
      const left = this.#perInstance.get(instance)! - 1;
      if (left > 0) this.#perInstance.set(instance, left);
      else this.#perInstance.delete(instance);
      this.onEntry(recipient, instance, false);
      if (left === 0) this.#onInstanceGone(instance);
    }
  }
}

const EMPTY: ReadonlySet<string> = new Set();

/** Up to `n` members of `set`, in insertion order (the set is left as it is). */
function take(set: ReadonlySet<string>, n: number): string[] {
  const out: string[] = [];
  for (const item of set) {
    if (out.length >= n) break;
    out.push(item);
  }
  return out;
}
