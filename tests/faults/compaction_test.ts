/**
 * etcd compacts its history (every production etcd runs auto-compaction), so a watch that resumes
 * after a reconnect can find its revision gone. etcd then cancels the watch; etcd3 forgets the
 * watcher, and cancelling it once more made etcd3 throw inside its stream handler and end the
 * whole process, registered. These tests compact past our watches, then cut etcd away.
 */
import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { EtcdDiscovery } from "../../packages/registry/src/etcd_discovery.ts";
import { createEtcdClient } from "../../packages/registry/src/etcd_client.ts";
import { PRIVATE_ETCD_ONLY, startEtcd } from "@notification-server/registry/testing";
import { eventually } from "../helpers/grpc.ts";
import { rawClient, readRecord, scopedClient } from "../helpers/kv.ts";
import { ServiceProcess } from "../helpers/service.ts";

/** Writes unrelated keys so the revision moves past every watch, then compacts all history. */
async function compactEverything(kv: Etcd3): Promise<string> {
  let revision = "0";
  for (let i = 0; i < 5; i++) {
    revision = (await kv.put(`/unrelated/${i}`).value("x").exec()).header.revision;
  }
  await kv.kv.compact({ revision, physical: true });
  return revision;
}

Deno.test(
  "etcd restarted after a compaction: the service neither crashes nor loses its record",
  PRIVATE_ETCD_ONLY,
  async () => {
    await using etcd = await startEtcd();
    await using svc = await ServiceProcess.start({ endpoints: etcd.endpoints, leaseTtl: "10s" });
    const key = svc.key;
    let kv = rawClient(etcd.endpoints);
    try {
      await compactEverything(kv);
      kv.close();
      // Twice: the second reconnect resumes the watch that replaced the cancelled one.
      for (let round = 0; round < 2; round++) {
        await etcd.restart({ crash: true });
        kv = rawClient(etcd.endpoints);
        await eventually(
          () => readRecord(kv, key).then((r) => r && r.ttl > 0),
          10_000,
          `record live\n${svc.lines.join("\n")}`,
        );
        await compactEverything(kv);
        kv.close();
      }
      kv = rawClient(etcd.endpoints);
      // Let the reconnected watches see their compaction before judging.
      await new Promise((r) => setTimeout(r, 3_000));
      assert.equal(svc.exited, false, `the service exited:\n${svc.lines.join("\n")}`);
      assert.ok(!svc.lines.some((l) => /Uncaught|Failed to find watcher/.test(l)), svc.lines.join("\n"));
      // Its own-key watch still repairs an outside delete.
      await kv.delete().key(key).exec();
      await eventually(
        () => readRecord(kv, key).then((r) => r && r.ttl > 0),
        5_000,
        `delete repaired after compaction\n${svc.lines.join("\n")}`,
      );
      svc.signal("SIGTERM");
      assert.equal((await svc.status).code, 0, svc.lines.join("\n"));
      assert.equal(await readRecord(kv, key), undefined, "deregistered on SIGTERM");
    } finally {
      kv.close();
    }
  },
);

Deno.test(
  "discovery watch behind a compaction: no crash, and it still sees every change",
  PRIVATE_ETCD_ONLY,
  async () => {
    await using etcd = await startEtcd();
    const client = createEtcdClient({ endpoints: etcd.endpoints, dialTimeoutMs: 2_000 });
    const abort = new AbortController();
    const snapshots: number[] = [];
    const discovery = new EtcdDiscovery(client);
    const watching = (async () => {
      for await (const s of discovery.watch("svc", { signal: abort.signal })) snapshots.push(s.length);
    })();
    try {
      await eventually(() => snapshots.length > 0, 5_000, "first snapshot");
      await client.put("/services/svc/a").value('{"Op":0,"Addr":"127.0.0.1:1"}').exec();
      await eventually(() => snapshots.at(-1) === 1, 5_000, "a seen");
      await compactEverything(client);
      // SIGKILL, not a graceful stop: this process keeps its connection (see packages/registry/testing/etcd.ts).
      await etcd.restart({ crash: true });
      // While the watch is away, a change it must not miss (the compacted resume cannot replay it).
      using writer = scopedClient(etcd.endpoints);
      await writer.put("/services/svc/b").value('{"Op":0,"Addr":"127.0.0.1:2"}').exec();
      await compactEverything(writer);
      await eventually(() => snapshots.at(-1) === 2, 10_000, `b seen after compaction: ${snapshots}`);
      using after = scopedClient(etcd.endpoints);
      await after.delete().key("/services/svc/a").exec();
      await eventually(() => snapshots.at(-1) === 1, 5_000, `a's delete seen: ${snapshots}`);
    } finally {
      abort.abort();
      await watching;
      client.close();
    }
  },
);
