/**
 * Live subscribers on this thread, by recipient: the mesh's fan-out behind Send (mesh_delivery.ts).
 * There is one hub per serving thread (the main thread's, or each worker's); the workers' router
 * joins them into the instance, and the cluster joins the instances.
 */
import { setImmediate } from "node:timers";
import type { Notification } from "@notification-server/client";

export type { Notification };

/** Receives what is published for one recipient; false when the subscriber is gone. */
export type Deliver<T> = (payload: T) => boolean | void;

/**
 * Deliveries made before yielding to the event loop, by default: one Send to thousands of
 * subscribers must not stall every other call (a 64 KB notification to 1 000 subscribers once
 * blocked 320-460 ms). Callers with large payloads pass a smaller slice.
 */
const SLICE = 64;

/** Subscribers by recipient. */
export class Hub<T = Notification> {
  readonly #byRecipient = new Map<string, Set<Deliver<T>>>();
  /** Told when a recipient gets its first subscriber (true) and loses its last (false). */
  onRecipient: (recipient: string, present: boolean) => void = () => {};

  /** Adds a subscriber; the returned function removes it (idempotent). */
  subscribe(recipient: string, deliver: Deliver<T>): () => void {
    let set = this.#byRecipient.get(recipient);
    const first = !set;
    if (!set) this.#byRecipient.set(recipient, set = new Set());
    set.add(deliver);
    if (first) this.onRecipient(recipient, true);
    const subscribers = set;
    return () => {
      if (!subscribers.delete(deliver)) return;
      if (subscribers.size === 0 && this.#byRecipient.get(recipient) === subscribers) {
        this.#byRecipient.delete(recipient);
        this.onRecipient(recipient, false);
      }
    };
  }

  /**
   * Delivers `payload` to every subscriber the recipient has now, yielding to the event loop every
   * `slice` deliveries; resolves with how many took it (one that left meanwhile is skipped).
   */
  async publish(recipient: string, payload: T, slice = SLICE): Promise<number> {
    const subscribers = this.#byRecipient.get(recipient);
    if (!subscribers) return 0;
    const targets = [...subscribers];
    let delivered = 0;
    for (let i = 0; i < targets.length; i++) {
      if (i > 0 && i % slice === 0) await new Promise((resolve) => setImmediate(resolve));
      if (subscribers.has(targets[i]) && targets[i](payload) !== false) delivered++;
    }
    return delivered;
  }
}
