/**
 * SendMany and idempotency keys against real service processes, etcd and NATS: one SendMany
 * reaches a thousand recipients' subscribers on three instances once each, with one bad recipient
 * failing alone; a Send whose answer is lost (a proxy drops it and cuts the connection) and is
 * retried with its key is stored or delivered once and answers one id, with the broker and in the
 * mesh (with workers, where the retry may land on another worker); likewise for SendMany.
 */
import assert from "node:assert/strict";
import type * as grpc from "@grpc/grpc-js";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { CutProxy } from "./helpers/cut_proxy.ts";
import {
  eventually,
  notificationClient,
  recoverer,
  send,
  sendMany,
  type SendResult,
  subscriber,
} from "./helpers/grpc.ts";
import { brokerYaml, startNats } from "./helpers/nats.ts";
import { ServiceProcess } from "./helpers/service.ts";

Deno.test(
  "SendMany to 1 000 recipients with subscribers on three instances: each reached once; a bad one fails alone",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const name = "many";
    const options = {
      endpoints: etcd.endpoints,
      name,
      workers: 1,
      maxSubscribers: 1_000,
      // One client connection per instance holds a third of the streams.
      serverExtra:
        "  max-concurrent-streams: 1000\n  max-subscribers-per-connection: 1000\n  max-recipients-per-send: 1001\n",
    };
    await using a = await ServiceProcess.start({ ...options, instanceId: "a" });
    await using b = await ServiceProcess.start({ ...options, instanceId: "b" });
    await using c = await ServiceProcess.start({ ...options, instanceId: "c" });
    const clients = [a, b, c].map((svc) => notificationClient(svc.addr));
    const recipients = Array.from({ length: 1_000 }, (_, i) => `member-${i}`);
    const subscribers = recipients.map((recipient, i) => subscriber(clients[i % 3], recipient));
    try {
      await Promise.all(subscribers.map((s) => s.ready));
      const bad = "x".repeat(300);
      const results = await sendMany(clients[0], { recipients: [...recipients, bad], title: "team news" });
      assert.equal(results.length, 1_001);
      const failed = results.pop()!;
      assert.equal(failed.code, 3, "INVALID_ARGUMENT, for that recipient only");
      assert.match(failed.error, /recipient is 300 bytes; the limit is 256/);
      assert.ok(results.every((r) => r.code === 0 && r.delivered === 1), "each result: one stream took it");
      assert.equal(new Set(results.map((r) => r.id)).size, 1_000, "an id of its own each");
      await eventually(
        () => subscribers.every((s) => s.titles.length === 1),
        10_000,
        "every subscriber's copy",
      );
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(subscribers.every((s) => s.titles.length === 1 && s.titles[0] === "team news"), "once each");
    } finally {
      for (const s of subscribers) s.cancel();
      for (const client of clients) client.close();
    }
  },
);

/** Sends through `proxy` with the answer lost: the call fails, though the server did its work. */
async function lostAnswer<T>(
  proxy: CutProxy,
  call: (client: ReturnType<typeof notificationClient>) => Promise<T>,
) {
  const client = notificationClient(proxy.addr);
  try {
    await send(client, { recipient: "warm-up", title: "connect first" });
    const dropped = proxy.swallow();
    const outcome = call(client).then(() => "answered", (error: grpc.ServiceError) => `failed ${error.code}`);
    await dropped;
    proxy.cut();
    assert.equal(await outcome, "failed 14", "the client saw UNAVAILABLE, not the answer");
  } finally {
    client.close();
  }
}

Deno.test(
  "with a broker, a Send and a SendMany retried after their answers were lost are stored once, with one id",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name: "once",
      workers: 1,
      serverExtra: brokerYaml(nats.servers),
    });
    using proxy = CutProxy.start(svc.port);
    const key = crypto.randomUUID();
    await lostAnswer(
      proxy,
      (client) => send(client, { recipient: "olga", title: "once", idempotencyKey: key }),
    );
    const direct = notificationClient(svc.addr);
    try {
      const retried = await send(direct, { recipient: "olga", title: "once", idempotencyKey: key });
      const again = await send(direct, { recipient: "olga", title: "once", idempotencyKey: key });
      assert.equal(again.id, retried.id);
      assert.equal(again.position, retried.position);
      const other = await send(direct, {
        recipient: "olga",
        title: "another",
        idempotencyKey: crypto.randomUUID(),
      });
      assert.notEqual(other.id, retried.id);
      // The history holds it once, with the id the retry answered.
      const history = recoverer(direct, "olga");
      await eventually(() => history.items.length === 2, 5_000, "the history");
      history.cancel();
      assert.deepEqual(history.items.map((n) => [n.id, n.position]), [
        [retried.id, retried.position],
        [other.id, other.position],
      ]);

      const manyKey = crypto.randomUUID();
      const many = { recipients: ["p1", "p2"], title: "many once", idempotencyKey: manyKey };
      await lostAnswer(proxy, (client) => sendMany(client, many));
      const first = await sendMany(direct, many);
      const second = await sendMany(direct, many);
      assert.deepEqual(second.map((r) => [r.id, r.position]), first.map((r) => [r.id, r.position]));
      for (const [i, recipient] of ["p1", "p2"].entries()) {
        const stored = recoverer(direct, recipient);
        await stored.ready;
        await eventually(() => stored.items.length >= 1, 5_000, `${recipient}'s history`);
        await new Promise((r) => setTimeout(r, 200));
        stored.cancel();
        assert.deepEqual(stored.items.map((n) => n.id), [first[i].id], `${recipient}: stored once`);
      }
    } finally {
      direct.close();
    }
  },
);

Deno.test(
  "in the mesh with workers, a Send retried after its answer was lost is delivered once, with one id",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name: "once-mesh",
      workers: 2,
    });
    await svc.waitForLine(/Service registered/, 20_000);
    using proxy = CutProxy.start(svc.port);
    const direct = notificationClient(svc.addr);
    const watcher = subscriber(direct, "quinn");
    try {
      await watcher.ready;
      const key = crypto.randomUUID();
      await lostAnswer(
        proxy,
        (client) => send(client, { recipient: "quinn", title: "once", idempotencyKey: key }),
      );
      await eventually(() => watcher.titles.length === 1, 5_000, "the first copy");
      // Retries on new connections, which the kernel spreads over both workers.
      const retries: SendResult[] = [];
      for (let i = 0; i < 6; i++) {
        const client = notificationClient(svc.addr);
        retries.push(await send(client, { recipient: "quinn", title: "once", idempotencyKey: key }));
        client.close();
      }
      assert.equal(new Set(retries.map((r) => r.id)).size, 1, "one id");
      assert.ok(retries.every((r) => r.delivered === 1), "what the first answered");
      await send(direct, { recipient: "quinn", title: "after" });
      await eventually(() => watcher.titles.length >= 2, 5_000, "the next one");
      assert.deepEqual(watcher.titles, ["once", "after"], "delivered once");
    } finally {
      watcher.cancel();
      direct.close();
    }
  },
);
