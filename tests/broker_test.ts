/**
 * The broker mode (notification-server.broker.nats) against real nats-server and etcd processes
 * and real service processes: positions, history, recovery with no gap and no duplicate, and the
 * faults (an instance killed, the broker restarted). The mesh's refusal to recover is here too.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { freePort, NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import {
  eventually,
  healthCheck,
  type NotificationClient,
  notificationClient,
  type Received,
  recoverer,
  send,
  type SendResult,
  steadySends,
} from "./helpers/grpc.ts";
import { brokerYaml, startNats } from "./helpers/nats.ts";
import { runMain, ServiceProcess, writeConfig } from "./helpers/service.ts";
import { goClient, python } from "./helpers/foreign.ts";
import { scrape } from "./helpers/metrics.ts";
import { scopedClient } from "./helpers/kv.ts";
import { makeCertificates } from "./helpers/certs.ts";
import { NatsDropProxy } from "./helpers/nats_drop_proxy.ts";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { createUser } from "@nats-io/nkeys";

const PYTHON_RESUME = new URL("./interop/python_resume.py", import.meta.url).pathname;
const NOTIFICATION_SERVICE = "notification.v1.NotificationService";
/** One connection per client: grpc-js shares connections between channels unless told not to. */
const OWN_CONNECTION: grpc.ChannelOptions = { "grpc.use_local_subchannel_pool": 1 };

/** Positions strictly increasing, titles as expected. */
function assertInOrder(items: Received[], titles: string[], what: string): void {
  assert.deepEqual(items.map((n) => n.title), titles, what);
  for (let i = 1; i < items.length; i++) {
    assert.ok(items[i].position > items[i - 1].position, `${what}: positions increase`);
  }
}

Deno.test(
  "an offline recipient gets all 50 in order; with history-size 20 the last 20, recovered false",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats();
    for (const [size, stream] of [[100, "FULL"], [20, "SHORT"]] as const) {
      await using svc = await ServiceProcess.start({
        endpoints: etcd.endpoints,
        name: `offline-${stream.toLowerCase()}`,
        serverExtra: brokerYaml(nats.servers, {
          stream,
          "subject-prefix": stream.toLowerCase(),
          "history-size": size,
        }),
        metricsAddr: "127.0.0.1:0",
      });
      const client = notificationClient(svc.addr);
      try {
        const titles = Array.from({ length: 50 }, (_, i) => `n${i}`);
        const sent: SendResult[] = [];
        for (const title of titles) sent.push(await send(client, { recipient: "offline", title }));
        // Stored, each with its position; nobody was listening.
        assert.ok(
          sent.every((s) => s.stored && s.delivered === 0 && s.epoch !== ""),
          JSON.stringify(sent[0]),
        );
        const everything = recoverer(client, "offline");
        await everything.ready;
        const expected = size === 100 ? titles : titles.slice(-20);
        await eventually(
          () => everything.items.length >= expected.length,
          5_000,
          `${expected.length} replayed`,
        );
        assertInOrder(everything.items, expected, `history-size ${size}`);
        assert.deepEqual(
          everything.items.map((n) => n.position),
          sent.slice(-expected.length).map((s) => s.position),
        );
        assert.equal(everything.state.recovered, size === 100 ? "true" : "false");
        assert.equal(everything.state.epoch, sent[0].epoch);
        // Live after the replay, on the same stream, with the next position.
        const next = await send(client, { recipient: "offline", title: "live" });
        assert.equal(next.delivered, 1, JSON.stringify(next));
        await eventually(() => everything.items.length === expected.length + 1, 5_000, "the live one");
        assert.equal(everything.items.at(-1)!.position, next.position);
        everything.cancel();

        // From a position: only what came after it; from another epoch: everything held, not recovered.
        const from = sent[45].position;
        const after = recoverer(client, "offline", { position: from, epoch: sent[0].epoch });
        await after.ready;
        await eventually(() => after.items.length === 5, 5_000, "the 5 after position 45");
        assertInOrder(after.items, ["n46", "n47", "n48", "n49", "live"], "after a position");
        assert.equal(after.state.recovered, "true");
        after.cancel();
        // From a position history-size 20 no longer holds: what follows it is written, but whether
        // something between was dropped cannot be told, so not recovered (with 100: all held, true).
        const trimmed = recoverer(client, "offline", { position: sent[10].position, epoch: sent[0].epoch });
        await trimmed.ready;
        assert.equal(trimmed.state.recovered, size === 100 ? "true" : "false");
        const sinceTrimmed = [...titles.slice(11), "live"].slice(-Math.min(size, 40));
        await eventually(() => trimmed.items.length === sinceTrimmed.length, 5_000, "what is held after it");
        assertInOrder(trimmed.items, sinceTrimmed, "after a trimmed position");
        trimmed.cancel();
        // A position the stream has not reached is no better than another epoch's.
        const ahead = recoverer(client, "offline", { position: 1_000_000, epoch: sent[0].epoch });
        await ahead.ready;
        assert.equal(ahead.state.recovered, "false");
        await eventually(
          () => ahead.items.length === Math.min(size, 51),
          5_000,
          "everything held, from ahead",
        );
        ahead.cancel();
        const stale = recoverer(client, "offline", { position: from, epoch: "another-epoch" });
        await stale.ready;
        assert.equal(stale.state.recovered, "false");
        const held = [...titles, "live"].slice(-size);
        await eventually(() => stale.items.length === held.length, 5_000, "everything held");
        assertInOrder(stale.items, held, "from another epoch");
        stale.cancel();
        // Each recovery counted by how it started: everything and after position 10 (true only when
        // nothing was trimmed), after position 45 (true), ahead of the stream (false), another epoch (false).
        const metrics = await scrape(svc.metricsPort);
        const replays = (recovered: boolean) =>
          metrics.value(`notification_server_broker_replays_total{recovered="${recovered}"}`) ?? 0;
        assert.deepEqual([replays(true), replays(false)], size === 100 ? [3, 2] : [1, 4], metrics.text);
      } finally {
        client.close();
      }
    }
  },
);

