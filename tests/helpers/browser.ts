/**
 * A real headless Chromium (Debian's `chromium`, installed by scripts/setup.sh) driven over the
 * DevTools protocol: open a page, evaluate script in it, stop the browser by its PID.
 */

/** Where Debian puts it; CHROMIUM overrides. */
export function chromiumPath(): string | undefined {
  const candidates = [Deno.env.get("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"];
  return candidates.find((path) => {
    if (!path) return false;
    try {
      return Deno.statSync(path).isFile;
    } catch {
      return false;
    }
  });
}

/** One tab of a headless Chromium. */
export class Browser implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #socket: WebSocket;
  readonly #dir: string;
  readonly #pending = new Map<number, (message: { result?: unknown; error?: { message: string } }) => void>();
  #next = 1;

  private constructor(child: Deno.ChildProcess, socket: WebSocket, dir: string) {
    this.#child = child;
    this.#socket = socket;
    this.#dir = dir;
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      this.#pending.get(message.id)?.(message);
      this.#pending.delete(message.id);
    };
  }

  /** Starts Chromium with one blank tab and connects to that tab. */
  static async start(): Promise<Browser> {
    const path = chromiumPath();
    if (!path) throw new Error("chromium not found: scripts/setup.sh installs Debian's chromium");
    const dir = await Deno.makeTempDir({ prefix: "chromium-" });
    const child = new Deno.Command(path, {
      args: [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        `--user-data-dir=${dir}`,
        "about:blank",
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const devtools = await devtoolsPort(child.stderr);
    const targets = await (await fetch(`http://127.0.0.1:${devtools}/json/list`)).json() as {
      type: string;
      webSocketDebuggerUrl: string;
    }[];
    const page = targets.find((t) => t.type === "page");
    if (!page) throw new Error("chromium opened no page");
    const socket = new WebSocket(page.webSocketDebuggerUrl);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = reject;
    });
    return new Browser(child, socket, dir);
  }

  /** Sends one DevTools command; its result. */
  command(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(
        id,
        (message) =>
          message.error ? reject(new Error(`${method}: ${message.error.message}`)) : resolve(message.result),
      );
      this.#socket.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Loads `url` and waits for its load event. */
  async open(url: string): Promise<void> {
    await this.command("Page.enable");
    const loaded = new Promise<void>((resolve) => {
      const previous = this.#socket.onmessage;
      this.#socket.onmessage = (event) => {
        previous?.call(this.#socket, event);
        if (JSON.parse(event.data).method === "Page.loadEventFired") {
          this.#socket.onmessage = previous;
          resolve();
        }
      };
    });
    await this.command("Page.navigate", { url });
    await loaded;
  }

  /** Evaluates `expression` in the page (awaiting a promise); its value, or throws the page's error. */
  async evaluate<T>(expression: string): Promise<T> {
    const result = await this.command("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    }) as {
      result: { value?: T };
      exceptionDetails?: { exception?: { description?: string }; text: string };
    };
    if (result.exceptionDetails) {
      throw new Error(result.exceptionDetails.exception?.description ?? result.exceptionDetails.text);
    }
    return result.result.value as T;
  }

  /** Polls `expression` every 50 ms until it is truthy; its value. */
  async until<T>(expression: string, timeoutMs: number, what: string): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const value = await this.evaluate<T>(expression);
      if (value) return value;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#socket.close();
    try {
      this.#child.kill("SIGKILL");
    } catch { /* gone already */ }
    await this.#child.status;
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}

/** The DevTools port from Chromium's "DevTools listening on ws://127.0.0.1:PORT/..." line. */
async function devtoolsPort(stderr: ReadableStream<Uint8Array>): Promise<number> {
  let text = "";
  const reader = stderr.pipeThrough(new TextDecoderStream()).getReader();
  const timer = setTimeout(() => reader.cancel(), 30_000);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`chromium did not open DevTools:\n${text.slice(-2000)}`);
      text += value;
      const match = /DevTools listening on ws:\/\/127\.0\.0\.1:(\d+)\//.exec(text);
      if (match) {
        // Keep reading (and dropping) its output, so that Chromium never blocks on a full pipe.
        void (async () => {
          try {
            while (!(await reader.read()).done) { /* drop */ }
          } catch { /* closed */ }
        })();
        return Number(match[1]);
      }
    }
  } finally {
    clearTimeout(timer);
  }
}
