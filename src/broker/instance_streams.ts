/**
 * How many streams each recipient has on the other serving threads of this instance, so that a
 * broker Send's `delivered` counts the instance and not only the thread that answered. Each worker
 * tells the main thread its own counts when they change (batched per turn); the main thread passes
 * them on to every worker and gives a starting worker what it knows. A Send reads a map: nothing
 * crosses threads per Send.
 */

/** One worker's streams per recipient, as they changed ([recipient, count], 0: none any more). */
export interface StreamCounts {
  /** The worker's number, from 1 (set by the main thread as it passes them on). */
  worker: number;
  counts: [string, number][];
}

/** A worker's side: its own changes out, the others' in. */
export class OtherThreadStreams {
  readonly #worker: number;
  readonly #tell: (counts: StreamCounts) => void;
  /** Per recipient: the other workers' streams, summed. */
  readonly #others = new Map<string, number>();
  /** Per other worker: its last counts, to apply a change as a difference. */
  readonly #byWorker = new Map<number, Map<string, number>>();
  /** This thread's changes not told yet. */
  #pending = new Map<string, number>();

  constructor(worker: number, tell: (counts: StreamCounts) => void, known: StreamCounts[] = []) {
    this.#worker = worker;
    this.#tell = tell;
    for (const counts of known) this.receive(counts);
  }

  /** The other threads' streams of `recipient`. */
  streams(recipient: string): number {
    return this.#others.get(recipient) ?? 0;
  }

  /** This thread now has `count` streams of `recipient`. */
  changed(recipient: string, count: number): void {
    if (this.#pending.size === 0) {
      setTimeout(() => {
        const counts = [...this.#pending];
        this.#pending = new Map();
        this.#tell({ worker: this.#worker, counts });
      }, 0);
    }
    this.#pending.set(recipient, count);
  }

  /** Another worker's changes (its own come back too, and are ignored). */
  receive({ worker, counts }: StreamCounts): void {
    if (worker === this.#worker) return;
    let theirs = this.#byWorker.get(worker);
    if (!theirs) this.#byWorker.set(worker, theirs = new Map());
    for (const [recipient, count] of counts) {
      const sum = (this.#others.get(recipient) ?? 0) + count - (theirs.get(recipient) ?? 0);
      if (sum > 0) this.#others.set(recipient, sum);
      else this.#others.delete(recipient);
      if (count > 0) theirs.set(recipient, count);
      else theirs.delete(recipient);
    }
  }
}

/** The main thread's side: every worker's last counts, passed on to the others. */
export class PoolStreamCounts {
  readonly #byWorker = new Map<number, Map<string, number>>();

  /** Worker `worker` (from 1) told its changes; what to broadcast. */
  told(worker: number, counts: StreamCounts): StreamCounts {
    let theirs = this.#byWorker.get(worker);
    if (!theirs) this.#byWorker.set(worker, theirs = new Map());
    for (const [recipient, count] of counts.counts) {
      if (count > 0) theirs.set(recipient, count);
      else theirs.delete(recipient);
    }
    return { worker, counts: counts.counts };
  }

  /** Worker `worker` (from 1) is gone: its streams with it. What to broadcast. */
  retired(worker: number): StreamCounts {
    const theirs = this.#byWorker.get(worker);
    this.#byWorker.delete(worker);
    return { worker, counts: [...(theirs?.keys() ?? [])].map((recipient) => [recipient, 0]) };
  }

  /** For a starting worker: everything known. */
  known(): StreamCounts[] {
    return [...this.#byWorker].map(([worker, counts]) => ({ worker, counts: [...counts] }));
  }
}
