/**
 * The mesh with a large recipient directory (real etcd, real instances; the directory filled the
 * way DirectoryPublisher writes it, for instances that hold 100 000 recipients each): when such an
 * instance stops or dies, every view drops exactly its entries, taking the one large revision whole;
 * an instance that starts registers and answers SERVING only once it can route, and answers no Send
 * OK that missed its recipient; and a Subscribe costs one etcd Txn and no Range.
 */
import assert from "node:assert/strict";
import { directoryRoot } from "../src/mesh/directory.ts";
import { fillDirectory } from "./helpers/directory.ts";
import { NOTIFICATION_SERVICE } from "../src/serving/services.ts";
import { freePort, NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { eventually, healthClient, notificationClient, send, subscriber } from "./helpers/grpc.ts";
import { scopedClient } from "./helpers/kv.ts";
import { ServiceProcess } from "./helpers/service.ts";
import { scrape } from "./helpers/metrics.ts";

/** Instances a (one thread, /metrics: the one measured) and b of a fresh service. */
async function measuredPair(endpoints: string[]) {
  const name = `scale-${crypto.randomUUID().slice(0, 8)}`;
  const a = await ServiceProcess.start({
    endpoints,
    name,
    instanceId: "a",
    workers: 1,
    metricsAddr: "127.0.0.1:0",
  });
  const b = await ServiceProcess.start({ endpoints, name, instanceId: "b" });
  return { name, a, b };
}

Deno.test(
  "a peer with 100 000 recipients stops and another dies: views drop exactly their entries within the TTL, never re-reading the directory",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const { name, a, b } = await measuredPair(etcd.endpoints);
    await using _a = a;
    await using _b = b;
    using kv = scopedClient(etcd.endpoints);
    const root = directoryRoot("/notification-directory", name);
    // Each 100 000 keys: deleted at once, one revision of ~9 MB, twice gRPC's receive limit.
    const stopping = kv.lease(60, { autoKeepAlive: false });
    const dying = kv.lease(3); // kept alive while written, then left to expire (a SIGKILL)
    await fillDirectory(kv, root, {
      instance: "z",
      prefix: "user",
      count: 100_000,
      lease: await stopping.grant(),
    });
    await fillDirectory(kv, root, {
      instance: "y",
      prefix: "other",
      count: 100_000,
      lease: await dying.grant(),
    });
    const metric = async (series: string) => (await scrape(a.metricsPort)).value(series) ?? 0;
    const known = () => metric("notification_server_directory_recipients");
    const resyncs = async () =>
      (await scrape(a.metricsPort)).text.split("\n")
        .filter((l) => l.startsWith('notification_server_etcd_watch_resyncs_total{watch="directory"'))
        .map((l) => `${l}`);
    const clientA = notificationClient(a.addr);
    const clientB = notificationClient(b.addr);
    let moved: ReturnType<typeof subscriber> | undefined;
    try {
      await eventually(
        async () => (await known()) === 200_000,
        30_000,
        "a's view holds both peers' recipients",
      );
      const left = Date.now();
      await stopping.revoke();
      dying.release(); // no more keep-alives: the lease expires within its 3 s TTL
      await eventually(async () => (await known()) === 0, 10_000, "a's view dropped both").catch(
        async (e) => {
          throw new Error(
            `${e.message}: ${await known()} left; ${await resyncs()}\n${a.lines.slice(-5).join("\n")}`,
          );
        },
      );
      console.log(`a's view dropped 200 000 entries ${Date.now() - left} ms after the stop and the death`);
      // No full re-read (etcd cancelling the watch, or a revision too large to take), and no loop:
      // at most one dropped stream, which resumes where it was after a count-only check. (One was
      // seen once, on this 2-core machine loaded by a CI run and two test loops: the instance's
      // event loop, busy with 100 000 deletes, can miss etcd's keep-alive.)
      const seen = await resyncs();
      const count = (reason: string) =>
        seen.filter((l) => l.includes(`reason="${reason}"`)).reduce(
          (n, l) => n + Number(l.split(" ").pop()),
          0,
        );
      assert.ok(
        count("cancelled") + count("too_large") === 0 && count("disconnected") <= 1,
        `the directory watch re-read etcd or looped: ${seen}`,
      );
      // A recipient of the instance that left, now on b: a Send through a reaches it there.
      moved = subscriber(clientB, "user-5");
      await moved.ready;
      assert.equal((await send(clientA, { recipient: "user-5", title: "moved" })).delivered, 1);
    } finally {
      moved?.cancel();
      clientA.close();
      clientB.close();
      await stopping.revoke().catch(() => {});
    }
  },
);

/**
 * Sends to `recipient` through `addr` every 20 ms, one at a time, until stopped: what answered OK
 * (title and delivered), and how many were refused (UNAVAILABLE, or the port not answering yet).
 */
