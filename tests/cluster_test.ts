/**
 * Notifications across instances (real etcd, three real service processes): a Send on any
 * instance reaches every subscriber of its recipient on every instance, once, in order, with an
 * exact `delivered`; a killed instance drops out of the count at once and out of routing within
 * the lease TTL.
 */
import { directoryKey, directoryRoot } from "../src/mesh/directory.ts";
import assert from "node:assert/strict";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { eventually, notificationClient, send, subscriber } from "./helpers/grpc.ts";
import { scopedClient } from "./helpers/kv.ts";
import { ServiceProcess } from "./helpers/service.ts";

async function cluster(endpoints: string[], leaseTtl = "10s", serverExtra = "", workers?: number) {
  const name = `cl-${crypto.randomUUID().slice(0, 8)}`;
  const start = (id: string) =>
    ServiceProcess.start({
      endpoints,
      name,
      instanceId: id,
      leaseTtl,
      drainDelay: "0s",
      startupTimeout: "10s",
      serverExtra,
      workers,
    });
  const instances = await Promise.all(["a", "b", "c"].map(start));
  const clients = instances.map((i) => notificationClient(i.addr));
  return {
    name,
    instances,
    clients,
    [Symbol.asyncDispose]: async () => {
      for (const c of clients) c.close();
      for (const i of instances) await i[Symbol.asyncDispose]();
    },
  };
}

/** Instance a (drain delay 3 s: the one a test stops) and b of a fresh service, with a client of each. */
async function leavingPair(endpoints: string[]) {
  const name = `leave-${crypto.randomUUID().slice(0, 8)}`;
  const a = await ServiceProcess.start({ endpoints, name, instanceId: "a", drainDelay: "3s" });
  const b = await ServiceProcess.start({ endpoints, name, instanceId: "b" });
  return { name, a, b, clientA: notificationClient(a.addr), clientB: notificationClient(b.addr) };
}

// With workers: 2 a Send also crosses workers inside each instance, and a peer's forward lands on
// either worker of the receiving instance.
for (const workers of [1, 2]) {
  Deno.test(
    `a Send on any instance reaches every subscriber on every instance, once and in order (workers: ${workers})`,
    NETWORK_TEST,
    async () => {
      await using etcd = await useEtcd();
      await using c = await cluster(etcd.endpoints, "10s", "", workers);
      // Two streams of "r" on each instance, one of "only-a" on a.
      const subs = c.clients.flatMap((client) => [subscriber(client, "r"), subscriber(client, "r")]);
      const lonely = subscriber(c.clients[0], "only-a");
      await Promise.all([...subs, lonely].map((s) => s.ready));
      // Ready means routed: a Send right away, to an instance the stream is not on, reaches it.
      assert.equal((await send(c.clients[1], { recipient: "only-a", title: "right away" })).delivered, 1);
      const delivered: number[] = [];
      for (let i = 0; i < 30; i++) {
        delivered.push((await send(c.clients[i % 3], { recipient: "r", title: `n${i}` })).delivered);
      }
      assert.deepEqual(
        delivered,
        Array(30).fill(6),
        `delivered counts every stream on every instance: ${delivered}`,
      );
      const expected = Array.from({ length: 30 }, (_, i) => `n${i}`);
      await eventually(() => subs.every((s) => s.titles.length === 30), 5_000, "all 30 everywhere");
      for (const s of subs) assert.deepEqual(s.titles, expected, "each stream: every one, once, in order");
      assert.deepEqual(lonely.titles, ["right away"]);
      // Concurrent Sends from one connection still arrive in order at a peer's streams.
      const burst = await Promise.all(
        Array.from({ length: 50 }, (_, i) => send(c.clients[0], { recipient: "r", title: `b${i}` })),
      );
      assert.ok(burst.every((r) => r.delivered === 6), JSON.stringify(burst.map((r) => r.delivered)));
      await eventually(() => subs.every((s) => s.titles.length === 80), 5_000, "burst everywhere");
      for (const s of subs) {
        assert.deepEqual(s.titles.slice(30), Array.from({ length: 50 }, (_, i) => `b${i}`), "burst in order");
      }
      for (const s of [...subs, lonely]) s.cancel();
    },
  );
}

Deno.test(
  "SIGKILL of an instance: Sends keep answering at once, and routing forgets it within the TTL",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    // A long peer-timeout: a live peer that a loaded machine holds up (CI runs Go builds beside this)
    // is still counted, and a Send that waited for the dead one would take 5 s, far from "at once".
    await using c = await cluster(etcd.endpoints, "2s", "  peer-timeout: 5s\n");
    const subs = c.clients.map((client) => subscriber(client, "k"));
    await Promise.all(subs.map((s) => s.ready));
    assert.equal((await send(c.clients[0], { recipient: "k", title: "before" })).delivered, 3);
    c.instances[2].signal("SIGKILL");
    await c.instances[2].status;
    const times: number[] = [];
    const counts: number[] = [];
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      counts.push((await send(c.clients[i % 2], { recipient: "k", title: `after${i}` })).delivered);
      times.push(performance.now() - t0);
    }
    assert.ok(counts.every((n) => n === 2), `the killed instance's stream is not counted: ${counts}`);
    const slowest = Math.max(...times);
    console.log(`Sends after SIGKILL of a peer: slowest ${slowest.toFixed(1)} ms (peer-timeout 5s)`);
    assert.ok(slowest < 2_500, `never waits out the peer timeout: ${times.map((t) => t.toFixed(0))}`);
    // Its directory keys go with its lease.
    using kv = scopedClient(etcd.endpoints);
    await eventually(
      async () => {
        const keys = await kv.getAll().prefix(`/notification-directory/${c.name}/`).keys();
        return keys.every((k) => !k.endsWith("/c"));
      },
      6_000,
      "the killed instance's directory keys expire with its lease",
    );
    for (const s of subs) s.cancel();
  },
);

