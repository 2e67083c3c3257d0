/**
 * The last line against memory a client can make a thread hold within its per-connection bounds
 * (1 000 connections x 100 streams x 16 KiB of headers is more than V8's heap): when the JS heap
 * passes `high` of V8's limit, the connections holding the most open streams are cut, most first,
 * until it is back under `low`, and meanwhile a connection holding more than a few streams that
 * opens another is cut (http2_inbound.ts). Dying of "JavaScript heap out of memory" ends every
 * worker and leaves the record for a whole lease TTL; cutting the heaviest connections (an
 * attacker's, as legitimate clients hold a few streams each) keeps the service and its other
 * clients up.
 */
import { setInterval } from "node:timers";
import v8 from "node:v8";

/** How often the heap is looked at (getHeapStatistics costs microseconds)... */
const CHECK_EVERY_MS = 250;
/** ...and after how many new streams: a burst of connections fills the heap faster than a timer. */
const CHECK_EVERY_STREAMS = 32;
/**
 * While shedding, a full collection before each look (the service runs with --expose-gc): the
 * heap of an idle service is mostly the garbage of the connections just cut, and without it the
 * service would refuse streams until some later allocation made V8 collect.
 */
const collect = (globalThis as { gc?: () => void }).gc;

export interface PressureOptions {
  /** Fraction of V8's heap limit above which connections are shed. @default 0.6 */
  high?: number;
  /** Fraction under which shedding stops and streams are accepted again. @default 0.45 */
  low?: number;
  /** Cuts the connection holding the most open streams; false when none is left to cut. */
  shedLargest(): boolean;
  /** Told when pressure starts (true) and ends (false), with the heap's fraction of V8's limit. */
  onPressure(active: boolean, heapFraction: number): void;
}

/** Watches this thread's heap until stopped. */
export class MemoryPressure {
  #active = false;
  #streams = 0;
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #limit = v8.getHeapStatistics().heap_size_limit;

  constructor(private readonly options: PressureOptions) {
    // node:timers, whose timers unref the same way under Deno and Node (the bench runs this on Node).
    this.#timer = setInterval(() => this.check(), CHECK_EVERY_MS).unref();
  }

  /** Whether the heap is over the high mark and not yet back under the low one. */
  get active(): boolean {
    return this.#active;
  }

  /** Counts `n` new streams (looking at the heap every few); whether they must be refused. */
  streamsOpened(n: number): boolean {
    this.#streams += n;
    if (this.#streams >= CHECK_EVERY_STREAMS) {
      this.#streams = 0;
      this.check();
    }
    return this.#active;
  }

  /** One look at the heap; sheds one connection per look while over the mark. */
  check(): void {
    const { high = 0.6, low = 0.45 } = this.options;
    const measure = () => v8.getHeapStatistics().used_heap_size / this.#limit;
    if (this.#active) collect?.();
    let used = measure();
    if (!this.#active && used > high && collect) {
      // Over the mark: is it live, or garbage V8 has not collected yet?
      collect();
      used = measure();
    }
    if (!this.#active && used > high) {
      this.#active = true;
      this.options.onPressure(true, used);
    }
    if (!this.#active) return;
    if (used < low) {
      this.#active = false;
      this.options.onPressure(false, used);
      return;
    }
    // Garbage from the connections cut so far is only collected later: one per look, not a purge.
    this.options.shedLargest();
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
