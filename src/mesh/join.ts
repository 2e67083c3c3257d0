/**
 * The mesh's step of the lifecycle (app.ts step 5, through mode.ts's `join`): the peers' secret, the
 * cluster (membership, recipient directory, peer links), and the wait until this instance can route,
 * all undone on the lifecycle's stack.
 */
import { formatDuration, sleep, untilAborted } from "@notification-server/timing";
import {
  describeEtcdError,
  EtcdRegistrar,
  EtcdUnavailableError,
  type ServiceInstance,
} from "@notification-server/registry";
import type { Etcd3 } from "etcd3";
import type { Config } from "../config/mod.ts";
import type { Logger } from "../_util/logger.ts";
import type { Metrics } from "../metrics/mod.ts";
import { peerCredentials } from "../transport/tls.ts";
import { Cluster } from "./cluster.ts";
import { PeerSecret, peerSecretKey } from "./peer_secret.ts";

/** How long stopping waits for the cluster's etcd watches to be cancelled before closing etcd anyway. */
const CLUSTER_CLOSE_GRACE_MS = 200;

/** What the join hands its results to: the mesh's side on the main thread (mode.ts). */
export interface MeshServing {
  /** Turns Cluster/Forward on for callers proving membership with one of `secrets`. */
  setPeerSecrets(secrets: readonly string[]): void;
  /** Delivery to the other instances from now on. */
  setCluster(cluster: Cluster): void;
}

/**
 * Step 5: reads (or creates) the peers' secret in etcd, starts the cluster and hands it to the
 * serving threads; both undone on `steps`. Without a secret (TLS without a peer CA, or an etcd user
 * that may not read it) forwarding stays off and each instance delivers to its own subscribers.
 */
export async function joinMesh(steps: AsyncDisposableStack, parts: {
  config: Config;
  etcd: Etcd3;
  instance: ServiceInstance;
  serving: MeshServing;
  registrar: EtcdRegistrar;
  metrics?: Metrics;
  log: Logger;
  /** The start-up budget (etcd.startup-timeout) the wait for the views counts against. */
  deadline?: number;
  signal: AbortSignal;
}): Promise<Cluster | undefined> {
  const { config, etcd, serving, metrics, log } = parts;
  const peers = peerCredentials(config.server.tls);
  // Forward is refused to anyone who cannot prove membership; the secret lives in etcd.
  // The cluster proves membership again with a new signing secret as soon as it is seen.
  const rotation: { cluster?: Cluster } = {};
  const secret = "off" in peers ? peers.off : await PeerSecret.load(
    etcd,
    config.server.name,
    (secrets) => {
      serving.setPeerSecrets(secrets);
      rotation.cluster?.reprove();
    },
  ).catch((error: Error) =>
    `cannot read or create the peers' secret at ${peerSecretKey(config.server.name)} (${
      describeEtcdError(error)
    }): give the instances' etcd user readwrite on that key`
  );
  if (typeof secret === "string" || "off" in peers) {
    log.warn(`Cluster forwarding is off (each instance delivers to its own subscribers only): ${secret}`);
    return undefined;
  }
  steps.defer(() => secret.close());
  const cluster = rotation.cluster = new Cluster(etcd, {
    prover: secret,
    name: config.server.name,
    instanceId: parts.instance.id,
    registryPrefix: config.etcd.prefix,
    directoryPrefix: config.etcd.directoryPrefix,
    peerTimeoutMs: config.server.peerTimeoutMs,
    credentials: peers.credentials,
    serverName: peers.serverName,
    logger: log,
    registration: parts.registrar,
    onForwarded: (n) => metrics?.notificationsForwarded.inc(n),
    onResync: (watch, event) => {
      if (event.attempts !== undefined) return;
      metrics?.etcdWatchResyncs.inc({ watch, reason: event.reason });
      // A dropped stream resumes where it was; these two cost a full read of the range.
      if (event.reason === "cancelled" || event.reason === "too_large") {
        log.warn(
          `The ${watch} watch re-reads etcd: ${
            event.reason === "cancelled"
              ? "etcd cancelled it (compacted past it)"
              : "a response was too large to receive"
          }`,
          { watch, reason: event.reason },
        );
      }
    },
  });
  // etcd is closed right after, so its watch cancels need no confirmation: a frozen etcd would hold
  // the exit up to a second per watch.
  steps.defer(() => Promise.race([cluster.close(), sleep(CLUSTER_CLOSE_GRACE_MS)]));
  metrics?.setDirectory(() => cluster.view.size.recipients);
  // Route before serving: the instance registers, and answers SERVING, only once it knows who
  // holds which recipient and who the peers are; until then a Send through it would miss them.
  await untilRouted(cluster, parts.deadline, parts.signal, config.etcd.startupTimeoutMs);
  serving.setCluster(cluster);
  return cluster;
}

/** Waits for the cluster's views, within the start-up budget; returns at once when stopped. */
async function untilRouted(
  cluster: Cluster,
  deadline: number | undefined,
  signal: AbortSignal,
  budgetMs: number,
): Promise<void> {
  const budget = deadline === undefined ? undefined : AbortSignal.timeout(Math.max(0, deadline - Date.now()));
  try {
    await untilAborted(cluster.ready, budget ? AbortSignal.any([signal, budget]) : signal);
  } catch {
    if (signal.aborted) return; // stopped: the stack undoes the start
    throw new EtcdUnavailableError(
      `The recipient directory and membership were not loaded within etcd.startup-timeout (${
        formatDuration(budgetMs)
      }, ${cluster.view.size.recipients} recipients read so far): check etcd, or raise etcd.startup-timeout`,
    );
  }
}