Deno.test(
  "without a broker, a Subscribe that asks to recover is refused with FAILED_PRECONDITION",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({ endpoints: etcd.endpoints, name: "mesh-refuses" });
    const client = notificationClient(svc.addr);
    try {
      const asking = recoverer(client, "r", { position: 3 });
      await eventually(() => asking.state.status !== undefined, 5_000, "the refusal");
      assert.equal(asking.state.status!.code, grpc.status.FAILED_PRECONDITION);
      assert.match(asking.state.status!.details, /notification-server\.broker\.nats/);
      assert.equal(asking.items.length, 0);
      // Live streams work as before, and Sends carry no position.
      const live = recoverer(client, "r", { recover: false });
      await live.ready;
      const res = await send(client, { recipient: "r", title: "t" });
      assert.deepEqual([res.delivered, res.position, res.stored, res.epoch], [1, 0, false, ""]);
      await eventually(() => live.items.length === 1, 5_000, "live delivery");
      assert.equal(live.items[0].position, 0);
      live.cancel();
      // The CLI asked for history says so in one line and exits 1, rather than retrying for ever.
      const config = await writeConfig({ endpoints: etcd.endpoints, name: "mesh-refuses" });
      const cli = await runMain(["subscribe", "--to", "r", "--since", "all", "--config", config], {
        timeoutMs: 15_000,
      });
      assert.equal(cli.code, 1, cli.stderr);
      const lines = cli.stderr.trim().split("\n");
      assert.equal(lines.length, 1, cli.stderr);
      assert.match(
        lines[0],
        /mesh-refuses keeps no history to start from .*notification-server\.broker\.nats/,
      );
    } finally {
      client.close();
    }
  },
);

