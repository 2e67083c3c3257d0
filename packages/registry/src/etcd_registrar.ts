/**
 * The etcd {@link Registrar}: writes this instance's record under a lease, never over another live
 * instance's record, and keeps it there through etcd faults until `deregister()`.
 *
 * The lifecycle, in one pass (`state` is what callers see; the phases are where the code is):
 *
 *   idle ──register()──▶ registering ──record written──▶ registered ◀──restored── lost
 *                          │  (#registerFirst: retries an     │ (#supervise)        ▲
 *                          │   unreachable etcd, waits out a  └──lease lost, record─┘
 *                          │   crashed holder, else conflict)    deleted/overwritten,
 *                          │                                     etcd unreachable
 *   any phase ──deregister()──▶ withdrawing (#withdraw) ──▶ done   (register() after it: refused)
 *
 * - One reconcile step (`#reconcile`, run through `#ensure`, which remembers it as in flight) makes
 *   sure a live lease exists and the key holds our value under it. `registering` runs it until it
 *   succeeds; `registered`/`lost` run it from the supervisor loop whenever something may have
 *   changed: the lease was lost, the watch on our own key (range_watch.ts) saw it change or
 *   resynced, or a periodic check (one TTL) came due. A record under a new lease is announced
 *   to `onLeaseChange` listeners. Failures back off (250 ms doubling to 5 s,
 *   jittered) and mark the registration lost; the next success restores it.
 * - `withdrawing` may start in any phase: it stops the loop, lets a step in flight land (a lease it
 *   grants after that is revoked at once), deletes the key only while our lease holds it, revokes the
 *   lease (or, with `keepLease`, leaves it alive until `releaseLease()`); all of it bounded by
 *   `callTimeoutMs` or the caller's signal.
 */
import { type Etcd3, EtcdLeaseInvalidError, type IKeyValue } from "etcd3";
import { Backoff, sleep, untilAborted } from "@notification-server/timing";
import { formatDuration } from "@notification-server/timing";
import { type Logger, silentLogger } from "./logger.ts";
import { DEFAULT_PREFIX, encodeInstance, instanceKey } from "./codec.ts";
import { watchRanges } from "./range_watch.ts";
import {
  deadlineAfter,
  describeEtcdError,
  EtcdUnavailableError,
  type RetryOptions,
  retryTransient,
} from "./etcd_client.ts";
import { LeaseSession } from "./lease_session.ts";
import type { DeregisterOutcome, Layout, Registrar, RegistrationState, ServiceInstance } from "./types.ts";

/** Options for {@link EtcdRegistrar}. */
export interface EtcdRegistrarOptions {
  /** Key prefix of every service. @default "/services" */
  prefix?: string;
  /** One key per instance, or the original design's single key per service. @default "instance" */
  layout?: Layout;
  /** The lease's TTL: a dead instance's record is gone this long after. @default 10 */
  leaseTtlSeconds?: number;
  /** Where registration events are logged. */
  logger?: Logger;
  /** Called on every change between registered and unregistered. */
  onStateChange?: (state: RegistrationState) => void;
  /** Bound on the whole of `deregister()` (give it the client's dial timeout). @default 5000 */
  callTimeoutMs?: number;
  /** Told of what happens to the registration (for metrics); `onStateChange` has the state itself. */
  onEvent?: (event: RegistrarEvent) => void;
}

/**
 * `lost` / `restored`: the record went missing and came back; `keepaliveFailed`: one failed lease
 * renewal; `watchDisconnected`: the watch on our own key lost its stream (it resumes by itself).
 */
export type RegistrarEvent = "lost" | "restored" | "keepaliveFailed" | "watchDisconnected";

/** Options for one {@link EtcdRegistrar.deregister} call. */
export interface DeregisterOptions {
  /** Ends the attempt early; the record then expires with its lease. */
  signal?: AbortSignal;
  /** Overrides the registrar's `callTimeoutMs` for this call. */
  timeoutMs?: number;
  /**
   * Deletes the record but keeps its lease alive until {@link EtcdRegistrar.releaseLease}: what
   * else lives under it (a leaving instance's recipient directory, which its peers route by) stays
   * while the instance drains, and goes with the lease after. A crash meanwhile still lets it
   * expire within the TTL. @default false
   */
  keepLease?: boolean;
}

