/**
 * The main thread's side of `workers > 1`: starts the serving workers on one port, restarts one
 * that crashes (backing off with jitter), mirrors health into them, and drains them all on stop.
 * What the delivery mode's sides say to each other (the mesh routes between workers here) the pool
 * only carries (protocol.ts, serving/mode.ts).
 */
import { Backoff, sleep } from "@notification-server/timing";
import type { ServerConfig } from "../../config/mod.ts";
import type { ServingStatus } from "../health.ts";
import { releaseWorker, sharedLimitBuffer, sharedUsed } from "../../_util/limits.ts";
import type { Logger } from "../../_util/logger.ts";
import type { MetricsJson } from "../../metrics/mod.ts";
import { BindError, checkPortFree } from "../../transport/server.ts";
import { Outbox } from "../../_util/outbox.ts";
import { Replies } from "../../_util/replies.ts";
import { oneLine } from "../../_util/errors.ts";
import type { DeliveryMode, PoolSide } from "../mode.ts";
import type { FromWorker, SharedLimits, SharedTables, ToWorker } from "./protocol.ts";
import { identitySlots, identityTableMemory, releaseWorkerIdentities } from "../../auth/identity_table.ts";

/** Options for {@link WorkerPool.start}. */
export interface WorkerPoolOptions {
  server: ServerConfig;
  count: number;
  health: Record<string, ServingStatus>;
  mode: DeliveryMode;
  metrics: boolean;
  logger: Logger;
  /** The worker module (src/worker.ts; tests substitute one with injected faults). */
  module: URL;
  /** Told each time a crashed worker is started again (for metrics). */
  onRestart?: () => void;
}

/** Restarting a worker that keeps failing backs off up to this. */
const MAX_RESTART_DELAY_MS = 30_000;

/** One worker slot: the thread now in it and what it has not answered yet. */
interface Slot {
  index: number;
  generation: number;
  worker?: Worker;
  /** Messages to the worker, sent once per turn of the event loop. */
  outbox?: Outbox<ToWorker>;
  serving: boolean;
  /** The mode's asks of this worker (answered undefined if it dies). */
  asks: Replies<unknown>;
  metrics: Replies<MetricsJson>;
  stopped?: (outcome: "graceful" | "forced") => void;
}

export class WorkerPool {
  /** The shared port; 0 until the first worker has bound one when the config asks for port 0. */
  #port: number;
  /** The same for the HTTP port (undefined without one). */
  #httpPort?: number;
  readonly #options: WorkerPoolOptions;
  readonly #limits: SharedLimits;
  readonly #tables: SharedTables;
  readonly #slots: Slot[];
  /** The mode's side here (the mesh's router between workers); undefined when it needs none. */
  readonly #side: PoolSide | undefined;
  #health: Record<string, ServingStatus>;
  #instanceId = "";
  #stopping = false;

