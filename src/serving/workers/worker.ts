/**
 * A serving worker: its own grpc-js server on the instance's port (SO_REUSEPORT), its own
 * subscribers, and the main thread for everything shared (see protocol.ts). Started by
 * {@link WorkerPool}; never run directly.
 */
import { HealthService } from "../health.ts";
import { SharedLimit } from "../../_util/limits.ts";
import { IdentityTable } from "../../auth/identity_table.ts";
import { Metrics } from "../../metrics/mod.ts";
import { BindError, stopGrpcServer } from "../../transport/server.ts";
import { brokerHooks, serveThread } from "../services.ts";
import { BrokerDelivery } from "../../broker/broker_delivery.ts";
import { Outbox } from "../../_util/outbox.ts";
import { RecipientFilter } from "./recipient_filter.ts";
import { WorkerThreadRouting } from "./worker_thread_routing.ts";
import type { FromWorker, ToWorker, WorkerRequest, WorkerStart } from "./protocol.ts";

/** How long a starting worker tries to reach the broker (the main thread reached it already). */
const WORKER_BROKER_CONNECT_MS = 10_000;

interface WorkerScope {
  onmessage: ((event: MessageEvent<ToWorker[]>) => void) | null;
  postMessage(messages: FromWorker[]): void;
  close(): void;
}

/** Test hooks (tests/fixtures): told once the worker serves. */
export interface WorkerHooks {
  onListening?(start: WorkerStart): void;
}

/** Serves until the main thread says stop; call once, at the top of a worker module. */
export function runWorker(hooks: WorkerHooks = {}): void {
  const scope = globalThis as unknown as WorkerScope;
  const outbox = new Outbox<FromWorker>((batch) => scope.postMessage(batch));
  const post = (message: FromWorker) => outbox.push(message);
  // A fault here ends this worker only: it is reported in one line (Deno would print a stack
  // trace) and the main thread starts another in its place.
  const crash = (reason: unknown) => {
    const text = reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason);
    post({ type: "crashed", reason: text.split("\n")[0] });
    outbox.flush();
    scope.close();
  };
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    crash(event.error ?? event.message);
  });
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    crash(event.reason);
  });
  const pending = new Map<number, (value: number | boolean) => void>();
  let nextId = 1;
  const request = <T extends number | boolean>(body: WorkerRequest): Promise<T> =>
    new Promise((resolve) => {
      const id = nextId++;
      pending.set(id, resolve as (value: number | boolean) => void);
      post({ type: "request", id, ...body });
    });
  let started: Awaited<ReturnType<typeof start>> | undefined;
  const early: ToWorker[] = [];

  scope.onmessage = (event) => {
    for (const message of event.data) receive(message);
  };
  const receive = (message: ToWorker) => {
    if (message.type === "start") {
      void start(message, request, post).then((serving) => {
        started = serving;
        for (const m of early.splice(0)) serving.handle(m);
        post({ type: "listening", port: serving.port });
        hooks.onListening?.(message);
      }, (error: Error) => {
        post({ type: "failed", message: error.message, bind: error instanceof BindError });
      });
    } else if (message.type === "reply") {
      pending.get(message.id)?.(message.value);
      pending.delete(message.id);
    } else if (started) started.handle(message);
    else early.push(message);
  };
}

async function start(
  init: WorkerStart,
  request: <T extends number | boolean>(body: WorkerRequest) => Promise<T>,
  post: (message: FromWorker) => void,
) {
  const { server } = init;
  const filter = new RecipientFilter(init.filter);
  const health = new HealthService(init.health, {
    watches: new SharedLimit(init.limits.healthWatches, server.maxHealthWatches, init.index),
  });
  let connections = () => 0;
  const metrics = init.metrics
    ? new Metrics({ process: false, worker: { id: init.index + 1, connections: () => connections() } })
    : undefined;
  const warn = (message: string) => post({ type: "warn", message });
  // With a broker each worker has its own connection; the main thread reached it just before.
  const delivery = server.broker
    ? await BrokerDelivery.connect(server.broker.nats, {
      name: `${server.name} worker ${init.index + 1}`,
      deadline: Date.now() + WORKER_BROKER_CONNECT_MS,
      hooks: brokerHooks(metrics, warn),
    })
    : undefined;
  const { services, bound } = await serveThread({
    server,
    health,
    places: {
      subscribers: new SharedLimit(init.limits.subscribers, server.maxSubscribers, init.index),
      queuedBytes: new SharedLimit(init.limits.queuedBytes, server.subscriberQueueTotalBytes, init.index),
      connections: new SharedLimit(init.limits.connections, server.maxConnections, init.index),
      identities: new IdentityTable(init.tables.identities, init.index),
    },
    warn,
    metrics,
    delivery,
    reached: (revision) => request<boolean>({ call: "reached", revision }),
    instanceId: init.instanceId,
    // The main thread knows the other workers and, through the cluster, the other instances.
    routing: new WorkerThreadRouting(
      filter,
      request,
      (recipient) => post({ type: "unsubscribed", recipient }),
    ),
    port: init.port,
    reusePort: true,
  });
  const { notifications } = services;
  connections = bound.connections;
  if (init.peerSecrets) services.setPeerSecrets(init.peerSecrets);
  return {
    port: bound.port,
    handle(message: ToWorker): void {
      switch (message.type) {
        case "instance":
          notifications.instanceId = message.instanceId;
          break;
        case "health":
          health.set(message.service, message.status);
          break;
        case "peerSecrets":
          services.setPeerSecrets(message.secrets);
          break;
        case "deliver":
          void notifications.deliver(message.recipient, message.bytes).then((count) =>
            post({ type: "delivered", id: message.id, count })
          );
          break;
        case "metrics":
          void (metrics?.registry.getMetricsAsJSON() ?? Promise.resolve([])).then((json) =>
            post({ type: "metrics", id: message.id, metrics: json })
          );
          break;
        case "stop":
          void stopGrpcServer(bound, message.timeoutMs, services.endStreams).then(async (outcome) => {
            await delivery?.close();
            post({ type: "stopped", outcome });
          });
          break;
      }
    },
  };
}

if (import.meta.main) runWorker();
