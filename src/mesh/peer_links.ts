/**
 * The sending side of the cluster: one long-lived `Cluster/Forward` stream per peer, carrying
 * batches one way and delivery counts back (forward_service.ts is the receiving side).
 *
 * - Batching: everything forwarded to a peer before the microtask queue drains goes out as one message.
 * - Order: a peer delivers the items of its stream one after another, so notifications from one
 *   sender reach each recipient's streams in the order they were sent.
 * - Bounded: a peer that does not answer within `timeoutMs` counts 0 for that notification; a
 *   peer that cannot be reached (connection refused, stream failed) counts 0 at once.
 */
import * as grpc from "@grpc/grpc-js";
import { Backoff } from "@notification-server/timing";
import { services } from "../transport/protos.ts";
import { Outbox } from "../_util/outbox.ts";
import { CHALLENGE_HEADER, type PeerProver } from "./peer_secret.ts";
import { type Ack, type PeerItem, toWire, type WireItem } from "./peer_wire.ts";

type ForwardStream = grpc.ClientDuplexStream<{ items: WireItem[]; proof?: string }, { acks: Ack[] }>;

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
  /** The open stream's challenge, once its response headers came; items wait for it. */
  #nonce?: string;
  #held: WireItem[] = [];
  /** The secret the open stream proved membership with. */
  #provenWith?: string;
  /** Everything forwarded before the microtask queue drains leaves as one message. */
  readonly #outbox = new Outbox<WireItem>((items) => this.#flush(items), queueMicrotask);
  /** Until when (ms) a broken link answers 0 at once instead of reconnecting. */
  #downUntil = 0;
  #seq = 0;

  readonly #id: string;
  readonly #prover: PeerProver;
  /** Where the link dials. */
  readonly addr: string;

  constructor(options: {
    id: string;
    addr: string;
    credentials: grpc.ChannelCredentials;
    timeoutMs: number;
    prover: PeerProver;
    serverName?: string;
  }) {
    const { id, addr, credentials, timeoutMs, prover, serverName } = options;
    this.#id = id;
    this.addr = addr;
    this.#prover = prover;
    const { ClusterService } = services();
    this.#client = new ClusterService(addr, credentials, {
      ...(serverName ? { "grpc.ssl_target_name_override": serverName } : {}),
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 2_000,
    }) as unknown as grpc.Client & Record<string, CallableFunction>;
    this.#timeoutMs = timeoutMs;
  }

  forward(recipient: string, notification: Uint8Array): Promise<number> {
    return this.#send({ kind: "notification", recipient, notification });
  }

  /** Resolves once the peer's directory view has applied `revision` (or it cannot say). */
  async barrier(revision: bigint): Promise<void> {
    await this.#send({ kind: "barrier", revision });
  }

  #send(item: PeerItem): Promise<number> {
    if (Date.now() < this.#downUntil) return Promise.resolve(0);
    const stream = this.#open();
    if (!stream) return Promise.resolve(0);
    const seq = ++this.#seq;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#settle(seq, 0), this.#timeoutMs);
      this.#pending.set(seq, { resolve, timer });
      this.#outbox.push(toWire(seq, item));
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
    const stream = this.#client.forward(new grpc.Metadata()) as ForwardStream;
    this.#nonce = undefined;
    this.#provenWith = undefined;
    this.#held = [];
    // The peer opens with a challenge; what was forwarded meanwhile leaves with the proof.
    stream.on("metadata", (metadata: grpc.Metadata) => {
      const nonce = metadata.get(CHALLENGE_HEADER)[0];
      if (this.#stream !== stream || this.#nonce !== undefined) return;
      if (typeof nonce !== "string" || nonce === "") return broken();
      this.#nonce = nonce;
      const held = this.#held;
      this.#held = [];
      this.#write(held);
    });
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

  /** Proves membership again on the open stream if the signing secret changed (a rotation). */
  reprove(): void {
    if (this.#stream && this.#nonce !== undefined && this.#prover.signing() !== this.#provenWith) {
      this.#write([]);
    }
  }

  #flush(items: WireItem[]): void {
    if (!this.#stream) {
      for (const item of items) this.#settle(item.seq, 0);
      return;
    }
    if (this.#nonce === undefined) this.#held.push(...items);
    else this.#write(items);
  }

  /** Writes a batch, with a proof when the stream has none under the current signing secret. */
  #write(items: WireItem[]): void {
    const signing = this.#prover.signing();
    if (signing === this.#provenWith) {
      this.#stream!.write({ items });
      return;
    }
    this.#provenWith = signing;
    this.#stream!.write({ items, proof: this.#prover.proof(signing, this.#id, this.#nonce!) });
  }

  /** Ends the stream; everything in flight counts 0. */
  #fail(): void {
    const stream = this.#stream;
    this.#stream = undefined;
    this.#held = [];
    stream?.cancel();
    for (const seq of [...this.#pending.keys()]) this.#settle(seq, 0);
    this.#outbox.clear();
  }

  #settle(seq: number, delivered: number): void {
    const waiting = this.#pending.get(seq);
    if (!waiting) return;
    this.#pending.delete(seq);
    clearTimeout(waiting.timer);
    waiting.resolve(delivered);
  }
}