Deno.test(
  "Sends to one recipient through two instances at once reach each subscriber once, in position order; a recovery started mid-way switches to live with no gap",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats();
    // History holds all 200: the recovery's position is never dropped under it.
    const serverExtra = brokerYaml(nats.servers, { "history-size": 1_000 });
    const options = { endpoints: etcd.endpoints, name: "two", serverExtra };
    await using a = await ServiceProcess.start(options);
    await using b = await ServiceProcess.start(options);
    const ca = notificationClient(a.addr);
    const cb = notificationClient(b.addr);
    try {
      const onA = recoverer(ca, "r", { recover: false });
      const onB = recoverer(cb, "r", { recover: false });
      await Promise.all([onA.ready, onB.ready]);
      // Concurrent Sends to one recipient through both instances: stored as they come, each live
      // copy naming the recipient's previous position (set by the stream as it stores).
      const sendAll = (from: number) =>
        Promise.all(
          Array.from({ length: 100 }, (_, i) =>
            send(i % 2 ? cb : ca, { recipient: "r", title: `n${from + i}` })),
        );
      const firstHalf = await sendAll(0);
      // A stream recovering from the middle of the first hundred while the second hundred go.
      const mid = firstHalf.map((r) => r.position).sort((x, y) => x - y)[49];
      const recovering = recoverer(cb, "r", { position: mid, epoch: firstHalf[0].epoch });
      const secondHalf = await sendAll(100);
      await recovering.ready;
      assert.equal(recovering.state.recovered, "true");
      const positions = [...firstHalf, ...secondHalf].map((r) => r.position).sort((x, y) => x - y);
      await eventually(
        () => onA.items.length === 200 && onB.items.length === 200 && recovering.items.length === 150,
        10_000,
        "200 on each live stream, 150 on the recovering one",
      );
      for (const stream of [onA, onB]) {
        assert.deepEqual(stream.items.map((n) => n.position), positions, "every position once, in order");
        assert.equal(new Set(stream.items.map((n) => n.title)).size, 200);
      }
      assert.deepEqual(
        recovering.items.map((n) => n.position),
        positions.slice(50),
        "after the position, once each",
      );
    } finally {
      ca.close();
      cb.close();
    }
  },
);

Deno.test(
  "a live copy lost between NATS and an instance is written from history, in its place, when the next one shows the gap",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats();
    using proxy = NatsDropProxy.start(Number(nats.servers[0].split(":")[1]), ".live.");
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name: "lost-copy",
      serverExtra: brokerYaml([proxy.addr]),
      metricsAddr: "127.0.0.1:0",
    });
    const client = notificationClient(svc.addr);
    try {
      const live = recoverer(client, "gap", { recover: false });
      await live.ready;
      const sent = [await send(client, { recipient: "gap", title: "n0" })];
      await eventually(() => live.items.length === 1, 5_000, "n0");
      proxy.dropNext("lost-n1");
      sent.push(await send(client, { recipient: "gap", title: "lost-n1" }));
      sent.push(await send(client, { recipient: "gap", title: "n2" }));
      await eventually(() => live.items.length === 3, 5_000, "n0, lost-n1 (from history) and n2");
      assert.equal(proxy.dropped, 1, "the live copy of lost-n1 was dropped");
      assertInOrder(live.items, ["n0", "lost-n1", "n2"], "in position order");
      assert.deepEqual(live.items.map((n) => n.position), sent.map((s) => s.position));
      // Filled from what the store holds: not a gap in history.
      const metrics = await scrape(svc.metricsPort);
      assert.equal(metrics.value("notification_server_broker_history_gaps_total") ?? 0, 0, metrics.text);
    } finally {
      client.close();
    }
  },
);

Deno.test(
  "a recipient with 200 streams on one thread (offered 64 at a time) gets 30 concurrent Sends on every stream, once each, in order; delivered counts them all",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name: "sliced",
      workers: 1,
      maxSubscribers: 300,
      serverExtra: brokerYaml(nats.servers),
    });
    const clients = Array.from({ length: 4 }, () => notificationClient(svc.addr, OWN_CONNECTION));
    try {
      const streams = Array.from(
        { length: 200 },
        (_, i) => recoverer(clients[i % 4], "crowd", { recover: false }),
      );
      await Promise.all(streams.map((s) => s.ready));
      const sent = await Promise.all(
        Array.from({ length: 30 }, (_, i) => send(clients[i % 4], { recipient: "crowd", title: `n${i}` })),
      );
      assert.ok(sent.every((s) => s.delivered === 200), JSON.stringify(sent[0]));
      const positions = sent.map((s) => s.position).sort((x, y) => x - y);
      await eventually(() => streams.every((s) => s.items.length >= 30), 10_000, "30 on every stream");
      for (const stream of streams) assert.deepEqual(stream.items.map((n) => n.position), positions);
    } finally {
      for (const c of clients) c.close();
    }
  },
);

