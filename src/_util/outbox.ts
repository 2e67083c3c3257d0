/**
 * Messages between threads, batched per turn of the event loop: each `postMessage` costs a
 * structured clone and a wake-up of the other thread, and under load a worker answers dozens of
 * Sends per turn, each needing the main thread. One message per turn per direction instead
 * (order kept); the receiver handles the array in order.
 */
import { setImmediate } from "node:timers";

export class Outbox<T> {
  #queue: T[] = [];
  #scheduled = false;
  readonly #send: (batch: T[]) => void;

  constructor(send: (batch: T[]) => void) {
    this.#send = send;
  }

  push(message: T): void {
    this.#queue.push(message);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.flush());
  }

  /** Sends what is queued now (before the thread ends, say). */
  flush(): void {
    this.#scheduled = false;
    if (this.#queue.length === 0) return;
    const batch = this.#queue;
    this.#queue = [];
    this.#send(batch);
  }
}
