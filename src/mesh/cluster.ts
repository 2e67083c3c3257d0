/**
 * One instance's part in the cluster: publishes which recipients it holds subscribers of, keeps
 * the whole directory and the membership (our own discovery of this service) in memory, and
 * forwards notifications to the peers that hold subscribers of their recipient.
 */
import type * as grpc from "@grpc/grpc-js";
import type { Etcd3 } from "etcd3";
import { formatDuration } from "@notification-server/timing";
import type { Logger } from "../_util/logger.ts";
import { EtcdDiscovery, type ResyncReason, type ServiceInstance } from "@notification-server/registry";
import type { PeerRouting, Reach } from "./routing.ts";
import { DirectoryPublisher, directoryRoot, DirectoryView } from "./directory.ts";
import { PeerLinks } from "./peer_links.ts";
import type { PeerProver } from "./peer_secret.ts";

/** Options for {@link Cluster}. */
export interface ClusterOptions {
  /** The service name (membership and directory are per service). */
  name: string;
  /** This instance's id, as registered. */
  instanceId: string;
  /** Registration prefix (membership). */
  registryPrefix: string;
  /** Directory prefix, apart from the registration prefix. */
  directoryPrefix: string;
  /** A peer that has not answered a forwarded notification by then counts 0 for it. */
  peerTimeoutMs: number;
  credentials: grpc.ChannelCredentials;
  /** How each peer stream proves membership (peer_secret.ts). */
  prover: PeerProver;
  /** With TLS: the name in every instance's certificate (peers are dialed by address). */
  serverName?: string;
  logger: Logger;
  /** The registration, whose lease the directory keys live under (written again under each new one). */
  registration: { onLeaseChange(listener: (leaseId: string) => void): () => void };
  /** Told how many peers each forwarded notification went to (for metrics). */
  onForwarded?: (peers: number) => void;
  /** Told when the membership or directory watch loses its stream or resyncs (for metrics). */
  onResync?: (watch: "membership" | "directory", event: { reason: ResyncReason; attempts?: number }) => void;
}

/** The outermost hop: every other instance of the service. */
export class Cluster implements PeerRouting {
  readonly publisher: DirectoryPublisher;
  readonly view: DirectoryView;
  readonly #links: PeerLinks;
  readonly #self: string;
  readonly #discovery: EtcdDiscovery;
  readonly #name: string;
  readonly #peerTimeoutMs: number;
  readonly #abort = new AbortController();
  readonly #membership: Promise<void>;
  readonly #onForwarded: (peers: number) => void;
  readonly #unfollowLease: () => void;

  /**
   * Resolves once this instance can route: the directory view and the membership are loaded, and
   * every member holding recipients is linked (its stream open and our membership proven, or it
   * failed within the peer timeout). Until then a Send here could miss their subscribers.
   */
  readonly ready: Promise<void>;
  /** The live members (id -> address), as the membership watch last said. */
  #members = new Map<string, string>();
  #leaving = false;