Deno.test(
  "with workers, a broker Send's delivered counts every stream of the instance, on either worker",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name: "counted",
      workers: 2,
      serverExtra: brokerYaml(nats.servers),
      metricsAddr: "127.0.0.1:0",
    });
    // A connection each, until both workers hold some (SO_REUSEPORT spreads them by chance).
    const clients: NotificationClient[] = [];
    let sender: NotificationClient | undefined;
    try {
      const streams: ReturnType<typeof recoverer>[] = [];
      const perWorker = async () => {
        const metrics = await scrape(svc.metricsPort);
        return [1, 2].map((w) => metrics.value(`notification_server_worker_connections{worker="${w}"}`) ?? 0);
      };
      while (streams.length < 8 || (await perWorker()).some((n) => n === 0)) {
        assert.ok(streams.length < 40, `40 connections, all on one worker: ${await perWorker()}`);
        clients.push(notificationClient(svc.addr, OWN_CONNECTION));
        streams.push(recoverer(clients.at(-1)!, "many", { recover: false }));
        await streams.at(-1)!.ready;
      }
      const n = streams.length;
      sender = notificationClient(svc.addr, OWN_CONNECTION);
      const probe = sender;
      // Each worker learns the other's streams a moment after they start.
      await eventually(
        async () => (await send(probe, { recipient: "many", title: "probe" })).delivered === n,
        5_000,
        `delivered ${n}`,
      );
      for (const s of streams.slice(0, 3)) s.cancel();
      await eventually(
        async () => (await send(probe, { recipient: "many", title: "probe" })).delivered === n - 3,
        5_000,
        `delivered ${n - 3}`,
      );
      const last = await send(probe, { recipient: "many", title: "last" });
      assert.equal(last.delivered, n - 3);
      // And each of the others got it.
      await eventually(
        () => streams.slice(3).every((s) => s.items.at(-1)?.title === "last"),
        5_000,
        "the others got it",
      );
    } finally {
      for (const c of clients) c.close();
      sender?.close();
    }
  },
);

Deno.test(
  "a subscriber whose instance is killed resumes elsewhere from its position: no gap",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats();
    const options = { endpoints: etcd.endpoints, name: "killed", serverExtra: brokerYaml(nats.servers) };
    await using doomed = await ServiceProcess.start(options);
    await using other = await ServiceProcess.start(options);
    const onDoomed = notificationClient(doomed.addr);
    const sender = notificationClient(other.addr);
    try {
      const first = recoverer(onDoomed, "k", { recover: false });
      await first.ready;
      const load = steadySends(sender, "k");
      const acked = load.acked;
      await eventually(() => first.items.length >= 20, 5_000, "20 live before the kill");
      doomed.signal("SIGKILL");
      await eventually(() => first.state.status !== undefined, 5_000, "the stream ends with its instance");
      await new Promise((r) => setTimeout(r, 200)); // Sends go on meanwhile: the subscriber misses them live
      const last = first.items.at(-1)!;
      const second = recoverer(sender, "k", { position: last.position, epoch: last.epoch });
      await second.ready;
      assert.equal(second.state.recovered, "true");
      await new Promise((r) => setTimeout(r, 200));
      await load.stop();
      assert.deepEqual(
        [load.refused(), load.unexpected],
        [0, []],
        "every Send through the other instance taken",
      );
      const all = [...first.items, ...second.items];
      await eventually(
        () => [...first.items, ...second.items].length === acked.length,
        5_000,
        `all ${acked.length} acknowledged`,
      );
      assert.deepEqual(
        [...first.items, ...second.items].map((n) => n.position),
        acked.map((s) => s.position),
        `no gap, no duplicate (${all.length} across the kill)`,
      );
      second.cancel();
    } finally {
      onDoomed.close();
      sender.close();
    }
  },
);

