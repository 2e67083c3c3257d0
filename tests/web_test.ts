/**
 * The web edge (`notification-server.http`, src/web/) on one serving thread, as the service wires
 * it, over real loopback HTTP: Send with plain JSON (what curl sends), the Connect and gRPC-Web
 * clients of @connectrpc/connect-web, SSE read off the wire and with Deno's EventSource, both ways
 * across gRPC, each bad input's status and reason, auth with the service's JWTs, the probes, and
 * the drain.
 */
import assert from "node:assert/strict";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { SignJWT } from "jose";
import { NotificationService } from "../src/web/gen/notification_pb.ts";
import { NOTIFICATION_SERVICE } from "../src/serving/services.ts";
import { serveInProcess } from "./helpers/in_process.ts";
import { eventually, notificationClient, send, subscriber } from "./helpers/grpc.ts";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { ServiceProcess } from "./helpers/service.ts";
import { scrape } from "./helpers/metrics.ts";
import { makeCertificates } from "./helpers/certs.ts";
import { brokerYaml, startNats } from "./helpers/nats.ts";

const SEND_PATH = "/notification.v1.NotificationService/Send";

function postJson(base: string, body: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${base}${SEND_PATH}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body,
  });
}

/** Reads SSE events off a fetch response, as EventSource parses them. */
class EventReader {
  readonly #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";

