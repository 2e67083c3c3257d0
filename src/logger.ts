/**
 * The service's log lines. Wording is stable (users grep for it, the original design lists it):
 * `<yyyy/mm/dd hh:mm:ss> <message>` on stderr, like Go's standard logger.
 */

/** Where log lines go; tests and the CLI substitute their own. */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

function stamp(now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${now.getFullYear()}/${p(now.getMonth() + 1)}/${p(now.getDate())} ` +
    `${p(now.getHours())}:${p(now.getMinutes())}:${p(now.getSeconds())}`;
}

const encoder = new TextEncoder();

/** Logs to stderr with a Go-style timestamp; warnings and errors carry a level word. */
export function consoleLogger(): Logger {
  const write = (line: string) => {
    try {
      Deno.stderr.writeSync(encoder.encode(`${stamp()} ${line}\n`));
    } catch {
      // stderr closed (`... 2>&1 | head` whose reader is gone): a log line is never worth dying for,
      // least of all before we deregister.
    }
  };
  return {
    info: (message) => write(message),
    warn: (message) => write(`WARN ${message}`),
    error: (message) => write(`ERROR ${message}`),
  };
}

/** Discards everything (library default). */
export const silentLogger: Logger = { info() {}, warn() {}, error() {} };