Deno.test(
  "a broker restart: Sends answer UNAVAILABLE meanwhile, never a false OK; subscribers stay and resume",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name: "restart",
      serverExtra: brokerYaml(nats.servers),
      metricsAddr: "127.0.0.1:0",
    });
    const client = notificationClient(svc.addr);
    try {
      const stream = recoverer(client, "b", { recover: false });
      await stream.ready;
      const load = steadySends(client, "b");
      const acked = load.acked;
      await eventually(() => stream.items.length >= 10, 5_000, "10 before the restart");
      await nats.stop(0, "SIGTERM");
      await eventually(
        async () => (await healthCheck(svc.addr, NOTIFICATION_SERVICE)) === "NOT_SERVING",
        5_000,
        "NOT_SERVING",
      );
      await eventually(() => load.refused() > 0, 5_000, "a refused Send");
      await nats.start(0);
      await eventually(
        async () => (await healthCheck(svc.addr, NOTIFICATION_SERVICE)) === "SERVING",
        10_000,
        "SERVING again",
      );
      const before = acked.length;
      await eventually(() => acked.length >= before + 10, 5_000, "10 after the restart");
      await load.stop();
      assert.deepEqual(load.unexpected, [], "refused only with UNAVAILABLE");
      await eventually(() => stream.items.length === acked.length, 5_000, `all ${acked.length} acknowledged`);
      assert.equal(stream.state.status, undefined, "the stream stayed open");
      assert.deepEqual(stream.items.map((n) => n.position), acked.map((s) => s.position));
      assert.ok(svc.lines.some((l) => l.includes("Broker unreachable")), svc.lines.join("\n"));
      // What the metrics say: every refused Send, every stream write, the connection back up.
      const metrics = await scrape(svc.metricsPort);
      assert.equal(metrics.value("notification_server_sends_unavailable_total"), load.refused());
      assert.equal(metrics.value("notification_server_notifications_delivered_total"), acked.length);
      assert.ok((metrics.value("notification_server_broker_connected") ?? 0) >= 1, metrics.text);
      stream.cancel();
    } finally {
      client.close();
    }
  },
);

Deno.test(
  "a service that cannot reach the broker at start exits 1 with one line and registers nothing",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.spawn({
      endpoints: etcd.endpoints,
      name: "no-broker",
      startupTimeout: "1s",
      serverExtra: brokerYaml(["127.0.0.1:1"]),
    });
    const status = await svc.status;
    assert.equal(status.code, 1, svc.lines.join("\n"));
    const errors = svc.lines.filter((l) => l.includes("ERROR"));
    assert.equal(errors.length, 1, svc.lines.join("\n"));
    assert.match(errors[0], /cannot reach the NATS broker at 127\.0\.0\.1:1: .*broker\.nats\.servers/);
    assert.ok(!svc.lines.some((l) => l.includes("Service registered")), svc.lines.join("\n"));
  },
);

Deno.test(
  "a Go client and a Python client (raw protobuf, deadlines, request ids, 3 concurrent streams each) resume from a position",
  NETWORK_TEST,
  async () => {
    const go = await goClient();
    await using etcd = await useEtcd();
    await using nats = await startNats();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name: "foreign-resume",
      serverExtra: brokerYaml(nats.servers),
    });
    const client = notificationClient(svc.addr);
    try {
      const sent: SendResult[] = [];
      for (let i = 0; i < 10; i++) sent.push(await send(client, { recipient: "f", title: `n${i}` }));
      const from = sent[3];
      const expected = sent.slice(4).map((s, i) => ({
        title: `n${i + 4}`,
        position: s.position,
        epoch: s.epoch,
      }));
      const lines = (text: string) => text.trim().split("\n").map((l) => JSON.parse(l));
      // Three concurrent streams from each client, on one connection, each with its own request id.
      const goOut = await new Deno.Command(go, {
        args: [
          "resume",
          "-addr",
          svc.addr,
          "-recipient",
          "f",
          "-position",
          String(from.position),
          "-epoch",
          from.epoch,
          "-count",
          "6",
          "-streams",
          "3",
        ],
      }).output();
      const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
      assert.equal(goOut.code, 0, decode(goOut.stderr));
      assert.deepEqual(
        lines(decode(goOut.stdout)),
        [0, 1, 2].map((stream) => ({ stream, recovered: ["true"], items: expected })),
        "Go: the six after the position, on each stream",
      );
      const pyOut = lines(
        await python(PYTHON_RESUME, svc.addr, "f", String(from.position), from.epoch, "6", "3"),
      );
      assert.deepEqual(
        pyOut,
        [0, 1, 2].map((stream) => ({ stream, recovered: "true", items: expected })),
        "Python: the six after the position, on each stream",
      );
    } finally {
      client.close();
    }
  },
);

