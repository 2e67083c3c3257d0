/** What the commands print: one line at a time to stdout, safe for a terminal, until nobody reads. */

/** Standard output went away (`discover --watch | head -1`): the command is done. */
export class OutputClosed extends Error {}

const encoder = new TextEncoder();

/** Writes one line to stdout; throws {@link OutputClosed} when nobody reads it any more. */
export function printLine(line: string): void {
  const bytes = encoder.encode(`${line}\n`);
  try {
    for (let at = 0; at < bytes.length;) at += Deno.stdout.writeSync(bytes.subarray(at));
  } catch (error) {
    if (error instanceof Deno.errors.BrokenPipe) throw new OutputClosed();
    throw error;
  }
}

// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

/** Longest value printed in a table cell or JSON field; records are written by anyone. */
const MAX_FIELD = 256;

/** A value safe for one terminal line: control characters escaped (no ESC sequences), capped. */
export function cell(text: string): string {
  const escaped = text.replace(CONTROL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
  return escaped.length > MAX_FIELD ? `${escaped.slice(0, MAX_FIELD)}...` : escaped;
}

/** The same cap for JSON output (JSON.stringify already escapes control characters). */
export function capped(text: string): string {
  return text.length > MAX_FIELD ? `${text.slice(0, MAX_FIELD)}...` : text;
}

export interface Interrupt {
  /** Aborted by the first SIGINT or SIGTERM (or by `dispose`). */
  signal: AbortSignal;
  dispose(): void;
}

/** For commands that run until interrupted: Ctrl+C or SIGTERM ends them cleanly (exit 0). */
export function onInterrupt(): Interrupt {
  const abort = new AbortController();
  const stop = () => abort.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  return {
    signal: abort.signal,
    dispose: () => {
      stop();
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
    },
  };
}
