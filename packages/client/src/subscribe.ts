/**
 * A subscription that outlives instances: notifications for one recipient from whichever instance
 * of the service `etcd:///<name>` resolves to, re-subscribing with backoff whenever a stream ends
 * (an instance stopping, a network fault). Used by the `subscribe` command.
 *
 * Handover before break: a stopping instance deregisters first and serves on for its drain delay,
 * still routed to by its peers. The helper watches the registry too, and when the instance its
 * stream is on leaves it, opens a stream on another instance; once the new one is ready (routed
 * from every instance), the old one is left to end by itself (the instance ends it when it drains,
 * and 30 s after the handover at most, it is cancelled): a Send routed to the old
 * instance just before still arrives on it. Notifications that reach both streams meanwhile are
 * passed on once (by id). A planned restart then costs no gap.
 *
 * Without a broker, delivery is live and at most once: what is sent while no stream is open (the
 * gap) is not replayed. With a broker (notification-server.broker) every notification has a
 * position: the helper keeps the last one and resumes from it on every re-subscription (handover,
 * crash, network fault, broker failover), so nothing is missed and nothing passed on twice; a gap
 * the broker's history could not fill is reported (`onResumed` with `recovered: false`). Each gap
 * is reported through `onGap` when it starts and `onResumed` when it ends.
 *
 * @example
 * ```ts
 * for await (const n of subscribe({ etcd: { endpoints: ["localhost:2379"], dialTimeoutMs: 5000 },
 *   name: "notification-server", recipient: "alice" })) console.log(n.title);
 * ```
 */
import * as grpc from "@grpc/grpc-js";
import { Backoff, sleep } from "@notification-server/timing";
import {
  bearer,
  type ChannelCredentials,
  type ChannelOptions,
  dialNotifications,
  type Notification,
  RECOVERED_HEADER,
} from "./notification_client.ts";
import { createEtcdClient, type EtcdClientOptions } from "@notification-server/registry";
import { EtcdDiscovery } from "@notification-server/registry";
import { registerEtcdResolver } from "@notification-server/registry";

/** Options for {@link subscribe}. */
export interface SubscribeOptions {
  /** How to reach the etcd the service registers in. */
  etcd: EtcdClientOptions;
  /** Registration prefix. @default "/services" */
  prefix?: string;
  /** The service to follow. */
  name: string;
  /** Whose notifications to receive. */
  recipient: string;
  /** Ends the subscription (the generator returns). */
  signal?: AbortSignal;
  /**
   * The bearer token when the service has `auth` on (its `sub` must be `recipient`), or a function
   * giving the current one: it is called again for every (re-)subscription, so a stream that ended
   * with UNAUTHENTICATED at its token's expiry comes back with a fresh token.
   */
  token?: string | (() => string);
  /** A stream ended with no other ready: why, and how long until the next try. */
  onGap?: (gap: { reason: string; retryInMs: number }) => void;
  /**
   * A stream is open again after a gap of `gapMs`. With a broker, `recovered` says whether it
   * started with nothing missed; without one it is absent (what was sent meanwhile is lost).
   */
  onResumed?: (resumed: { gapMs: number; recovered?: boolean }) => void;
  /** A stream is routed: a Send to any instance from now on reaches it (each (re)subscription). */
  onReady?: () => void;
  /** The stream moved to another instance because its instance left the registry (no gap). */
  onHandover?: (handover: { from: string; to: string }) => void;
  /**
   * Start from the broker's history instead of live: after this position (of `epoch`, when given),
   * or `"all"` for everything it holds (an inbox after being offline). Needs a broker: against a
   * service without one, the generator throws (FAILED_PRECONDITION is not retried).
   */
  since?: number | "all" | { position: number; epoch?: string };
  /** How to dial the instances. @default plaintext */
  credentials?: ChannelCredentials;
  /** More channel options (with TLS: `grpc.ssl_target_name_override` when dialing by IP). */
  channelOptions?: ChannelOptions;
}

/** Wait before a second try at moving off a leaving instance (its resolver update is on its way). */
const HANDOVER_RETRY_MS = 50;
/**
 * How long a stream left behind by a handover may stay open: the stopping instance ends it when it
 * drains (after its drain delay, 5 s by default), and one that does not is cancelled then.
 */
