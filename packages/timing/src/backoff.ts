/** Capped exponential backoff with jitter, and a sleep that an AbortSignal cuts short. */

/** Options for {@link Backoff}. */
export interface BackoffOptions {
  /** The first delay, before jitter. @default 250 */
  initialMs?: number;
  /** The longest delay, before jitter. @default 5000 */
  maxMs?: number;
}

/** Yields 250 ms, 500 ms, 1 s, ... up to 5 s, each scaled by a random 0.5–1.0 so peers spread out. */
export class Backoff {
  readonly #initial: number;
  readonly #max: number;
  #attempt = 0;

  /** Starts at `initialMs`. */
  constructor(options: BackoffOptions = {}) {
    this.#initial = options.initialMs ?? 250;
    this.#max = options.maxMs ?? 5_000;
  }

  /** The next delay (ms), twice the last one up to `maxMs`, jittered. */
  next(): number {
    const base = Math.min(this.#max, this.#initial * 2 ** this.#attempt);
    this.#attempt++;
    return Math.round(base * (0.5 + Math.random() * 0.5));
  }

  /** Back to `initialMs` (after a success). */
  reset(): void {
    this.#attempt = 0;
  }
}

/** Resolves after `ms`, or early (without throwing) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Settles like `promise`, or rejects with the signal's reason as soon as `signal` aborts, so a
 * stop is never held up by an etcd call that waits out its deadline (etcd frozen). The call itself
 * runs on; whatever it does later is the caller's to undo.
 */
export function untilAborted<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      promise.catch(() => {});
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
