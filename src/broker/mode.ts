/**
 * The broker as a delivery mode (serving/mode.ts): every serving thread stores through its own
 * NATS connection and is fed by the stream; threads and instances need nothing of each other for
 * delivery (workers tell each other only their stream counts, for `delivered`). The
 * main thread connects first (app.ts step 2): nothing is served, or registered, before the broker
 * answers, within the start-up budget.
 */
import type { ServerConfig } from "../config/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import type {
  DeliveryMode,
  ModeStart,
  PoolSide,
  ThreadDelivery,
  ThreadSetup,
  Workers,
} from "../serving/mode.ts";
import { NOTIFICATION_SERVICE } from "../serving/services.ts";
import { BrokerDelivery, type BrokerHooks } from "./broker_delivery.ts";
import { describeTtl, type NatsConfig } from "./connection.ts";
import { OtherThreadStreams, PoolStreamCounts, type StreamCounts } from "./instance_streams.ts";

/** How long a starting worker tries to reach the broker (the main thread reached it already). */
const WORKER_CONNECT_MS = 10_000;

export class BrokerMode implements DeliveryMode {
  readonly #server: ServerConfig;
  readonly #nats: NatsConfig;
  /** The main thread's connection (connect): it serves with `workers: 1`, and tells health. */
  #main?: BrokerDelivery;
  /** Once leaving, the broker coming back must not turn health to SERVING again. */
  #leaving = false;

  constructor(server: ServerConfig, nats: NatsConfig) {
    this.#server = server;
    this.#nats = nats;
  }

  get available(): boolean {
    return this.#main?.connected ?? false;
  }

  async connect(steps: AsyncDisposableStack, start: ModeStart): Promise<void> {
    const { log, health } = start;
    const nats = this.#nats;
    const servers = nats.servers.join(",");
    const hooks = brokerHooks(start.metrics, (line) => log.warn(line));
    const main = this.#main = await BrokerDelivery.connect(nats, {
      name: this.#server.name,
      deadline: start.deadline,
      signal: start.signal,
      hooks: {
        ...hooks,
        onConnection: (connected) => {
          hooks.onConnection?.(connected);
          if (connected) log.info(`Broker reconnected: ${servers}`);
          else log.warn(`Broker unreachable: Sends answer UNAVAILABLE until it is back (${servers})`);
          if (!this.#leaving) health.set(NOTIFICATION_SERVICE, connected ? "SERVING" : "NOT_SERVING");
        },
      },
    });
    steps.defer(() => main.close());
    log.info(
      `Broker: NATS JetStream stream ${nats.stream} on ${servers} (epoch ${main.epoch}, history ${nats.historySize} per recipient, ${
        describeTtl(nats)
      }, replicas ${nats.replicas})`,
      { stream: nats.stream, epoch: main.epoch },
    );
  }

  async thread(setup: ThreadSetup): Promise<ThreadDelivery> {
    // The main thread's own connection serves it; its close is the connect step's.
    if (!setup.pool && this.#main) return { delivery: this.#main };
    const { pool } = setup;
    const delivery = await BrokerDelivery.connect(this.#nats, {
      name: pool ? `${this.#server.name} worker ${pool.worker}` : this.#server.name,
      deadline: Date.now() + WORKER_CONNECT_MS,
      hooks: brokerHooks(setup.metrics, setup.warn),
    });
    if (!pool) return { delivery, close: () => delivery.close() };
    // A Send's `delivered` counts the instance's streams: the other workers' come through the pool.
    const others = delivery.others = new OtherThreadStreams(
      pool.worker,
      (counts) => pool.tell(counts),
      pool.start as StreamCounts[],
    );
    return {
      delivery,
      receive: (body) => Promise.resolve(others.receive(body as StreamCounts)),
      close: () => delivery.close(),
    };
  }

  /** The workers' stream counts, passed on between them. */
  pool(workers: Workers): PoolSide {
    const counts = new PoolStreamCounts();
    return {
      workerStart: () => counts.known(),
      answer: () => Promise.resolve(undefined),
      told: (index, body) => workers.broadcast(counts.told(index + 1, body as StreamCounts)),
      retired: (index) => workers.broadcast(counts.retired(index + 1)),
    };
  }

  /** Nothing to join: the broker routes between instances. */
  join(): Promise<void> {
    return Promise.resolve();
  }

  leave(): void {
    this.#leaving = true;
  }
}

/**
 * What one thread's broker connection reports: metrics, and WARN lines through `warn`. Made just
 * before the thread connects, which either succeeds or ends the start: connected from then on.
 */
function brokerHooks(metrics: Metrics | undefined, warn: (line: string) => void): BrokerHooks {
  metrics?.brokerConnected.set(1);
  return {
    onConnection: (connected) => metrics?.brokerConnected.set(connected ? 1 : 0),
    onStored: (ms) => metrics?.brokerStoreSeconds.observe(ms / 1000),
    onReplay: (recovered) => metrics?.brokerReplays.inc({ recovered: String(recovered) }),
    onGap: () => metrics?.brokerHistoryGaps.inc(),
    onWritten: () => metrics?.notificationsDelivered.inc(),
    warn,
  };
}
