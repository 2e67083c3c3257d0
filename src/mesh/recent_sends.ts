/**
 * The mesh's memory of keyed Sends (SendRequest.idempotency_key), one per instance: on the main
 * thread with workers, which ask it through the pool; the broker has JetStream's instead. A key is
 * remembered for the window, up to a bound (the oldest go first past it).
 */
import { DEFAULTS } from "../config/defaults.ts";

/** What a repeat of a keyed Send answers: the first one's notification and count. */
export interface Remembered {
  id: string;
  createdAtMs: number;
  delivered: number;
}

export interface RecentSends {
  /**
   * The first Send's answer when `key` went out within the window (waiting for it while it is
   * still going); undefined when this Send is the first, which must then {@link settle} it.
   */
  claim(key: string): Promise<Remembered | undefined>;
  /** What the first Send with `key` answered; undefined when it did not go out (a retry may). */
  settle(key: string, sent: Remembered | undefined): void;
}

/** Keys remembered at most; at the default window, 833 keyed Sends a second before any is dropped early. */
const MAX_KEYS = 100_000;

interface Entry {
  expiresAtMs: number;
  sent?: Remembered;
  /** Repeats that came while the first was going. */
  waiting: ((sent: Remembered | undefined) => void)[];
}

export class RecentSendsTable implements RecentSends {
  readonly #entries = new Map<string, Entry>();
  readonly #windowMs: number;
  readonly #maxKeys: number;

  constructor(options: { windowMs?: number; maxKeys?: number } = {}) {
    this.#windowMs = options.windowMs ?? DEFAULTS.duplicateWindowMs;
    this.#maxKeys = options.maxKeys ?? MAX_KEYS;
  }

  get size(): number {
    return this.#entries.size;
  }

  async claim(key: string): Promise<Remembered | undefined> {
    for (;;) {
      const now = Date.now();
      const entry = this.#entries.get(key);
      if (entry && entry.expiresAtMs > now) {
        if (entry.sent) return entry.sent;
        const sent = await new Promise<Remembered | undefined>((resolve) => entry.waiting.push(resolve));
        if (sent) return sent;
        continue; // the first did not go out: claim again
      }
      this.#entries.delete(key);
      this.#evict(now);
      this.#entries.set(key, { expiresAtMs: now + this.#windowMs, waiting: [] });
      return undefined;
    }
  }

  settle(key: string, sent: Remembered | undefined): void {
    const entry = this.#entries.get(key);
    if (!entry) return;
    if (sent) entry.sent = sent;
    else this.#entries.delete(key);
    for (const resolve of entry.waiting.splice(0)) resolve(sent);
  }

  /** Drops expired keys from the oldest on, and the oldest past the bound. */
  #evict(now: number): void {
    for (const [key, entry] of this.#entries) {
      if (entry.expiresAtMs > now && this.#entries.size < this.#maxKeys) break;
      if (!entry.sent && entry.expiresAtMs > now) break; // still going: its Send settles it
      this.#entries.delete(key);
    }
  }
}