  constructor(response: Response) {
    this.#reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The next event (comments included as `comment`), or undefined at the end. */
  async next(): Promise<Record<string, string> | undefined> {
    for (;;) {
      const cut = this.#buffer.indexOf("\n\n");
      if (cut >= 0) {
        const block = this.#buffer.slice(0, cut);
        this.#buffer = this.#buffer.slice(cut + 2);
        const fields: Record<string, string> = {};
        for (const line of block.split("\n")) {
          const colon = line.indexOf(":");
          const name = colon === 0 ? "comment" : line.slice(0, colon);
          fields[name] = line.slice(colon + 1).trimStart();
        }
        return fields;
      }
      const { value, done } = await this.#reader.read();
      if (done) return undefined;
      this.#buffer += value;
    }
  }

  /** The next `message` event's data, skipping `retry:`, comments and other events. */
  async message(): Promise<Record<string, unknown>> {
    for (;;) {
      const event = await this.next();
      assert.ok(event, "the stream ended before a message");
      if (event.data !== undefined && event.event === undefined) return JSON.parse(event.data);
    }
  }

  cancel(): Promise<void> {
    return this.#reader.cancel().catch(() => {});
  }
}

Deno.test("Send with plain JSON (curl's request) reaches an SSE stream and a gRPC subscriber", async () => {
  await using server = await serveInProcess('  http: { addr: "127.0.0.1:0" }\n');
  const base = `http://127.0.0.1:${server.serving.httpPort}`;
  const events = await fetch(`${base}/v1/recipients/${encodeURIComponent("alice/ü")}/events`);
  assert.equal(events.status, 200);
  assert.equal(events.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const reader = new EventReader(events);
  assert.deepEqual(await reader.next(), { retry: "2000" });
  const client = notificationClient(server.addr);
  const grpcSub = subscriber(client, "alice/ü");
  try {
    await grpcSub.ready;
    const response = await postJson(
      base,
      JSON.stringify({ recipient: "alice/ü", title: "hi", data: { k: "v" } }),
    );
    assert.equal(response.status, 200);
    const answer = await response.json();
    assert.equal(answer.delivered, 2, JSON.stringify(answer));
    assert.equal(answer.instanceId, "test-1");
    assert.match(answer.createdAtMs, /^\d+$/, "int64 as a string, as proto3 JSON says");
    const got = await reader.message();
    assert.equal(got.id, answer.id);
    assert.equal(got.title, "hi");
    assert.deepEqual(got.data, { k: "v" });
    await eventually(() => grpcSub.titles.length === 1, 5_000, "the gRPC subscriber's notification");
    assert.deepEqual(grpcSub.titles, ["hi"]);
    // The reverse: a gRPC Send reaches the SSE stream.
    await send(client, { recipient: "alice/ü", title: "from grpc" });
    assert.equal((await reader.message()).title, "from grpc");
  } finally {
    grpcSub.cancel();
    client.close();
    await reader.cancel();
  }
});

Deno.test("Connect and gRPC-Web clients (connect-web) Send and follow, with gRPC Sends too", async () => {
  await using server = await serveInProcess('  http: { addr: "127.0.0.1:0" }\n');
  const baseUrl = `http://127.0.0.1:${server.serving.httpPort}`;
  const grpc = notificationClient(server.addr);
  try {
    const transports = [
      createConnectTransport({ baseUrl }),
      createConnectTransport({ baseUrl, useBinaryFormat: true }),
      createGrpcWebTransport({ baseUrl }),
    ];
    for (const transport of transports) {
      const client = createClient(NotificationService, transport);
      const abort = new AbortController();
      const recipient = `bob-${crypto.randomUUID()}`;
      const titles: string[] = [];
      let arrived = () => {};
      const following = (async () => {
        for await (const n of client.subscribe({ recipient }, { signal: abort.signal })) {
          titles.push(n.title);
          arrived();
        }
      })().catch((error) => {
        if (!abort.signal.aborted) throw error;
      });
      // Connect sends a stream's headers with its first message: probe until one arrives.
      while (titles.length === 0) {
        await client.send({ recipient, title: "probe" });
        await Promise.race([new Promise<void>((r) => arrived = r), new Promise((r) => setTimeout(r, 50))]);
      }
      const receipt = await client.send({ recipient, title: "over http", data: { a: "1" } });
      assert.equal(receipt.delivered, 1);
      await send(grpc, { recipient, title: "over grpc" });
      while (titles.filter((t) => t !== "probe").length < 2) {
        await new Promise<void>((r) => arrived = r);
      }
      assert.deepEqual(titles.filter((t) => t !== "probe"), ["over http", "over grpc"]);
      abort.abort();
      await following;
      // A refusal comes back as a Connect error with the core's code.
      await assert.rejects(client.send({ recipient: "", title: "x" }), /recipient is required/);
    }
  } finally {
    grpc.close();
  }
});

Deno.test("a plain Send and one through Connect's router (a timeout header) answer alike", async () => {
  await using server = await serveInProcess('  http: { addr: "127.0.0.1:0" }\n');
  const base = `http://127.0.0.1:${server.serving.httpPort}`;
  const answers = [];
  const variants: Record<string, string>[] = [{}, { "connect-timeout-ms": "5000" }, {
    "connect-protocol-version": "1",
  }];
  for (const headers of variants) {
    for (
      const body of [
        '{"recipient":"gina","title":"t"}',
        '{"recipient":"","title":"t"}',
        '{"recipient":"gina","x":1}',
      ]
    ) {
      const response = await postJson(base, body, headers);
      const answer = await response.json();
      delete answer.id;
      delete answer.createdAtMs;
      answers.push({ body, status: response.status, type: response.headers.get("content-type"), answer });
    }
  }
  assert.deepEqual(answers.slice(3, 6), answers.slice(0, 3), "router and plain path");
  assert.deepEqual(answers.slice(6), answers.slice(0, 3));
  assert.deepEqual(answers[0].answer, {
    delivered: 0,
    instanceId: "test-1",
    position: "0",
    epoch: "",
    stored: false,
    code: 0,
    error: "",
  });
});

Deno.test("SendMany and idempotency keys over Connect's JSON, as curl sends them", async () => {
  await using server = await serveInProcess('  http: { addr: "127.0.0.1:0" }\n');
  const base = `http://127.0.0.1:${server.serving.httpPort}`;
  const reader = new EventReader(await fetch(`${base}/v1/recipients/kim/events`));
  await reader.next(); // retry:
  const many = await fetch(`${base}/notification.v1.NotificationService/SendMany`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ recipients: ["kim", "", "lee", "kim"], title: "all", idempotencyKey: "k-1" }),
  });
  assert.equal(many.status, 200);
  const { results } = await many.json();
  assert.deepEqual(results.map((r: { code: number; delivered: number }) => [r.code, r.delivered]), [
    [0, 1],
    [3, 0],
    [0, 0],
    [0, 1],
  ]);
  assert.equal(results[1].error, "recipient is required");
  assert.equal(results[3].id, results[0].id, "kim once");
  assert.equal((await reader.message()).title, "all");
  // The same key again (the plain Send path): the first's id, and nothing new on the stream.
  const again = await postJson(
    base,
    JSON.stringify({ recipient: "kim", title: "all", idempotencyKey: "k-1" }),
  );
  assert.equal((await again.json()).id, results[0].id);
  const next = await postJson(base, JSON.stringify({ recipient: "kim", title: "next" }));
  await next.body?.cancel();
  assert.equal((await reader.message()).title, "next", "the repeat was not delivered");
  await reader.cancel();
});