Deno.test(
  "a peer that stops answering (SIGSTOP) costs a Send at most peer-timeout and is not counted",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using c = await cluster(etcd.endpoints, "30s", "  peer-timeout: 500ms\n");
    const subs = c.clients.map((client) => subscriber(client, "f"));
    await Promise.all(subs.map((s) => s.ready));
    assert.equal((await send(c.clients[0], { recipient: "f", title: "before" })).delivered, 3);
    c.instances[2].signal("SIGSTOP");
    try {
      const t0 = performance.now();
      const frozen = await send(c.clients[0], { recipient: "f", title: "frozen" });
      const took = performance.now() - t0;
      console.log(`Send with a frozen peer answered in ${took.toFixed(0)} ms (peer-timeout 500ms)`);
      assert.equal(frozen.delivered, 2, "the frozen peer's stream is not counted");
      assert.ok(took >= 450 && took < 1_500, `bounded by the peer timeout: ${took.toFixed(0)} ms`);
    } finally {
      c.instances[2].signal("SIGCONT");
    }
    for (const s of subs) s.cancel();
  },
);

Deno.test(
  "a leaving instance sends what still reaches it to every peer, whatever its own view says",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const { name, a, b, clientA, clientB } = await leavingPair(etcd.endpoints);
    await using _stopB = b;
    const moved = subscriber(clientB, "moved");
    using kv = scopedClient(etcd.endpoints);
    try {
      await moved.ready;
      assert.equal((await send(clientA, { recipient: "moved", title: "seen" })).delivered, 1);
      // b's key goes behind its back: a's view, which a leaving instance can no longer trust,
      // now says nobody holds the recipient.
      await kv.delete().key(directoryKey(directoryRoot("/notification-directory", name), "moved", "b"));
      await eventually(
        async () => (await send(clientA, { recipient: "moved", title: "probe" })).delivered === 0,
        5_000,
        "a's view without b's key",
      );
      a.signal("SIGTERM");
      await a.waitForLine(/Service deregistered from etcd/, 5_000);
      // Within a's drain delay: the Send reaching a goes to every peer, and b delivers it.
      assert.equal((await send(clientA, { recipient: "moved", title: "while leaving" })).delivered, 1);
      await eventually(() => moved.titles.includes("while leaving"), 5_000, "delivered on b");
      assert.equal((await a.status).code, 0);
    } finally {
      moved.cancel();
      clientA.close();
      clientB.close();
      await a[Symbol.asyncDispose]();
    }
  },
);

Deno.test(
  "a stopping instance is routed to until it has drained, and not after: its directory entries outlive its key, not its lease",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const { name, a, b, clientA, clientB } = await leavingPair(etcd.endpoints);
    await using _stopB = b;
    // A subscriber that has not moved yet (the subscribe() helper moves once it sees a's key go).
    const staying = subscriber(clientA, "staying");
    using kv = scopedClient(etcd.endpoints);
    const entry = directoryKey(directoryRoot("/notification-directory", name), "staying", "a");
    try {
      await staying.ready;
      a.signal("SIGTERM");
      await a.waitForLine(/Service deregistered from etcd/, 5_000);
      assert.equal(await kv.get(a.key).exists(), false, "a's key is gone");
      assert.equal(await kv.get(entry).exists(), true, "its directory entry is not");
      // For the first second of a's 3 s drain delay (b sees a's key go within milliseconds), b
      // still routes to a, which still holds the stream. Before, a's lease went with its key: b
      // dropped a's entries at once, and these answered 0 from the first or second on.
      const titles: string[] = [];
      for (let i = 0; i < 10; i++) {
        const title = `during the drain delay ${i}`;
        assert.equal((await send(clientB, { recipient: "staying", title })).delivered, 1, title);
        titles.push(title);
        await new Promise((r) => setTimeout(r, 100));
      }
      await eventually(() => titles.every((t) => staying.titles.includes(t)), 5_000, "delivered on a");
      assert.equal((await a.status).code, 0);
      // Drained, then the lease went, and the entry with it.
      assert.equal(await kv.get(entry).exists(), false, "the entry went with the lease");
      await eventually(
        async () => (await send(clientB, { recipient: "staying", title: "after" })).delivered === 0,
        5_000,
        "b's view without a",
      );
    } finally {
      staying.cancel();
      clientA.close();
      clientB.close();
      await a[Symbol.asyncDispose]();
    }
  },
);
