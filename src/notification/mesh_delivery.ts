/**
 * The mesh: a Send is written to this thread's subscribers and routed one hop outward (the worker
 * pool, then the peers that hold the recipient in the etcd directory; routing.ts). Live only: no
 * positions, nothing kept.
 */
import type { Delivery, Sent, Sink } from "./delivery.ts";
import type { Hub } from "./hub.ts";
import type { Holders, Reach } from "./routing.ts";

/** Bytes of notifications written to subscribers before yielding to other calls. */
const BYTES_PER_TURN = 64 * 1024;

export class MeshDelivery implements Delivery {
  readonly positions = false;
  readonly #hub: Hub<Uint8Array>;
  readonly #holders: Holders<unknown>;

  constructor(hub: Hub<Uint8Array>, holders: Holders<unknown>) {
    this.#hub = hub;
    this.#holders = holders;
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

  async send(recipient: string, bytes: Uint8Array): Promise<Sent> {
    const delivered = await this.deliver(recipient, bytes, "cluster");
    return { delivered, position: 0, epoch: "", stored: false };
  }

  open(recipient: string, sink: Sink): () => void {
    const close = this.#hub.subscribe(recipient, (bytes) => sink.write(bytes));
    // Ready once a Send to any instance reaches this stream (its recipient is in the directory).
    void this.#holders.ready(recipient).then(() => sink.ready({}));
    return close;
  }
}