Deno.test("each bad input gets its status and one-line reason, and the service goes on", async () => {
  await using server = await serveInProcess(
    '  max-header-list-size: 4096\n  http: { addr: "127.0.0.1:0", max-body-size: 2KiB }\n',
  );
  const base = `http://127.0.0.1:${server.serving.httpPort}`;
  const cases: [string, () => Promise<Response>, number, RegExp][] = [
    [
      "malformed JSON",
      () => postJson(base, "{bad"),
      400,
      /cannot decode message notification.v1.SendRequest/,
    ],
    ["an unknown field", () => postJson(base, '{"recipient":"a","colour":"red"}'), 400, /colour/],
    [
      "a wrong content type",
      () => postJson(base, "{}", { "content-type": "text/plain" }),
      415,
      /text\/plain/,
    ],
    ["invalid input", () => postJson(base, '{"recipient":""}'), 400, /recipient is required/],
    [
      "a body over the limit",
      () => postJson(base, JSON.stringify({ recipient: "a", body: "x".repeat(4096) })),
      413,
      /limit is 2048/,
    ],
    ["an unknown route", () => fetch(`${base}/v2/nothing`), 404, /no route for GET \/v2\/nothing/],
    ["a wrong method", () => fetch(`${base}${SEND_PATH}`), 405, /GET is not allowed here; use POST/],
    ["SSE by POST", () => fetch(`${base}/v1/recipients/a/events`, { method: "POST" }), 405, /use GET/],
    [
      "headers over the limit",
      () => fetch(`${base}/healthz2`, { headers: { "x-big": "y".repeat(5000) } }),
      431,
      /max-header-list-size/,
    ],
    [
      "a foreign Last-Event-ID",
      () => fetch(`${base}/v1/recipients/a/events`, { headers: { "last-event-id": "42" } }),
      400,
      /not an event id/,
    ],
    [
      "recovery on the mesh",
      () => fetch(`${base}/v1/recipients/a/events`, { headers: { "last-event-id": "e:4" } }),
      400,
      /needs a broker/,
    ],
    [
      "a bad recipient in the path",
      () => fetch(`${base}/v1/recipients/%E0%A4%A/events`),
      400,
      /percent-encoding/,
    ],
  ];
  for (const [what, request, status, reason] of cases) {
    const response = await request();
    const body = await response.json();
    assert.equal(response.status, status, `${what}: ${JSON.stringify(body)}`);
    assert.match(body.message, reason, what);
    assert.ok(!body.message.includes("\n"), `${what}: one line`);
  }
  const ok = await postJson(base, '{"recipient":"a","title":"still here"}');
  assert.equal(ok.status, 200, "the service goes on");
  await ok.body?.cancel();
});

