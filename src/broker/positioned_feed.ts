/**
 * One stream's notifications in position order, with none missed and none twice. A live copy
 * carries its recipient's previous position (`prev`, set by JetStream as it stored it). One whose
 * `prev` is the last one written goes out at once; any other starts a fill from the store, which
 * writes what lies between, in order, reading on only while the stream has room (a replay goes at
 * its client's pace). Live ones
 * that arrive meanwhile wait and are written once their turn comes, or dropped as already written.
 * A gap the store cannot fill (history dropped it) is written past, and reported.
 */

/** One stored notification. */
export interface Positioned {
  position: number;
  /**
   * The recipient's previous position, 0 for its first; undefined when not known (one read from the
   * store: written in its turn, as the next one the store holds).
   */
  prev: number | undefined;
  /** The encoded Notification, its position included. */
  bytes: Uint8Array;
}

/** Reads the recipient's first stored notification after `position`, or undefined when none is. */
export type ReadAfter = (position: number) => Promise<Positioned | undefined>;

export interface PositionedFeedOptions {
  readAfter: ReadAfter;
  /** False when the stream cannot take more: the feed stops. */
  write: (bytes: Uint8Array) => boolean;
  /** The store could not be read: the stream ends. */
  fail: (reason: string) => void;
  /** Resolves once the stream can take more (Sink.room): reads from the store wait for it. */
  room?: () => Promise<void>;
  /** Notifications between `after` and `before` were dropped from history before they could be written. */
  onLost?: (after: number, before: number) => void;
}

/**
 * Live notifications held while the feed reads history. Past this many they are not kept: the
 * feed reads on from the store until it has caught up instead (they are stored), so a long replay
 * under heavy live traffic holds a bounded amount of memory.
 */
export const MAX_WAITING = 1_000;

export class PositionedFeed {
  readonly #options: PositionedFeedOptions;
  /** The last position written; undefined until the feed starts. */
  #position: number | undefined;
  readonly #waiting = new Map<number, Positioned>();
  /** Read the store until it has nothing after #position (a start from a position, a reconnect). */
  #catchUp = false;
  #filling = false;
  #closed = false;

  constructor(options: PositionedFeedOptions) {
    this.#options = options;
  }

  /** Live notifications held until their turn. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /** The last position written (0 before any). */
  get position(): number {
    return this.#position ?? 0;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Starts after `position`: with `catchUp`, writes what the store holds after it first. Until
   * then, offered notifications wait.
   */
  start(position: number, catchUp: boolean): void {
    this.#position = position;
    if (catchUp) this.catchUp();
    else void this.#fill();
  }

  /** Reads the store for anything after the last position written (after a reconnect). */
  catchUp(): void {
    this.#catchUp = true;
    void this.#fill();
  }

  /**
   * A notification for this stream (live, or just stored here). True when the stream has it: written
   * now or before (its other copy came first), or to be written in its turn; false once closed.
   */
  offer(n: Positioned): boolean {
    if (this.#closed) return false;
    if (this.#position !== undefined && n.position <= this.#position) return true;
    if (this.#position !== undefined && !this.#filling && n.prev === this.#position) {
      this.#write(n);
      return !this.#closed;
    }
    if (this.#waiting.size < MAX_WAITING) this.#waiting.set(n.position, n);
    else this.#catchUp = true; // read from the store in its turn
    if (this.#position !== undefined) void this.#fill();
    return true;
  }

  close(): void {
    this.#closed = true;
    this.#waiting.clear();
  }

  /** Closes the feed and ends its stream with `reason`. */
  end(reason: string): void {
    if (this.#closed) return;
    this.close();
    this.#options.fail(reason);
  }

  #write(n: Positioned): void {
    this.#position = n.position;
    if (!this.#options.write(n.bytes)) this.close();
  }

  /** The waiting notification with the lowest position. */
  #first(): Positioned | undefined {
    let first: Positioned | undefined;
    for (const n of this.#waiting.values()) if (!first || n.position < first.position) first = n;
    return first;
  }

  async #fill(): Promise<void> {
    if (this.#filling) return;
    this.#filling = true;
    try {
      while (!this.#closed && this.#position !== undefined) {
        const position = this.#position;
        const head = this.#first();
        if (head && head.position <= position) {
          this.#waiting.delete(head.position);
          continue;
        }
        if (head && head.prev === position) {
          this.#waiting.delete(head.position);
          this.#write(head);
          continue;
        }
        if (!head && !this.#catchUp) break;
        await this.#options.room?.();
        if (this.#closed || this.#position !== position) continue;
        const stored = await this.#options.readAfter(position);
        if (this.#closed || this.#position !== position) continue;
        const waiting = this.#first(); // what arrived meanwhile counts too
        if (!stored || (waiting && stored.position >= waiting.position)) {
          if (!waiting) {
            this.#catchUp = false;
            break;
          }
          if (
            waiting.prev !== undefined && waiting.prev !== position && stored?.position !== waiting.position
          ) {
            // Between the last written and the first waiting the store holds nothing any more.
            this.#options.onLost?.(position, waiting.position);
          }
          this.#waiting.delete(waiting.position);
          this.#write(waiting);
          continue;
        }
        if (stored.prev !== undefined && stored.prev !== position) {
          this.#options.onLost?.(position, stored.position);
        }
        this.#waiting.delete(stored.position);
        this.#write(stored);
      }
    } catch (error) {
      this.close();
      this.#options.fail(`the broker's history could not be read: ${(error as Error).message}`);
    } finally {
      this.#filling = false;
    }
    // Offered while the last read was on its way, after the loop had looked.
    if (!this.#closed && this.#position !== undefined && this.#waiting.size > 0) void this.#fill();
  }
}
