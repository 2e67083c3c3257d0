/**
 * The mesh's routing contract (the broker mode routes through NATS instead: delivery.ts). A
 * notification is delivered on the thread that has it, then handed one hop outward with how far it
 * must still go:
 *
 *   Send (any client)        → this thread's subscribers, then reach "cluster"
 *   Forward (from a peer)    → this thread's subscribers, then reach "instance" (the peer already
 *                              sent it to every other instance that holds the recipient: no loops)
 *   deliver (pool → worker)  → this thread's subscribers only
 *
 * The next hop is the main thread's router (with workers) or the cluster (on one thread); the
 * router's own next hop is the cluster. A thread's MeshDelivery and the router keep who holds which
 * recipient with {@link Holders}; the cluster keeps it in its directory view (directory.ts).
 */

/** How far beyond the thread that has it a notification still goes. */
export type Reach = "instance" | "cluster";

/** The next hop outward from one set of subscribers. */
export interface Routing {
  /** Delivers to the holders of `recipient` beyond this hop, as far as `reach`; resolves with their count. */
  route(recipient: string, bytes: Uint8Array, reach: Reach): Promise<number>;
  /** `recipient` got its first subscriber here; resolves once a Send to any instance reaches it. */
  subscribed(recipient: string): Promise<void>;
  /** `recipient` lost its last subscriber here. */
  unsubscribed(recipient: string): void;
}

/** The cluster as the worker pool sees it: the last hop, and what the pool's workers ask of it. */
export interface PeerRouting extends Routing {
  /** Whether this instance's directory view reached `revision` (a peer's barrier), bounded. */
  reached(revision: bigint): Promise<boolean>;
  /**
   * Tells `onEntry` of every recipient entry of every *other* instance now and as they come and go
   * (one call per instance holding the recipient).
   */
  followPeers(onEntry: (recipient: string, present: boolean) => void): void;
}

/** A lone thread on a lone instance: nothing beyond it. */
export const NO_ROUTING: Routing = {
  route: () => Promise.resolve(0),
  subscribed: () => Promise.resolve(),
  unsubscribed: () => {},
};

/**
 * Who holds subscribers of which recipient at one hop (a worker's hub holds for itself; the pool
 * tracks which workers hold), and the next hop told of each recipient's first and last holder. A
 * recipient is ready for a holder once the next hop says every instance routes it here.
 */
export class Holders<H> {
  readonly #byRecipient = new Map<string, Set<H>>();
  /** Per recipient held here: resolves once every instance routes it to us. */
  readonly #ready = new Map<string, Promise<void>>();
  #next: Routing;

  constructor(next: Routing = NO_ROUTING) {
    this.#next = next;
  }

  /** Routes through `next` from now on; recipients already held are announced to it. */
  set next(next: Routing) {
    this.#next = next;
    for (const recipient of this.#byRecipient.keys()) this.#ready.set(recipient, next.subscribed(recipient));
  }

  get next(): Routing {
    return this.#next;
  }

  /** `holder` holds `recipient` now; resolves once it is reachable from every instance. */
  hold(recipient: string, holder: H): Promise<void> {
    let holders = this.#byRecipient.get(recipient);
    if (!holders) {
      this.#byRecipient.set(recipient, holders = new Set());
      this.#ready.set(recipient, this.#next.subscribed(recipient));
    }
    holders.add(holder);
    return this.#ready.get(recipient)!;
  }

  /** `holder` no longer holds `recipient`; false if it did not. */
  release(recipient: string, holder: H): boolean {
    const holders = this.#byRecipient.get(recipient);
    if (!holders?.delete(holder)) return false;
    if (holders.size === 0) {
      this.#byRecipient.delete(recipient);
      this.#ready.delete(recipient);
      this.#next.unsubscribed(recipient);
    }
    return true;
  }

  /** Every recipient `holder` held, released (it is gone); returns them. */
  releaseAll(holder: H): string[] {
    const released: string[] = [];
    for (const [recipient, holders] of this.#byRecipient) {
      if (holders.has(holder)) released.push(recipient);
    }
    for (const recipient of released) this.release(recipient, holder);
    return released;
  }

  /** The holders of `recipient` now. */
  of(recipient: string): ReadonlySet<H> {
    return this.#byRecipient.get(recipient) ?? NONE;
  }

  /** Resolves once `recipient` is reachable from every instance (at once if it is not held). */
  ready(recipient: string): Promise<void> {
    return this.#ready.get(recipient) ?? Promise.resolve();
  }
}

const NONE: ReadonlySet<never> = new Set();