function sendsThrough(addr: string, recipient: string) {
  const client = notificationClient(addr);
  const ok: { title: string; delivered: number; at: string }[] = [];
  let refused = 0;
  let stopped = false;
  const loop = (async () => {
    for (let i = 0; !stopped; i++) {
      const title = `through-${i}`;
      try {
        const answer = await send(client, { recipient, title }, { deadline: Date.now() + 2_000 });
        ok.push({ title, delivered: answer.delivered, at: new Date().toISOString() });
      } catch {
        refused++;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      client.close();
      return { ok, refused };
    },
  };
}

Deno.test(
  "an instance started while the directory holds 100 000 recipients registers and answers SERVING only once it can route, and no Send through it answers OK without reaching its recipient",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const name = `scale-${crypto.randomUUID().slice(0, 8)}`;
    await using a = await ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: "a" });
    const clientA = notificationClient(a.addr);
    const alice = subscriber(clientA, "alice");
    using kv = scopedClient(etcd.endpoints);
    const lease = kv.lease(120);
    try {
      await alice.ready;
      // Another instance's 100 000 recipients, under its lease, in transactions of 128 as it writes them.
      const root = directoryRoot("/notification-directory", name);
      const leaseId = await lease.grant();
      await fillDirectory(kv, root, { instance: "z", prefix: "user", count: 100_000, lease: leaseId });
      const port = freePort();
      await using b = await ServiceProcess.spawn({
        endpoints: etcd.endpoints,
        name,
        instanceId: "b",
        addr: `127.0.0.1:${port}`,
      });
      // Sends to alice go through b from the moment its port answers (a client that knew its
      // address, as after a restart in place) until a second after it registered: none may answer
      // OK without reaching her.
      const sending = sendsThrough(`127.0.0.1:${port}`, "alice");
      // While it loads, its notification service is not SERVING (once its port answers at all).
      const health = healthClient(`127.0.0.1:${port}`);
      const seen: string[] = [];
      try {
        while (!b.lines.some((l) => l.includes("Service registered"))) {
          const status = await health.check(NOTIFICATION_SERVICE).catch(() => "UNREACHABLE");
          const loaded = b.lines.some((l) => l.includes("Recipient directory loaded"));
          if (status !== "UNREACHABLE") seen.push(`${loaded ? "loaded" : "loading"}:${status}`);
          if (b.exited) assert.fail(`b exited:\n${b.lines.join("\n")}`);
          await new Promise((r) => setTimeout(r, 20));
        }
        await new Promise((r) => setTimeout(r, 1_000));
      } finally {
        health.close();
      }
      const sent = await sending.stop();
      const missed = sent.ok.filter((r) => r.delivered !== 1);
      assert.deepEqual(
        missed,
        [],
        `OK without reaching alice (${sent.ok.length} OK, ${sent.refused} refused):\n${b.lines.join("\n")}`,
      );
      assert.ok(sent.ok.length > 0, "some Sends went through b once it was registered");
      await eventually(
        () => sent.ok.every((r) => alice.titles.includes(r.title)),
        5_000,
        "alice got every Send that b answered OK",
      );
      console.log(
        `through the starting b: ${sent.ok.length} OK (all reached alice), ${sent.refused} refused`,
      );
      assert.ok(!seen.includes("loading:SERVING"), `SERVING before the directory was loaded: ${seen}`);
      const loadedAt = b.lines.findIndex((l) => l.includes("Recipient directory loaded: 100001 recipients"));
      const registeredAt = b.lines.findIndex((l) => l.includes("Service registered"));
      assert.ok(loadedAt >= 0 && loadedAt < registeredAt, b.lines.join("\n"));
      console.log(b.lines[loadedAt]);
      // The first Send through it, the moment it is registered, reaches alice on a.
      const clientB = notificationClient(`127.0.0.1:${port}`);
      try {
        assert.equal((await send(clientB, { recipient: "alice", title: "first" })).delivered, 1);
      } finally {
        clientB.close();
      }
      // Bounded: an instance whose start-up budget ends before its view is loaded (100 000
      // recipients take over a second; 300 ms is the whole budget) stops in one line, exit 1,
      // never registered.
      await using c = await ServiceProcess.spawn({
        endpoints: etcd.endpoints,
        name,
        instanceId: "c",
        startupTimeout: "300ms",
      });
      await c.waitForLine(
        /recipient directory and membership were not loaded within etcd\.startup-timeout \(300ms/,
        30_000,
      );
      assert.equal((await c.status).code, 1, c.lines.join("\n"));
      assert.ok(!c.lines.some((l) => l.includes("Service registered")), c.lines.join("\n"));
    } finally {
      alice.cancel();
      clientA.close();
      await lease.revoke().catch(() => {});
    }
  },
);

Deno.test(
  "a Subscribe to a new recipient costs one etcd Txn and no Range: the barrier's members come with the write",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const { a, b } = await measuredPair(etcd.endpoints);
    await using _a = a;
    await using _b = b;
    const calls = async (operation: string) => (await scrape(a.metricsPort)).etcdCalls(operation);
    const clientA = notificationClient(a.addr);
    const clientB = notificationClient(b.addr);
    const streams: { cancel(): void }[] = [];
    try {
      const [ranges, txns] = [await calls("Range"), await calls("Txn")];
      // One at a time, each ready (its barrier passed) before the next.
      for (let i = 0; i < 20; i++) {
        const s = subscriber(clientA, `reader-${i}`);
        streams.push(s);
        await s.ready;
      }
      const perRange = ((await calls("Range")) - ranges) / 20;
      const perTxn = ((await calls("Txn")) - txns) / 20;
      console.log(`per Subscribe: ${perRange} Range, ${perTxn} Txn`);
      assert.equal(perRange, 0, "no Range per Subscribe");
      // The series is read at all (a missing one would read 0 Range too): one Txn per Subscribe.
      assert.ok(perTxn > 0 && perTxn <= 1, `${perTxn} Txn per Subscribe`);
      // And the barrier still holds: a Send through b right after reaches the newest subscriber.
      assert.equal((await send(clientB, { recipient: "reader-19", title: "hi" })).delivered, 1);
    } finally {
      for (const s of streams) s.cancel();
      clientA.close();
      clientB.close();
    }
  },
);
