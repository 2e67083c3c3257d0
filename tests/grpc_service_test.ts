/** The gRPC surface on a real server over loopback: Send/Subscribe, limits, health, reflection, stop. */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import http2 from "node:http2";
import { loadSync } from "@grpc/proto-loader";
import type { HealthService } from "../src/serving/health.ts";
import { serveInProcess } from "./helpers/in_process.ts";
import {
  eventually,
  healthCheck,
  type NotificationClient,
  notificationClient,
  send,
} from "./helpers/grpc.ts";
import { services } from "../src/transport/protos.ts";
import { NETWORK_TEST } from "@notification-server/registry/testing";

/** Runs `fn` against the service's serving side in this process (tests/helpers/in_process.ts). */
async function withServer(
  fn: (addr: string, parts: { subscribers: () => number; health: HealthService }) => Promise<void>,
  maxSubscribers = 100,
  limits: {
    maxConnections?: number;
    handshakeTimeoutMs?: number;
    maxHealthWatches?: number;
    subscriberQueue?: { messages: number; bytes: number };
    queuedBytes?: number;
  } = {},
): Promise<void> {
  const yaml = [
    `max-subscribers: ${maxSubscribers}`,
    limits.maxConnections && `max-connections: ${limits.maxConnections}`,
    limits.handshakeTimeoutMs && `handshake-timeout: ${limits.handshakeTimeoutMs}ms`,
    limits.maxHealthWatches && `max-health-watches: ${limits.maxHealthWatches}`,
    limits.subscriberQueue && `subscriber-queue: ${limits.subscriberQueue.messages}`,
    limits.subscriberQueue && `subscriber-queue-bytes: ${limits.subscriberQueue.bytes}`,
    limits.queuedBytes && `subscriber-queue-total-bytes: ${limits.queuedBytes}`,
  ].filter(Boolean).map((line) => `  ${line}\n`).join("");
  await using server = await serveInProcess(yaml);
  await fn(server.addr, { subscribers: () => server.serving.subscribers(), health: server.health });
}

function collect(stream: grpc.ClientReadableStream<unknown>) {
  const items: Record<string, unknown>[] = [];
  stream.on("data", (item: Record<string, unknown>) => items.push(item));
  const status = new Promise<grpc.StatusObject>((resolve) => stream.on("status", resolve));
  stream.on("error", () => {});
  return { items, status };
}

Deno.test(
  "Send delivers to every live subscriber of the recipient and only to them",
  NETWORK_TEST,
  async () => {
    await withServer(async (addr, { subscribers }) => {
      const client = notificationClient(addr);
      try {
        const a1 = collect(client.subscribe({ recipient: "alice" }));
        const a2 = collect(client.subscribe({ recipient: "alice" }));
        const b = collect(client.subscribe({ recipient: "bob" }));
        await eventually(() => subscribers() === 3, 2_000, "three subscribers");
        const before = Date.now();
        const res = await send(client, {
          recipient: "alice",
          title: "Hello",
          body: "World",
          data: { k: "v" },
        });
        assert.equal(res.delivered, 2);
        assert.equal(res.instanceId, "test-1");
        assert.match(res.id, /^[0-9a-f-]{36}$/);
        assert.ok(res.createdAtMs >= before - 1000 && res.createdAtMs <= Date.now() + 1000);
        await eventually(() => a1.items.length === 1 && a2.items.length === 1, 2_000, "delivery");
        assert.deepEqual(a1.items[0], {
          id: res.id,
          recipient: "alice",
          title: "Hello",
          body: "World",
          data: { k: "v" },
          createdAtMs: res.createdAtMs,
          // No broker: no position (notification.proto's defaults).
          position: 0,
          epoch: "",
        });
        assert.equal(b.items.length, 0);
        assert.equal((await send(client, { recipient: "carol", title: "nobody" })).delivered, 0);
      } finally {
        client.close();
      }
    });
  },
);