Deno.test(
  "a stream deleted under the service is made again: its streams end, positions start a new epoch, recovery says not recovered",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name: "recreated",
      workers: 1,
      serverExtra: brokerYaml(nats.servers),
    });
    const client = notificationClient(svc.addr);
    const nc = await connect({ servers: nats.servers });
    try {
      const before = await send(client, { recipient: "d", title: "old" });
      const live = recoverer(client, "d", { recover: false });
      await live.ready;
      await (await jetstreamManager(nc)).streams.delete("NOTIFICATIONS");
      // The first Send finds no stream (UNAVAILABLE, never OK); the service makes it again.
      const next = await eventually(
        async () => await send(client, { recipient: "d", title: "new" }),
        10_000,
        "a Send stored again",
      );
      assert.notEqual(next.epoch, before.epoch);
      assert.equal(next.position, 1);
      await eventually(() => live.state.status !== undefined, 5_000, "the old stream ends");
      assert.equal(live.state.status!.code, grpc.status.UNAVAILABLE);
      assert.match(live.state.status!.details, /recreated/);
      const again = recoverer(client, "d", { position: before.position, epoch: before.epoch });
      await again.ready;
      assert.equal(again.state.recovered, "false");
      await eventually(() => again.items.length === 1, 5_000, "the new epoch's one");
      assert.deepEqual([again.items[0].title, again.items[0].epoch], ["new", next.epoch]);
      again.cancel();
      assert.ok(svc.lines.some((l) => l.includes("was recreated")), svc.lines.join("\n"));
    } finally {
      client.close();
      await nc.close();
    }
  },
);

Deno.test(
  "the broker's credentials: a token or user and password are sent; a wrong one ends the start in one line",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using withToken = await startNats({ args: ["--auth", "s3cret-token"] });
    await using withUser = await startNats({ args: ["--user", "notif", "--pass", "pw"] });
    for (
      const [nats, good] of [[withToken, { token: "s3cret-token" }], [withUser, {
        user: "notif",
        password: "pw",
      }]] as const
    ) {
      await using svc = await ServiceProcess.start({
        endpoints: etcd.endpoints,
        name: "creds",
        workers: 1,
        serverExtra: brokerYaml(nats.servers, good),
      });
      const client = notificationClient(svc.addr);
      try {
        assert.equal((await send(client, { recipient: "c", title: "t" })).stored, true);
      } finally {
        client.close();
      }
    }
    await using refused = await ServiceProcess.spawn({
      endpoints: etcd.endpoints,
      name: "creds-wrong",
      startupTimeout: "5s",
      serverExtra: brokerYaml(withToken.servers, { token: "wrong" }),
    });
    assert.equal((await refused.status).code, 1, refused.lines.join("\n"));
    const errors = refused.lines.filter((l) => l.includes("ERROR"));
    assert.equal(errors.length, 1, refused.lines.join("\n"));
    assert.match(
      errors[0],
      /the NATS broker at .* refused our credentials: Authorization Violation .*broker\.nats/i,
    );
    // Refused credentials are not retried until the start-up budget is spent.
    assert.ok(Date.now() - refused.startedAt < 5_000, `${Date.now() - refused.startedAt} ms`);
  },
);

