/**
 * A TCP proxy in front of a nats-server that loses chosen messages on their way to the client: a
 * MSG or HMSG frame (NATS's text protocol) on a subject containing `subjectPart` whose bytes hold
 * a marker given to `dropNext` is dropped once; everything else passes as it is. A live copy lost
 * between NATS and an instance, as a slow-consumer cut or a broken route loses it.
 */
const CRLF = new Uint8Array([13, 10]);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class NatsDropProxy implements Disposable {
  readonly #listener: Deno.TcpListener;
  readonly #conns = new Set<Deno.Conn>();
  readonly #subjectPart: string;
  #markers: Uint8Array[] = [];
  /** Frames dropped so far. */
  dropped = 0;

  private constructor(listener: Deno.TcpListener, target: number, subjectPart: string) {
    this.#listener = listener;
    this.#subjectPart = subjectPart;
    void this.#accept(target);
  }

  static start(target: number, subjectPart: string): NatsDropProxy {
    return new NatsDropProxy(Deno.listen({ hostname: "127.0.0.1", port: 0 }), target, subjectPart);
  }

  get addr(): string {
    return `127.0.0.1:${(this.#listener.addr as Deno.NetAddr).port}`;
  }

  /** The next message whose bytes hold `marker` is dropped. */
  dropNext(marker: string): void {
    this.#markers.push(encoder.encode(marker));
  }

  [Symbol.dispose](): void {
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch { /* closed already */ }
    }
    this.#listener.close();
  }

  async #accept(target: number): Promise<void> {
    try {
      for await (const client of this.#listener) {
        const server = await Deno.connect({ hostname: "127.0.0.1", port: target });
        this.#conns.add(client).add(server);
        void this.#pipe(client, server);
        void this.#filter(server, client);
      }
    } catch { /* closed */ }
  }

  async #pipe(from: Deno.Conn, to: Deno.Conn): Promise<void> {
    try {
      await from.readable.pipeTo(to.writable);
    } catch { /* closed */ }
  }

  /** Passes the server's frames on whole, but for the one to drop. */
  async #filter(from: Deno.Conn, to: Deno.Conn): Promise<void> {
    let pending: Uint8Array<ArrayBuffer> = new Uint8Array(0);
    const chunk = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(chunk);
        if (n === null) break;
        pending = concat(pending, chunk.subarray(0, n));
        const out: Uint8Array[] = [];
        for (;;) {
          const end = frameEnd(pending);
          if (end === undefined) break;
          const frame = pending.subarray(0, end);
          if (!this.#drops(frame)) out.push(frame.slice());
          pending = pending.slice(end);
        }
        for (const frame of out) await to.write(frame);
      }
    } catch { /* closed */ }
  }

  #drops(frame: Uint8Array): boolean {
    if (this.#markers.length === 0) return false;
    const line = decoder.decode(frame.subarray(0, indexOf(frame, CRLF, 0)));
    const [op, subject] = line.split(" ");
    if ((op !== "MSG" && op !== "HMSG") || !subject.includes(this.#subjectPart)) return false;
    const at = this.#markers.findIndex((marker) => indexOf(frame, marker, 0) >= 0);
    if (at < 0) return false;
    this.#markers.splice(at, 1);
    this.dropped++;
    return true;
  }
}

/** Where the first whole protocol frame of `bytes` ends, or undefined until it has arrived. */
function frameEnd(bytes: Uint8Array): number | undefined {
  const lineEnd = indexOf(bytes, CRLF, 0);
  if (lineEnd < 0) return undefined;
  const line = decoder.decode(bytes.subarray(0, lineEnd));
  const op = line.slice(0, line.indexOf(" ") >>> 0).toUpperCase();
  if (op !== "MSG" && op !== "HMSG") return lineEnd + 2;
  // MSG <subject> <sid> [reply] <size>; HMSG <subject> <sid> [reply] <header size> <total size>
  const size = Number(line.trim().split(/\s+/).at(-1));
  const end = lineEnd + 2 + size + 2;
  return bytes.length >= end ? end : undefined;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array, from: number): number {
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