Deno.test(
  "invalid input gets INVALID_ARGUMENT with the reason, and the server keeps serving",
  NETWORK_TEST,
  async () => {
    await withServer(async (addr) => {
      const client = notificationClient(addr);
      try {
        await assert.rejects(
          send(client, { recipient: "", title: "x" }),
          (e: grpc.ServiceError) =>
            e.code === grpc.status.INVALID_ARGUMENT && e.details === "recipient is required",
        );
        await assert.rejects(
          send(client, { recipient: "a", body: "x".repeat(70_000) }),
          (e: grpc.ServiceError) =>
            e.code === grpc.status.INVALID_ARGUMENT && /body is 70000 bytes/.test(e.details),
        );
        await assert.rejects(
          send(client, { recipient: "a", body: "x".repeat(300_000) }),
          (e: grpc.ServiceError) => e.code === grpc.status.RESOURCE_EXHAUSTED,
        );
        const sub = collect(client.subscribe({ recipient: "" }));
        const status = await sub.status;
        assert.equal(status.code, grpc.status.INVALID_ARGUMENT);
        assert.equal(status.details, "recipient is required");
        assert.equal((await send(client, { recipient: "a", title: "still up" })).delivered, 0);
      } finally {
        client.close();
      }
    });
  },
);

Deno.test("Subscribe past max-subscribers gets RESOURCE_EXHAUSTED", NETWORK_TEST, async () => {
  await withServer(async (addr, { subscribers }) => {
    const client = notificationClient(addr);
    try {
      collect(client.subscribe({ recipient: "a" }));
      collect(client.subscribe({ recipient: "b" }));
      await eventually(() => subscribers() === 2, 2_000, "two subscribers");
      const third = collect(client.subscribe({ recipient: "c" }));
      const status = await third.status;
      assert.equal(status.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.match(status.details, /max-subscribers/);
    } finally {
      client.close();
    }
  }, 2);
});

Deno.test("Health Check answers per service and Watch streams changes", NETWORK_TEST, async () => {
  await withServer(async (addr, { health }) => {
    assert.equal(await healthCheck(addr), "SERVING");
    await assert.rejects(
      healthCheck(addr, "nope"),
      (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND,
    );
    const { Health } = services();
    const client = new Health(addr, grpc.credentials.createInsecure());
    try {
      const watch = collect(client.watch({ service: "" }));
      await eventually(() => watch.items.length === 1, 2_000, "initial status");
      health.setAllNotServing();
      await eventually(() => watch.items.length === 2, 2_000, "changed status");
      assert.deepEqual(watch.items.map((i) => i.status), ["SERVING", "NOT_SERVING"]);
    } finally {
      client.close();
    }
  });
});

Deno.test(
  "stop ends open Subscribe and Watch streams with OK instead of waiting for the deadline",
  NETWORK_TEST,
  async () => {
    const server = await serveInProcess();
    const { port } = server;
    const client = notificationClient(`127.0.0.1:${port}`);
    const { Health } = services();
    const hc = new Health(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    try {
      const sub = collect(client.subscribe({ recipient: "a" }));
      const watch = collect(hc.watch({ service: "" }));
      await eventually(
        () => server.serving.subscribers() === 1 && watch.items.length === 1,
        2_000,
        "streams open",
      );
      const t0 = Date.now();
      const outcome = await server.serving.drain(5_000);
      assert.equal(outcome, "graceful");
      assert.ok(Date.now() - t0 < 1_000, `stopped in ${Date.now() - t0} ms`);
      assert.equal((await sub.status).code, grpc.status.OK);
      assert.equal((await watch.status).code, grpc.status.OK);
    } finally {
      client.close();
      hc.close();
    }
  },
);

Deno.test(
  "server reflection lists the notification, health and reflection services",
  NETWORK_TEST,
  async () => {
    await withServer(async (addr) => {
      const dir = new URL("../node_modules/@grpc/reflection/build/proto/", import.meta.url).pathname;
      const def = loadSync("grpc/reflection/v1alpha/reflection.proto", { includeDirs: [dir] });
      const pkg = grpc.loadPackageDefinition(def) as unknown as {
        grpc: { reflection: { v1alpha: { ServerReflection: grpc.ServiceClientConstructor } } };
      };
      const client = new pkg.grpc.reflection.v1alpha.ServerReflection(
        addr,
        grpc.credentials.createInsecure(),
      );
      try {
        const call = client.serverReflectionInfo();
        const answer = new Promise<{ listServicesResponse: { service: { name: string }[] } }>(
          (resolve, reject) => {
            call.on("data", resolve);
            call.on("error", reject);
          },
        );
        call.write({ listServices: "*" });
        const names = (await answer).listServicesResponse.service.map((s) => s.name).sort();
        call.end();
        assert.deepEqual(names, [
          "grpc.health.v1.Health",
          "grpc.reflection.v1.ServerReflection",
          "grpc.reflection.v1alpha.ServerReflection",
          "notification.v1.NotificationService",
        ]);
      } finally {
        client.close();
      }
    });
  },
);

Deno.test(
  "Health Watch is bounded: long names refused, streams capped, a name forgotten with its last watcher",
  NETWORK_TEST,
  async () => {
    await withServer(
      async (addr, { health }) => {
        const { Health } = services();
        const client = new Health(addr, grpc.credentials.createInsecure());
        try {
          const long = collect(client.watch({ service: "x".repeat(300) }));
          assert.equal((await long.status).code, grpc.status.INVALID_ARGUMENT);
          const calls = Array.from({ length: 3 }, (_, i) => client.watch({ service: `name-${i}` }));
          const watches = calls.map(collect);
          await eventually(() => watches.every((w) => w.items.length === 1), 3_000, "three watches open");
          assert.equal(health.watchedNames, 3);
          const fourth = collect(client.watch({ service: "name-3" }));
          const status = await fourth.status;
          assert.equal(status.code, grpc.status.RESOURCE_EXHAUSTED);
          assert.match(status.details, /max-health-watches/);
          for (const call of calls) call.cancel();
          await eventually(() => health.watchedNames === 0 && health.watches === 0, 3_000, "entries removed");
        } finally {
          client.close();
        }
      },
      100,
      { maxHealthWatches: 3 },
    );
  },
);

Deno.test(
  "silent connections are closed after the handshake timeout, and a new one takes a silent one's slot",
  NETWORK_TEST,
  async () => {
    await withServer(
      async (addr) => {
        const port = Number(addr.split(":")[1]);
        const silent = await Promise.all(
          Array.from({ length: 4 }, () => Deno.connect({ hostname: "127.0.0.1", port })),
        );
        /** "closed" once the server ends the connection (its SETTINGS frame may come first), else "open". */
        const readOrOpen = async (conn: Deno.Conn, ms: number) => {
          const until = Date.now() + ms;
          const buffer = new Uint8Array(256);
          while (Date.now() < until) {
            const n = await Promise.race([
              conn.read(buffer).catch(() => null),
              new Promise<"wait">((r) => setTimeout(() => r("wait"), until - Date.now())),
            ]);
            if (n === null) return "closed";
            if (n === "wait") break;
          }
          return "open";
        };
        // The 4th is over the cap of 3: it takes the slot of the oldest silent one, which is closed
        // at once; the other three are held until the handshake timeout.
        const early = await Promise.all(silent.map((c) => readOrOpen(c, 500)));
        assert.deepEqual(early.filter((o) => o === "closed").length, 1, `one made room: ${early}`);
        const held = silent.filter((_, i) => early[i] === "open");
        const outcomes = await Promise.all(held.map((c) => readOrOpen(c, 5_000)));
        assert.deepEqual(outcomes, ["closed", "closed", "closed"]);
        // With the silent ones gone, a real client gets in.
        assert.equal(await healthCheck(addr), "SERVING");
        for (const conn of silent) {
          try {
            conn.close();
          } catch { /* closed */ }
        }
      },
      100,
      { maxConnections: 3, handshakeTimeoutMs: 2_000 },
    );
  },
);

Deno.test(
  "a recipient, title or data key that is not UTF-8 gets INVALID_ARGUMENT, not U+FFFD",
  NETWORK_TEST,
  async () => {
    await withServer(async (addr) => {
      const client = new grpc.Client(addr, grpc.credentials.createInsecure());
      const field = (n: number, bytes: number[]) => [n * 8 + 2, bytes.length, ...bytes];
      const call = (path: string, body: number[]) =>
        new Promise<grpc.ServiceError | null>((resolve) =>
          client.makeUnaryRequest(
            path,
            (b: Buffer) => b,
            (b: Buffer) => b,
            Buffer.from(body),
            (error) => resolve(error),
          )
        );
      try {
        const send = "/notification.v1.NotificationService/Send";
        const bad = [0x61, 0xff, 0x62]; // "a", an invalid byte, "b"
        for (
          const [body, what] of [
            [[...field(1, bad), ...field(2, [0x74])], "recipient"],
            [[...field(1, [0x72]), ...field(2, bad)], "title"],
            [[...field(1, [0x72]), ...field(2, [0x74]), ...field(4, field(1, bad))], "data key"],
          ] as const
        ) {
          const error = await call(send, [...body]);
          assert.equal(error?.code, grpc.status.INVALID_ARGUMENT, what);
          assert.equal(error?.details, `${what} is not valid UTF-8`);
        }
        const ok = await call(send, [...field(1, [0x72, 0xc3, 0xa9]), ...field(2, [0x74])]); // "ré"
        assert.equal(ok, null);
      } finally {
        client.close();
      }
    });
  },
);

Deno.test(
  "a subscriber that stops reading is cut off with RESOURCE_EXHAUSTED and not counted; others keep up",
  NETWORK_TEST,
  async () => {
    await withServer(
      async (addr) => {
        const fastClient = notificationClient(addr, { "grpc.use_local_subchannel_pool": 1 });
        const sender = notificationClient(addr, { "grpc.use_local_subchannel_pool": 1 });
        try {
          // A client that stops reading at the HTTP/2 level (grpc-js's own client keeps reading into
          // its buffer when paused): flow control then holds the server's writes back.
          const slow = rawSubscribe(addr, "flood");
          const fast = collect(fastClient.subscribe({ recipient: "flood" }));
          await eventually(
            async () => (await send(sender, { recipient: "flood", title: "probe" })).delivered === 2,
            3_000,
            "both subscribed",
          );
          const body = "x".repeat(8 * 1024);
          const counts: number[] = [];
          for (let i = 0; i < 400 && counts.at(-1) !== 1; i++) {
            counts.push((await send(sender, { recipient: "flood", title: `n${i}`, body })).delivered);
          }
          assert.equal(
            counts.at(-1),
            1,
            `the slow subscriber was cut off: delivered counts ${counts.slice(-5)}`,
          );
          const sent = counts.length;
          const status = await slow.resumeAndWait(); // what was held back, then the trailers
          assert.equal(status.code, String(grpc.status.RESOURCE_EXHAUSTED));
          assert.match(status.message, /subscriber too slow: \d+ notifications \(\d+ bytes\) not yet read/);
          // The reader got every one: the probes (at least one) plus all sent.
          await eventually(
            () => fast.items.filter((n) => n.title !== "probe").length === sent,
            5_000,
            "fast got all",
          );
          console.log(`slow subscriber cut off after ${sent} notifications of 8 KB (queue 50 / 256 KiB)`);
        } finally {
          fastClient.close();
          sender.close();
        }
      },
      100,
      { subscriberQueue: { messages: 50, bytes: 256 * 1024 } },
    );
  },
);

/** Subscribe over a bare node:http2 stream that does not read until told to. */
/** Sends 8 KB notifications to `recipient` until one reaches a single stream; how many were sent. */
async function floodUntilCut(
  sender: NotificationClient,
  recipient: string,
  subscribers: number,
): Promise<number> {
  const body = "x".repeat(8 * 1024);
  for (let i = 0; i < 400; i++) {
    const { delivered } = await send(sender, { recipient, title: `n${i}`, body });
    if (delivered < subscribers) return i + 1;
  }
  throw new Error(`no subscriber of ${recipient} was cut off after 400 notifications`);
}

Deno.test(
  "a cut-off subscriber that still does not read is reset (ENHANCE_YOUR_CALM), freeing its queue",
  NETWORK_TEST,
  async () => {
    await withServer(
      async (addr) => {
        const sender = notificationClient(addr, { "grpc.use_local_subchannel_pool": 1 });
        const slow = rawSubscribe(addr, "stalled");
        try {
          await eventually(
            async () => (await send(sender, { recipient: "stalled", title: "probe" })).delivered === 1,
            3_000,
            "subscribed",
          );
          await floodUntilCut(sender, "stalled", 1);
          // Its trailers wait behind the data it does not read: the stream is reset instead.
          const code = await Promise.race([
            slow.closed,
            new Promise<string>((r) => setTimeout(r, 5_000, "open")),
          ]);
          assert.equal(code, 11, "reset with ENHANCE_YOUR_CALM, not left open holding its queue");
        } finally {
          slow.close();
          sender.close();
        }
      },
      100,
      { subscriberQueue: { messages: 50, bytes: 256 * 1024 } },
    );
  },
);

Deno.test(
  "the instance's queued bytes are bounded across subscribers: a lagging one is cut when they are spent",
  NETWORK_TEST,
  async () => {
    await withServer(
      async (addr) => {
        const sender = notificationClient(addr, { "grpc.use_local_subchannel_pool": 1 });
        const first = rawSubscribe(addr, "shared");
        const second = rawSubscribe(addr, "shared");
        try {
          await eventually(
            async () => (await send(sender, { recipient: "shared", title: "probe" })).delivered === 2,
            3_000,
            "both subscribed",
          );
          // Each stream may queue 1 MiB, but the instance only 256 KiB: a cut comes far sooner.
          const sent = await floodUntilCut(sender, "shared", 2);
          assert.ok(sent * 8 * 1024 < 1024 * 1024, `cut after ${sent} notifications of 8 KB`);
          const cut = await Promise.race([first.closed, second.closed]);
          assert.equal(cut, 11, "the cut-off stream was reset once it still did not read");
        } finally {
          first.close();
          second.close();
          sender.close();
        }
      },
      100,
      { subscriberQueue: { messages: 1_000, bytes: 1024 * 1024 }, queuedBytes: 256 * 1024 },
    );
  },
);

function rawSubscribe(addr: string, recipient: string) {
  const session = http2.connect(`http://${addr}`);
  const bytes = new TextEncoder().encode(recipient);
  const message = [0x0a, bytes.length, ...bytes]; // SubscribeRequest.recipient
  const stream = session.request({
    ":method": "POST",
    ":path": "/notification.v1.NotificationService/Subscribe",
    "content-type": "application/grpc",
    te: "trailers",
  });
  stream.end(Buffer.from([0, 0, 0, 0, message.length, ...message])); // gRPC length prefix + message
  stream.pause();
  stream.on("error", () => {});
  const closed = new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? 0)));
  return {
    /** Resolves with the stream's RST_STREAM code (0 without one) once it closes, still unread. */
    closed,
    close: () => session.destroy(),
    resumeAndWait(): Promise<{ code: string; message: string }> {
      return new Promise((resolve) => {
        stream.on("trailers", (trailers) => {
          const text = String(trailers["grpc-message"] ?? "");
          resolve({ code: String(trailers["grpc-status"]), message: decodeURIComponent(text) });
          session.close();
        });
        stream.on("data", () => {});
        stream.resume();
      });
    },
  };
}
