/**
 * Messages batched per turn: what is pushed before the turn ends leaves as one batch, in order.
 *
 * - Between threads (the default, `setImmediate`): each `postMessage` costs a structured clone and
 *   a wake-up of the other thread, and under load a worker answers dozens of Sends per turn.
 * - To a peer (`queueMicrotask`): the Sends of one batch of client calls go out as one message,
 *   before the event loop turns.
 */
import { setImmediate } from "node:timers";

export class Outbox<T> {
  #queue: T[] = [];
  #scheduled = false;
  readonly #send: (batch: T[]) => void;
  readonly #schedule: (flush: () => void) => void;

  constructor(send: (batch: T[]) => void, schedule: (flush: () => void) => void = setImmediate) {
    this.#send = send;
    this.#schedule = schedule;
  }

  push(message: T): void {
    this.#queue.push(message);
    if (this.#scheduled) return;
    this.#scheduled = true;
    this.#schedule(() => this.flush());
  }

  /** Sends what is queued now (before the thread ends, say). */
  flush(): void {
    this.#scheduled = false;
    if (this.#queue.length === 0) return;
    const batch = this.#queue;
    this.#queue = [];
    this.#send(batch);
  }

  /** Drops what is queued (the link it was for is gone). */
  clear(): T[] {
    const dropped = this.#queue;
    this.#queue = [];
    return dropped;
  }
}
