/**
 * The mesh's delivery (notification/delivery.ts): a Send is written to this thread's subscribers
 * (its {@link Hub}) and routed one hop outward (the worker pool, then the peers that hold the
 * recipient in the etcd directory; routing.ts). Live only: no positions, nothing kept but the
 * answers of keyed Sends for their window (recent_sends.ts).
 */
import type { Delivery, Once, Sent, Sink } from "../notification/delivery.ts";
import { type RecentSends, RecentSendsTable } from "./recent_sends.ts";
import { Hub } from "./hub.ts";
import { Holders, type Reach, type Routing } from "./routing.ts";

/** Bytes of notifications written to subscribers before yielding to other calls. */
const BYTES_PER_TURN = 64 * 1024;
const NOT_JOINED =
  "this instance is still joining the cluster and could miss subscribers on other instances: try again";
/** The hub's single holder at its hop: this thread. */
const HERE = "here";

export class MeshDelivery implements Delivery {
  readonly positions = false;
  readonly #hub = new Hub<Uint8Array>();
  readonly #holders = new Holders<typeof HERE>();
  readonly #onSent: (delivered: number) => void;
  /** Until the instance has joined the mesh, a Send here could miss other instances' subscribers. */
  #joined = false;
  /** Keyed Sends of the instance (the main thread's with workers). */
  recent: RecentSends = new RecentSendsTable();

  /**
   * `onSent` is told how many streams in the cluster took each Send (for metrics); `alone` serves
   * without ever joining a cluster (a test's server, the bench's peer): Sends are taken at once.
   */
  constructor(options: { onSent?: (delivered: number) => void; alone?: boolean } = {}) {
    this.#onSent = options.onSent ?? (() => {});
    this.#joined = options.alone ?? false;
    this.#hub.onRecipient = (recipient, present) => {
      if (present) void this.#holders.hold(recipient, HERE);
      else this.#holders.release(recipient, HERE);
    };
  }

  /**
   * The next hop outward from now on (the worker pool, or the cluster on one thread); recipients
   * that already have subscribers are announced to it.
   */
  set routing(next: Routing) {
    this.#holders.next = next;
  }

  /** Sends are taken from now on: the instance routes to every peer that holds recipients. */
  joined(): void {
    this.#joined = true;
  }

  /**
   * This thread's subscribers, then, when `reach` is given, the next hop as far as it says
   * (routing.ts). About 64 KB are written per turn of the event loop, so other calls get in.
   */
  deliver(recipient: string, bytes: Uint8Array, reach?: Reach): Promise<number> {
    const slice = Math.max(1, Math.min(64, Math.floor(BYTES_PER_TURN / bytes.length)));
    const here = this.#hub.publish(recipient, bytes, slice);
    if (!reach) return here;
    const beyond = this.#holders.next.route(recipient, bytes, reach);
    return Promise.all([here, beyond]).then(([a, b]) => a + b);
  }

  async send(recipient: string, bytes: Uint8Array, once?: Once): Promise<Sent> {
    if (!this.#joined) return { unavailable: NOT_JOINED };
    if (!once) return this.#sent(await this.deliver(recipient, bytes, "cluster"));
    const first = await this.recent.claim(once.key);
    if (first) return { ...this.#sent(first.delivered), first };
    const delivered = await this.deliver(recipient, bytes, "cluster");
    this.recent.settle(once.key, { id: once.id, createdAtMs: once.createdAtMs, delivered });
    return this.#sent(delivered);
  }

  #sent(delivered: number): Sent {
    this.#onSent(delivered);
    return { delivered, position: 0, epoch: "", stored: false };
  }

  open(recipient: string, sink: Sink): () => void {
    const close = this.#hub.subscribe(recipient, (bytes) => sink.write(bytes));
    // Ready once a Send to any instance reaches this stream (its recipient is in the directory).
    void this.#holders.ready(recipient).then(() => sink.ready({}));
    return close;
  }
}
