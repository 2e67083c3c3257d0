/**
 * One instance's part in the cluster: publishes which recipients it holds subscribers of, keeps
 * the whole directory and the membership (our own discovery of this service) in memory, and
 * forwards notifications to the peers that hold subscribers of their recipient.
 */
import type * as grpc from "@grpc/grpc-js";
import type { Etcd3 } from "etcd3";
import { formatDuration } from "../duration.ts";
import type { Logger } from "../logger.ts";
import { decodeRecord, serviceKey } from "../registry/codec.ts";
import { RevisionGate, watchRanges } from "../registry/range_watch.ts";
import type { Routing } from "../notification/service.ts";
import { DirectoryPublisher, directoryRoot, DirectoryView } from "./directory.ts";
import { PeerLinks } from "./peers.ts";

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
  logger: Logger;
  /** Told how many peers each forwarded notification went to (for metrics). */
  onForwarded?: (peers: number) => void;
}

/** Routing for the notification service across every instance of the service. */
export class Cluster implements Routing {
  readonly publisher: DirectoryPublisher;
  readonly view: DirectoryView;
  readonly #links: PeerLinks;
  readonly #self: string;
  readonly #members = new RevisionGate();
  readonly #peerTimeoutMs: number;
  readonly #abort = new AbortController();
  readonly #membership: Promise<void>;
  readonly #onForwarded: (peers: number) => void;

  constructor(client: Etcd3, options: ClusterOptions) {
    const root = directoryRoot(options.directoryPrefix, options.name);
    const self = this.#self = options.instanceId;
    this.#peerTimeoutMs = options.peerTimeoutMs;
    this.#onForwarded = options.onForwarded ?? (() => {});
    this.publisher = new DirectoryPublisher(client, {
      root,
      instanceId: options.instanceId,
      logger: options.logger,
    });
    this.view = new DirectoryView(client, { root, logger: options.logger });
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
    });
    // Membership: the registered instances of this service, with the revision the view reflects.
    /** By registry key: a peer's id and address. */
    const members = new Map<string, { id: string; addr: string }>();
    const registry = options.registryPrefix;
    const gate = this.#members;
    this.#membership = (async () => {
      const updates = watchRanges(client, [{ prefix: `${serviceKey(registry, options.name)}/` }], {
        signal: this.#abort.signal,
      });
      const apply = (key: string, value: string | undefined) => {
        let instance;
        try {
          instance = value === undefined ? undefined : decodeRecord(registry, options.name, key, value);
        } catch { /* malformed: discovery warns about it */ }
        if (instance && instance.id !== self) members.set(key, { id: instance.id, addr: instance.addr });
        else members.delete(key);
      };
      try {
        for await (const update of updates) {
          if (update.kind === "reset") {
            members.clear();
            for (const [key, value] of update.entries) apply(key, value);
          } else {
            for (const { key, value } of update.changes) apply(key, value);
          }
          links.setMembers(new Map([...members.values()].map((m) => [m.id, m.addr])));
          gate.advance(update.revision);
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
    const revision = await this.publisher.add(recipient);
    // Every instance registered before `revision` must be in the barrier; later ones read a
    // directory that holds the key already.
    await this.#members.reached(revision, this.#peerTimeoutMs);
    await this.#links.barrier(revision);
  }

  /** For the Forward handler: resolves once this instance's view reflects `revision` (bounded). */
  reached(revision: bigint): Promise<boolean> {
    return this.view.reached(revision, this.#peerTimeoutMs);
  }

  unsubscribed(recipient: string): void {
    this.publisher.remove(recipient);
  }

  async forward(recipient: string, notification: Uint8Array): Promise<number> {
    const peers = [...this.view.instancesFor(recipient)].filter((id) => id !== this.#self);
    if (peers.length === 0) return 0;
    this.#onForwarded(peers.length);
    const counts = await Promise.all(peers.map((id) => this.#links.forward(id, recipient, notification)));
    return counts.reduce((a, b) => a + b, 0);
  }

  async close(): Promise<void> {
    this.#abort.abort();
    this.#members.close();
    this.publisher.close();
    this.#links.close();
    await Promise.all([this.view.close(), this.#membership]);
  }
}