/** Options for one {@link EtcdRegistrar.register} call. */
export interface RegisterOptions {
  /** Stops waiting for etcd (the call then rejects). */
  signal?: AbortSignal;
  /**
   * Until when (epoch ms) the first registration retries an unreachable etcd; undefined retries
   * forever. @default 30 s from the call
   */
  deadline?: number;
}

/** Another live instance holds the key we would write. */
export class RegistrationConflictError extends Error {
  /** `message` names the key and the lease holding it. */
  constructor(message: string) {
    super(message);
    this.name = "RegistrationConflictError";
  }
}

type EnsureResult =
  | { kind: "ok"; wrote: boolean }
  | { kind: "conflict"; owner: IKeyValue };

/** Registers one instance in etcd and keeps it registered. */
export class EtcdRegistrar implements Registrar {
  readonly #client: Etcd3;
  readonly #prefix: string;
  readonly #layout: Layout;
  readonly #ttl: number;
  readonly #log: Logger;
  readonly #onStateChange: (state: RegistrationState) => void;
  readonly #stop = new AbortController();
  #key = "";
  #value = "";
  #session?: LeaseSession;
  /** Leases this registrar granted, so a record left under an earlier one is ours to take back. */
  readonly #ownLeases = new Set<string>();
  /** The lease last told to `onLeaseChange`. */
  #announcedLease?: string;
  readonly #leaseListeners = new Set<(leaseId: string) => void>();
  #state: RegistrationState = "unregistered";
  #lostAt = 0;
  #wake: () => void = () => {};
  #dirty = false;
  readonly #callTimeoutMs: number;
  readonly #onEvent: (event: RegistrarEvent) => void;
  #registering?: Promise<void>;
  #loop?: Promise<void>;
  /** The reconcile step running now, if any (settles, never rejects). */
  #inFlight?: Promise<unknown>;
  #deregistering?: Promise<DeregisterOutcome>;
  /** The lease `deregister({ keepLease: true })` left alive, until `releaseLease()`. */
  #kept?: LeaseSession;

  /** Registers through `client` (not closed by the registrar). */
  constructor(client: Etcd3, options: EtcdRegistrarOptions = {}) {
    this.#client = client;
    this.#prefix = options.prefix ?? DEFAULT_PREFIX;
    this.#layout = options.layout ?? "instance";
    this.#ttl = options.leaseTtlSeconds ?? 10;
    this.#log = options.logger ?? silentLogger;
    this.#onStateChange = options.onStateChange ?? (() => {});
    this.#callTimeoutMs = options.callTimeoutMs ?? 5_000;
    this.#onEvent = options.onEvent ?? (() => {});
  }

  /** The key this registrar writes (empty before `register`). */
  get key(): string {
    return this.#key;
  }

  /** The current lease id, if any. */
  get leaseId(): string | undefined {
    return this.#session?.id;
  }

