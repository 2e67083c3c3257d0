/**
 * The standard `grpc.health.v1.Health` service (Check and Watch). Entries: "" (the whole server),
 * the notification service, and "registration" (NOT_SERVING while the etcd record is missing).
 */
import * as grpc from "@grpc/grpc-js";
import { type Limit, LocalLimit } from "../_util/limits.ts";
import { DEFAULTS } from "../config/defaults.ts";
import { StreamTracker } from "../transport/streams.ts";

const encoder = new TextEncoder();

/** What a service can report. */
export type ServingStatus = "SERVING" | "NOT_SERVING";

type WatchCall = grpc.ServerWritableStream<{ service: string }, { status: string }>;

/** Longest service name a Check or Watch may ask about (real names are far shorter). */
export const MAX_SERVICE_NAME_BYTES = 256;

/** Limits for {@link HealthService}. */
export interface HealthLimits {
  /** Concurrent Watch streams; more are refused with RESOURCE_EXHAUSTED. @default 1000 */
  maxWatches?: number;
  /** The same bound shared with other workers of the instance (overrides `maxWatches`). */
  watches?: Limit;
}

/**
 * Health status map with live watchers. Watching a name that is not (yet) an entry is allowed, as
 * the protocol says, but names are bounded, streams are bounded, and a name's watcher set goes
 * when its last watcher does: 6 000 distinct 200 KB names once held a gigabyte.
 */
export class HealthService {
  readonly #status = new Map<string, ServingStatus>();
  readonly #watchers = new Map<string, Set<WatchCall>>();
  readonly #streams = new StreamTracker();
  readonly #watchLimit: Limit;
  readonly #listeners = new Set<(service: string, status: ServingStatus) => void>();

  constructor(initial: Record<string, ServingStatus> = {}, limits: HealthLimits = {}) {
    this.#watchLimit = limits.watches ?? new LocalLimit(limits.maxWatches ?? DEFAULTS.maxHealthWatches);
    for (const [service, status] of Object.entries(initial)) this.#status.set(service, status);
  }

  /** Tells `listener` of every change of an entry from now on (workers mirror them); returns the undo. */
  onChange(listener: (service: string, status: ServingStatus) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Names with live watchers (for tests and metrics). */
  get watchedNames(): number {
    return this.#watchers.size;
  }

  /** Every entry and its status now. */
  entries(): Record<string, ServingStatus> {
    return Object.fromEntries(this.#status);
  }

  /** One entry's status now (NOT_SERVING for an unknown one). */
  status(service: string): ServingStatus {
    return this.#status.get(service) ?? "NOT_SERVING";
  }

  /** Open Watch streams. */
  get watches(): number {
    return this.#streams.size;
  }

  /** Sets one entry and tells its watchers. */
  set(service: string, status: ServingStatus): void {
    if (this.#status.get(service) === status) return;
    this.#status.set(service, status);
    for (const listener of this.#listeners) listener(service, status);
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
        if (encoder.encode(service).length > MAX_SERVICE_NAME_BYTES) {
          call.emit("error", {
            code: grpc.status.INVALID_ARGUMENT,
            details: `service name longer than ${MAX_SERVICE_NAME_BYTES} bytes`,
          });
          return;
        }
        const limit = this.#watchLimit;
        if (!limit.tryAcquire()) {
          call.emit("error", {
            code: grpc.status.RESOURCE_EXHAUSTED,
            details: `This instance already serves ${limit.max} Health/Watch streams (max-health-watches)`,
          });
          return;
        }
        let set = this.#watchers.get(service);
        if (!set) this.#watchers.set(service, set = new Set());
        const watchers = set;
        const forget = () => {
          limit.release();
          watchers.delete(call);
          if (watchers.size === 0 && this.#watchers.get(service) === watchers) this.#watchers.delete(service);
        };
        if (!this.#streams.add(call as never, forget)) {
          forget();
          call.end();
          return;
        }
        watchers.add(call);
        call.write({ status: this.#status.get(service) ?? "SERVICE_UNKNOWN" });
      },
    };
  }
}
