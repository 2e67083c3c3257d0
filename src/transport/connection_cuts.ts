/**
 * Client connections cut for going over a per-connection bound (http2_inbound.ts), reported as a
 * metric for each and a WARN line at most every 10 s: an attacker must not be able to flood the
 * log as well.
 */
import { setTimeout } from "node:timers";
import { type CutReason, STREAMS_UNDER_PRESSURE } from "./http2_inbound.ts";

const WHY: Record<CutReason, string> = {
  header_list_size: "request headers over max-header-list-size",
  refused_streams: "streams over max-concurrent-streams again and again",
  protocol: "malformed HTTP/2 headers",
  max_connections: "max-connections reached (refused)",
  no_request: "no request within handshake-timeout",
  memory: "the heap near its limit (connections holding the most streams first)",
};

/** How often at most the WARN line is written. */
const LOG_EVERY_MS = 10_000;

export class CutReporter {
  readonly #counts = new Map<CutReason, number>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #quietUntil = 0;

  /** `warn` writes the line; `count` records each cut (the metric). */
  constructor(
    private readonly warn: (message: string) => void,
    private readonly count: (reason: CutReason) => void = () => {},
  ) {}

  cut(reason: CutReason): void {
    this.count(reason);
    this.#counts.set(reason, (this.#counts.get(reason) ?? 0) + 1);
    const now = Date.now();
    if (now >= this.#quietUntil) this.#flush(now);
    // Unref'd: a line still waiting must not hold a stopping process.
    else this.#timer ??= setTimeout(() => this.#flush(Date.now()), this.#quietUntil - now).unref();
  }

  #flush(now: number): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#counts.size === 0) return;
    const parts = [...this.#counts].map(([reason, n]) => `${n} for ${WHY[reason]}`);
    this.#counts.clear();
    this.#quietUntil = now + LOG_EVERY_MS;
    this.warn(`Cut client connections over their limits: ${parts.join(", ")}`);
  }
}

/** The WARN line when the heap passes the shedding mark (memory_pressure.ts) or is back under. */
export function describePressure(active: boolean, heapFraction: number): string {
  const pct = `${Math.round(heapFraction * 100)}%`;
  return active
    ? `Heap at ${pct} of V8's limit: cutting the connections that hold the most streams, and any holding over ${STREAMS_UNDER_PRESSURE} that opens one, until it is back down`
    : `Heap back down to ${pct} of V8's limit: accepting streams again`;
}