  /**
   * Tells `listener` of the lease our record is under each time it is in etcd under a new one (the
   * first registration, and a restoration after the lease was lost), and at once if it is now:
   * whatever else should live and die with the registration is written under it again. Returns
   * the undo.
   */
  onLeaseChange(listener: (leaseId: string) => void): () => void {
    this.#leaseListeners.add(listener);
    if (this.#announcedLease !== undefined) listener(this.#announcedLease);
    return () => this.#leaseListeners.delete(listener);
  }

  /** Whether our record is in etcd now. */
  get state(): RegistrationState {
    return this.#state;
  }

  /**
   * Writes the record and starts keeping it. Retries an unreachable etcd until `deadline`. If the
   * key is held by another lease, waits up to that lease's TTL for it to expire (a crashed previous
   * run of this instance), then throws {@link RegistrationConflictError}. `signal`, or a
   * `deregister()` meanwhile, ends it early with the abort reason; `deregister()` then removes
   * whatever it wrote.
   */
  async register(instance: ServiceInstance, options: RegisterOptions = {}): Promise<void> {
    if (this.#stop.signal.aborted) throw new Error("register() after deregister(): make a new EtcdRegistrar");
    if (this.#registering) throw new Error("register() was already called on this registrar");
    const registering = this.#registerFirst(instance, options);
    this.#registering = registering.catch(() => {});
    await registering;
  }

  async #registerFirst(instance: ServiceInstance, options: RegisterOptions): Promise<void> {
    this.#key = instanceKey(this.#prefix, this.#layout, instance);
    this.#value = encodeInstance(this.#layout, instance);
    const signal = options.signal ? AbortSignal.any([options.signal, this.#stop.signal]) : this.#stop.signal;
    const retry: RetryOptions = {
      deadline: "deadline" in options ? options.deadline : deadlineAfter(30_000),
      signal,
      giveUp: (error, elapsed, permanent) =>
        new EtcdUnavailableError(
          permanent
            ? `etcd refused to register ${this.#key}: ${describeEtcdError(error)}`
            : `Cannot register ${this.#key} after ${formatDuration(elapsed)}: ${describeEtcdError(error)}`,
          { cause: error },
        ),
    };
    let conflictUntil = 0;
    for (;;) {
      const result = await retryTransient(() => this.#ensure(), retry);
      if (result.kind === "ok") break;
      const owner = result.owner;
      if (conflictUntil === 0) {
        const ownerTtl = await untilAborted(this.#grantedTtl(owner.lease), signal);
        conflictUntil = Date.now() + ownerTtl * 1000 + 1000;
        this.#log.warn(
          `Key ${this.#key} is held by lease ${owner.lease}; waiting up to ${ownerTtl + 1}s for it to expire`,
        );
      }
      if (Date.now() > conflictUntil) {
        await this.#session?.close();
        this.#session = undefined;
        throw new RegistrationConflictError(
          `Refusing to register: ${this.#key} is held by lease ${owner.lease} of another live instance ` +
            `(${
              JSON.stringify(owner.value.toString())
            }); give each instance a unique notification-server.instance-id`,
        );
      }
      await sleep(500, signal);
      signal.throwIfAborted();
    }
    signal.throwIfAborted();
    this.#setState("registered");
    this.#announceLease();
    // Ends with #stop; should it end otherwise, the periodic check (one TTL) still repairs the key.
    void this.#followOwnKey().catch((error) =>
      this.#log.warn(`Watching ${this.#key} ended: ${describeEtcdError(error)}`)
    );
    this.#loop = this.#supervise();
  }

  /**
   * Stops keeping the record, deletes it only if our lease still holds it, and revokes the lease
   * (or, with `keepLease`, leaves that to {@link releaseLease}). Bounded as a whole by `timeoutMs` (default: the registrar's `callTimeoutMs`) or `signal`: past
   * that it reports "unreachable" and the record expires with its lease. Safe at any time, also
   * while `register()` is still running, and more than once (later calls get the same outcome).
   */
  deregister(options: DeregisterOptions = {}): Promise<DeregisterOutcome> {
    if (!this.#deregistering) {
      this.#stop.abort(new Error("deregister() was called"));
      this.#wake();
      this.#deregistering = this.#withdraw(options);
    }
    return this.#deregistering;
  }

  async #withdraw(options: DeregisterOptions): Promise<DeregisterOutcome> {
    const timeout = AbortSignal.timeout(options.timeoutMs ?? this.#callTimeoutMs);
    const bound = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    // A reconcile step still in flight may be granting a lease or writing the record: let it land
    // (within the bound) so what it wrote is ours to remove.
    await untilAborted(Promise.all([this.#registering, this.#loop, this.#inFlight]), bound).catch(() => {});
    const session = this.#session;
    this.#session = undefined;
    let outcome: DeregisterOutcome = "absent";
    if (session?.alive) {
      try {
        const res = await untilAborted(
          this.#client.if(this.#key, "Lease", "==", session.id).then(this.#client.delete().key(this.#key))
            .commit(),
          bound,
        );
        if (res.succeeded) outcome = "deleted";
      } catch (error) {
        outcome = "unreachable";
        this.#log.warn(
          `Deleting ${this.#key} failed: ${describeEtcdError(bound.aborted ? bound.reason : error)}`,
        );
      }
      // With etcd unreachable a revoke would only wait out its deadline: let the lease expire.
      if (outcome === "unreachable") session.abandon();
      else if (options.keepLease) this.#kept = session;
      else await this.#revoke(session, bound);
    }
    this.#setState("unregistered");
    return outcome;
  }

  /**
   * Revokes the lease that `deregister({ keepLease: true })` kept (and with it whatever was written
   * under it). Bounded by `timeoutMs` (default: `callTimeoutMs`); past that the lease expires within
   * its TTL. Does nothing when no lease was kept; safe more than once.
   */
  async releaseLease(options: { timeoutMs?: number } = {}): Promise<void> {
    await this.#deregistering;
    const session = this.#kept;
    this.#kept = undefined;
    if (session) await this.#revoke(session, AbortSignal.timeout(options.timeoutMs ?? this.#callTimeoutMs));
  }

  async #revoke(session: LeaseSession, bound: AbortSignal): Promise<void> {
    const error = await untilAborted(session.close(), bound).catch((
      error,
    ) => (session.abandon(), error as Error));
    if (error) {
      this.#log.warn(
        `Revoking lease ${session.id} failed: ${describeEtcdError(error)}; it expires within ${this.#ttl}s`,
      );
    }
  }

  /**
   * One reconcile step: make sure a live lease exists and the key holds our value under it.
   * Writes only when the key is absent, already ours (this or an earlier lease of ours), or was
   * overwritten without a lease; reports a conflict when another lease holds it.
   */
  #ensure(): Promise<EnsureResult> {
    const step = this.#reconcile();
    this.#inFlight = step.catch(() => {});
    return step;
  }

  async #reconcile(): Promise<EnsureResult> {
    if (!this.#session?.alive) {
      const previous = this.#session;
      const fresh = await LeaseSession.grant(this.#client, {
        ttlSeconds: this.#ttl,
        logger: this.#log,
        onFailure: () => this.#onEvent("keepaliveFailed"),
      });
      if (this.#stop.signal.aborted) {
        // Granted after deregister() took stock: nothing may keep this lease alive, and
        // deregister() (which waits for this step) returns only once it is revoked.
        await fresh.close();
        throw this.#stop.signal.reason;
      }
      fresh.lost.then(() => this.#poke());
      this.#ownLeases.add(fresh.id);
      this.#session = fresh;
      void previous?.close();
    }
    const session = this.#session;
    const kv = this.#client;
    const created = await kv.if(this.#key, "Create", "==", 0)
      .then(kv.put(this.#key).value(this.#value).lease(session.id))
      .else(kv.get(this.#key))
      .commit();
    if (created.succeeded) return { kind: "ok", wrote: true };
    const current = created.responses[0]?.response_range?.kvs[0];
    if (!current) return await this.#reconcile(); // deleted between compare and read: go again
    if (current.lease === session.id && current.value.toString() === this.#value) {
      return { kind: "ok", wrote: false };
    }
    // etcd3 can give up on a lease that etcd still holds (etcd back after more than 2 TTLs with
    // its data): the record under that earlier lease of ours is still ours.
    if (current.lease !== "0" && !this.#ownLeases.has(current.lease)) {
      return { kind: "conflict", owner: current };
    }
    // Ours with a wrong value or an old lease, or overwritten by hand without a lease: put ours
    // back, unless it changed again meanwhile (then the next round looks afresh).
    try {
      const res = await kv.if(this.#key, "Mod", "==", Number(current.mod_revision))
        .then(kv.put(this.#key).value(this.#value).lease(session.id))
        .commit();
      return res.succeeded ? { kind: "ok", wrote: true } : await this.#reconcile();
    } catch (error) {
      if (error instanceof EtcdLeaseInvalidError) session.abandon();
      throw error;
    }
  }

  async #supervise(): Promise<void> {
    const backoff = new Backoff();
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      await this.#waitForWork(signal);
      this.#dirty = false;
      if (signal.aborted) break;
      const session = this.#session;
      if (session && !session.alive) this.#markLost(`lease ${session.id} lost`);
      try {
        const result = await untilAborted(this.#ensure(), signal);
        if (signal.aborted) break;
        if (result.kind === "conflict") {
          this.#markLost(
            `${this.#key} is held by lease ${result.owner.lease}; not overwriting another instance`,
          );
          this.#dirty = true;
          await sleep(backoff.next(), signal);
          continue;
        }
        if (result.wrote && this.#state === "registered") {
          // Gone (or wrong) for a moment: a loss and a restoration as far as counting goes.
          this.#log.warn(`Record ${this.#key} was changed from outside; written back`, { key: this.#key });
          this.#onEvent("lost");
          this.#onEvent("restored");
        }
        if (this.#state === "unregistered") {
          this.#log.info(
            `Registration restored after ${
              formatDuration(Date.now() - this.#lostAt)
            }: ${this.#key} -> ${this.#value} (lease ${this.#session?.id})`,
          );
          this.#setState("registered");
          this.#onEvent("restored");
        }
        this.#announceLease();
        backoff.reset();
      } catch (error) {
        if (signal.aborted) break;
        if (error instanceof EtcdLeaseInvalidError) this.#session?.abandon();
        this.#markLost(describeEtcdError(error));
        this.#dirty = true;
        await sleep(backoff.next(), signal);
      }
    }
  }

  #poke(): void {
    this.#dirty = true;
    this.#wake();
  }

  /** Resolves when there is something to check: a poke, one TTL passing, or stop. */
  #waitForWork(signal: AbortSignal): Promise<void> {
    if (this.#dirty || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.#wake = () => {};
        resolve();
      };
      // A periodic look catches what a watch cannot (e.g. etcd restored with an older revision).
      const timer = setTimeout(done, this.#ttl * 1000);
      this.#wake = done;
      signal.addEventListener("abort", done, { once: true });
    });
  }

  #markLost(reason: string): void {
    if (this.#state !== "registered") return;
    this.#lostAt = Date.now();
    this.#log.warn(`Registration lost: ${reason}; re-registering`);
    this.#setState("unregistered");
    this.#onEvent("lost");
  }

  /**
   * Follows our own key so deletes and overwrites from outside are repaired within moments: any
   * change (ours too: a reconcile that finds all well writes nothing) and any resync wake the
   * supervisor. Ends with `#stop`.
   */
  async #followOwnKey(): Promise<void> {
    const updates = watchRanges(this.#client, [{ key: this.#key }], {
      signal: this.#stop.signal,
      retryFirstRead: true,
      onResync: (event) => {
        if (event.reason === "disconnected" && event.attempts === undefined) {
          this.#onEvent("watchDisconnected");
        }
      },
    });
    for await (const _ of updates) this.#poke();
  }

  /** Tells `onLeaseChange` of the lease our record is under now, once per lease. */
  #announceLease(): void {
    const lease = this.#session?.id;
    if (lease === undefined || lease === this.#announcedLease || this.#state !== "registered") return;
    this.#announcedLease = lease;
    for (const listener of this.#leaseListeners) listener(lease);
  }

  async #grantedTtl(leaseId: string): Promise<number> {
    try {
      const res = await this.#client.leaseClient.leaseTimeToLive({ ID: leaseId });
      return Math.max(1, Number(res.grantedTTL));
    } catch {
      return this.#ttl;
    }
  }

  #setState(state: RegistrationState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#onStateChange(state);
  }
}
