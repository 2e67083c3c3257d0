/**
 * The recipient directory through etcd restarts, like registration: with its data kept (leases
 * and keys survive, the views resume) and wiped (each instance re-registers under a new lease and
 * writes its directory keys again).
 */
import assert from "node:assert/strict";
import type * as grpc from "@grpc/grpc-js";
import { PRIVATE_ETCD_ONLY, startEtcd } from "@notification-server/registry/testing";
import { changed, eventually, notificationClient, send } from "../helpers/grpc.ts";
import { readRecord, scopedClient } from "../helpers/kv.ts";
import { ServiceProcess } from "../helpers/service.ts";
import { peerSecretKey } from "../../src/mesh/peer_secret.ts";

Deno.test(
  "the directory survives etcd restarts, with its data kept and wiped",
  PRIVATE_ETCD_ONLY,
  async () => {
    await using etcd = await startEtcd();
    const name = `clf-${crypto.randomUUID().slice(0, 8)}`;
    await using a = await ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: "a" });
    await using b = await ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: "b" });
    const toA = notificationClient(a.addr);
    const toB = notificationClient(b.addr);
    const stream = toB.subscribe({ recipient: "x" }) as grpc.ClientReadableStream<{ title: string }>;
    const titles: string[] = [];
    stream.on("data", (n: { title: string }) => (titles.push(n.title), changed()));
    stream.on("error", () => {});
    try {
      await new Promise<void>((resolve) => stream.on("metadata", () => resolve()));
      assert.equal((await send(toA, { recipient: "x", title: "before" })).delivered, 1);
      // Written once, and left alone while nothing changes (no rewrites in the background).
      using check = scopedClient(etcd.endpoints);
      const key = `/notification-directory/${name}/x/b`;
      const version = async () => (await check.get(key).exec()).kvs[0]?.version;
      assert.equal(await version(), "1");
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await version(), "1", "the directory key is not rewritten");
      const secretBefore = await (async () => {
        using kv = scopedClient(etcd.endpoints);
        return await kv.get(peerSecretKey(name)).string();
      })();
      assert.ok(secretBefore, "the peer secret is in etcd");
      for (const wipe of [false, true]) {
        await etcd.restart({ wipe, crash: true });
        const back = Date.now();
        await eventually(
          async () =>
            (await send(toA, { recipient: "x", title: `after ${wipe ? "wipe" : "restart"}` })).delivered ===
              1,
          15_000,
          `routing from a to b's subscriber after etcd ${wipe ? "came back empty" : "restarted"}\n${
            a.lines.join("\n")
          }`,
        );
        console.log(
          `etcd ${wipe ? "wiped" : "restarted"} -> a routes to b again ${
            Date.now() - back
          } ms after etcd was back`,
        );
        // Not only a's view from before: b's key is in etcd, under b's live lease.
        using kv = scopedClient(etcd.endpoints);
        const key = `/notification-directory/${name}/x/b`;
        const record = await eventually(() => readRecord(kv, key), 15_000, `${key} written again`);
        assert.ok(record.ttl > 0, `under a live lease: ${JSON.stringify(record)}`);
        assert.equal(record.lease, (await readRecord(kv, b.key))?.lease, "the registration's lease");
      }
      assert.ok(titles.includes("after restart") && titles.includes("after wipe"), titles.join(","));
      // The peers' secret was wiped with the rest: the instances write back the one they hold, so
      // an instance started now proves membership with the same secret and reaches b's subscriber.
      using kv = scopedClient(etcd.endpoints);
      const stored = await eventually(
        async () => (await kv.get(peerSecretKey(name)).string()) ?? undefined,
        15_000,
        "the peer secret written back after the wipe",
      );
      assert.equal(stored, secretBefore, "the same secret");
      await using c = await ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: "c" });
      const toC = notificationClient(c.addr);
      try {
        await eventually(
          async () => (await send(toC, { recipient: "x", title: "from c" })).delivered === 1,
          15_000,
          "c forwards to b after the wipe",
        );
      } finally {
        toC.close();
      }
    } finally {
      stream.cancel();
      toA.close();
      toB.close();
    }
  },
);
