/**
 * Routing among the workers of one instance, on the main thread: which workers hold which
 * recipients, and the recipient filter workers read to skip the main thread. Apart from the
 * threads (the mesh's pool side, mode.ts, hands it a `deliverTo`), so it is tested without any.
 *
 * The filter counts one per (worker, recipient) held and one per (other instance, recipient) in
 * the cluster's directory. A worker subtracts what it knows it holds itself and takes the short
 * way when nothing is left: a Send whose recipient only its own worker holds never leaves it.
 */
import { Holders, type PeerRouting, type Reach, type Routing } from "./routing.ts";
import { RecipientFilter } from "./recipient_filter.ts";

/** Delivers to worker `index`'s own subscribers; resolves with how many took it (0 if it is gone). */
export type DeliverTo = (index: number, recipient: string, bytes: Uint8Array) => Promise<number>;

export class MainThreadRouter {
  readonly filter: RecipientFilter;
  readonly #deliverTo: DeliverTo;
  readonly #holders = new Holders<number>();
  #cluster?: PeerRouting;

  constructor(deliverTo: DeliverTo, filter: RecipientFilter = new RecipientFilter()) {
    this.#deliverTo = deliverTo;
    this.filter = filter;
  }

  /** Routes to other instances through `cluster` from now on; recipients already held are published. */
  set cluster(cluster: PeerRouting) {
    this.#cluster = cluster;
    cluster.followPeers((recipient, present) =>
      present ? this.filter.add(recipient) : this.filter.remove(recipient)
    );
    this.#holders.next = cluster;
  }

  /** The next hop (the cluster, or nothing yet). */
  get next(): Routing {
    return this.#holders.next;
  }

  /**
   * Worker `from` delivered to its own subscribers: every other worker holding `recipient` gets it,
   * and the other instances when `reach` is the cluster.
   */
  async route(from: number, recipient: string, bytes: Uint8Array, reach: Reach): Promise<number> {
    const counts: Promise<number>[] = [];
    for (const index of this.#holders.of(recipient)) {
      if (index !== from) counts.push(this.#deliverTo(index, recipient, bytes));
    }
    counts.push(this.#holders.next.route(recipient, bytes, reach));
    let total = 0;
    for (const count of await Promise.all(counts)) total += count;
    return total;
  }

  /** Worker `index` got its first subscriber of `recipient`; resolves once every instance routes it. */
  hold(index: number, recipient: string): Promise<void> {
    // Counted before anyone is told it is ready, so no worker takes the short way past it.
    if (!this.#holders.of(recipient).has(index)) this.filter.add(recipient);
    return this.#holders.hold(recipient, index);
  }

  /** Worker `index` lost its last subscriber of `recipient`. */
  release(index: number, recipient: string): void {
    if (this.#holders.release(recipient, index)) this.filter.remove(recipient);
  }

  /** Worker `index` is gone: everything it held is released. */
  releaseWorker(index: number): void {
    for (const recipient of this.#holders.releaseAll(index)) this.filter.remove(recipient);
  }

  /** For a peer's barrier that reached a worker: whether the directory view reached `revision`. */
  reached(revision: bigint): Promise<boolean> {
    return this.#cluster?.reached(revision) ?? Promise.resolve(false);
  }
}
