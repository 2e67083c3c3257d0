/**
 * The broker mode under restarts, with real processes: a rolling restart of three instances
 * under steady Sends with `subscribe` clients (the CLI, resuming from positions), and a
 * three-node NATS cluster (replicas 3) losing the node that leads the stream.
 */
import assert from "node:assert/strict";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { eventually, notificationClient, recoverer, send, steadySends } from "./helpers/grpc.ts";
import { brokerYaml, startNats } from "./helpers/nats.ts";
import { ServiceProcess, subscribeProcess, writeConfig } from "./helpers/service.ts";

Deno.test(
  "broker: a rolling restart of 3 instances at 100 Sends/s: every subscribe client gets each notification once",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats();
    const name = `broker-roll-${crypto.randomUUID().slice(0, 8)}`;
    const serverExtra = brokerYaml(nats.servers);
    const start = (id: string) =>
      ServiceProcess.start({
        endpoints: etcd.endpoints,
        name,
        instanceId: id,
        drainDelay: "1s",
        serverExtra,
      });
    const instances = await Promise.all(["a", "b", "c"].map(start));
    const config = await writeConfig({ endpoints: etcd.endpoints, name, serverExtra });
    const clients = ["r", "r", "r"].map((r) => subscribeProcess(config, r));
    const senders = instances.map((i) => notificationClient(i.addr));
    try {
      await eventually(
        // (`delivered` counts the streams of the thread that took the Send only: not a test of all three.)
        async () =>
          (await send(senders[0], { recipient: "r", title: "probe" })) &&
          clients.every((c) => c.titles.includes("probe")),
        15_000,
        () =>
          `three subscribers\n${
            clients.map((c) => `${c.titles.length} printed\n${c.log.join("\n")}`).join("\n---\n")
          }`,
      );
      const sent: string[] = [];
      let failed = 0;
      let sending = true;
      let live = [...senders];
      const load = (async () => {
        for (let i = 0; sending; i++) {
          const title = `n${i}`;
          try {
            await send(live[i % live.length], { recipient: "r", title });
            sent.push(title);
          } catch {
            failed++; // an instance whose port closed: not stored, not expected
          }
          await new Promise((r) => setTimeout(r, 10));
        }
      })();
      for (const [i, id] of ["a", "b", "c"].entries()) {
        instances[i].signal("SIGTERM");
        assert.equal((await instances[i].status).code, 0, instances[i].lines.join("\n"));
        live = live.filter((c) => c !== senders[i]);
        senders[i].close();
        instances[i] = await start(id);
        senders[i] = notificationClient(instances[i].addr);
        live.push(senders[i]);
      }
      await new Promise((r) => setTimeout(r, 500));
      sending = false;
      await load;
      await eventually(
        () => clients.every((c) => sent.every((t) => c.titles.includes(t))),
        15_000,
        `every client has all ${sent.length}\n${clients.map((c) => c.log.join("\n")).join("\n---\n")}`,
      );
      const missed = clients.map((c) => sent.filter((t) => !c.titles.includes(t)).length);
      // Probes repeat their title; every other notification has its own.
      const duplicated = clients.map((c) => {
        const counted = c.titles.filter((t) => t !== "probe");
        return counted.length - new Set(counted).size;
      });
      console.log(
        `broker rolling restart: ${sent.length} Sends (${failed} refused); missed per client: ${
          missed.join(", ")
        }; duplicated: ${duplicated.join(", ")}`,
      );
      assert.deepEqual(missed, [0, 0, 0]);
      assert.deepEqual(duplicated, [0, 0, 0]);
      for (const c of clients) {
        assert.equal(c.state.exit, "running", c.log.join("\n"));
        // In order: the titles of the load are n0, n1, ... as they were acknowledged.
        const order = c.titles.filter((t) => /^n\d+$/.test(t)).map((t) => Number(t.slice(1)));
        assert.deepEqual(order, [...order].sort((x, y) => x - y), "in order");
        assert.ok(!c.log.some((l) => l.includes("were not delivered")), c.log.join("\n"));
      }
    } finally {
      for (const c of senders) c.close();
      for (const c of clients) await c.stop();
      for (const i of instances) await i[Symbol.asyncDispose]();
    }
  },
);

Deno.test(
  "broker: a 3-node NATS cluster (replicas 3) loses the stream's leader: nothing acknowledged is lost, no false OK",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats({ nodes: 3 });
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name: "r3",
      serverExtra: brokerYaml(nats.servers, { replicas: 3, "history-size": 10_000 }),
    });
    const client = notificationClient(svc.addr);
    try {
      const stream = recoverer(client, "x", { recover: false });
      await stream.ready;
      // During the election Sends are refused, never falsely acknowledged.
      const load = steadySends(client, "x");
      const acked = load.acked;
      await eventually(() => acked.length >= 50, 10_000, "50 before the kill");
      const leader = await nats.leaderOf("NOTIFICATIONS");
      assert.ok(leader !== undefined, nats.logs());
      await nats.stop(leader, "SIGKILL");
      const atKill = acked.length;
      await eventually(() => acked.length >= atKill + 50, 20_000, `50 after the kill\n${nats.logs()}`);
      await load.stop();
      assert.deepEqual(load.unexpected, []);
      // Every acknowledged one is in the history, in order, on the new leader...
      const all = recoverer(client, "x");
      await all.ready;
      await eventually(
        () => all.items.length >= acked.length,
        10_000,
        `the history holds all ${acked.length}`,
      );
      const stored = new Set(all.items.map((n) => n.position));
      assert.deepEqual(acked.filter((s) => !stored.has(s.position)), [], "no acknowledged Send lost");
      // ...and the live stream, which stayed open, got each once, in order.
      await eventually(() => stream.items.length >= acked.length, 10_000, "the live stream has all");
      assert.deepEqual(stream.items.map((n) => n.position), acked.map((s) => s.position));
      console.log(
        `R3 leader loss: ${acked.length} acknowledged, ${load.refused()} refused during the election`,
      );
      all.cancel();
      stream.cancel();
    } finally {
      client.close();
    }
  },
);
