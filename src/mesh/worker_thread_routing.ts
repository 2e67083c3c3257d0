/**
 * A worker's next hop: the main thread (main_thread_router.ts), asked by message through the pool
 * (worker_messages.ts). A Send whose recipient nobody but this worker holds is answered here, without
 * the round trip: most Sends go to recipients who are not connected, or connected to the sender's
 * worker only.
 */
import type { Reach, Routing } from "./routing.ts";
import type { RecipientFilter } from "./recipient_filter.ts";
import type { MeshAsk } from "./worker_messages.ts";

/** Sends `body` to the main thread; resolves with its reply. */
export type AskMain = <T extends number | boolean>(body: MeshAsk) => Promise<T>;

export class WorkerThreadRouting implements Routing {
  readonly #filter: RecipientFilter;
  readonly #ask: AskMain;
  readonly #tell: (recipient: string) => void;
  /** Per recipient held here: which `subscribed` request is current (a later one replaces it). */
  readonly #holding = new Map<string, number>();
  /** Recipients the main thread has answered it counted for this worker. */
  readonly #counted = new Set<string>();
  #asked = 0;

  /** `tellUnsubscribed` posts the main thread that this worker no longer holds a recipient. */
  constructor(filter: RecipientFilter, ask: AskMain, tellUnsubscribed: (recipient: string) => void) {
    this.#filter = filter;
    this.#ask = ask;
    this.#tell = tellUnsubscribed;
  }

  route(recipient: string, bytes: Uint8Array, reach: Reach): Promise<number> {
    if (!this.#filter.heldElsewhere(recipient)) return Promise.resolve(0);
    return this.#ask<number>({ call: "route", recipient, bytes, reach });
  }

  async subscribed(recipient: string): Promise<void> {
    const asked = ++this.#asked;
    this.#holding.set(recipient, asked);
    await this.#ask<number>({ call: "subscribed", recipient });
    // An answer to an earlier hold (released and taken again since) may come before the main
    // thread has seen the release: only the current one's answer says what it counts now.
    if (this.#holding.get(recipient) !== asked || this.#counted.has(recipient)) return;
    this.#counted.add(recipient);
    this.#filter.countOwn(recipient, 1);
  }

  unsubscribed(recipient: string): void {
    this.#holding.delete(recipient);
    if (this.#counted.delete(recipient)) this.#filter.countOwn(recipient, -1);
    this.#tell(recipient);
  }
}
