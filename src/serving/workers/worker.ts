/**
 * A serving worker: its own grpc-js server on the instance's port (SO_REUSEPORT), its own
 * subscribers, and the main thread for everything shared (see protocol.ts). Started by
 * {@link WorkerPool} from src/worker.ts, which names the delivery mode; never run directly.
 */
import { HealthService } from "../health.ts";
import { SharedLimit } from "../../_util/limits.ts";
import { IdentityTable } from "../../auth/identity_table.ts";
import type { ServerConfig } from "../../config/mod.ts";
import { Metrics } from "../../metrics/mod.ts";
import { BindError } from "../../transport/server.ts";
import { drainThread, serveThread } from "../services.ts";
import type { DeliveryMode } from "../mode.ts";
import { Outbox } from "../../_util/outbox.ts";
import { Replies } from "../../_util/replies.ts";
import { oneLine, onUncaught } from "../../_util/errors.ts";
import type { FromWorker, ToWorker, WorkerStart } from "./protocol.ts";

interface WorkerScope {
  onmessage: ((event: MessageEvent<ToWorker[]>) => void) | null;
  postMessage(messages: FromWorker[]): void;
  close(): void;
}

/** What a worker module gives {@link runWorker}. */
export interface WorkerHooks {
  /** The delivery mode for this config (src/mode.ts). */
  mode(server: ServerConfig): DeliveryMode;
  /** Test hook (tests/fixtures): told once the worker serves. */
  onListening?(start: WorkerStart): void;
}

/** Serves until the main thread says stop; call once, at the top of a worker module. */
export function runWorker(hooks: WorkerHooks): void {
  const scope = globalThis as unknown as WorkerScope;
  const outbox = new Outbox<FromWorker>((batch) => scope.postMessage(batch));
  const post = (message: FromWorker) => outbox.push(message);
  // A fault here ends this worker only: it is reported in one line (Deno would print a stack
  // trace) and the main thread starts another in its place.
  onUncaught((reason) => {
    post({ type: "crashed", reason: oneLine(reason) });
    outbox.flush();
    scope.close();
  });
  const replies = new Replies<unknown>();
  let started: Awaited<ReturnType<typeof start>> | undefined;
  const early: ToWorker[] = [];

  scope.onmessage = (event) => {
    for (const message of event.data) receive(message);
  };
  const receive = (message: ToWorker) => {
    if (message.type === "start") {
      void start(message, hooks.mode(message.server), replies, post).then((serving) => {
        started = serving;
        for (const m of early.splice(0)) serving.handle(m);
        post({ type: "listening", port: serving.port, httpPort: serving.httpPort });
        hooks.onListening?.(message);
      }, (error: Error) => {
        post({ type: "failed", message: error.message, bind: error instanceof BindError });
      });
    } else if (message.type === "reply") replies.settle(message.id, message.value);
    else if (started) started.handle(message);
    else early.push(message);
  };
}

async function start(
  init: WorkerStart,
  mode: DeliveryMode,
  replies: Replies<unknown>,
  post: (message: FromWorker) => void,
) {
  const { server } = init;
  const health = new HealthService(init.health, {
    watches: new SharedLimit(init.limits.healthWatches, server.maxHealthWatches, init.index),
  });
  let connections = () => 0;
  const metrics = init.metrics
    ? new Metrics({ process: false, worker: { id: init.index + 1, connections: () => connections() } })
    : undefined;
  let instanceId = init.instanceId;
  const served = await serveThread({
    server,
    health,
    mode,
    places: {
      subscribers: new SharedLimit(init.limits.subscribers, server.maxSubscribers, init.index),
      queuedBytes: new SharedLimit(init.limits.queuedBytes, server.subscriberQueueTotalBytes, init.index),
      connections: new SharedLimit(init.limits.connections, server.maxConnections, init.index),
      identities: new IdentityTable(init.tables.identities, init.index),
    },
    warn: (message) => post({ type: "warn", message }),
    metrics,
    instanceId: () => instanceId,
    pool: {
      worker: init.index + 1,
      start: init.mode,
      ask: (body) => replies.ask((id) => post({ type: "ask", id, body })),
      tell: (body) => post({ type: "tell", body }),
    },
    port: init.port,
    httpPort: init.httpPort,
    reusePort: true,
  });
  connections = served.bound.connections;
  return {
    port: served.bound.port,
    httpPort: served.web?.port,
    handle(message: ToWorker): void {
      switch (message.type) {
        case "instance":
          instanceId = message.instanceId;
          break;
        case "health":
          health.set(message.service, message.status);
          break;
        case "mode": {
          const { id } = message;
          const answered = served.thread.receive?.(message.body) ?? Promise.resolve(undefined);
          if (id !== undefined) void answered.then((value) => post({ type: "answer", id, value }));
          break;
        }
        case "metrics":
          void (metrics?.registry.getMetricsAsJSON() ?? Promise.resolve([])).then((json) =>
            post({ type: "metrics", id: message.id, metrics: json })
          );
          break;
        case "stop":
          void drainThread(served, message.timeoutMs).then((outcome) => post({ type: "stopped", outcome }));
          break;
      }
    },
  };
}
