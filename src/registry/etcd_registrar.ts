/**
 * The etcd {@link Registrar}: writes this instance's record under a lease, never over another live
 * instance's record, and keeps it there through etcd faults until `deregister()`.
 *
 * Self-healing is one reconcile step (`#ensure`) run by a supervisor loop whenever something may
 * have changed: the lease was lost, a watch on our own key saw it deleted or overwritten, the watch
 * reconnected, or a periodic check came due. Failures back off (250 ms doubling to 5 s, jittered).
 */
import type { Etcd3, IKeyValue, Watcher } from "etcd3";
import { Backoff, sleep } from "../backoff.ts";
import type { Layout } from "../config.ts";
import { formatDuration } from "../duration.ts";
import { type Logger, silentLogger } from "../logger.ts";
import { encodeInstance, instanceKey } from "./codec.ts";
import {
  deadlineAfter,
  describeEtcdError,
  EtcdUnavailableError,
  type RetryOptions,
  retryTransient,
} from "./etcd_client.ts";
import { LeaseSession } from "./lease_session.ts";
import type { DeregisterOutcome, Registrar, RegistrationState, ServiceInstance } from "./types.ts";

/** Options for {@link EtcdRegistrar}. */
export interface EtcdRegistrarOptions {
  /** @default "/services" */
  prefix?: string;
  /** @default "instance" */
  layout?: Layout;
  /** @default 10 */
  leaseTtlSeconds?: number;
  logger?: Logger;
  /** Called on every change between registered and unregistered. */
  onStateChange?: (state: RegistrationState) => void;
}

/** Options for one {@link EtcdRegistrar.register} call. */
export interface RegisterOptions {
  signal?: AbortSignal;
  /**
   * Until when (epoch ms) the first registration retries an unreachable etcd; undefined retries
   * forever. @default 30 s from the call
   */
  deadline?: number;
}

/** Another live instance holds the key we would write. */
export class RegistrationConflictError extends Error {
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
  #watcher?: Watcher;
  #state: RegistrationState = "unregistered";
  #lostAt = 0;
  #wake: () => void = () => {};
  #dirty = false;
  #loop?: Promise<void>;

  constructor(client: Etcd3, options: EtcdRegistrarOptions = {}) {
    this.#client = client;
    this.#prefix = options.prefix ?? "/services";
    this.#layout = options.layout ?? "instance";
    this.#ttl = options.leaseTtlSeconds ?? 10;
    this.#log = options.logger ?? silentLogger;
    this.#onStateChange = options.onStateChange ?? (() => {});
  }

  /** The key this registrar writes (empty before `register`). */
  get key(): string {
    return this.#key;
  }

  /** The current lease id, if any. */
  get leaseId(): string | undefined {
    return this.#session?.id;
  }

  get state(): RegistrationState {
    return this.#state;
  }