Deno.test("auth: Bearer for Send, access_token for EventSource, refusals as 401/403/400", async () => {
  const dir = await Deno.makeTempDir({ prefix: "web-auth-" });
  const secret = `${crypto.randomUUID()}${crypto.randomUUID()}`;
  await Deno.writeTextFile(`${dir}/jwt.key`, `${secret}\n`);
  await using server = await serveInProcess(
    `  auth: { jwt: { hmac-secret-file: "${dir}/jwt.key" } }\n  http: { addr: "127.0.0.1:0" }\n`,
  );
  const base = `http://127.0.0.1:${server.serving.httpPort}`;
  const token = (sub: string, scope = "") =>
    new SignJWT({ scope }).setProtectedHeader({ alg: "HS256" }).setSubject(sub).setExpirationTime("5m")
      .sign(new TextEncoder().encode(secret));
  const sender = await token("backend", "notifications:send");
  const alice = await token("alice");

  const noToken = await postJson(base, '{"recipient":"alice","title":"x"}');
  assert.equal(noToken.status, 401);
  assert.equal(noToken.headers.get("www-authenticate"), 'Bearer realm="notification-server"');
  assert.equal((await noToken.json()).code, "unauthenticated");
  const badToken = await postJson(base, '{"recipient":"alice"}', { authorization: "Bearer nope" });
  assert.equal(badToken.status, 401);
  await badToken.body?.cancel();
  const noScope = await postJson(base, '{"recipient":"alice","title":"x"}', {
    authorization: `Bearer ${alice}`,
  });
  assert.equal(noScope.status, 403);
  assert.equal((await noScope.json()).code, "permission_denied");

  const refused = await fetch(`${base}/v1/recipients/alice/events?access_token=${await token("bob")}`);
  assert.equal(refused.status, 403, "bob's token cannot read alice");
  await refused.body?.cancel();
  const both = await fetch(`${base}/v1/recipients/alice/events?access_token=${alice}`, {
    headers: { authorization: `Bearer ${alice}` },
  });
  assert.equal(both.status, 400);
  assert.match((await both.json()).message, /not both/);

  // A real EventSource (Deno's, the WHATWG one) with the token in the query.
  const source = new EventSource(`${base}/v1/recipients/alice/events?access_token=${alice}`);
  try {
    await new Promise((resolve, reject) => {
      source.onopen = resolve;
      source.onerror = reject;
    });
    const message = new Promise<MessageEvent>((resolve) => source.onmessage = resolve);
    const sent = await postJson(base, '{"recipient":"alice","title":"for alice"}', {
      authorization: `Bearer ${sender}`,
    });
    assert.equal(sent.status, 200);
    await sent.body?.cancel();
    assert.equal(JSON.parse((await message).data).title, "for alice");
  } finally {
    source.close();
  }
});

Deno.test("probes: /healthz always, /readyz only while the service is SERVING; a drain ends SSE streams", async () => {
  const server = await serveInProcess('  http: { addr: "127.0.0.1:0", page: false }\n');
  const base = `http://127.0.0.1:${server.serving.httpPort}`;
  const status = async (path: string) => {
    const response = await fetch(`${base}${path}`);
    await response.body?.cancel();
    return response.status;
  };
  assert.equal(await status("/healthz"), 200);
  assert.equal(await status("/readyz"), 503, "not joined yet");
  server.health.set(NOTIFICATION_SERVICE, "SERVING");
  assert.equal(await status("/readyz"), 200);
  assert.equal(await status("/"), 404, "page: false");
  const reader = new EventReader(await fetch(`${base}/v1/recipients/carol/events`));
  await reader.next(); // retry:
  const drained = server.serving.drain(2_000);
  const end = await reader.next();
  assert.equal(end?.event, "end");
  assert.equal(JSON.parse(end.data).code, "ok");
  assert.equal(await reader.next(), undefined, "the stream closes after its end event");
  assert.equal(await drained, "graceful");
});

