/**
 * A Subscribe stream for transports whose response body is pulled (a fetch `ReadableStream`: SSE,
 * Connect, gRPC-Web). The core writes into it; the body takes one notification each time the
 * client's side asks for more, and that is when the core hears it was taken, so its queue bounds
 * and slow-consumer cut-off hold as over HTTP/2 flow control.
 */
import type { Failure, SubscriberOutput } from "../notification/service.ts";
import { Status } from "../_util/status.ts";

/**
 * What the body gets next: a notification, the end (with the failure that ended it, if any), or
 * word that it has waited idle (see {@link PulledOutput.idle}).
 */
export type Pulled = { bytes: Uint8Array } | { end: Failure | undefined } | { idle: true };

interface Queued {
  bytes: Uint8Array;
  taken: () => void;
}

export class PulledOutput implements SubscriberOutput {
  readonly #queue: Queued[] = [];
  #end?: { failure?: Failure };
  #gone = false;
  #finished = false;
  readonly #listeners: (() => void)[] = [];
  #wake?: (idle?: boolean) => void;
  #waiting?: Promise<Pulled>;
  readonly #started: Promise<Record<string, string> | Failure>;
  #start!: (value: Record<string, string> | Failure) => void;

  constructor() {
    this.#started = new Promise((resolve) => this.#start = resolve);
  }

  /**
   * The response headers the core sent once the stream is routed, or the failure that refused it
   * before: a transport answers only then, so that a refusal is an HTTP status.
   */
  get started(): Promise<Record<string, string> | Failure> {
    return this.#started;
  }

  get gone(): boolean {
    return this.#gone;
  }

  onEnd(listener: () => void): void {
    if (this.#finished) listener();
    else this.#listeners.push(listener);
  }

  start(headers: Record<string, string>): void {
    this.#start(headers);
  }

  write(bytes: Uint8Array, taken: () => void): void {
    if (this.#end || this.#gone) return;
    this.#queue.push({ bytes, taken });
    this.#wake?.();
  }

  fail(failure: Failure): void {
    this.#start(failure);
    this.#close({ failure });
  }

  end(): void {
    this.#start({});
    this.#close({});
  }

  reset(): void {
    this.#queue.length = 0;
    this.left();
  }

  /** The client went away (or the body was cancelled): nothing more is taken. */
  left(): void {
    this.#gone = true;
    this.#start({ code: Status.UNAVAILABLE, details: "the client left" });
    this.#close({});
    this.#finish();
  }

  /**
   * The next thing for the body, waiting for one. Asking again before it settles gives the same
   * promise (a keep-alive may have raced it).
   */
  next(): Promise<Pulled> {
    if (this.#waiting) return this.#waiting;
    const now = this.#take();
    if (now) return Promise.resolve(now);
    this.#waiting = new Promise<Pulled>((resolve) => {
      this.#wake = (idle) => {
        const pulled = idle ? { idle: true as const } : this.#take();
        if (!pulled) return;
        this.#wake = undefined;
        this.#waiting = undefined;
        resolve(pulled);
      };
    });
    return this.#waiting;
  }

  /** Whether the body is waiting for the next thing now. */
  get waiting(): boolean {
    return this.#waiting !== undefined;
  }

  /** Ends a wait with `{ idle: true }` (a keep-alive is due); nothing when the body is not waiting. */
  idle(): void {
    this.#wake?.(true);
  }

  #take(): Pulled | undefined {
    const item = this.#queue.shift();
    if (item) {
      item.taken();
      return { bytes: item.bytes };
    }
    if (!this.#end) return undefined;
    this.#finish();
    return { end: this.#end.failure };
  }

  #close(end: { failure?: Failure }): void {
    this.#end ??= end;
    this.#wake?.();
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    for (const listener of this.#listeners.splice(0)) listener();
  }
}
