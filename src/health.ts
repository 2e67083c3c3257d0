/**
 * The standard `grpc.health.v1.Health` service (Check and Watch). Entries: "" (the whole server),
 * the notification service, and "registration" (NOT_SERVING while the etcd record is missing).
 */
import * as grpc from "@grpc/grpc-js";
import { StreamTracker } from "./streams.ts";

/** What a service can report. */
export type ServingStatus = "SERVING" | "NOT_SERVING";

type WatchCall = grpc.ServerWritableStream<{ service: string }, { status: string }>;

/** Health status map with live watchers. */
export class HealthService {
  readonly #status = new Map<string, ServingStatus>();
  readonly #watchers = new Map<string, Set<WatchCall>>();
  readonly #streams = new StreamTracker();

  constructor(initial: Record<string, ServingStatus> = {}) {
    for (const [service, status] of Object.entries(initial)) this.#status.set(service, status);
  }

  /** Sets one entry and tells its watchers. */
  set(service: string, status: ServingStatus): void {
    if (this.#status.get(service) === status) return;
    this.#status.set(service, status);
    for (const call of this.#watchers.get(service) ?? []) call.write({ status });
  }

  /** Marks every entry NOT_SERVING (shutdown has begun). */
  setAllNotServing(): void {
    for (const service of this.#status.keys()) this.set(service, "NOT_SERVING");
  }

  /** Ends all Watch streams (they would otherwise hold graceful shutdown open). */
  endWatches(): void {
    this.#streams.endAll();
  }

  /** grpc-js handlers for the Health service. */
  handlers(): grpc.UntypedServiceImplementation {
    return {
      check: (
        call: grpc.ServerUnaryCall<{ service: string }, unknown>,
        callback: grpc.sendUnaryData<{ status: string }>,
      ) => {
        const status = this.#status.get(call.request.service);
        if (status === undefined) {
          callback({
            code: grpc.status.NOT_FOUND,
            details: `Unknown service ${JSON.stringify(call.request.service)}`,
          });
          return;
        }
        callback(null, { status });
      },
      watch: (call: WatchCall) => {
        const service = call.request.service;
        let set = this.#watchers.get(service);
        if (!set) this.#watchers.set(service, set = new Set());
        const watchers = set;
        if (!this.#streams.add(call as never, () => watchers.delete(call))) {
          call.end();
          return;
        }
        watchers.add(call);
        call.write({ status: this.#status.get(service) ?? "SERVICE_UNKNOWN" });
      },
    };
  }
}
