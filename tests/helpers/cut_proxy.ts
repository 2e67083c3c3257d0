/**
 * A TCP proxy in front of one loopback port that can lose a call's answer: from `swallow()` on,
 * what the server sends is dropped, and `cut()` closes the clients' connections. A call made in
 * between reaches the server and does its work, and its client sees only a broken connection: the
 * lost acknowledgement that idempotency keys are for.
 */
export class CutProxy implements Disposable {
  readonly #listener: Deno.TcpListener;
  readonly #conns = new Set<Deno.Conn>();
  #swallowing = false;
  #dropped = () => {};

  private constructor(listener: Deno.TcpListener, target: number) {
    this.#listener = listener;
    void this.#accept(target);
  }

  static start(target: number): CutProxy {
    return new CutProxy(Deno.listen({ hostname: "127.0.0.1", port: 0 }), target);
  }

  get addr(): string {
    return `127.0.0.1:${(this.#listener.addr as Deno.NetAddr).port}`;
  }

  /** Drops what the server sends from now on; resolves once something was dropped (an answer). */
  swallow(): Promise<void> {
    this.#swallowing = true;
    return new Promise((resolve) => this.#dropped = resolve);
  }

  /** Closes every client connection (and its server side); later connections are served whole. */
  cut(): void {
    this.#swallowing = false;
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch { /* closed already */ }
    }
    this.#conns.clear();
  }

  [Symbol.dispose](): void {
    this.cut();
    this.#listener.close();
  }

  async #accept(target: number): Promise<void> {
    try {
      for await (const client of this.#listener) {
        const server = await Deno.connect({ hostname: "127.0.0.1", port: target });
        this.#conns.add(client).add(server);
        void this.#pump(client, server, false);
        void this.#pump(server, client, true);
      }
    } catch { /* closed */ }
  }

  async #pump(from: Deno.Conn, to: Deno.Conn, answers: boolean): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        if (answers && this.#swallowing) {
          this.#dropped();
          continue;
        }
        await to.write(buffer.subarray(0, n));
      }
    } catch { /* cut */ }
  }
}
