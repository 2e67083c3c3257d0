/**
 * One feed's reads of its recipient's history (PositionedFeed's ReadAfter). A short gap is read one
 * direct get at a time (one round trip each). A long one (a client back after many notifications)
 * is read in batches: after a few reads in a row, an ordered consumer filtered by the recipient's
 * subject streams the rest in order, many per round trip.
 *
 * A batch starts at a position known to be stored (the one just read, or the last of the previous
 * batch), so it always has a first message and never waits for one; it ends at the consumer's
 * last pending message. What a batch holds is contiguous (every stored message of the subject
 * between its first and last), so the first buffered one after a position is the first stored.
 */
import type { Positioned } from "./positioned_feed.ts";

/** Reads in a row before the rest is read in batches. */
const READS_BEFORE_BATCH = 8;
/** Messages per batch. */
export const BATCH = 500;

/** A batch from `position` on (it included): in order, and whether more were pending after it. */
export interface Batch {
  items: Positioned[];
  more: boolean;
}

export interface HistorySource {
  /** The recipient's first stored notification after `position`, or undefined. */
  readAfter(position: number): Promise<Positioned | undefined>;
  /** Up to {@link BATCH} of the recipient's stored notifications from `position` on. */
  readFrom(position: number): Promise<Batch>;
}

export class HistoryReader {
  readonly #source: HistorySource;
  /** Stored after the last read, in order; served before asking the store again. */
  #buffer: Positioned[] = [];
  /** The buffer holds everything stored from this position on. */
  #from = Infinity;
  /** A batch under way; reads wait for it. */
  #batch?: Promise<void>;
  /** Whether the last batch said more were pending after it. */
  #more = false;
  /** Reads in a row, each after the one before. */
  #streak = 0;
  #last = -1;

  constructor(source: HistorySource) {
    this.#source = source;
  }

  readAfter = async (position: number): Promise<Positioned | undefined> => {
    if (this.#batch) await this.#batch;
    // Before the batch's start, something stored between may not be in it.
    const covered = position >= this.#from - 1;
    while (covered && this.#buffer.length > 0 && this.#buffer[0].position <= position) this.#buffer.shift();
    const buffered = covered ? this.#buffer.shift() : undefined;
    if (buffered) {
      this.#from = buffered.position + 1; // what is left is everything stored after it
      if (this.#buffer.length === 0 && this.#more) this.#startBatch(buffered.position);
      return buffered;
    }
    this.#streak = position === this.#last ? this.#streak + 1 : 1;
    const found = await this.#source.readAfter(position);
    if (!found) return undefined;
    this.#last = found.position;
    if (this.#streak >= READS_BEFORE_BATCH) this.#startBatch(found.position);
    return found;
  };

  /** Fetches a batch from `position` (stored, so the batch is never empty) into the buffer. */
  #startBatch(position: number): void {
    this.#more = false;
    this.#batch = this.#source.readFrom(position).then(
      (batch) => {
        this.#buffer = batch.items;
        this.#from = position;
        this.#more = batch.more;
        this.#last = batch.items.at(-1)?.position ?? this.#last;
      },
      () => {
        this.#buffer = []; // direct reads go on
        this.#streak = 0;
      },
    ).finally(() => this.#batch = undefined);
  }
}
