/**
 * Notifications between instances: one long-lived `Cluster/Forward` stream per peer, carrying
 * batches one way and delivery counts back.
 *
 * - Batching: everything forwarded to a peer before the microtask queue drains goes out as one message.
 * - Order: a peer delivers the items of its stream one after another, so notifications from one
 *   sender reach each recipient's streams in the order they were sent.
 * - Bounded: a peer that does not answer within `timeoutMs` counts 0 for that notification; a
 *   peer that cannot be reached (connection refused, stream failed) counts 0 at once.
 */
import * as grpc from "@grpc/grpc-js";
import { Backoff } from "../../packages/registry/src/backoff.ts";
import { forwardedProblem, services } from "../transport/protos.ts";
import { sleep } from "../../packages/registry/src/backoff.ts";
import { PEER_HEADER, verifyPeer } from "./peer_secret.ts";
import type { StreamTracker } from "../transport/streams.ts";

interface Forwarded {
  seq: number;
  recipient: string;
  notification: Uint8Array;
  barrierRevision?: number;
}
interface Ack {
  seq: number;
  delivered: number;
}
const EMPTY = new Uint8Array(0);

type ForwardStream = grpc.ClientDuplexStream<{ items: Forwarded[] }, { acks: Ack[] }>;

/** The sending side of one peer. */
class PeerLink {
  readonly #client: grpc.Client & Record<string, CallableFunction>;
  readonly #timeoutMs: number;
  readonly #pending = new Map<
    number,
    { resolve: (delivered: number) => void; timer: ReturnType<typeof setTimeout> }
  >();
  readonly #backoff = new Backoff({ initialMs: 100, maxMs: 2_000 });
  #stream?: ForwardStream;
  #outbox: Forwarded[] = [];
  #flushScheduled = false;
  /** Until when (ms) a broken link answers 0 at once instead of reconnecting. */
  #downUntil = 0;
  #seq = 0;

  readonly #credential: () => string;

  constructor(
    addr: string,
    credentials: grpc.ChannelCredentials,
    timeoutMs: number,
    credential: () => string,
    serverName?: string,
  ) {
    this.#credential = credential;
    const { Cluster } = services();
    this.#client = new Cluster(addr, credentials, {
      ...(serverName ? { "grpc.ssl_target_name_override": serverName } : {}),
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 2_000,
    }) as unknown as grpc.Client & Record<string, CallableFunction>;
    this.#timeoutMs = timeoutMs;
  }

  forward(recipient: string, notification: Uint8Array): Promise<number> {
    return this.#send({ recipient, notification });
  }

  /** Resolves once the peer's directory view has applied `revision` (or it cannot say). */
  async barrier(revision: bigint): Promise<void> {
    await this.#send({ recipient: "", notification: EMPTY, barrierRevision: Number(revision) });
  }

  #send(item: Omit<Forwarded, "seq">): Promise<number> {
    if (Date.now() < this.#downUntil) return Promise.resolve(0);
    const stream = this.#open();
    if (!stream) return Promise.resolve(0);
    const seq = ++this.#seq;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#settle(seq, 0), this.#timeoutMs);
      this.#pending.set(seq, { resolve, timer });
      this.#outbox.push({ seq, ...item });
      if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        queueMicrotask(() => this.#flush());
      }
    });
  }

  close(): void {
    this.#fail();
    this.#client.close();
  }

  #open(): ForwardStream | undefined {
    if (this.#stream) return this.#stream;
    const state = this.#client.getChannel().getConnectivityState(true);
    if (state === grpc.connectivityState.TRANSIENT_FAILURE) {
      // Connection refused or the like: skip at once rather than wait out the timeout.
      this.#downUntil = Date.now() + this.#backoff.next();
      return undefined;
    }
    const metadata = new grpc.Metadata();
    metadata.set(PEER_HEADER, this.#credential());
    const stream = this.#client.forward(metadata) as ForwardStream;
    stream.on("data", ({ acks }: { acks: Ack[] }) => {
      this.#backoff.reset();
      for (const ack of acks) this.#settle(Number(ack.seq), ack.delivered);
    });
    const broken = () => {
      if (this.#stream !== stream) return;
      this.#downUntil = Date.now() + this.#backoff.next();
      this.#fail();
    };
    stream.on("error", broken);
    stream.on("end", broken);
    this.#stream = stream;
    return stream;
  }

  #flush(): void {
    this.#flushScheduled = false;
    const items = this.#outbox;
    this.#outbox = [];
    if (items.length === 0) return;
    const stream = this.#stream;
    if (!stream) {
      for (const item of items) this.#settle(item.seq, 0);
      return;
    }
    stream.write({ items });
  }

  /** Ends the stream; everything in flight counts 0. */
  #fail(): void {
    const stream = this.#stream;
    this.#stream = undefined;
    stream?.cancel();
    for (const seq of [...this.#pending.keys()]) this.#settle(seq, 0);
    this.#outbox = [];
  }

  #settle(seq: number, delivered: number): void {
    const waiting = this.#pending.get(seq);
    if (!waiting) return;
    this.#pending.delete(seq);
    clearTimeout(waiting.timer);
    waiting.resolve(delivered);
  }
}

