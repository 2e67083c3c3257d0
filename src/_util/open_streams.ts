/**
 * Open streams, so that shutdown can end them: Subscribe, Health/Watch and peers' Forward streams
 * never end on their own, and a server waits for every open one. Any transport's streams.
 */

/** A stream as the tracker needs it. */
export interface Endable {
  /** `listener` runs once when the stream ends, however it ends. */
  onEnd(listener: () => void): void;
  /** Ends the stream with OK. */
  end(): void;
}

export class OpenStreams {
  readonly #open = new Set<Endable>();
  #closed = false;

  /** Tracks `stream` until it ends, then runs `onEnd`; false (and left alone) once {@link endAll} ran. */
  add(stream: Endable, onEnd: () => void): boolean {
    if (this.#closed) return false;
    this.#open.add(stream);
    stream.onEnd(() => {
      if (this.#open.delete(stream)) onEnd();
    });
    return true;
  }

  get size(): number {
    return this.#open.size;
  }

  /** Ends every open stream with OK; later {@link add} calls are refused. */
  endAll(): void {
    this.#closed = true;
    for (const stream of [...this.#open]) {
      this.#open.delete(stream);
      stream.end();
    }
  }
}