Deno.test(
  "the broker over TLS with a client certificate (tls.ca-file, cert-file, key-file)",
  NETWORK_TEST,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "nats-tls-" });
    await makeCertificates(dir);
    await using etcd = await useEtcd();
    await using nats = await startNats({
      args: [
        "--tlsverify",
        "--tlscert",
        `${dir}/server.pem`,
        "--tlskey",
        `${dir}/server.key`,
        "--tlscacert",
        `${dir}/ca.pem`,
      ],
    });
    const tls = (withClientCert: boolean) =>
      `${brokerYaml(nats.servers)}      tls: { ca-file: "${dir}/ca.pem"${
        withClientCert ? `, cert-file: "${dir}/client.pem", key-file: "${dir}/client.key"` : ""
      } }\n`;
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name: "tls",
      workers: 1,
      serverExtra: tls(true),
    });
    const client = notificationClient(svc.addr);
    try {
      assert.equal((await send(client, { recipient: "t", title: "over TLS" })).stored, true);
    } finally {
      client.close();
    }
    // Without its certificate the server refuses it: one line, exit 1.
    await using refused = await ServiceProcess.spawn({
      endpoints: etcd.endpoints,
      name: "tls-refused",
      startupTimeout: "3s",
      serverExtra: tls(false),
    });
    assert.equal((await refused.status).code, 1, refused.lines.join("\n"));
    assert.equal(refused.lines.filter((l) => l.includes("ERROR")).length, 1, refused.lines.join("\n"));
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test("the broker with an NKey user (nkey-seed-file)", NETWORK_TEST, async () => {
  const dir = await Deno.makeTempDir({ prefix: "nats-nkey-" });
  const user = createUser();
  await Deno.writeTextFile(`${dir}/user.nk`, new TextDecoder().decode(user.getSeed()) + "\n");
  await Deno.writeTextFile(
    `${dir}/nats.conf`,
    `authorization { users = [ { nkey: "${user.getPublicKey()}" } ] }\n`,
  );
  await using etcd = await useEtcd();
  await using nats = await startNats({ args: ["-c", `${dir}/nats.conf`] });
  await using svc = await ServiceProcess.start({
    endpoints: etcd.endpoints,
    name: "nkey",
    workers: 1,
    serverExtra: brokerYaml(nats.servers, { "nkey-seed-file": `${dir}/user.nk` }),
  });
  const client = notificationClient(svc.addr);
  try {
    assert.equal((await send(client, { recipient: "k", title: "signed in" })).stored, true);
  } finally {
    client.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(
  "a service started before its broker waits for it, registers only once connected, then stores",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const port = freePort();
    await using svc = await ServiceProcess.spawn({
      endpoints: etcd.endpoints,
      name: "late-broker",
      startupTimeout: "30s",
      serverExtra: brokerYaml([`127.0.0.1:${port}`]),
    });
    using kv = scopedClient(etcd.endpoints);
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal(svc.exited, false, svc.lines.join("\n"));
    assert.equal(await kv.getAll().prefix("/services/late-broker").count(), 0, "not registered meanwhile");
    await using nats = await startNats({ ports: [port] });
    await svc.waitForLine(/gRPC server listening on/, 20_000);
    assert.ok(svc.lines.some((l) => l.includes("Service registered to etcd: /services/late-broker/")));
    const client = notificationClient(svc.addr);
    try {
      assert.equal((await send(client, { recipient: "l", title: "after all" })).stored, true);
    } finally {
      client.close();
    }
    assert.equal(nats.servers[0], `127.0.0.1:${port}`);
  },
);

Deno.test(
  "a replay goes at its client's pace: a client that pauses mid-replay gets all 3 000, not cut off",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name: "paced",
      workers: 1,
      serverExtra: `  subscriber-queue: 50\n${brokerYaml(nats.servers, { "history-size": 5_000 })}`,
    });
    const client = notificationClient(svc.addr);
    try {
      await Promise.all(Array.from({ length: 8 }, async (_, lane) => {
        for (let i = lane; i < 3_000; i += 8) await send(client, { recipient: "paced", title: `m${i}` });
      }));
      const stream = recoverer(client, "paced");
      await eventually(() => stream.items.length >= 100, 10_000, "the replay's start");
      stream.stream.pause(); // the client stops reading: HTTP/2 flow control fills up
      await new Promise((r) => setTimeout(r, 1_500));
      stream.stream.resume();
      await eventually(
        () => stream.items.length === 3_000 || stream.state.status,
        20_000,
        "the whole replay",
      );
      assert.equal(stream.state.status, undefined, `the stream ended: ${stream.state.status?.details}`);
      assert.equal(new Set(stream.items.map((n) => n.position)).size, 3_000, "each once");
      stream.cancel();
    } finally {
      client.close();
    }
  },
);