const LEAVING_STREAM_MAX_MS = 30_000;
/** Notification ids remembered to pass each on once while two streams overlap. */
const REMEMBERED_IDS = 4096;

/** One Subscribe stream and what became of it. */
interface Live {
  stream: grpc.ClientReadableStream<Notification>;
  /** The instance's address, once ready. */
  peer?: string;
  ready: boolean;
  /** Whether the registry listed `peer` since it got ready (only then can it "leave"). */
  listed: boolean;
  /** Why it ended, once it has. */
  ended?: string;
  /** Whether it started with nothing missed (a recovering stream's headers), when it said. */
  recovered?: boolean;
  /** It asked to recover and the service has no broker (FAILED_PRECONDITION). */
  noBroker?: boolean;
}

/** Resolver schemes of the subscribe() calls running now: each has its own (grpc_resolver.ts). */
const schemesInUse = new Set<number>();

function takeScheme(): { scheme: string; release: () => void } {
  let n = 1;
  while (schemesInUse.has(n)) n++;
  schemesInUse.add(n);
  return { scheme: `etcd-subscribe-${n}`, release: () => schemesInUse.delete(n) };
}

/** Notifications for `recipient`, across instance restarts, until `signal` aborts. */
export async function* subscribe(options: SubscribeOptions): AsyncGenerator<Notification> {
  const etcd = createEtcdClient(options.etcd);
  // One watch of the service for both the channel's resolver and the handover below.
  const discovery = new EtcdDiscovery(etcd, { prefix: options.prefix });
  const { scheme, release } = takeScheme();
  const closeResolver = registerEtcdResolver({ scheme, discovery });
  const client = dialNotifications(`${scheme}:///${options.name}`, options);
  const signal = options.signal;
  const stop = new AbortController();
  const backoff = new Backoff({ initialMs: 100, maxMs: 5_000 });
  const queue: Notification[] = [];
  const seen = new RecentIds(REMEMBERED_IDS);
  // With a broker: the last position passed on (and its epoch); every (re-)subscription resumes
  // after it, and what overlapping streams both carry is passed on once.
  const since = options.since;
  let resume: { position: number; epoch: string } | undefined = since === undefined
    ? undefined
    : since === "all"
    ? { position: 0, epoch: "" }
    : typeof since === "number"
    ? { position: since, epoch: "" }
    : { position: since.position, epoch: since.epoch ?? "" };
  let brokerless = false;
  /** Set when the service refuses what was asked for good (`since` without a broker). */
  let refusal: string | undefined;
  let wake = () => {};
  const changed = () => wake();
  let members: Set<string> | undefined;

  const open = (): Live => {
    const token = typeof options.token === "function" ? options.token() : options.token;
    const from = brokerless ? undefined : resume;
    const request = from
      ? { recipient: options.recipient, recover: true, position: from.position, epoch: from.epoch }
      : { recipient: options.recipient };
    const stream = client.subscribe(request, bearer(token), {
      waitForReady: true,
    }) as grpc.ClientReadableStream<Notification>;
    const live: Live = { stream, ready: false, listed: false };
    stream.on("metadata", (headers: grpc.Metadata) => {
      const recovered = headers.get(RECOVERED_HEADER)[0];
      if (recovered !== undefined) live.recovered = recovered === "true";
      live.ready = true;
      live.peer = stream.getPeer();
      live.listed = members?.has(live.peer) ?? false;
      options.onReady?.();
      changed();
    });
    stream.on("data", (n: Notification) => {
      if (!seen.add(n.id)) return;
      if (n.position) {
        // Streams are each in order; of two that overlap, the one behind repeats what was passed on.
        const epoch = n.epoch ?? "";
        if (resume && (epoch === resume.epoch || resume.epoch === "") && n.position <= resume.position) {
          return;
        }
        resume = { position: n.position, epoch };
      }
      queue.push(n);
      changed();
    });
    stream.on("status", (status: grpc.StatusObject) => {
      if (status.code === grpc.status.FAILED_PRECONDITION && from) {
        if (options.since === undefined) {
          // Resuming needs a broker; this service has none: live from here on, as before.
          brokerless = true;
          live.noBroker = true;
        } else {
          // Asked for history the service does not keep: no retry will give it.
          refusal = `${options.name} keeps no history to start from (${status.details})`;
        }
      }
      live.ended = `${grpc.status[status.code]}${status.details ? `: ${status.details}` : ""}`;
      changed();
    });
    stream.on("error", () => {}); // the status says it
    return live;
  };

  // The registry, to see our instance leave before its stream ends.
  const following = (async () => {
    try {
      for await (const instances of discovery.watch(options.name, { signal: stop.signal })) {
        members = new Set(instances.map((i) => i.addr));
        changed();
      }
    } catch {
      // Without the registry there is no handover; streams still re-subscribe when they end.
    }
  })();
  const abort = () => {
    stop.abort();
    changed();
  };
  signal?.addEventListener("abort", abort);

  let current: Live | undefined;
  let next: Live | undefined;
  /** Streams handed over from, until they end (see LEAVING_STREAM_MAX_MS). */
  const leaving = new Map<Live, ReturnType<typeof setTimeout>>();
  let gapSince = 0;
  let retryAt = 0;
  let handoverAt = 0;
  try {
    while (!signal?.aborted) {
      while (queue.length > 0) yield queue.shift()!;
      if (signal?.aborted) break;
      if (!current && Date.now() >= retryAt) current = open();
      if (current?.ready && current.peer && members) {
        if (members.has(current.peer)) current.listed = true;
        else if (current.listed && !next && Date.now() >= handoverAt) next = open(); // leaving: move first
      }
      if (next?.ready && next.peer && members && !members.has(next.peer)) {
        // The resolver had not dropped the leaving instance yet and picked it again: try again shortly.
        next.stream.cancel();
        next = undefined;
        handoverAt = Date.now() + HANDOVER_RETRY_MS;
        continue;
      }
      for (const [old, timer] of leaving) {
        if (old.ended !== undefined) (clearTimeout(timer), leaving.delete(old));
      }
      if (current && next?.ready) {
        // The new stream is routed. The old one stays until its instance ends it: what was routed
        // there just before the new one was ready still comes (and is passed on once).
        const from = current.peer ?? "";
        const old = current;
        leaving.set(old, setTimeout(() => old.stream.cancel(), LEAVING_STREAM_MAX_MS));
        current = next;
        next = undefined;
        options.onHandover?.({ from, to: current.peer ?? "" });
      }
      if (current?.ready && gapSince) {
        options.onResumed?.({ gapMs: Date.now() - gapSince, recovered: current.recovered });
        gapSince = 0;
      }
      if (current?.ready && !current.ended) backoff.reset();
      if (refusal) throw new Error(refusal);
      if (current?.ended !== undefined && current.noBroker && !next) {
        current = undefined; // at once, live only
        continue;
      }
      if (current?.ended !== undefined) {
        const reason = current.ended;
        // A successor already on its way: wait for it rather than back off and open a third.
        const retryInMs = next ? 0 : backoff.next();
        current = next;
        next = undefined;
        if (!gapSince) gapSince = Date.now();
        options.onGap?.({ reason, retryInMs });
        retryAt = Date.now() + retryInMs;
        continue;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
        const at = current ? handoverAt : retryAt;
        if (at > Date.now()) void sleep(at - Date.now(), stop.signal).then(resolve, resolve);
      });
      wake = () => {};
    }
  } finally {
    signal?.removeEventListener("abort", abort);
    stop.abort();
    current?.stream.cancel();
    next?.stream.cancel();
    for (const [old, timer] of leaving) {
      clearTimeout(timer);
      old.stream.cancel();
    }
    await following;
    client.close();
    closeResolver();
    release();
    etcd.close();
  }
}

/** The last `size` ids seen: `add` is false for one seen already. */
class RecentIds {
  readonly #ids = new Set<string>();
  readonly #size: number;

  constructor(size: number) {
    this.#size = size;
  }

  add(id: string): boolean {
    if (this.#ids.has(id)) return false;
    this.#ids.add(id);
    if (this.#ids.size > this.#size) this.#ids.delete(this.#ids.values().next().value!);
    return true;
  }
}