/** Links to every peer by instance id, opened on first use and closed when the peer leaves. */
export class PeerLinks {
  readonly #links = new Map<string, PeerLink>();
  readonly #addrs = new Map<string, string>();
  readonly #credentials: grpc.ChannelCredentials;
  readonly #timeoutMs: number;
  readonly #serverName?: string;
  readonly #credential: () => string;

  constructor(options: {
    credentials: grpc.ChannelCredentials;
    timeoutMs: number;
    /** What a link opens its stream with to prove it is an instance (peer_secret.ts). */
    credential: () => string;
    serverName?: string;
  }) {
    this.#credentials = options.credentials;
    this.#timeoutMs = options.timeoutMs;
    this.#credential = options.credential;
    this.#serverName = options.serverName;
  }

  /** The live members (id -> address), from discovery; links of departed ones are closed. */
  setMembers(members: ReadonlyMap<string, string>): void {
    for (const [id, link] of this.#links) {
      if (members.get(id) !== this.#addrs.get(id)) {
        link.close();
        this.#links.delete(id);
      }
    }
    this.#addrs.clear();
    for (const [id, addr] of members) this.#addrs.set(id, addr);
  }

  /** Forwards to peer `id`; resolves with how many of its streams took it (0 if not a member). */
  forward(id: string, recipient: string, notification: Uint8Array): Promise<number> {
    return this.#link(id)?.forward(recipient, notification) ?? Promise.resolve(0);
  }

  /**
   * Resolves once each of `members` (id -> address, read from etcd just now) has applied
   * `revision` to its directory view, each bounded by the timeout. A member the membership watch
   * has not reported yet is reached at the address given.
   */
  async barrier(revision: bigint, members: ReadonlyMap<string, string>): Promise<void> {
    await Promise.all([...members].map(([id, addr]) => {
      if (!this.#addrs.has(id)) this.#addrs.set(id, addr);
      return this.#link(id)?.barrier(revision);
    }));
  }

  #link(id: string): PeerLink | undefined {
    const addr = this.#addrs.get(id);
    if (!addr) return undefined;
    let link = this.#links.get(id);
    if (!link) {
      link = new PeerLink(addr, this.#credentials, this.#timeoutMs, this.#credential, this.#serverName);
      this.#links.set(id, link);
    }
    return link;
  }

  close(): void {
    for (const link of this.#links.values()) link.close();
    this.#links.clear();
  }
}

/** Who may call Forward here: instances of `name`, proven with one of `secrets()` (undefined: forwarding is off). */
export interface PeerAuth {
  name: string;
  secrets(): readonly string[] | undefined;
}

/** How long a peer's barrier may wait for this instance's directory view. */
const BARRIER_WAIT_MS = 5_000;

/**
 * The receiving side: `Cluster/Forward` handlers that deliver each item to local subscribers, in
 * the order they arrived, and answer with the counts (one acks message per batch).
 */
export function forwardHandlers(
  deliver: (recipient: string, notification: Uint8Array) => Promise<number>,
  reached: (revision: bigint) => Promise<unknown>,
  streams: StreamTracker,
  peers: PeerAuth,
): grpc.UntypedServiceImplementation {
  return {
    forward: (call: grpc.ServerDuplexStream<{ items: Forwarded[] }, { acks: Ack[] }>) => {
      const secrets = peers.secrets();
      if (!secrets) {
        call.emit("error", {
          code: grpc.status.UNIMPLEMENTED,
          details: "Cluster forwarding is off on this instance",
        });
        return;
      }
      if (!verifyPeer(call.metadata.get(PEER_HEADER)[0], peers.name, secrets)) {
        call.emit("error", {
          code: grpc.status.UNAUTHENTICATED,
          details: `only instances of ${JSON.stringify(peers.name)} may forward`,
        });
        return;
      }
      if (!streams.add(call as never, () => {})) {
        call.emit("error", { code: grpc.status.UNAVAILABLE, details: "Server is shutting down" });
        return;
      }
      let chain = Promise.resolve();
      let refused = false;
      call.on("data", ({ items }: { items: Forwarded[] }) => {
        chain = chain.then(async () => {
          if (refused) return;
          // Checked as a Send would be, before any of the batch reaches a subscriber.
          for (const item of items) {
            const problem = Number(item.barrierRevision ?? 0) > 0
              ? undefined
              : forwardedProblem(item.recipient, item.notification);
            if (problem) {
              refused = true;
              call.emit("error", {
                code: grpc.status.INVALID_ARGUMENT,
                details: `Forwarded notification ${item.seq} refused: ${problem}`,
              });
              return;
            }
          }
          const acks: Ack[] = [];
          for (const item of items) {
            if (Number(item.barrierRevision ?? 0) > 0) {
              // Bounded: the sender counts the barrier as failed after its timeout anyway, and a
              // wait here holds every item behind it.
              const waited = new AbortController();
              await Promise.race([
                reached(BigInt(item.barrierRevision!)),
                sleep(BARRIER_WAIT_MS, waited.signal),
              ]);
              waited.abort();
              acks.push({ seq: Number(item.seq), delivered: 0 });
            } else {
              acks.push({
                seq: Number(item.seq),
                delivered: await deliver(item.recipient, item.notification),
              });
            }
          }
          if (!call.cancelled && !call.destroyed) call.write({ acks });
        });
      });
      call.on("end", () => void chain.then(() => !refused && call.end()));
    },
  };
}
