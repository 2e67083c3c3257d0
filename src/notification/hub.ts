/** Live subscribers on this instance, by recipient: the fan-out behind Send. */

/** A delivered notification. */
export interface Notification {
  id: string;
  recipient: string;
  title: string;
  body: string;
  data: Record<string, string>;
  createdAtMs: number;
}

/** Receives notifications for one recipient. */
export type Deliver = (notification: Notification) => void;

/** Subscribers by recipient. */
export class Hub {
  readonly #byRecipient = new Map<string, Set<Deliver>>();
  #size = 0;

  /** Total subscribers across recipients. */
  get size(): number {
    return this.#size;
  }

  /** Adds a subscriber; the returned function removes it (idempotent). */
  subscribe(recipient: string, deliver: Deliver): () => void {
    let set = this.#byRecipient.get(recipient);
    if (!set) this.#byRecipient.set(recipient, set = new Set());
    set.add(deliver);
    this.#size++;
    const subscribers = set;
    return () => {
      if (!subscribers.delete(deliver)) return;
      this.#size--;
      if (subscribers.size === 0) this.#byRecipient.delete(recipient);
    };
  }

  /** Delivers to every subscriber of the recipient; returns how many got it. */
  publish(notification: Notification): number {
    const subscribers = this.#byRecipient.get(notification.recipient);
    if (!subscribers) return 0;
    for (const deliver of subscribers) deliver(notification);
    return subscribers.size;
  }
}
