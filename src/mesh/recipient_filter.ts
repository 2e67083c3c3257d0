/**
 * Which recipients may have subscribers anywhere (on any worker of this instance or on another
 * instance), as a counting hash filter in shared memory. A worker that finds a recipient's count
 * at 0 answers its Send without asking the main thread: nobody else can hold it. Most Sends in a
 * notification service go to recipients who are not connected, and the round trip to the main
 * thread cost more CPU than the Send itself (bench/README.md).
 *
 * A count is one per (worker, recipient) held and one per (other instance, recipient) in the
 * directory (main_thread_router.ts). A worker also remembers what it holds itself
 * ({@link countOwn}) and takes the short way when the shared count is no more than its own: nobody
 * else holds it.
 *
 * Counts only err upwards: a bucket shared by two recipients sends some Sends the long way, never
 * one the short way by mistake. The main thread adds before it removes and before a subscriber is
 * reported ready, so a count is never below the truth when a worker reads it; a worker counts a
 * recipient as its own only once the main thread has answered that it added it, and stops before
 * telling the main thread it let go, so its own count is never above what it put in.
 */

/** Buckets (Int32 each: 4 MiB in all, shared by every worker). */
const BUCKETS = 1 << 20;

export class RecipientFilter {
  readonly buffer: SharedArrayBuffer;
  readonly #counts: Int32Array;
  /** This thread's own holds by bucket (a worker's; always empty on the main thread). */
  readonly #own = new Map<number, number>();

  constructor(
    buffer: SharedArrayBuffer = new SharedArrayBuffer((BUCKETS + 1) * Int32Array.BYTES_PER_ELEMENT),
  ) {
    this.buffer = buffer;
    this.#counts = new Int32Array(buffer);
  }

  add(recipient: string): void {
    Atomics.add(this.#counts, this.#bucket(recipient), 1);
  }

  remove(recipient: string): void {
    Atomics.sub(this.#counts, this.#bucket(recipient), 1);
  }

  /**
   * The instance is leaving the cluster: from now on every Send takes the long way (the main thread
   * sends it to every peer, whatever this instance's view still says). The cell after the buckets.
   */
  setLeaving(): void {
    Atomics.store(this.#counts, BUCKETS, 1);
  }

  #leaving(): boolean {
    return Atomics.load(this.#counts, BUCKETS) === 1;
  }

  /** This worker's own hold of `recipient` (counted in the shared buffer by the main thread): +1 or -1. */
  countOwn(recipient: string, delta: 1 | -1): void {
    const bucket = this.#bucket(recipient);
    const n = (this.#own.get(bucket) ?? 0) + delta;
    if (n === 0) this.#own.delete(bucket);
    else this.#own.set(bucket, n);
  }

  /** False only when nobody but this thread holds subscribers of `recipient`. */
  heldElsewhere(recipient: string): boolean {
    if (this.#leaving()) return true;
    const bucket = this.#bucket(recipient);
    return Atomics.load(this.#counts, bucket) > (this.#own.get(bucket) ?? 0);
  }

  /** FNV-1a over UTF-16 code units, then murmur3's finalizer (FNV's low bits alone cluster). */
  #bucket(recipient: string): number {
    let hash = 0x811c9dc5;
    for (let i = 0; i < recipient.length; i++) {
      hash ^= recipient.charCodeAt(i);
      hash = Math.imul(hash, 0x01000193);
    }
    hash ^= hash >>> 16;
    hash = Math.imul(hash, 0x85ebca6b);
    hash ^= hash >>> 13;
    hash = Math.imul(hash, 0xc2b2ae35);
    hash ^= hash >>> 16;
    return (hash >>> 0) & (BUCKETS - 1);
  }
}
