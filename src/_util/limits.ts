/**
 * Counted limits (subscribers, Health watches, connections, bytes queued to subscribers) that hold
 * per instance whether it serves from one thread or from several workers. Workers share one counter in a
 * SharedArrayBuffer, so admission stays synchronous and exact: a worker that asked its neighbours
 * by message would admit on stale counts, and per-worker shares would refuse while other workers
 * have room.
 */

/**
 * A bound on concurrent things (or bytes); `tryAcquire` takes `n` places (1 by default), `release`
 * gives them back.
 */
export interface Limit {
  readonly max: number;
  /** Places taken now, across the instance. */
  readonly used: number;
  tryAcquire(n?: number): boolean;
  release(n?: number): void;
}

/** A limit for one thread. */
export class LocalLimit implements Limit {
  used = 0;
  constructor(readonly max: number) {}

  tryAcquire(n = 1): boolean {
    if (this.used + n > this.max) return false;
    this.used += n;
    return true;
  }

  release(n = 1): void {
    this.used = Math.max(0, this.used - n);
  }
}

/**
 * Cells of a {@link SharedLimit}: the total, then one per worker (what that worker holds), so the
 * main thread can give back what a crashed worker held.
 */
export function sharedLimitBuffer(workers: number): SharedArrayBuffer {
  return new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT * (1 + workers));
}

/** One worker's view of a limit shared by every worker of the instance. */
export class SharedLimit implements Limit {
  readonly #cells: Int32Array;
  readonly #slot: number;

  constructor(buffer: SharedArrayBuffer, readonly max: number, worker: number) {
    this.#cells = new Int32Array(buffer);
    this.#slot = 1 + worker;
  }

  get used(): number {
    return Atomics.load(this.#cells, 0);
  }

  tryAcquire(n = 1): boolean {
    if (Atomics.add(this.#cells, 0, n) + n > this.max) {
      Atomics.sub(this.#cells, 0, n);
      return false;
    }
    Atomics.add(this.#cells, this.#slot, n);
    return true;
  }

  release(n = 1): void {
    Atomics.sub(this.#cells, this.#slot, n);
    Atomics.sub(this.#cells, 0, n);
  }
}

/** Gives back everything worker `worker` held (it crashed, or was stopped). */
export function releaseWorker(buffer: SharedArrayBuffer, worker: number): void {
  const cells = new Int32Array(buffer);
  const held = Atomics.exchange(cells, 1 + worker, 0);
  Atomics.sub(cells, 0, held);
}

/** Places taken across the instance (for gauges on the main thread). */
export function sharedUsed(buffer: SharedArrayBuffer): number {
  return Atomics.load(new Int32Array(buffer), 0);
}
