/**
 * The `etcd:///` resolver with round-robin, against several real service processes registered in a
 * real etcd, driven by a Deno grpc-js client (one shared channel, as the README recommends).
 */
import assert from "node:assert/strict";
import type * as grpc from "@grpc/grpc-js";
import { registerEtcdResolver, ROUND_ROBIN_SERVICE_CONFIG } from "../packages/registry/src/grpc_resolver.ts";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { eventually, type NotificationClient, notificationClient, send } from "./helpers/grpc.ts";
import { scopedClient } from "./helpers/kv.ts";
import { type ServiceOptions, ServiceProcess } from "./helpers/service.ts";

const CALLERS = 4;

/** The resolver's view: every list it pushed, with a timestamp. */
function resolverLog() {
  const updates: { at: number; addrs: string[] }[] = [];
  return {
    updates,
    onUpdate: (_name: string, addrs: string[]) =>
      updates.push({ at: performance.now(), addrs: [...addrs].sort() }),
    current: () => updates.at(-1)?.addrs ?? [],
  };
}

/** Closed-loop callers sending through the channel until stopped; counts outcomes. */
function steadyLoad(client: NotificationClient, callers: number) {
  let running = true;
  const stats = { ok: 0, failed: 0, errors: [] as string[], byPeer: new Map<string, number>() };
  const loops = Array.from({ length: callers }, async () => {
    while (running) {
      try {
        const res = await send(client, { recipient: "load", title: "t" }, { deadline: Date.now() + 3_000 });
        stats.ok++;
        stats.byPeer.set(res.peer, (stats.byPeer.get(res.peer) ?? 0) + 1);
      } catch (error) {
        stats.failed++;
        if (stats.errors.length < 100) {
          stats.errors.push(`${(error as grpc.ServiceError).code} ${(error as Error).message}`);
        }
        // A call that fails at once (no address to try) must not spin: the loop would starve the
        // event loop, which then never sees the instances it waits for exit.
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  });
  return {
    stats,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

/** A channel to etcd:///<name>; channels resolve lazily, so ask it to connect now. */
function dial(name: string): NotificationClient {
  const client = notificationClient(`etcd:///${name}`, { "grpc.service_config": ROUND_ROBIN_SERVICE_CONFIG });
  client.getChannel().getConnectivityState(true);
  return client;
}

async function startMany(n: number, options: ServiceOptions): Promise<ServiceProcess[]> {
  return await Promise.all(Array.from({ length: n }, () => ServiceProcess.start(options)));
}

Deno.test("round-robin through etcd:///<name> reaches every live instance", NETWORK_TEST, async () => {
  await using etcd = await useEtcd();
  const name = `rr-${crypto.randomUUID().slice(0, 8)}`;
  const services = await startMany(3, { endpoints: etcd.endpoints, name });
  const log = resolverLog();
  const close = registerEtcdResolver({ endpoints: etcd.endpoints, onUpdate: log.onUpdate });
  const client = dial(name);
  try {
    const addrs = services.map((s) => s.addr).sort();
    await eventually(() => JSON.stringify(log.current()) === JSON.stringify(addrs), 5_000, "three addresses");
    const peers = new Set<string>();
    const instances = new Set<string>();
    for (let i = 0; i < 30; i++) {
      const res = await send(client, { recipient: "r", title: `#${i}` });
      peers.add(res.peer);
      instances.add(res.instanceId);
    }
    assert.deepEqual([...peers].sort(), addrs);
    assert.equal(instances.size, 3);
  } finally {
    client.close();
    close();
    for (const s of services) await s[Symbol.asyncDispose]();
  }
});

Deno.test("rolling stop under steady load: zero failed calls", NETWORK_TEST, async () => {
  await using etcd = await useEtcd();
  const name = `roll-${crypto.randomUUID().slice(0, 8)}`;
  const options: ServiceOptions = { endpoints: etcd.endpoints, name, drainDelay: "500ms" };
  const all: ServiceProcess[] = await startMany(3, options);
  const log = resolverLog();
  const close = registerEtcdResolver({ endpoints: etcd.endpoints, onUpdate: log.onUpdate });
  const client = dial(name);
  // Deletion times as etcd reports them, to measure how long the resolver takes to drop an address.
  using raw = scopedClient(etcd.endpoints);
  const deletedAt = new Map<string, number>();
  const watcher = await raw.watch().prefix(`/services/${name}/`).create();
  watcher.on("delete", (kv) => deletedAt.set(kv.key.toString().split("/").pop()!, performance.now()));
  try {
    await eventually(() => log.current().length === 3, 5_000, "three addresses");
    const load = steadyLoad(client, CALLERS);
    await eventually(() => load.stats.ok > 50, 5_000, "load running");
    const dropLatencies: number[] = [];
    for (const victim of all.slice(0, 3)) {
      const replacement = await ServiceProcess.start(options);
      all.push(replacement);
      await eventually(() => log.current().includes(replacement.addr), 5_000, "replacement discovered");
      const okBefore = load.stats.ok;
      victim.signal("SIGTERM");
      assert.equal((await victim.status).code, 0, victim.lines.join("\n"));
      const deleted = deletedAt.get(victim.addr);
      assert.ok(deleted, "record deletion observed");
      const dropped = log.updates.find((u) => u.at >= deleted - 50 && !u.addrs.includes(victim.addr));
      assert.ok(dropped, "resolver dropped the address");
      dropLatencies.push(dropped.at - deleted);
      await eventually(() => load.stats.ok > okBefore + 20, 5_000, "calls keep flowing");
    }
    await load.stop();
    console.log(
      `rolling stop: ${load.stats.ok} ok, ${load.stats.failed} failed; delete -> resolver drop: ${
        dropLatencies.map((l) => l.toFixed(1)).join(", ")
      } ms`,
    );
    assert.equal(load.stats.failed, 0, load.stats.errors.slice(0, 5).join("\n"));
  } finally {
    await watcher.cancel();
    client.close();
    close();
    for (const s of all) await s[Symbol.asyncDispose]();
  }
});

Deno.test(
  "SIGKILL of one instance: calls fail over and it leaves the list within the TTL",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const name = `kill-${crypto.randomUUID().slice(0, 8)}`;
    const services = await startMany(3, { endpoints: etcd.endpoints, name, leaseTtl: "2s" });
    const log = resolverLog();
    const close = registerEtcdResolver({ endpoints: etcd.endpoints, onUpdate: log.onUpdate });
    const client = dial(name);
    try {
      await eventually(() => log.current().length === 3, 5_000, "three addresses");
      const load = steadyLoad(client, CALLERS);
      await eventually(() => load.stats.ok > 50, 5_000, "load running");
      const victim = services[0];
      const killedAt = performance.now();
      victim.signal("SIGKILL");
      await victim.status;
      await eventually(() => !log.current().includes(victim.addr), 4_000, "killed instance dropped");
      const gone = performance.now() - killedAt;
      const okAfterDrop = load.stats.ok;
      await eventually(() => load.stats.ok > okAfterDrop + 50, 5_000, "calls keep flowing");
      await load.stop();
      console.log(
        `SIGKILL: dropped from the resolver after ${
          gone.toFixed(0)
        } ms (ttl 2s); ${load.stats.ok} ok, ${load.stats.failed} failed`,
      );
      // Calls that never reached the killed server are retried elsewhere (UNAVAILABLE retry policy).
      // A call the server had already sent headers for is committed, not retried: it may have been
      // delivered, and Send is not idempotent. So at most the calls in flight there can fail.
      assert.ok(
        load.stats.failed <= CALLERS,
        `${load.stats.failed} failed:\n${load.stats.errors.join("\n")}`,
      );
      // UNAVAILABLE, or INTERNAL "write EPIPE" when Deno's client writes into the dead socket.
      assert.ok(load.stats.errors.every((e) => /^1[34] /.test(e)), load.stats.errors.join("\n"));
      assert.ok([...load.stats.byPeer.keys()].some((p) => p !== victim.addr));
    } finally {
      client.close();
      close();
      for (const s of services) await s[Symbol.asyncDispose]();
    }
  },
);

Deno.test(
  "a scheme is held by one registration: a second throws until the first is closed, then follows the new one",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const name = `scheme-${crypto.randomUUID().slice(0, 8)}`;
    await using svc = await ServiceProcess.start({ endpoints: etcd.endpoints, name });
    const scheme = `etcd-test-${crypto.randomUUID().slice(0, 8)}`;
    const first = registerEtcdResolver({ endpoints: etcd.endpoints, scheme, prefix: "/elsewhere" });
    assert.throws(
      () => registerEtcdResolver({ endpoints: etcd.endpoints, scheme }),
      /the scheme "etcd-test-[0-9a-f]+" is already registered and not closed/,
    );
    first();
    // Registered again (with the right prefix): a new channel follows the new registration.
    const second = registerEtcdResolver({ endpoints: etcd.endpoints, scheme });
    const client = notificationClient(`${scheme}:///${name}`, {
      "grpc.service_config": ROUND_ROBIN_SERVICE_CONFIG,
    });
    try {
      const res = await send(client, { recipient: "r", title: "via the second" });
      assert.equal(res.peer, svc.addr);
    } finally {
      client.close();
      second();
    }
  },
);
