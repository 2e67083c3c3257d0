/**
 * Discovery on a member that loses its leader. Watch streams carry etcd's require-leader flag
 * (`hasleader`), so etcd ends them instead of leaving them open and silent; the watch then keeps
 * re-reading (each read fails without quorum, and is retried with backoff) until the cluster is
 * whole again, and sees what changed meanwhile.
 */
import assert from "node:assert/strict";
import { createEtcdClient } from "../../packages/registry/src/etcd_client.ts";
import { EtcdDiscovery, type ResyncReason } from "../../packages/registry/src/etcd_discovery.ts";
import { PRIVATE_ETCD_ONLY, startEtcdCluster } from "@notification-server/registry/testing";
import { eventually } from "../helpers/grpc.ts";
import { scopedClient } from "../helpers/kv.ts";

Deno.test(
  "a watch on a member that lost its leader is ended by etcd, retried, and catches up when quorum returns",
  PRIVATE_ETCD_ONLY,
  async () => {
    await using cluster = await startEtcdCluster(3);
    const value = (port: number) => JSON.stringify({ Op: 0, Addr: `127.0.0.1:${port}` });
    const client = createEtcdClient({ endpoints: [cluster.endpoints[0]], dialTimeoutMs: 1_000 });
    const events: { reason: ResyncReason; attempts?: number }[] = [];
    const discovery = new EtcdDiscovery(client, { onResync: (e) => events.push(e) });
    const abort = new AbortController();
    const sizes: number[] = [];
    const watching = (async () => {
      for await (const s of discovery.watch("q", { signal: abort.signal })) sizes.push(s.length);
    })();
    try {
      await eventually(() => sizes.length === 1, 5_000, "first snapshot");
      await cluster.kill(1);
      await cluster.kill(2);
      // Member 0 loses its leader within an election timeout; etcd then ends require-leader watches.
      await eventually(() => events.length > 0, 10_000, "the watch noticed the lost leader");
      assert.equal(events[0].reason, "disconnected");
      await cluster.start(1);
      await cluster.start(2);
      using writer = scopedClient(cluster.endpoints.slice(1));
      await eventually(
        () => writer.put("/services/q/a").value(value(1)).exec().then(() => true),
        20_000,
        "a write once quorum is back",
      );
      await eventually(
        () => sizes.at(-1) === 1,
        20_000,
        `the write seen by the watch: ${JSON.stringify(events)}`,
      );
      const done = events.filter((e) => e.attempts !== undefined);
      console.log(
        `leader lost -> ${events.length} resync events; reads per resync: ${done.map((e) => e.attempts)}`,
      );
    } finally {
      abort.abort();
      await watching;
      client.close();
    }
  },
);
