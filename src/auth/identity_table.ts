/**
 * Per-identity subscription counts and Send token buckets that every serving thread of the instance
 * shares, so `max-subscribers-per-identity` and `send-rate-per-identity` hold per instance whatever
 * the worker count (each worker keeping its own let 2 workers give twice the figure). Like the
 * instance's counters (_util/limits.ts) it lives in SharedArrayBuffers and admission stays
 * synchronous and exact.
 *
 * An identity is kept by a 64-bit hash of it (two 32-bit FNV-1a hashes), in an open-addressed table
 * of a fixed size decided at start; a short spin lock guards each operation (a few dozen steps, no
 * await inside). A slot whose identity holds no subscription and whose bucket is full again (idle
 * for 2 s) is free for another identity. Should every slot an identity may take be in use (more
 * identities active at once than the table was sized for), the identity is not limited rather than
 * refused: a full table must not lock everyone out.
 */

/** The shared memory of an {@link IdentityTable}: made once by the main thread, handed to each worker. */
export interface IdentityTableMemory {
  /** Int32: the lock, then per slot: two hash words, the total, one count per worker. */
  cells: SharedArrayBuffer;
  /** Float64: per slot, the bucket's tokens and when they were counted (epoch ms, 0: never). */
  buckets: SharedArrayBuffer;
  slots: number;
  workers: number;
}

/** A bucket holds this many seconds of the rate (a burst of twice the rate). */
const BUCKET_SECONDS = 2;
/** Slots looked at for an identity before it goes unlimited. */
const PROBES = 64;

/** Memory for a table of at least `identities` slots (a power of two) shared by `workers` threads. */
export function identityTableMemory(identities: number, workers = 1): IdentityTableMemory {
  let slots = 1024;
  while (slots < identities) slots *= 2;
  const stride = 3 + workers;
  return {
    cells: new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT * (1 + slots * stride)),
    buckets: new SharedArrayBuffer(Float64Array.BYTES_PER_ELEMENT * slots * 2),
    slots,
    workers,
  };
}

/**
 * Slots for the instance: every identity holding subscriptions (at most max-subscribers of them),
 * and room for as many sending, with probing to spare.
 */
export function identitySlots(server: { maxSubscribers: number }): number {
  return 4 * server.maxSubscribers;
}

/** Gives back every subscription place worker `worker` held (it crashed, or was stopped). */
export function releaseWorkerIdentities(memory: IdentityTableMemory, worker: number): void {
  const table = new IdentityTable(memory, worker);
  table.releaseAll();
}

/** One thread's view of the instance's identity table. */
export class IdentityTable {
  readonly #cells: Int32Array;
  readonly #buckets: Float64Array;
  readonly #mask: number;
  readonly #stride: number;
  readonly #worker: number;

  constructor(memory: IdentityTableMemory = identityTableMemory(0), worker = 0) {
    this.#cells = new Int32Array(memory.cells);
    this.#buckets = new Float64Array(memory.buckets);
    this.#mask = memory.slots - 1;
    this.#stride = 3 + memory.workers;
    this.#worker = worker;
  }

  /** Takes a subscription place for `identity` if it holds fewer than `max` across the instance. */
  tryAcquire(identity: string, max: number): boolean {
    return this.#locked(() => {
      const at = this.#find(identity, true);
      if (at < 0) return true;
      const cells = this.#cells;
      if (cells[at + 2] >= max) return false;
      cells[at + 2]++;
      cells[at + 3 + this.#worker]++;
      return true;
    });
  }

  /** Gives back a place this thread took for `identity`. */
  release(identity: string): void {
    this.#locked(() => {
      const at = this.#find(identity, false);
      const cells = this.#cells;
      if (at < 0 || cells[at + 3 + this.#worker] <= 0) return;
      cells[at + 2]--;
      cells[at + 3 + this.#worker]--;
    });
  }

  /** One Send from `identity`'s bucket, refilled at `rate` per second; false when it is empty. */
  take(identity: string, rate: number, now = Date.now()): boolean {
    return this.#locked(() => {
      const at = this.#find(identity, true, now);
      if (at < 0) return true;
      const slot = (at - 1) / this.#stride;
      const buckets = this.#buckets;
      const full = BUCKET_SECONDS * rate;
      const last = buckets[slot * 2 + 1];
      const tokens = last === 0 ? full : Math.min(full, buckets[slot * 2] + ((now - last) / 1000) * rate);
      buckets[slot * 2 + 1] = now;
      if (tokens < 1) {
        buckets[slot * 2] = tokens;
        return false;
      }
      buckets[slot * 2] = tokens - 1;
      return true;
    });
  }

  /** Subscription places `identity` holds across the instance. */
  held(identity: string): number {
    return this.#locked(() => {
      const at = this.#find(identity, false);
      return at < 0 ? 0 : this.#cells[at + 2];
    });
  }

  /** Gives back every place this thread's worker slot holds (see {@link releaseWorkerIdentities}). */
  releaseAll(): void {
    this.#locked(() => {
      const cells = this.#cells;
      for (let at = 1; at < cells.length; at += this.#stride) {
        const mine = cells[at + 3 + this.#worker];
        if (mine === 0) continue;
        cells[at + 2] -= mine;
        cells[at + 3 + this.#worker] = 0;
      }
    });
  }

  /** The cell index of `identity`'s slot, claiming a free one when `create`; -1 when there is none. */
  #find(identity: string, create: boolean, now = Date.now()): number {
    const [a, b] = hashes(identity);
    const cells = this.#cells;
    const buckets = this.#buckets;
    let free = -1;
    for (let probe = 0; probe < PROBES; probe++) {
      const slot = (a + probe) & this.#mask;
      const at = 1 + slot * this.#stride;
      if (cells[at] === a && cells[at + 1] === b) return at;
      if (cells[at] === 0) {
        if (free < 0) free = at;
        break; // never used: the identity is not further along
      }
      const idle = cells[at + 2] === 0 &&
        (buckets[slot * 2 + 1] === 0 || now - buckets[slot * 2 + 1] >= BUCKET_SECONDS * 1000);
      if (free < 0 && idle) free = at;
    }
    if (!create || free < 0) return -1;
    cells[free] = a;
    cells[free + 1] = b;
    for (let i = 2; i < this.#stride; i++) cells[free + i] = 0;
    const slot = (free - 1) / this.#stride;
    buckets[slot * 2] = 0;
    buckets[slot * 2 + 1] = 0;
    return free;
  }

  #locked<T>(work: () => T): T {
    const cells = this.#cells;
    // The holder is inside a few dozen steps with no await: spin. A thread that died holding it
    // (terminated mid-step) must not stop every other: after a while the lock is taken over.
    for (let spins = 0; Atomics.compareExchange(cells, 0, 0, 1) !== 0; spins++) {
      if (spins > 10_000_000) Atomics.store(cells, 0, 0);
    }
    try {
      return work();
    } finally {
      Atomics.store(cells, 0, 0);
    }
  }
}

/** Two 32-bit FNV-1a hashes of `text` (different offset bases); the first is never 0 (an empty slot). */
function hashes(text: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x01000193);
  }
  a |= 0;
  return [a === 0 ? 1 : a, b | 0];
}
