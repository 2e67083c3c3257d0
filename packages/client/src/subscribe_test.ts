/**
 * subscribe() against fake instances: real grpc-js servers on loopback that serve Subscribe from
 * a script (ready headers, notifications pushed by the test, an end on demand), registered in a
 * real etcd with this package's registrar. What is under test is the client: gaps, resumption,
 * handover before break, and passing each notification on once.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { createEtcdClient, type EtcdClient } from "@notification-server/registry";
import { EtcdRegistrar } from "@notification-server/registry";
import { type Notification, notificationClient } from "./notification_client.ts";
import { subscribe } from "./subscribe.ts";

type SubscribeCall = grpc.ServerWritableStream<
  { recipient: string; recover?: boolean; position?: number; epoch?: string },
  Notification
>;

/** A fake instance: its Subscribe streams, held open until the test ends or pushes to them. */
interface FakeInstance extends AsyncDisposable {
  addr: string;
  /** Streams open now. */
  calls: Set<SubscribeCall>;
  /** Every stream ever opened. */
  opened: number;
  push(notification: Partial<Notification> & { id: string; title: string }): void;
  /** Ends every open stream with OK (a stopping instance). */
  endAll(): void;
  registrar: EtcdRegistrar;
}

async function fakeInstance(etcd: EtcdClient, name: string, id: string): Promise<FakeInstance> {
  const calls = new Set<SubscribeCall>();
  let opened = 0;
  const server = new grpc.Server();
  server.addService(notificationClient().service, {
    subscribe: (call: SubscribeCall) => {
      opened++;
      calls.add(call);
      call.on("cancelled", () => calls.delete(call));
      call.sendMetadata(new grpc.Metadata()); // ready: routed from every instance
    },
    send: (_call: unknown, callback: grpc.sendUnaryData<unknown>) =>
      callback({ code: grpc.status.UNIMPLEMENTED }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createInsecure(),
      (e, p) => e ? reject(e) : resolve(p),
    )
  );
  const addr = `127.0.0.1:${port}`;
  const registrar = new EtcdRegistrar(etcd, { leaseTtlSeconds: 5 });
  await registrar.register({ id, name, addr, metadata: {} });
  return {
    addr,
    calls,
    get opened() {
      return opened;
    },
    registrar,
    push(n) {
      for (const call of calls) {
        call.write({ recipient: "alice", body: "", data: {}, createdAtMs: Date.now(), ...n });
      }
    },
    endAll() {
      for (const call of calls) call.end();
      calls.clear();
    },
    [Symbol.asyncDispose]: async () => {
      await registrar.deregister();
      server.forceShutdown();
    },
  };
}

/** Runs subscribe() in the background, collecting titles and events. */
function follow(endpoints: string[], name: string) {
  const abort = new AbortController();
  const titles: string[] = [];
  const events: string[] = [];
  const done = (async () => {
    for await (
      const n of subscribe({
        etcd: { endpoints, dialTimeoutMs: 2_000 },
        name,
        recipient: "alice",
        signal: abort.signal,
        onGap: ({ reason }) => events.push(`gap: ${reason}`),
        onResumed: () => events.push("resumed"),
        onHandover: ({ from, to }) => events.push(`handover ${from} -> ${to}`),
        onReady: () => events.push("ready"),
      })
    ) titles.push(n.title);
  })();
  return { titles, events, stop: async () => (abort.abort(), await done) };
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 8_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A real etcd, a client on it and a service name of the test's own. */
async function withEtcd(
  fn: (parts: { endpoints: string[]; client: EtcdClient; name: string }) => Promise<void>,
) {
  await using etcd = await useEtcd();
  const client = createEtcdClient({ endpoints: etcd.endpoints, dialTimeoutMs: 2_000 });
  try {
    await fn({ endpoints: etcd.endpoints, client, name: `sub-${crypto.randomUUID().slice(0, 8)}` });
  } finally {
    client.close();
  }
}

Deno.test(
  "a stream that ends is a gap: subscribe() says so, opens another, and says when it is back",
  NETWORK_TEST,
  () =>
    withEtcd(async ({ endpoints, client, name }) => {
      await using a = await fakeInstance(client, name, "a");
      const sub = follow(endpoints, name);
      try {
        await waitFor("a stream on a", () => a.calls.size === 1);
        a.push({ id: "1", title: "first" });
        await waitFor("first", () => sub.titles.length === 1);
        a.endAll();
        await waitFor("a second stream", () => a.opened === 2 && a.calls.size === 1);
        await waitFor("resumed", () => sub.events.includes("resumed"));
        assert.deepEqual(sub.events.map((e) => e.replace(/^gap: .*/, "gap")), [
          "ready",
          "gap",
          "ready",
          "resumed",
        ]);
        a.push({ id: "2", title: "second" });
        await waitFor("second", () => sub.titles.length === 2);
        assert.deepEqual(sub.titles, ["first", "second"]);
      } finally {
        await sub.stop();
      }
      await waitFor("the stream cancelled when the subscription ends", () => a.calls.size === 0);
    }),
);

Deno.test(
  "an instance leaving the registry hands the stream over before it ends: no gap, no duplicate",
  NETWORK_TEST,
  () =>
    withEtcd(async ({ endpoints, client, name }) => {
      await using a = await fakeInstance(client, name, "a");
      await using b = await fakeInstance(client, name, "b");
      const sub = follow(endpoints, name);
      try {
        await waitFor("one stream", () => a.calls.size + b.calls.size === 1);
        const [from, to] = a.calls.size === 1 ? [a, b] : [b, a];
        from.push({ id: "1", title: "before" });
        await waitFor("before", () => sub.titles.length === 1);
        await from.registrar.deregister(); // leaving: still serving, no longer listed
        await waitFor("a stream on the other instance", () => to.calls.size === 1);
        await waitFor("the handover", () => sub.events.length === 3);
        assert.deepEqual(sub.events, ["ready", "ready", `handover ${from.addr} -> ${to.addr}`], "no gap");
        // The old stream stays until its instance ends it (its drain): a Send routed there just
        // before the new stream was ready still arrives. One already passed on (same id, as a
        // notification reaching both streams while they overlap) comes through once.
        assert.equal(from.calls.size, 1, "the old stream is left to its instance");
        from.push({ id: "2", title: "routed to the old instance" });
        await waitFor("routed to the old instance", () => sub.titles.length === 2);
        from.endAll(); // drained
        to.push({ id: "1", title: "before" });
        to.push({ id: "3", title: "after" });
        await waitFor("after", () => sub.titles.includes("after"));
        assert.deepEqual(
          sub.titles,
          ["before", "routed to the old instance", "after"],
          "each id passed on once",
        );
        assert.deepEqual(sub.events.length, 3, "the old stream's end is no gap");
      } finally {
        await sub.stop();
      }
    }),
);

Deno.test(
  "subscribe() with positions resumes after the last one it passed on, and passes a repeated one on once",
  NETWORK_TEST,
  () =>
    withEtcd(async ({ endpoints, client, name }) => {
      await using a = await fakeInstance(client, name, "a");
      const sub = follow(endpoints, name);
      try {
        await waitFor("a stream", () => a.calls.size === 1);
        const [first] = a.calls;
        assert.equal(first.request.recover, false, "live at first");
        for (const p of [1, 2, 3]) a.push({ id: `id${p}`, title: `n${p}`, position: p, epoch: "e1" });
        await waitFor("three", () => sub.titles.length === 3);
        a.endAll(); // the stream ends without warning (a crash, say)
        await waitFor("a second stream", () => a.calls.size === 1 && a.opened === 2);
        const [second] = a.calls;
        const request = second.request;
        assert.deepEqual([request.recover, request.position, request.epoch], [true, 3, "e1"]);
        // A stream that overlaps (the handover's old one, or a replay that starts before): by position.
        a.push({ id: "id3-again", title: "n3", position: 3, epoch: "e1" });
        a.push({ id: "id4", title: "n4", position: 4, epoch: "e1" });
        await waitFor("the fourth", () => sub.titles.includes("n4"));
        assert.deepEqual(sub.titles, ["n1", "n2", "n3", "n4"]);
      } finally {
        await sub.stop();
      }
    }),
);
