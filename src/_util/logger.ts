/**
 * The service's log lines. Wording is stable (users grep for it, the original design lists it).
 *
 * - `text` (default): `<yyyy/mm/dd hh:mm:ss> <message>` on stderr, like Go's standard logger;
 *   warnings and errors carry a level word. Fields are not printed: the message says it all.
 * - `json`: one object per line for collectors: `{"time":"<RFC 3339, ms>","level":"info",
 *   "msg":"...", ...fields}` (key, lease, addr, error, duration_ms where they matter).
 *
 * A log line is never worth dying for: a closed stderr (`... 2>&1 | head`) is ignored.
 */

import type { LogFields, Logger } from "@notification-server/registry";

export type { LogFields, Logger };

/** The formats and levels `log-format` and `log-level` take. */
export const LOG_FORMATS = ["text", "json"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

function stamp(now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${now.getFullYear()}/${p(now.getMonth() + 1)}/${p(now.getDate())} ` +
    `${p(now.getHours())}:${p(now.getMinutes())}:${p(now.getSeconds())}`;
}

const encoder = new TextEncoder();

function writeLine(line: string): void {
  try {
    const bytes = encoder.encode(`${line}\n`);
    for (let at = 0; at < bytes.length;) at += Deno.stderr.writeSync(bytes.subarray(at));
  } catch {
    // stderr closed: see the module comment.
  }
}

const TEXT_PREFIX: Record<LogLevel, string> = { debug: "DEBUG ", info: "", warn: "WARN ", error: "ERROR " };

/** Logs to stderr in `format`, dropping lines below `level`. */
export function consoleLogger(options: { format?: LogFormat; level?: LogLevel } = {}): Logger {
  const format = options.format ?? "text";
  const min = LOG_LEVELS.indexOf(options.level ?? "info");
  const emit = (level: LogLevel) => {
    if (LOG_LEVELS.indexOf(level) < min) return () => {};
    return format === "json"
      ? (message: string, fields?: LogFields) =>
        writeLine(JSON.stringify({ time: new Date().toISOString(), level, msg: message, ...fields }))
      : (message: string) => writeLine(`${stamp()} ${TEXT_PREFIX[level]}${message}`);
  };
  return { debug: emit("debug"), info: emit("info"), warn: emit("warn"), error: emit("error") };
}
