/**
 * Waiting, as the registry, the client and the service do it: jittered exponential backoff,
 * sleeps and waits that end with an `AbortSignal`, and durations as log lines write them
 * (`850ms`, `3.2s`). No dependencies.
 *
 * @example Retry with backoff until stopped
 * ```ts
 * import { Backoff, sleep } from "@notification-server/timing";
 *
 * const stop = new AbortController();
 * const backoff = new Backoff({ initialMs: 100, maxMs: 5_000 });
 * for (let attempt = 0; attempt < 3 && !stop.signal.aborted; attempt++) {
 *   await sleep(backoff.next(), stop.signal);
 * }
 * ```
 *
 * @module
 */
export { Backoff, type BackoffOptions, sleep, untilAborted } from "./src/backoff.ts";
export { formatDuration } from "./src/duration.ts";