Deno.test("an SSE client that stops reading is cut off, not buffered without bound", async () => {
  await using server = await serveInProcess(
    '  subscriber-queue: 10\n  http: { addr: "127.0.0.1:0", sse-keepalive: 100ms }\n',
  );
  const port = server.serving.httpPort!;
  // A raw connection that sends the request and never reads.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(`GET /v1/recipients/dave/events HTTP/1.1\r\nhost: x\r\n\r\n`));
  const body = "x".repeat(60_000);
  let delivered = 1;
  let sends = 0;
  while (delivered > 0 && sends < 500) {
    const response = await postJson(`http://127.0.0.1:${port}`, JSON.stringify({ recipient: "dave", body }));
    delivered = (await response.json()).delivered;
    assert.equal(response.status, 200);
    sends++;
  }
  assert.equal(delivered, 0, `still delivered after ${sends} Sends of 60 kB`);
  assert.ok(sends < 500);
  conn.close();
});

Deno.test("an idle SSE stream gets keep-alive comments", async () => {
  await using server = await serveInProcess(
    '  http: { addr: "127.0.0.1:0", sse-keepalive: 100ms, sse-retry: 5s }\n',
  );
  const reader = new EventReader(
    await fetch(`http://127.0.0.1:${server.serving.httpPort}/v1/recipients/erin/events`),
  );
  assert.deepEqual(await reader.next(), { retry: "5000" });
  assert.deepEqual(await reader.next(), { comment: "keep-alive" });
  assert.deepEqual(await reader.next(), { comment: "keep-alive" });
  await reader.cancel();
});

Deno.test(
  "workers: every serving thread serves the HTTP port; HTTP Sends reach gRPC subscribers and the reverse",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      workers: 2,
      serverExtra: '  http: { addr: "127.0.0.1:0" }\n',
      metricsAddr: "127.0.0.1:0",
    });
    await svc.waitForLine(/HTTP \(Connect, gRPC-Web, SSE, page\) listening on http:/, 20_000);
    assert.ok(svc.lines.some((l) => l.includes("Serving gRPC from 2 workers")), svc.lines.join("\n"));
    const base = `http://127.0.0.1:${svc.httpPort}`;
    // Eight streams on eight connections: SO_REUSEPORT spreads them over the workers.
    const readers: EventReader[] = [];
    for (let i = 0; i < 8; i++) {
      const client = Deno.createHttpClient({});
      const response = await fetch(`${base}/v1/recipients/frank/events`, { client });
      assert.equal(response.status, 200);
      readers.push(new EventReader(response));
    }
    const client = notificationClient(svc.addr);
    const grpcSub = subscriber(client, "frank");
    try {
      await grpcSub.ready;
      const receipt = await send(client, { recipient: "frank", title: "from grpc" });
      assert.equal(receipt.delivered, 9, "eight SSE streams and one gRPC stream, on either worker");
      for (const reader of readers) assert.equal((await reader.message()).title, "from grpc");
      const response = await postJson(base, '{"recipient":"frank","title":"from http"}');
      assert.equal((await response.json()).delivered, 9);
      for (const reader of readers) assert.equal((await reader.message()).title, "from http");
      await eventually(() => grpcSub.titles.length === 2, 5_000, "both on the gRPC stream");
      assert.deepEqual(grpcSub.titles, ["from grpc", "from http"]);
      const many = await fetch(`${base}/notification.v1.NotificationService/SendMany`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: '{"recipients":["frank","gus"],"title":"to both"}',
      });
      assert.equal(many.status, 200);
      await many.body?.cancel();
      for (const reader of readers) assert.equal((await reader.message()).title, "to both");
      const metrics = await scrape(svc.metricsPort);
      assert.equal(metrics.value('notification_server_http_requests_total{route="send_many",code="200"}'), 1);
      assert.equal(metrics.value("notification_server_sse_streams"), 8);
      assert.equal(metrics.value('notification_server_http_requests_total{route="events",code="200"}'), 8);
    } finally {
      grpcSub.cancel();
      client.close();
      for (const reader of readers) await reader.cancel();
    }
  },
);

