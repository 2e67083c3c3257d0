/** gRPC handlers timed and counted by method and status code. */
import type * as grpc from "@grpc/grpc-js";
import { status as grpcStatus } from "@grpc/grpc-js";
import type client from "prom-client";

/**
 * `implementation` with every handler timed and counted. Unary handlers are recorded when they
 * answer, streams when they end (OK, CANCELLED by the client, or the status we ended them with).
 */
export function instrumentService(
  service: string,
  implementation: grpc.UntypedServiceImplementation,
  metrics: {
    calls: client.Counter<"service" | "method" | "code">;
    duration: client.Histogram<"service" | "method">;
  },
): grpc.UntypedServiceImplementation {
  const callChildren = new Map<string, client.Counter.Internal>();
  const wrapped: grpc.UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(implementation)) {
    const method = name.charAt(0).toUpperCase() + name.slice(1);
    const duration = metrics.duration.labels(service, method);
    const record = (code: number, started: number) => {
      const key = `${service}|${method}|${code}`;
      let calls = callChildren.get(key);
      if (!calls) {
        callChildren.set(
          key,
          calls = metrics.calls.labels(service, method, grpcStatus[code] ?? String(code)),
        );
      }
      calls.inc();
      duration.observe((performance.now() - started) / 1000);
    };
    const fn = handler as (...args: unknown[]) => void;
    wrapped[name] = fn.length >= 2
      ? (call: unknown, callback: grpc.sendUnaryData<unknown>) => {
        const started = performance.now();
        fn(call, (error: grpc.ServerErrorResponse | null, value?: unknown) => {
          record(error ? error.code ?? grpcStatus.UNKNOWN : grpcStatus.OK, started);
          callback(error, value);
        });
      }
      : (call: grpc.ServerWritableStream<unknown, unknown>) => {
        const started = performance.now();
        let done = false;
        const end = (code: number) => {
          if (done) return;
          done = true;
          record(code, started);
        };
        call.on("finish", () => end(grpcStatus.OK));
        call.on("cancelled", () => end(grpcStatus.CANCELLED));
        call.on("error", (error: { code?: number }) => end(error?.code ?? grpcStatus.UNKNOWN));
        fn(call);
      };
  }
  return wrapped;
}