  constructor(client: Etcd3, options: ClusterOptions) {
    const root = directoryRoot(options.directoryPrefix, options.name);
    const self = this.#self = options.instanceId;
    this.#name = options.name;
    this.#peerTimeoutMs = options.peerTimeoutMs;
    this.#onForwarded = options.onForwarded ?? (() => {});
    // Membership: the registered instances of this service, from our own discovery.
    const discovery = this.#discovery = new EtcdDiscovery(client, {
      prefix: options.registryPrefix,
      onResync: (event) => options.onResync?.("membership", event),
      retryFirstRead: true,
    });
    this.publisher = new DirectoryPublisher(client, {
      root,
      instanceId: options.instanceId,
      logger: options.logger,
      // The members at the revision that publishes a recipient: whom its barrier must reach.
      alsoRead: discovery.ranges(options.name),
    });
    this.view = new DirectoryView(client, {
      root,
      logger: options.logger,
      onResync: (event) => options.onResync?.("directory", event),
      onInstanceGone: (id) => this.#links?.forget(id),
    });
    this.#unfollowLease = options.registration.onLeaseChange((lease) => this.publisher.setLease(lease));
    const loading = performance.now();
    void this.view.ready.then(() =>
      options.logger.info(
        `Recipient directory loaded: ${this.view.size.recipients} recipients in ${
          formatDuration(performance.now() - loading)
        }`,
        { recipients: this.view.size.recipients, duration_ms: Math.round(performance.now() - loading) },
      )
    );
    const links = this.#links = new PeerLinks({
      credentials: options.credentials,
      timeoutMs: options.peerTimeoutMs,
      prover: options.prover,
      serverName: options.serverName,
    });
    let membershipLoaded!: () => void;
    const membership = new Promise<void>((resolve) => (membershipLoaded = resolve));
    this.ready = Promise.all([this.view.ready, membership]).then(() => this.#linkHolders());
    this.#membership = (async () => {
      try {
        for await (const instances of discovery.watch(options.name, { signal: this.#abort.signal })) {
          this.#members = peersOf(instances, self);
          links.setMembers(this.#members, (id) => this.view.holds(id));
          membershipLoaded();
        }
      } catch (error) {
        if (!this.#abort.signal.aborted) {
          options.logger.error(`Membership watch ended: ${(error as Error).message}`);
        }
      }
    })();
  }

  /**
   * Publishes `recipient`, then waits until every member's view has it (a barrier over the peer
   * links), so a Send to any instance right after reaches the new subscriber.
   */
  async subscribed(recipient: string): Promise<void> {
    const { revision, read } = await this.publisher.add(recipient);
    // Every instance registered before `revision` must be in the barrier (one registering later
    // reads a directory that holds the key already). The membership watch may lag, so the members
    // are those the publishing transaction read at its own revision; only when the key was there
    // already (no write of ours) are they read from etcd here. This is the Subscribe path.
    let members: Map<string, string>;
    try {
      members = read
        ? peersOf(this.#discovery.instancesIn(this.#name, read), this.#self)
        : await this.#readMembers();
    } catch {
      return; // etcd unreachable: ready as far as this instance can tell
    }
    await this.#links.barrier(revision, members);
  }

  /**
   * Opens the link to every member that holds recipients and proves membership on it, so that the
   * first Sends do not wait for either: a barrier at etcd's first revision is answered as soon as
   * the peer has checked the proof (on the wire, revision 0 means "not a barrier").
   */
  async #linkHolders(): Promise<void> {
    const holders = new Map([...this.#members].filter(([id]) => this.view.holds(id)));
    await this.#links.barrier(1n, holders);
  }

  /** The registered peers (id -> address), read from etcd now. */
  async #readMembers(): Promise<Map<string, string>> {
    return peersOf(await this.#discovery.list(this.#name), this.#self);
  }

  /** The peers' signing secret changed: open peer streams prove membership again with it. */
  reprove(): void {
    this.#links.reprove();
  }

  /** For the Forward handler: resolves once this instance's view reflects `revision` (bounded). */
  reached(revision: bigint): Promise<boolean> {
    return this.view.reached(revision, this.#peerTimeoutMs);
  }

  /**
   * Tells `onEntry` of every other instance's directory entry now and of every change from now on
   * (synchronously, before the view's revision moves on). Workers count them to skip Sends nobody
   * else holds.
   */
  followPeers(onEntry: (recipient: string, present: boolean) => void): void {
    for (const [recipient, instance] of this.view.entries()) {
      if (instance !== this.#self) onEntry(recipient, true);
    }
    this.view.onEntry = (recipient, instance, present) => {
      if (instance !== this.#self) onEntry(recipient, present);
    };
  }

  unsubscribed(recipient: string): void {
    this.publisher.remove(recipient);
  }

  /** To the other instances holding `recipient` when `reach` is the cluster (a peer's Forward never is). */
  route(recipient: string, notification: Uint8Array, reach: Reach): Promise<number> {
    return reach === "cluster" ? this.#forward(recipient, notification) : Promise.resolve(0);
  }

  /**
   * This instance is leaving (deregistered, draining): Sends still reaching it go to every peer.
   * Its view is no longer waited for by anyone (a new subscriber's barrier covers the registered
   * instances only), so it may not yet have the new place of a subscriber that just moved away:
   * routed by that view, such Sends were lost.
   */
  leave(): void {
    this.#leaving = true;
  }

  async #forward(recipient: string, notification: Uint8Array): Promise<number> {
    const holders = this.#leaving ? this.#links.members() : [...this.view.instancesFor(recipient)];
    const peers = holders.filter((id) => id !== this.#self);
    if (peers.length === 0) return 0;
    this.#onForwarded(peers.length);
    const counts = await Promise.all(peers.map((id) => this.#links.forward(id, recipient, notification)));
    return counts.reduce((a, b) => a + b, 0);
  }

  async close(): Promise<void> {
    this.#unfollowLease();
    this.#abort.abort();
    this.publisher.close();
    this.#links.close();
    await Promise.all([this.view.close(), this.#membership]);
  }
}

/** Every instance but `self`, by id. */
function peersOf(instances: readonly ServiceInstance[], self: string): Map<string, string> {
  return new Map(instances.filter((i) => i.id !== self).map((i) => [i.id, i.addr]));
}
