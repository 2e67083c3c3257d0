/**
 * A WARN line about things that can come in floods (connections cut, calls refused): each is
 * counted, and the line says how many of each since the last one, at most once every 10 s, so an
 * attacker cannot flood the log as well.
 */
import { setTimeout } from "node:timers";

/** How often at most the line is written. */
const LOG_EVERY_MS = 10_000;

export class CountedWarning<K extends string> {
  readonly #counts = new Map<K, { n: number; last?: string }>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #quietUntil = 0;

  /** `line` makes the line from the counts (each with the last `detail` given); `warn` writes it. */
  constructor(
    private readonly warn: (message: string) => void,
    private readonly line: (counts: [K, { n: number; last?: string }][]) => string,
  ) {}

  add(key: K, detail?: string): void {
    const count = this.#counts.get(key) ?? { n: 0 };
    count.n++;
    if (detail !== undefined) count.last = detail;
    this.#counts.set(key, count);
    const now = Date.now();
    if (now >= this.#quietUntil) this.#flush(now);
    // Unref'd: a line still waiting must not hold a stopping process.
    else this.#timer ??= setTimeout(() => this.#flush(Date.now()), this.#quietUntil - now).unref();
  }

  #flush(now: number): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#counts.size === 0) return;
    const counts = [...this.#counts];
    this.#counts.clear();
    this.#quietUntil = now + LOG_EVERY_MS;
    this.warn(this.line(counts));
  }
}
