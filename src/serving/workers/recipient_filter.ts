/**
 * Which recipients may have subscribers anywhere (on any worker of this instance or on another
 * instance), as a counting hash filter in shared memory. A worker that finds a recipient's count
 * at 0 answers its Send without asking the main thread: nobody else can hold it. Most Sends in a
 * notification service go to recipients who are not connected, and the round trip to the main
 * thread cost more CPU than the Send itself (bench/README.md).
 *
 * Counts only err upwards: a bucket shared by two recipients sends some Sends the long way, never
 * one the short way by mistake. The main thread adds before it removes and before a subscriber is
 * reported ready, so a count is never below the truth when a worker reads it.
 */

/** Buckets (Int32 each: 4 MiB in all, shared by every worker). */
const BUCKETS = 1 << 20;

export class RecipientFilter {
  readonly buffer: SharedArrayBuffer;
  readonly #counts: Int32Array;

  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(BUCKETS * Int32Array.BYTES_PER_ELEMENT)) {
    this.buffer = buffer;
    this.#counts = new Int32Array(buffer);
  }

  add(recipient: string): void {
    Atomics.add(this.#counts, this.#bucket(recipient), 1);
  }

  remove(recipient: string): void {
    Atomics.sub(this.#counts, this.#bucket(recipient), 1);
  }

  /** False only when no worker and no instance holds subscribers of `recipient`. */
  mayHold(recipient: string): boolean {
    return Atomics.load(this.#counts, this.#bucket(recipient)) > 0;
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
    return (hash >>> 0) & (this.#counts.length - 1);
  }
}