  private constructor(options: WorkerPoolOptions) {
    this.#options = options;
    this.#port = options.server.addr.port;
    this.#httpPort = options.server.http?.addr.port;
    this.#health = { ...options.health };
    this.#limits = {
      subscribers: sharedLimitBuffer(options.count),
      healthWatches: sharedLimitBuffer(options.count),
      connections: sharedLimitBuffer(options.count),
      queuedBytes: sharedLimitBuffer(options.count),
    };
    this.#tables = { identities: identityTableMemory(identitySlots(options.server), options.count) };
    this.#slots = Array.from({ length: options.count }, (_, index) => ({
      index,
      generation: 0,
      serving: false,
      asks: new Replies(),
      metrics: new Replies(),
    }));
    this.#side = options.mode.pool({
      ask: (index, body) => this.#ask(this.#slots[index], body),
      broadcast: (body) => this.#broadcast({ type: "mode", body }),
    });
  }

  /**
   * Starts every worker on one port (and one HTTP port) and resolves once all serve; throws (all
   * stopped) if one cannot. A fixed port is checked free first. For port 0 the first worker binds a
   * free port and the others join it: choosing one and letting it go before they bind would let any other
   * bind(0) in the meantime take it.
   */
  static async start(options: WorkerPoolOptions): Promise<WorkerPool> {
    const pool = new WorkerPool(options);
    try {
      const [first, ...rest] = pool.#slots;
      const http = options.server.http;
      if (pool.#port !== 0) checkPortFree(options.server.addr);
      if (http && http.addr.port !== 0) checkPortFree(http.addr, "the HTTP port");
      if (pool.#port === 0 || pool.#httpPort === 0) {
        await pool.#startWorker(first); // its ports become the pool's
        await Promise.all(rest.map((slot) => pool.#startWorker(slot)));
      } else {
        await Promise.all(pool.#slots.map((slot) => pool.#startWorker(slot)));
      }
    } catch (error) {
      pool.terminate();
      throw error;
    }
    return pool;
  }

  get port(): number {
    return this.#port;
  }

  get httpPort(): number | undefined {
    return this.#httpPort;
  }

  /** Subscribe streams across the workers. */
  get subscribers(): number {
    return sharedUsed(this.#limits.subscribers);
  }

  get healthWatches(): number {
    return sharedUsed(this.#limits.healthWatches);
  }

  /** Workers serving now. */
  get serving(): number {
    return this.#slots.filter((s) => s.serving).length;
  }

  /** Reported in SendResponse.instance_id from now on. */
  set instanceId(id: string) {
    this.#instanceId = id;
    this.#broadcast({ type: "instance", instanceId: id });
  }

  /** Mirrors one health entry into every worker. */
  setHealth(service: string, status: ServingStatus): void {
    this.#health[service] = status;
    this.#broadcast({ type: "health", service, status });
  }

  /** Every worker's metrics, for one merged scrape. */
  collectMetrics(): Promise<MetricsJson[]> {
    return Promise.all(
      this.#slots.filter((s) => s.serving).map((slot) =>
        slot.metrics.ask((id) => this.#post(slot, { type: "metrics", id }))
      ),
    );
  }

  /**
   * Drains every worker (refuse new calls, end streams, finish in-flight calls within
   * `timeoutMs`), then ends the threads. "forced" if any worker had to cancel calls.
   */
  async stop(timeoutMs: number): Promise<"graceful" | "forced"> {
    this.#stopping = true;
    const outcomes = await Promise.all(this.#slots.map((slot) => {
      if (!slot.worker || !slot.serving) return "graceful" as const;
      const stopped = new Promise<"graceful" | "forced">((resolve) => (slot.stopped = resolve));
      this.#post(slot, { type: "stop", timeoutMs });
      // A worker stuck in a loop never answers: it is ended with the rest a moment after its deadline.
      return Promise.race([stopped, sleep(timeoutMs + 1_000).then(() => "forced" as const)]);
    }));
    this.terminate();
    return outcomes.includes("forced") ? "forced" : "graceful";
  }

  /** Ends every worker thread at once (failed start-up, or after {@link stop}). */
  terminate(): void {
    this.#stopping = true;
    for (const slot of this.#slots) this.#retire(slot);
  }

  #startWorker(slot: Slot): Promise<void> {
    const worker = new Worker(this.#options.module, {
      type: "module",
      name: `worker-${slot.index + 1}`,
    });
    slot.worker = worker;
    slot.outbox = new Outbox((batch) => worker.postMessage(batch));
    return new Promise<void>((resolve, reject) => {
      let started = false;
      worker.onmessage = (event: MessageEvent<FromWorker[]>) => {
        for (const message of event.data) {
          if (slot.worker !== worker) return; // retired meanwhile
          if (message.type === "listening") {
            if (this.#port === 0) this.#port = message.port;
            if (this.#httpPort === 0) this.#httpPort = message.httpPort;
            started = true;
            slot.serving = true;
            resolve();
          } else if (message.type === "failed") {
            started = true;
            reject(message.bind ? new BindError(message.message) : new Error(message.message));
          } else this.#handle(slot, message);
        }
      };
      worker.onerror = (event: ErrorEvent) => {
        // Handled here, so it does not reach the main thread's guard (which would stop the service).
        event.preventDefault();
        const reason = oneLine(event.error ?? event.message);
        if (!started) {
          started = true;
          reject(new Error(`worker ${slot.index + 1} failed to start: ${reason}`));
          return;
        }
        void this.#crashed(slot, worker, reason);
      };
      this.#post(slot, {
        type: "start",
        index: slot.index,
        generation: slot.generation,
        port: this.#port,
        httpPort: this.#httpPort,
        server: this.#options.server,
        limits: this.#limits,
        tables: this.#tables,
        mode: this.#side?.workerStart(),
        health: this.#health,
        metrics: this.#options.metrics,
        instanceId: this.#instanceId,
      });
    });
  }

  /** A serving worker died: forget what it held, then start another in its place. */
  async #crashed(slot: Slot, worker: Worker, reason: string): Promise<void> {
    if (slot.worker !== worker) return;
    const log = this.#options.logger;
    this.#retire(slot);
    if (this.#stopping) return;
    log.error(`Worker ${slot.index + 1} crashed: ${reason}; restarting it`, {
      worker: slot.index + 1,
      error: reason,
    });
    const backoff = new Backoff({ initialMs: 100, maxMs: MAX_RESTART_DELAY_MS });
    while (!this.#stopping) {
      slot.generation++;
      try {
        await this.#startWorker(slot);
        this.#options.onRestart?.();
        log.info(`Worker ${slot.index + 1} restarted (${this.serving} of ${this.#slots.length} serving)`, {
          worker: slot.index + 1,
        });
        return;
      } catch (error) {
        this.#retire(slot);
        const delay = backoff.next();
        log.error(
          `Worker ${slot.index + 1} could not restart: ${
            (error as Error).message
          }; ${this.serving} of ${this.#slots.length} serving, retrying in ${delay}ms`,
          { worker: slot.index + 1 },
        );
        await sleep(delay);
      }
    }
  }

  /** Ends the slot's thread and drops everything it held: places, recipients, pending answers. */
  #retire(slot: Slot): void {
    slot.worker?.terminate();
    slot.worker = undefined;
    slot.outbox = undefined;
    slot.serving = false;
    for (const buffer of Object.values(this.#limits)) releaseWorker(buffer, slot.index);
    releaseWorkerIdentities(this.#tables.identities, slot.index);
    this.#side?.retired(slot.index);
    slot.asks.settleAll(undefined);
    slot.metrics.settleAll([]);
    slot.stopped?.("forced");
  }

  #handle(slot: Slot, message: FromWorker): void {
    switch (message.type) {
      case "ask": {
        // Request ids are per thread: an answer for a worker that was replaced meanwhile is dropped.
        const asker = slot.worker;
        const answered = this.#side?.answer(slot.index, message.body) ?? Promise.resolve(undefined);
        void answered.then((value) => {
          if (slot.worker === asker) this.#post(slot, { type: "reply", id: message.id, value });
        });
        break;
      }
      case "tell":
        this.#side?.told(slot.index, message.body);
        break;
      case "answer":
        slot.asks.settle(message.id, message.value);
        break;
      case "metrics":
        slot.metrics.settle(message.id, message.metrics);
        break;
      case "stopped":
        slot.stopped?.(message.outcome);
        break;
      case "crashed":
        if (slot.worker) void this.#crashed(slot, slot.worker, message.reason);
        break;
      case "warn":
        this.#options.logger.warn(`Worker ${slot.index + 1}: ${message.message}`);
        break;
    }
  }

  #ask(slot: Slot, body: unknown): Promise<unknown> {
    if (!slot.serving) return Promise.resolve(undefined);
    return slot.asks.ask((id) => this.#post(slot, { type: "mode", id, body }));
  }

  #broadcast(message: ToWorker): void {
    for (const slot of this.#slots) this.#post(slot, message);
  }

  #post(slot: Slot, message: ToWorker): void {
    slot.outbox?.push(message);
  }
}
