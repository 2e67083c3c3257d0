/**
 * The service against etcd faults, each driven on a real etcd process by the PID the test started:
 * restart with and without data, freeze past the TTL, down at start, and a cluster losing members.
 * Measured times are printed for the issue notes; the bounds asserted are generous (noisy machines).
 */
import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { PRIVATE_ETCD_ONLY, startEtcd, startEtcdCluster } from "@notification-server/registry/testing";
import { eventually, healthCheck, healthClient } from "../helpers/grpc.ts";
import { rawClient, readRecord, scopedClient } from "../helpers/kv.ts";
import { ServiceProcess } from "../helpers/service.ts";

/** Polls until the record exists under a lease other than `oldLease`; returns it. */
function restoredRecord(kv: Etcd3, key: string, oldLease: string, timeoutMs: number) {
  return eventually(
    async () => {
      const r = await readRecord(kv, key);
      return r && r.lease !== oldLease && r.ttl > 0 ? r : undefined;
    },
    timeoutMs,
    `${key} re-registered under a new lease`,
  );
}

/** Samples overall health every 100 ms until stopped; collects any non-SERVING answer or error. */
function watchHealth(addr: string) {
  const problems: string[] = [];
  let running = true;
  const client = healthClient(addr); // one connection, as a real health checker keeps
  const loop = (async () => {
    while (running) {
      try {
        const status = await client.check();
        if (status !== "SERVING") problems.push(status);
      } catch (error) {
        problems.push(String(error));
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    problems,
    stop: async () => {
      running = false;
      await loop;
      client.close();
    },
  };
}

Deno.test(
  "etcd restarted with its data: the lease survives and nothing is re-registered",
  PRIVATE_ETCD_ONLY,
  async () => {
    await using etcd = await startEtcd();
    await using svc = await ServiceProcess.start({ endpoints: etcd.endpoints, leaseTtl: "10s" });
    let kv = rawClient(etcd.endpoints);
    try {
      const before = await readRecord(kv, svc.key);
      assert.ok(before);
      // The service gets the graceful restart; this process holds no etcd connection across it
      // (a GOAWAY can abort a Deno process: denoland/deno#36788, see packages/registry/testing/etcd.ts).
      kv.close();
      await etcd.restart();
      kv = rawClient(etcd.endpoints);
      // Keep-alive resumes on the restored lease within a keep-alive interval (TTL/3).
      await eventually(
        async () => {
          const r = await readRecord(kv, svc.key);
          return r?.lease === before.lease && r.ttl >= 8;
        },
        8_000,
        "lease renewed after restart",
      );
      assert.ok(!svc.lines.some((l) => l.includes("Registration lost")), svc.lines.join("\n"));
    } finally {
      kv.close();
    }
  },
);

Deno.test(
  "etcd restarted with its data wiped: the service registers again by itself",
  PRIVATE_ETCD_ONLY,
  async () => {
    await using etcd = await startEtcd();
    await using svc = await ServiceProcess.start({ endpoints: etcd.endpoints, leaseTtl: "10s" });
    const health = watchHealth(svc.addr);
    let kv = rawClient(etcd.endpoints);
    try {
      const before = await readRecord(kv, svc.key);
      kv.close(); // no connection of ours across the graceful stop (see above)
      await etcd.restart({ wipe: true });
      kv = rawClient(etcd.endpoints);
      const back = Date.now();
      await restoredRecord(kv, svc.key, before!.lease, 10_000);
      console.log(`etcd wiped restart -> restored ${Date.now() - back} ms after etcd was back`);
      await svc.waitForLine(/Registration restored after/, 5_000);
      assert.equal(svc.lines.filter((l) => l.includes("Registration lost")).length, 1, svc.lines.join("\n"));
      assert.equal(await healthCheck(svc.addr, "registration"), "SERVING");
      await health.stop();
      assert.deepEqual(health.problems, [], "gRPC kept serving and stayed SERVING");
    } finally {
      await health.stop();
      kv.close();
    }
  },
);

Deno.test(
  "etcd frozen past the TTL (SIGSTOP/SIGCONT): the record is restored after it thaws",
  PRIVATE_ETCD_ONLY,
  async () => {
    await using etcd = await startEtcd();
    await using svc = await ServiceProcess.start({ endpoints: etcd.endpoints, leaseTtl: "2s" });
    const health = watchHealth(svc.addr);
    using kv = scopedClient(etcd.endpoints);
    try {
      etcd.signal("SIGSTOP");
      await new Promise((r) => setTimeout(r, 5_000)); // well past the 2 s TTL
      etcd.signal("SIGCONT");
      const thawed = Date.now();
      // Either etcd revokes the expired lease and we re-register under a new one, or our keep-alive
      // reaches it first and the lease is renewed: both leave a live record. It must then stay.
      const alive = () => readRecord(kv, svc.key).then((r) => (r && r.ttl > 0 ? r : undefined));
      const after = await eventually(alive, 15_000, `live record after thaw\n${svc.lines.join("\n")}`);
      console.log(`frozen 5s past ttl 2s -> live record ${Date.now() - thawed} ms after SIGCONT`);
      assert.equal(after.grantedTtl, 2);
      await new Promise((r) => setTimeout(r, 4_000)); // two TTLs
      assert.ok(await alive(), `record still live two TTLs later\n${svc.lines.join("\n")}`);
      await health.stop();
      assert.deepEqual(health.problems, [], "gRPC kept serving while etcd was frozen");
    } finally {
      await health.stop();
    }
  },
);

Deno.test(
  "etcd down at start: the service keeps retrying and registers once etcd answers",
  PRIVATE_ETCD_ONLY,
  async () => {
    await using etcd = await startEtcd();
    await etcd.stop();
    await using svc = await ServiceProcess.spawn({ endpoints: etcd.endpoints, startupTimeout: "20s" });
    await new Promise((r) => setTimeout(r, 2_000));
    assert.ok(!svc.lines.some((l) => l.includes("Service registered")));
    await etcd.restart();
    const up = Date.now();
    await svc.waitForLine(/Service registered to etcd/, 10_000);
    console.log(`etcd came up -> registered in ${Date.now() - up} ms (backoff capped at 5 s)`);
    assert.equal(svc.lines.filter((l) => l.includes("ERROR")).length, 0, svc.lines.join("\n"));
  },
);

Deno.test(
  "a 3-member cluster: losing any one member (the connected one included) keeps us registered",
  PRIVATE_ETCD_ONLY,
  async () => {
    await using cluster = await startEtcdCluster(3);
    await using svc = await ServiceProcess.start({ endpoints: cluster.endpoints, leaseTtl: "3s" });
    const key = svc.key;
    const health = watchHealth(svc.addr);
    try {
      // Kill each member in turn (restarting the previous one), so the member the client is using
      // is certainly among them. Each outage lasts two TTLs: the lease must be renewed through the others.
      for (let i = 0; i < 3; i++) {
        await cluster.kill(i);
        const live = cluster.endpoints.filter((_, j) => j !== i);
        using kv = scopedClient(live);
        const lease = (await eventually(() => readRecord(kv, key), 5_000, "record readable"))!.lease;
        await new Promise((r) => setTimeout(r, 6_000));
        // Present now, possibly re-registered if the keep-alive stream sat on the killed member.
        const r = await eventually(
          () => readRecord(kv, key),
          10_000,
          `record present\n${svc.lines.join("\n")}`,
        );
        assert.ok(r.ttl > 0, `member ${i} down: record alive (ttl ${r.ttl})`);
        if (r.lease !== lease) console.log(`member ${i} down: re-registered under a new lease`);
        // Writes go through the live members: an outside delete is repaired.
        await kv.delete().key(key).exec();
        await eventually(async () => ((await readRecord(kv, key))?.ttl ?? 0) > 0, 5_000, "delete repaired");
        await cluster.start(i);
        // Before the next kill, the restarted member must take part in writes again; otherwise the
        // next kill leaves no quorum, which no client can survive.
        using rejoined = scopedClient([cluster.endpoints[i]]);
        await eventually(
          () => rejoined.put("/probe").value(String(i)).exec().then(() => true),
          10_000,
          `member ${i} rejoined`,
        );
      }
      await health.stop();
      assert.deepEqual(health.problems, []);
    } finally {
      await health.stop();
    }
  },
);
