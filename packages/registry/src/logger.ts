/** Where the library's log lines go: the caller's logger, or nowhere ({@link silentLogger}). */

/** Structured context for a line (printed by the JSON format only). */
export type LogFields = Record<string, string | number | boolean | undefined>;

/** Where log lines go; tests and the CLI substitute their own. */
export interface Logger {
  /** Detail for debugging; optional. */
  debug?(message: string, fields?: LogFields): void;
  /** Normal events (registered, deregistered). */
  info(message: string, fields?: LogFields): void;
  /** Something went wrong and is being retried or worked around. */
  warn(message: string, fields?: LogFields): void;
  /** Something failed. */
  error(message: string, fields?: LogFields): void;
}

/** Discards everything (library default). */
export const silentLogger: Logger = { info() {}, warn() {}, error() {} };
