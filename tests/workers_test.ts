/**
 * One process, several serving workers, against real etcd and a real service process
 * with `workers: 2`: connections spread over both workers, notifications cross workers with exact
 * counts, the instance's limits hold across workers, a crashed worker is restarted, and SIGTERM
 * drains both behind one deregistration.
 */
import assert from "node:assert/strict";
import type * as grpc from "@grpc/grpc-js";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { eventually, healthClient, notificationClient, send, subscriber } from "./helpers/grpc.ts";
import { readRecord, scopedClient } from "./helpers/kv.ts";
import { scrape } from "./helpers/metrics.ts";
import { assertCleanStop, ServiceProcess } from "./helpers/service.ts";

/** `n` clients, each on its own connection (grpc-js would otherwise share one per target). */
function connections(addr: string, n: number) {
  return Array.from({ length: n }, () => notificationClient(addr, { "grpc.use_local_subchannel_pool": 1 }));
}

Deno.test(
  "workers: 2 — connections land on both workers, and Sends reach every stream on every worker once, in order",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      workers: 2,
      metricsAddr: "127.0.0.1:0",
      maxSubscribers: 16,
    });
    assert.ok(
      svc.lines.some((l) => l.includes("Serving gRPC from 2 workers on one port")),
      svc.lines.join("\n"),
    );
    // 16 connections: the kernel hashes each to one worker's listener; all on one is 2^-15.
    const clients = connections(svc.addr, 16);
    try {
      const subs = clients.map((c) => subscriber(c, "r"));
      await Promise.all(subs.map((s) => s.ready));
      const m = await scrape(svc.metricsPort);
      const perWorker = [1, 2].map((w) =>
        m.value(`notification_server_worker_connections{worker="${w}"}`) ?? 0
      );
      assert.ok(perWorker.every((n) => n > 0), `connections per worker: ${perWorker}`);
      assert.equal(m.value("notification_server_subscribers"), 16);
      assert.equal(m.value("notification_server_workers"), 2);

      // max-subscribers (16) is the instance's: the 17th is refused on whichever worker it lands.
      const extra = clients[0].subscribe({ recipient: "r" }) as grpc.ClientReadableStream<unknown>;
      const refused = await new Promise<grpc.ServiceError>((resolve) => extra.on("error", resolve));
      assert.equal(refused.code, 8, /* RESOURCE_EXHAUSTED */ refused.message);

      // Sends from every connection: each reaches all 16 streams, whichever worker took it.
      const delivered: number[] = [];
      for (let i = 0; i < 32; i++) {
        delivered.push((await send(clients[i % 16], { recipient: "r", title: `n${i}` })).delivered);
      }
      assert.deepEqual(delivered, Array(32).fill(16), `delivered: ${delivered}`);
      // A burst from one connection arrives in order on every stream.
      const burst = await Promise.all(
        Array.from({ length: 40 }, (_, i) => send(clients[3], { recipient: "r", title: `b${i}` })),
      );
      assert.ok(burst.every((r) => r.delivered === 16), JSON.stringify(burst.map((r) => r.delivered)));
      const expected = [
        ...Array.from({ length: 32 }, (_, i) => `n${i}`),
        ...Array.from({ length: 40 }, (_, i) => `b${i}`),
      ];
      await eventually(() => subs.every((s) => s.titles.length === 72), 5_000, "72 on every stream");
      for (const s of subs) assert.deepEqual(s.titles, expected);
      for (const s of subs) s.cancel();
      await eventually(
        async () => (await scrape(svc.metricsPort)).value("notification_server_subscribers") === 0,
        5_000,
        "subscribers back to 0 across workers",
      );
      const after = await scrape(svc.metricsPort);
      assert.equal(
        after.value("notification_server_notifications_sent_total"),
        72,
        "counters summed over workers",
      );
      assert.equal(after.value("notification_server_notifications_delivered_total"), 72 * 16);
    } finally {
      for (const c of clients) c.close();
    }
  },
);

Deno.test(
  "workers: 2 — SIGTERM drains both workers behind one deregistration, exit 0",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    using kv = scopedClient(etcd.endpoints);
    const svc = await ServiceProcess.start({ endpoints: etcd.endpoints, workers: 2, drainDelay: "200ms" });
    const clients = connections(svc.addr, 8);
    try {
      const key = svc.key;
      assert.ok(await readRecord(kv, key), "registered");
      const subs = clients.map((c) => subscriber(c, "bye"));
      const ended = subs.map((s) => new Promise<void>((resolve) => s.stream.on("end", () => resolve())));
      await Promise.all(subs.map((s) => s.ready));
      const text = await assertCleanStop(svc, kv);
      await Promise.all(ended); // every stream on both workers was ended with OK
      assert.match(text, /Server stopped gracefully/);
    } finally {
      for (const c of clients) c.close();
      await svc[Symbol.asyncDispose]();
    }
  },
);

Deno.test(
  "workers: 2 — a crashed worker is restarted: its streams end, the others keep delivering, the record stays",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    using kv = scopedClient(etcd.endpoints);
    const trigger = `${await Deno.makeTempDir({ prefix: "crash-" })}/now`;
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      workers: 2,
      metricsAddr: "127.0.0.1:0",
      script: ["tests/fixtures/faulty_service.ts", "worker"],
      env: { CRASH_WORKER_FILE: trigger },
    });
    const clients = connections(svc.addr, 16);
    try {
      const subs = clients.map((c) => subscriber(c, "r"));
      const ended = subs.map(() => false);
      subs.forEach((s, i) => s.stream.on("status", () => (ended[i] = true)));
      await Promise.all(subs.map((s) => s.ready));
      const before = await scrape(svc.metricsPort);
      const onFirst = before.value(`notification_server_worker_connections{worker="1"}`) ?? 0;
      assert.ok(onFirst > 0 && onFirst < 16, `worker 1 holds some of the 16 connections: ${onFirst}`);

      await Deno.writeTextFile(trigger, "");
      await svc.waitForLine(/ERROR Worker 1 crashed: Error: injected worker fault; restarting it/, 5_000);
      await svc.waitForLine(/Worker 1 restarted \(2 of 2 serving\)/, 10_000);
      // The crashed worker's streams ended (their clients can resubscribe); the others stay live.
      await eventually(
        () => ended.filter(Boolean).length === onFirst,
        5_000,
        `the ${onFirst} streams of the crashed worker ended (${ended.filter(Boolean).length} did)`,
      );
      const live = 16 - onFirst;
      // The places the dead worker held are back, and Sends count exactly the live streams.
      const m = await scrape(svc.metricsPort);
      assert.equal(m.value("notification_server_subscribers"), live);
      assert.equal(m.value("notification_server_worker_restarts_total"), 1);
      const sender = notificationClient(svc.addr, { "grpc.use_local_subchannel_pool": 1 });
      try {
        for (let i = 0; i < 6; i++) {
          assert.equal((await send(sender, { recipient: "r", title: `after${i}` })).delivered, live);
        }
      } finally {
        sender.close();
      }
      await eventually(
        () => subs.every((s, i) => ended[i] || s.titles.length === 6),
        5_000,
        "every live stream got the 6",
      );
      const health = healthClient(svc.addr);
      assert.equal(await health.check("registration"), "SERVING", "health mirrored into the new worker");
      health.close();
      assert.ok(await readRecord(kv, svc.key), "still registered through the crash");
      await assertCleanStop(svc, kv);
    } finally {
      for (const c of clients) c.close();
    }
  },
);
