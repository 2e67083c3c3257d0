/** Errors as one log line, and the process-wide guard that turns uncaught ones into a decision. */

/** `Name: message`, first line only: log lines never carry a stack trace. */
export function oneLine(reason: unknown): string {
  const text = reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason);
  return text.split("\n")[0];
}

/**
 * Sends uncaught errors and unhandled rejections of this thread to `handle` instead of letting Deno
 * print them and end the process (or worker); disposing gives them back.
 */
export function onUncaught(handle: (reason: unknown) => void): Disposable {
  const onError = (event: ErrorEvent) => {
    event.preventDefault();
    handle(event.error ?? event.message);
  };
  const onRejection = (event: PromiseRejectionEvent) => {
    event.preventDefault();
    handle(event.reason);
  };
  globalThis.addEventListener("error", onError);
  globalThis.addEventListener("unhandledrejection", onRejection);
  return {
    [Symbol.dispose]: () => {
      globalThis.removeEventListener("error", onError);
      globalThis.removeEventListener("unhandledrejection", onRejection);
    },
  };
}