/**
 * Links to every peer by instance id, opened on first use. A peer that deregistered stays
 * reachable while it still holds recipients (it drains, and its subscribers are moving away:
 * until they have, Sends must still reach them there); its link closes once it holds none.
 */
export class PeerLinks {
  readonly #links = new Map<string, PeerLink>();
  readonly #addrs = new Map<string, string>();
  /** Deregistered peers that still held recipients when they left (id -> address). */
  readonly #departed = new Map<string, string>();
  readonly #credentials: grpc.ChannelCredentials;
  readonly #timeoutMs: number;
  readonly #serverName?: string;
  readonly #prover: PeerProver;

  constructor(options: {
    credentials: grpc.ChannelCredentials;
    timeoutMs: number;
    /** How a link proves it is an instance (peer_secret.ts). */
    prover: PeerProver;
    serverName?: string;
  }) {
    this.#credentials = options.credentials;
    this.#timeoutMs = options.timeoutMs;
    this.#prover = options.prover;
    this.#serverName = options.serverName;
  }

  /** The signing secret changed: every open link proves membership again with it. */
  reprove(): void {
    for (const link of this.#links.values()) link.reprove();
  }

  /** The ids of every peer that may hold subscribers: the live members, and departed ones still holding. */
  members(): string[] {
    return [...this.#addrs.keys(), ...this.#departed.keys()];
  }

  /**
   * The live members (id -> address), from discovery. One that left stays reachable while
   * `holding(id)` says it still holds recipients (until {@link forget}); other links are closed.
   */
  setMembers(members: ReadonlyMap<string, string>, holding: (id: string) => boolean = () => false): void {
    for (const [id, addr] of this.#addrs) {
      if (!members.has(id) && holding(id)) this.#departed.set(id, addr);
    }
    for (const id of members.keys()) this.#departed.delete(id);
    this.#addrs.clear();
    for (const [id, addr] of members) this.#addrs.set(id, addr);
    for (const [id, link] of this.#links) {
      if (this.#addressOf(id) !== link.addr) {
        link.close();
        this.#links.delete(id);
      }
    }
  }

  /** A departed peer holds no recipients any more: its link closes. Members are not affected. */
  forget(id: string): void {
    if (!this.#departed.delete(id)) return;
    this.#links.get(id)?.close();
    this.#links.delete(id);
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

  #addressOf(id: string): string | undefined {
    return this.#addrs.get(id) ?? this.#departed.get(id);
  }

  #link(id: string): PeerLink | undefined {
    const addr = this.#addressOf(id);
    if (!addr) return undefined;
    let link = this.#links.get(id);
    if (!link) {
      link = new PeerLink({
        id,
        addr,
        credentials: this.#credentials,
        timeoutMs: this.#timeoutMs,
        prover: this.#prover,
        serverName: this.#serverName,
      });
      this.#links.set(id, link);
    }
    return link;
  }

  close(): void {
    for (const link of this.#links.values()) link.close();
    this.#links.clear();
  }
}