Deno.test("with tls, the HTTP port serves HTTPS with the gRPC port's certificate, over HTTP/2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "web-tls-" });
  await makeCertificates(dir);
  await using server = await serveInProcess(
    `  tls: { cert-file: "${dir}/server.pem", key-file: "${dir}/server.key" }\n  http: { addr: "127.0.0.1:0" }\n`,
  );
  using client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(`${dir}/ca.pem`)], http1: false });
  const base = `https://localhost:${server.serving.httpPort}`;
  const events = await fetch(`${base}/v1/recipients/hana/events`, { client });
  assert.equal(events.status, 200);
  const reader = new EventReader(events);
  await reader.next(); // retry:
  const sent = await fetch(`${base}${SEND_PATH}`, {
    client,
    method: "POST",
    headers: { "content-type": "application/json" },
    body: '{"recipient":"hana","title":"over h2"}',
  });
  assert.equal((await sent.json()).delivered, 1);
  assert.equal((await reader.message()).title, "over h2");
  await reader.cancel();
  await assert.rejects(
    fetch(`http://localhost:${server.serving.httpPort}/healthz`),
    "no plain HTTP beside it",
  );
});

Deno.test(
  "with a broker, Connect Subscribe recovers from a position as over gRPC, and SSE resumes after Last-Event-ID",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name: "web-broker",
      workers: 1,
      serverExtra: `${brokerYaml(nats.servers)}  http: { addr: "127.0.0.1:0" }\n`,
    });
    await svc.waitForLine(/listening on http:/, 20_000);
    const baseUrl = `http://127.0.0.1:${svc.httpPort}`;
    const client = createClient(NotificationService, createConnectTransport({ baseUrl }));
    const receipts = [];
    for (const title of ["s1", "s2", "s3"]) receipts.push(await client.send({ recipient: "ivy", title }));
    assert.ok(receipts.every((r) => r.stored && r.position > 0n && r.epoch !== ""));
    // From the first one's position: the two after it, stored, then live.
    const abort = new AbortController();
    let recovered: string | null = null;
    const got: { title: string; position: bigint }[] = [];
    const stream = client.subscribe(
      { recipient: "ivy", recover: true, position: receipts[0].position, epoch: receipts[0].epoch },
      { signal: abort.signal, onHeader: (headers) => recovered = headers.get("notification-recovered") },
    );
    for await (const n of stream) {
      got.push({ title: n.title, position: n.position });
      if (got.length === 2) break;
    }
    abort.abort();
    assert.deepEqual(got.map((n) => n.title), ["s2", "s3"]);
    assert.deepEqual(got.map((n) => n.position), [receipts[1].position, receipts[2].position]);
    assert.equal(recovered, "true");
    // SSE: ids are <epoch>:<position>; resuming after s1's id gives s2 and s3 after a recovery event.
    const response = await fetch(`${baseUrl}/v1/recipients/ivy/events`, {
      headers: { "last-event-id": `${receipts[0].epoch}:${receipts[0].position}` },
    });
    const reader = new EventReader(response);
    assert.deepEqual(await reader.next(), { retry: "2000" });
    const recovery = await reader.next();
    assert.equal(recovery?.event, "recovery");
    assert.deepEqual(JSON.parse(recovery.data), { recovered: true, epoch: receipts[0].epoch });
    const second = await reader.next();
    assert.equal(second?.id, `${receipts[1].epoch}:${receipts[1].position}`);
    assert.equal(JSON.parse(second.data).title, "s2");
    assert.equal((await reader.message()).title, "s3");
    // A stale epoch: everything still held, and recovered false.
    const stale = new EventReader(
      await fetch(`${baseUrl}/v1/recipients/ivy/events`, { headers: { "last-event-id": "old-epoch:1" } }),
    );
    await stale.next();
    assert.deepEqual(JSON.parse((await stale.next())!.data), { recovered: false, epoch: receipts[0].epoch });
    assert.deepEqual([(await stale.message()).title, (await stale.message()).title], ["s1", "s2"]);
    await reader.cancel();
    await stale.cancel();
  },
);
