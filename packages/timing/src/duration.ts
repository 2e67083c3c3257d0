/** Durations in log lines. */

/** Formats milliseconds for log lines: "850ms", "3.2s". */
export function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(1)}s`;
}
