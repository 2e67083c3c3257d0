/**
 * The mesh as a delivery mode (serving/mode.ts): each serving thread delivers to its own
 * subscribers and routes outward, through the main thread's router between workers, then through
 * the cluster to the peers holding the recipient. Each thread also serves the peers' Forward.
 */
import type { EtcdRegistrar, ServiceInstance } from "@notification-server/registry";
import type { ServerConfig } from "../config/mod.ts";
import { StreamTracker } from "../transport/streams.ts";
import type {
  DeliveryMode,
  ModeStart,
  PoolSide,
  ThreadDelivery,
  ThreadSetup,
  Workers,
} from "../serving/mode.ts";
import type { Cluster } from "./cluster.ts";
import { forwardService } from "./forward_service.ts";
import { joinMesh } from "./join.ts";
import { MainThreadRouter } from "./main_thread_router.ts";
import { MeshDelivery } from "./mesh_delivery.ts";
import { RecipientFilter } from "./recipient_filter.ts";
import { WorkerThreadRouting } from "./worker_thread_routing.ts";
import type { MeshAsk, MeshTell, MeshWorkerStart, ToMeshWorker } from "./worker_messages.ts";
import { RecentSendsTable, type Remembered } from "./recent_sends.ts";

/** Where the cluster plugs in on this process's main thread: its lone serving thread, or the workers' router. */
interface MainSide {
  setCluster(cluster: Cluster): void;
  setPeerSecrets(secrets: readonly string[]): void;
  /** Sends are taken from now on. */
  joined(): void;
  leave(): void;
}

export class MeshMode implements DeliveryMode {
  readonly #server: ServerConfig;
  readonly #alone: boolean;
  #main?: MainSide;
  #cluster?: Cluster;

  /** `alone`: never joins a cluster (a test's in-process server); Sends are taken at once. */
  constructor(server: ServerConfig, options: { alone?: boolean } = {}) {
    this.#server = server;
    this.#alone = options.alone ?? false;
  }

  readonly available = true;

  connect(): Promise<void> {
    return Promise.resolve(); // nothing to reach before serving: the mesh joins after (join)
  }

  thread(setup: ThreadSetup): Promise<ThreadDelivery> {
    const { metrics, pool } = setup;
    const delivery = new MeshDelivery({
      onSent: (n) => metrics?.notificationsDelivered.inc(n),
      alone: this.#alone,
    });
    const start = pool?.start as MeshWorkerStart | undefined;
    // Forwarding is off (Forward answers UNIMPLEMENTED) until the cluster hands over its secrets.
    let peerSecrets = start?.peerSecrets;
    const peerStreams = new StreamTracker();
    const forward = forwardService({
      deliver: (recipient, bytes) => {
        metrics?.notificationsReceived.inc();
        // The peer sent it to every other instance itself: it goes no further than this one.
        return delivery.deliver(recipient, bytes, "instance");
      },
      reached: (revision) =>
        pool
          ? pool.ask({ call: "reached", revision } satisfies MeshAsk)
          : this.#cluster?.reached(revision) ?? Promise.resolve(false),
      streams: peerStreams,
      peers: { name: this.#server.name, self: setup.instanceId, secrets: () => peerSecrets },
    });
    const setPeerSecrets = (secrets: readonly string[]) => {
      peerSecrets = [...secrets];
      forward.recheck();
    };
    if (start?.joined) delivery.joined();
    if (pool) {
      // One memory of keyed Sends for the instance: a retry on a new connection may land on any worker.
      delivery.recent = {
        claim: (key) => pool.ask({ call: "claim", key } satisfies MeshAsk) as Promise<Remembered | undefined>,
        settle: (key, sent) => pool.tell({ settled: key, sent } satisfies MeshTell),
      };
    }
    if (pool && start) {
      // The main thread knows the other workers and, through the cluster, the other instances.
      delivery.routing = new WorkerThreadRouting(
        new RecipientFilter(start.filter),
        <T>(body: MeshAsk) => pool.ask(body) as Promise<T>,
        (recipient) => pool.tell({ unsubscribed: recipient } satisfies MeshTell),
      );
    } else {
      this.#main = {
        setCluster: (cluster) => (delivery.routing = cluster),
        setPeerSecrets,
        joined: () => delivery.joined(),
        leave: () => {}, // one thread: every Send reaches the cluster already
      };
    }
    return Promise.resolve({
      delivery,
      cluster: forward.handlers,
      receive: (body) => {
        const message = body as ToMeshWorker;
        if ("deliver" in message) return delivery.deliver(message.deliver.recipient, message.deliver.bytes);
        if ("joined" in message) delivery.joined();
        else setPeerSecrets(message.peerSecrets);
        return Promise.resolve(undefined);
      },
      endStreams: () => peerStreams.endAll(),
    });
  }

  pool(workers: Workers): PoolSide {
    const router = new MainThreadRouter(async (index, recipient, bytes) =>
      Number(await workers.ask(index, { deliver: { recipient, bytes } } satisfies ToMeshWorker) ?? 0)
    );
    let peerSecrets: string[] | undefined;
    let joined = false;
    const recent = new RecentSendsTable();
    this.#main = {
      setCluster: (cluster) => (router.cluster = cluster),
      setPeerSecrets: (secrets) => {
        peerSecrets = [...secrets];
        workers.broadcast({ peerSecrets } satisfies ToMeshWorker);
      },
      joined: () => {
        joined = true;
        workers.broadcast({ joined: true } satisfies ToMeshWorker);
      },
      // Workers take no shortcut past the main thread from now on.
      leave: () => router.filter.setLeaving(),
    };
    return {
      workerStart: (): MeshWorkerStart => ({ filter: router.filter.buffer, peerSecrets, joined }),
      answer: (index, body) => {
        const ask = body as MeshAsk;
        switch (ask.call) {
          case "route":
            return router.route(index, ask.recipient, ask.bytes, ask.reach);
          case "subscribed":
            return router.hold(index, ask.recipient).then(() => 0);
          case "reached":
            return router.reached(ask.revision);
          case "claim":
            return recent.claim(ask.key);
        }
      },
      told: (index, body) => {
        const tell = body as MeshTell;
        if ("settled" in tell) recent.settle(tell.settled, tell.sent);
        else router.release(index, tell.unsubscribed);
      },
      retired: (index) => router.releaseWorker(index),
    };
  }

  async join(
    steps: AsyncDisposableStack,
    start: ModeStart,
    instance: ServiceInstance,
    registrar: EtcdRegistrar,
  ): Promise<void> {
    const main = this.#main;
    if (!main) throw new Error("the mesh joins after its serving threads started");
    this.#cluster = await joinMesh(steps, {
      ...start,
      instance,
      registrar,
      serving: {
        setPeerSecrets: (secrets) => main.setPeerSecrets(secrets),
        setCluster: (cluster) => main.setCluster(cluster),
      },
    });
    // Without a cluster (forwarding off) this instance's own subscribers are all it reaches.
    if (!start.signal.aborted) main.joined();
  }

  /** Sends that still reach us while we leave go to every peer (see Cluster.leave). */
  leave(): void {
    this.#cluster?.leave();
    this.#main?.leave();
  }
}
