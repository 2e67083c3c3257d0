/** Requests answered by message (between threads): each gets an id, and its answer settles it. */
export class Replies<T> {
  readonly #pending = new Map<number, (value: T) => void>();
  #next = 1;

  /** Sends a request with a fresh id through `send`; resolves with its answer. */
  ask(send: (id: number) => void): Promise<T> {
    return new Promise((resolve) => {
      const id = this.#next++;
      this.#pending.set(id, resolve);
      send(id);
    });
  }

  /** The answer to request `id` (ignored if it is not pending). */
  settle(id: number, value: T): void {
    this.#pending.get(id)?.(value);
    this.#pending.delete(id);
  }

  /** Answers every pending request with `value` (the other side is gone). */
  settleAll(value: T): void {
    for (const resolve of this.#pending.values()) resolve(value);
    this.#pending.clear();
  }
}
