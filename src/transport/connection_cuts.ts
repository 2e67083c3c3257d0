/**
 * Client connections cut for going over a per-connection bound (http2_inbound.ts), reported as a
 * metric for each and a WARN line at most every 10 s: an attacker must not be able to flood the
 * log as well.
 */
import { CountedWarning } from "../_util/counted_warning.ts";
import { type CutReason, STREAMS_UNDER_PRESSURE } from "./http2_inbound.ts";

const WHY: Record<CutReason, string> = {
  header_list_size: "request headers over max-header-list-size",
  refused_streams: "streams over max-concurrent-streams again and again",
  protocol: "malformed HTTP/2 headers",
  max_connections: "max-connections reached (refused)",
  no_request: "no request within handshake-timeout",
  memory: "the heap near its limit (connections holding the most streams first)",
};

export class CutReporter {
  readonly #warning: CountedWarning<CutReason>;

  /** `warn` writes the line; `count` records each cut (the metric). */
  constructor(
    warn: (message: string) => void,
    private readonly count: (reason: CutReason) => void = () => {},
  ) {
    this.#warning = new CountedWarning(
      warn,
      (counts) =>
        `Cut client connections over their limits: ${
          counts.map(([reason, c]) => `${c.n} for ${WHY[reason]}`).join(", ")
        }`,
    );
  }

  cut(reason: CutReason): void {
    this.count(reason);
    this.#warning.add(reason);
  }
}

/** The WARN line when the heap passes the shedding mark (memory_pressure.ts) or is back under. */
export function describePressure(active: boolean, heapFraction: number): string {
  const pct = `${Math.round(heapFraction * 100)}%`;
  return active
    ? `Heap at ${pct} of V8's limit: cutting the connections that hold the most streams, and any holding over ${STREAMS_UNDER_PRESSURE} that opens one, until it is back down`
    : `Heap back down to ${pct} of V8's limit: accepting streams again`;
}