  /**
   * Writes the record and starts keeping it. Retries an unreachable etcd until `deadline`. If the
   * key is held by another lease, waits up to that lease's TTL for it to expire (a crashed previous
   * run of this instance), then throws {@link RegistrationConflictError}.
   */
  async register(instance: ServiceInstance, options: RegisterOptions = {}): Promise<void> {
    if (this.#loop) throw new Error("register() was already called on this registrar");
    this.#key = instanceKey(this.#prefix, this.#layout, instance);
    this.#value = encodeInstance(this.#layout, instance);
    const retry: RetryOptions = {
      deadline: "deadline" in options ? options.deadline : deadlineAfter(30_000),
      signal: options.signal,
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
        const ownerTtl = await this.#grantedTtl(owner.lease);
        conflictUntil = Date.now() + ownerTtl * 1000 + 1000;
        this.#log.warn(
          `Key ${this.#key} is held by lease ${owner.lease}; waiting up to ${ownerTtl + 1}s for it to expire`,
        );
      }
      if (Date.now() > conflictUntil || options.signal?.aborted) {
        await this.#session?.close();
        this.#session = undefined;
        throw new RegistrationConflictError(
          `Refusing to register: ${this.#key} is held by lease ${owner.lease} of another live instance ` +
            `(${
              JSON.stringify(owner.value.toString())
            }); give each instance a unique notification-server.instance-id`,
        );
      }
      await sleep(500, options.signal);
    }
    this.#setState("registered");
    this.#watchOwnKey();
    this.#loop = this.#supervise();
  }

  /**
   * Stops keeping the record, deletes it only if our lease still holds it, and revokes the lease
   * (bounded by one TTL). Safe to call more than once.
   */
  async deregister(): Promise<DeregisterOutcome> {
    if (this.#stop.signal.aborted) return "absent";
    this.#stop.abort();
    this.#wake();
    this.#watcher?.removeAllListeners();
    const watcher = this.#watcher;
    this.#watcher = undefined;
    await this.#loop;
    const session = this.#session;
    this.#session = undefined;
    let outcome: DeregisterOutcome = "absent";
    if (session?.alive) {
      try {
        const res = await this.#client
          .if(this.#key, "Lease", "==", session.id)
          .then(this.#client.delete().key(this.#key))
          .commit();
        if (res.succeeded) outcome = "deleted";
      } catch (error) {
        outcome = "unreachable";
        this.#log.warn(`Deleting ${this.#key} failed: ${describeEtcdError(error)}`);
      }
      // With etcd unreachable a revoke would only wait out its deadline: let the lease expire.
      const revokeError = outcome === "unreachable" ? (session.abandon(), undefined) : await session.close();
      if (revokeError) {
        this.#log.warn(
          `Revoking lease ${session.id} failed: ${
            describeEtcdError(revokeError)
          }; it expires within ${this.#ttl}s`,
        );
      }
    }
    await watcher?.cancel().catch(() => {});
    this.#setState("unregistered");
    return outcome;
  }

  /**
   * One reconcile step: make sure a live lease exists and the key holds our value under it.
   * Writes only when the key is absent, already ours (this or an earlier lease of ours), or was
   * overwritten without a lease; reports a conflict when another lease holds it.
   */
  async #ensure(): Promise<EnsureResult> {
    if (!this.#session?.alive) {
      const previous = this.#session;
      const fresh = await LeaseSession.grant(this.#client, this.#ttl, this.#log);
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
    if (!current) return await this.#ensure(); // deleted between compare and read: go again
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
      return res.succeeded ? { kind: "ok", wrote: true } : await this.#ensure();
    } catch (error) {
      if (/requested lease not found/i.test(String(error))) session.abandon();
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
        const result = await this.#ensure();
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
          this.#log.warn(`Record ${this.#key} was changed from outside; written back`);
        }
        if (this.#state === "unregistered") {
          this.#log.info(
            `Registration restored after ${
              formatDuration(Date.now() - this.#lostAt)
            }: ${this.#key} -> ${this.#value} (lease ${this.#session?.id})`,
          );
          this.#setState("registered");
          this.#watchOwnKey();
        }
        backoff.reset();
      } catch (error) {
        if (signal.aborted) break;
        if (/requested lease not found/i.test(String(error))) this.#session?.abandon();
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
  }

  /** Watches our own key so deletes and overwrites from outside are repaired within moments. */
  #watchOwnKey(): void {
    const old = this.#watcher;
    this.#watcher = undefined;
    old?.removeAllListeners();
    void old?.cancel().catch(() => {});
    const poke = () => this.#poke();
    const watcher = this.#client.watch().key(this.#key).watcher();
    watcher.on("put", (kv) => {
      if (kv.lease !== this.#session?.id || kv.value.toString() !== this.#value) poke();
    });
    watcher.on("delete", poke);
    watcher.on("connected", poke); // after a reconnect we may have missed events
    watcher.on("error", () => {
      // A cancelled watch (e.g. compaction) is dropped by etcd3: make a new one next round.
      this.#dirty = true;
      this.#watchOwnKey();
    });
    this.#watcher = watcher;
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
