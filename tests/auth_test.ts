/**
 * Only the right people (`notification-server.auth`): JWT bearer tokens made by the `token` command
 * and by hand (HMAC-SHA256 in Python, no JWT library), presented by Debian's Python grpcio and by
 * grpc-js; the allow/deny matrix gives exactly the right codes, a token for bob cannot read alice,
 * an expired token ends the stream, and one caller cannot take every place.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { bearer } from "../packages/client/src/notification_client.ts";
import { subscribe } from "../packages/client/src/subscribe.ts";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { goClient, python } from "./helpers/foreign.ts";
import { changed, eventually, healthCheck, notificationClient, send } from "./helpers/grpc.ts";
import { ServiceProcess, startTaskArgs, writeConfig } from "./helpers/service.ts";
import { scrape } from "./helpers/metrics.ts";
import { scopedClient } from "./helpers/kv.ts";

const PY = new URL("./interop/python_auth.py", import.meta.url).pathname;
const ROOT = new URL("../", import.meta.url).pathname;

/** A new HMAC secret in a temp file. */
async function newSecret(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "auth-" });
  const secret = `${dir}/jwt.key`;
  await Deno.writeTextFile(secret, `${crypto.randomUUID()}${crypto.randomUUID()}\n`);
  return secret;
}

/** A service with auth on (an HMAC secret in a temp file); its config path for the CLI. */
async function authService(
  endpoints: string[],
  extra = "",
  shared?: { secret?: string; name?: string; id?: string; workers?: number },
) {
  const secret = shared?.secret ?? await newSecret();
  const options = {
    endpoints,
    name: shared?.name,
    instanceId: shared?.id ?? `auth-${crypto.randomUUID()}`,
    workers: shared?.workers,
    serverExtra: `  auth:\n    jwt:\n      hmac-secret-file: "${secret}"\n${extra}`,
  };
  const config = await writeConfig(options);
  const svc = await ServiceProcess.spawn(options, config);
  await svc.waitForLine(/gRPC server listening on/, 20_000);
  return { svc, config, secret };
}

/** `main.ts token ...` with the service's config. */
async function cliToken(config: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...startTaskArgs(), "token", ...args, "--config", config],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).trim();
}

const mint = async (secret: string, sub: string, scope: string, ttl: number, recipients?: string[]) =>
  (await python(
    PY,
    "mint",
    secret,
    sub,
    scope,
    String(ttl),
    ...(recipients ? [JSON.stringify(recipients)] : []),
  ))
    .trim();
const pySend = async (addr: string, token: string, recipient: string) =>
  (await python(PY, "send", addr, token, recipient)).trim();

Deno.test(
  "the allow/deny matrix for Send and Subscribe, with CLI-made and hand-made tokens",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const { svc, config, secret } = await authService(etcd.endpoints);
    await using _ = svc;
    const other = `${secret}.other`;
    await Deno.writeTextFile(other, "not-the-secret\n");
    const sender = await mint(secret, "backend", "notifications:send", 600);
    const cliSender = await cliToken(config, "--sub", "backend", "--scope", "notifications:send");
    const cases: [string, string, string][] = [
      ["no token", "-", "UNAUTHENTICATED"],
      ["not a JWT", "garbage", "UNAUTHENTICATED"],
      [
        "signed with another secret",
        await mint(other, "backend", "notifications:send", 600),
        "UNAUTHENTICATED",
      ],
      ["expired", await mint(secret, "backend", "notifications:send", -120), "UNAUTHENTICATED"],
      ["no send scope", await mint(secret, "alice", "-", 600), "PERMISSION_DENIED"],
      ["other scopes only", await mint(secret, "backend", "profile:read", 600), "PERMISSION_DENIED"],
      ["hand-made, send scope", sender, "OK"],
      ["token command, send scope", cliSender, "OK"],
    ];
    for (const [what, token, code] of cases) {
      assert.equal(
        await pySend(svc.addr, token, "alice"),
        code,
        `Send: ${what}`,
      );
    }
    // The same from grpc-go (Debian's packages), and from our CLI.
    const go = await goClient();
    const goSend = async (token: string) =>
      new TextDecoder().decode(
        (await new Deno.Command(go, {
          args: [
            "send",
            "-addr",
            svc.addr,
            "-recipient",
            "alice",
            ...(token === "-" ? [] : ["-token", token]),
          ],
        }).output()).stdout,
      ).trim();
    assert.deepEqual(
      [await goSend("-"), await goSend(cases[4][1]), await goSend(sender), await goSend(cliSender)],
      ["Unauthenticated", "PermissionDenied", "OK", "OK"],
      "Send from grpc-go: none, no scope, hand-made, token command",
    );
    const cli = async (...args: string[]) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [...startTaskArgs(), "send", "--to", "alice", "--title", "hi", ...args, "--config", config],
        cwd: ROOT,
        env: { NOTIFICATION_TOKEN: "" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      return {
        code: out.code,
        text: new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr),
      };
    };
    const refused = await cli();
    assert.equal(refused.code, 1, refused.text);
    assert.match(refused.text, /UNAUTHENTICATED: missing token/);
    const accepted = await cli("--token", cliSender);
    assert.equal(accepted.code, 0, accepted.text);
    assert.match(accepted.text, /delivered=0/);

    const alice = await cliToken(config, "--sub", "alice");
    const subscribe = (token: string, recipient: string, seconds: number) =>
      python(PY, "subscribe", svc.addr, token, recipient, String(seconds)).then((out) => JSON.parse(out));
    assert.deepEqual(await subscribe("-", "alice", 5), { titles: [], status: "UNAUTHENTICATED" });
    assert.deepEqual(await subscribe(await mint(secret, "bob", "-", 600), "alice", 5), {
      titles: [],
      status: "PERMISSION_DENIED",
    }, "a token for bob cannot read alice");
    // alice reads alice: notifications sent meanwhile arrive, until the client's own deadline.
    const reading = subscribe(alice, "alice", 4);
    const client = notificationClient(svc.addr);
    try {
      await eventually(
        async () =>
          (await send(client, { recipient: "alice", title: "hi" }, undefined, bearer(sender))).delivered ===
            1,
        3_000,
        "alice subscribed",
      );
    } finally {
      client.close();
    }
    const read = await reading;
    assert.ok(read.titles.includes("hi"), JSON.stringify(read));
    assert.equal(read.status, "DEADLINE_EXCEEDED");
    // Health stays open: probes carry no token.
    assert.equal(await healthCheck(svc.addr), "SERVING");
    assert.ok(!svc.lines.some((l) => l.includes("No auth configured")), svc.lines.join("\n"));
  },
);

Deno.test(
  "grants: a token's recipients claim opens exact names and prefixes to its bearer, nothing else; limits count by sub; Send is not widened",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const { svc, config, secret } = await authService(etcd.endpoints, "  max-subscribers-per-identity: 3\n");
    await using _ = svc;
    const carol = bearer(await cliToken(config, "--sub", "carol", "--recipients", "team-42,news-*"));
    const sender = bearer(await cliToken(config, "--sub", "backend", "--scope", "notifications:send"));
    const client = notificationClient(svc.addr);
    const streams: grpc.ClientReadableStream<{ title: string }>[] = [];
    /** Opens a stream with `token`; resolves with its status once refused, or "open" once routed. */
    const open = (recipient: string, token: grpc.Metadata, titles: string[] = []) =>
      new Promise<string>((resolve) => {
        const stream = client.subscribe({ recipient }, token) as grpc.ClientReadableStream<{ title: string }>;
        streams.push(stream);
        stream.on("metadata", () => resolve("open"));
        stream.on("data", (n: { title: string }) => (titles.push(n.title), changed()));
        stream.on("error", (e: grpc.ServiceError) => resolve(grpc.status[e.code]));
      });
    try {
      const team: string[] = [];
      assert.equal(await open("team-42", carol, team), "open", "an exact grant");
      assert.equal(await open("news-eu", carol), "open", "a prefix grant");
      assert.equal(await open("team-43", carol), "PERMISSION_DENIED", "not granted");
      assert.equal(await open("news", carol), "PERMISSION_DENIED", "the prefix is news-");
      // Per-identity limits count by sub: carol's own recipient is her third place, a fourth is refused.
      assert.equal(await open("carol", carol), "open");
      assert.equal(await open("news-us", carol), "RESOURCE_EXHAUSTED", "max-subscribers-per-identity: 3");
      assert.equal(
        (await send(client, { recipient: "team-42", title: "standup" }, undefined, sender)).delivered,
        1,
      );
      await eventually(() => team.includes("standup"), 3_000, "the granted stream gets what is sent");
      // A grant is not a send scope.
      const refused = await send(client, { recipient: "team-42", title: "x" }, undefined, carol).catch((e) =>
        e
      );
      assert.equal((refused as grpc.ServiceError).code, grpc.status.PERMISSION_DENIED);
      // A token made by hand (Python, no JWT library), read by Python grpcio.
      const handMade = await mint(secret, "dan", "-", 600, ["news-*"]);
      const subscribed = (recipient: string) =>
        python(PY, "subscribe", svc.addr, handMade, recipient, "2").then((out) => JSON.parse(out).status);
      assert.equal(await subscribed("news-fr"), "DEADLINE_EXCEEDED", "open until the client's own deadline");
      assert.equal(await subscribed("dave"), "PERMISSION_DENIED");
      // A malformed grant makes the whole token invalid.
      const malformed = await mint(secret, "dan", "-", 600, ["ne*ws"]);
      const out = JSON.parse(await python(PY, "subscribe", svc.addr, malformed, "dan", "2"));
      assert.equal(out.status, "UNAUTHENTICATED");
    } finally {
      for (const stream of streams) stream.cancel();
      client.close();
    }
  },
);

Deno.test(
  "a Subscribe stream ends with UNAUTHENTICATED when its token expires, its own recipient's or a granted one's",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const { svc, config } = await authService(etcd.endpoints);
    await using _ = svc;
    const cases = [
      { recipient: "carol", token: await cliToken(config, "--sub", "carol", "--ttl", "2s") },
      {
        recipient: "ops-alerts",
        token: await cliToken(config, "--sub", "erin", "--recipients", "ops-*", "--ttl", "2s"),
      },
    ];
    const started = Date.now();
    const outs = await Promise.all(
      cases.map(async ({ recipient, token }) =>
        JSON.parse(await python(PY, "subscribe", svc.addr, token, recipient, "15"))
      ),
    );
    for (const out of outs) assert.equal(out.status, "UNAUTHENTICATED", JSON.stringify(outs));
    assert.ok(Date.now() - started < 12_000, "ended at the tokens' expiry, not the client's deadline");
  },
);

Deno.test(
  "one caller cannot take every place: Send rate and subscribers per connection",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const { svc, config } = await authService(
      etcd.endpoints,
      '  send-rate-per-identity: 5\n  max-subscribers-per-connection: 2\n  metrics-addr: "127.0.0.1:0"\n',
    );
    await using _ = svc;
    const sender = bearer(await cliToken(config, "--sub", "backend", "--scope", "notifications:send"));
    const client = notificationClient(svc.addr);
    try {
      const codes: number[] = [];
      for (let i = 0; i < 20; i++) {
        codes.push(
          await send(client, { recipient: "dave", title: `n${i}` }, undefined, sender).then(
            () => grpc.status.OK,
            (e: grpc.ServiceError) => e.code,
          ),
        );
      }
      assert.ok(
        codes.slice(0, 10).every((c) => c === grpc.status.OK),
        `a burst of 2 s worth passes: ${codes}`,
      );
      assert.ok(codes.includes(grpc.status.RESOURCE_EXHAUSTED), `then the rate holds: ${codes}`);
      const dave = bearer(await cliToken(config, "--sub", "dave"));
      const statuses = [0, 1, 2].map(() => {
        const stream = client.subscribe({ recipient: "dave" }, dave) as grpc.ClientReadableStream<unknown>;
        return new Promise<grpc.StatusObject>((resolve) => {
          stream.on("status", resolve);
          stream.on("error", () => {});
          stream.on("data", () => {});
          setTimeout(() => stream.cancel(), 1_500);
        });
      });
      const ended = await Promise.all(statuses);
      const refused = ended.filter((s) => s.code === grpc.status.RESOURCE_EXHAUSTED);
      assert.equal(refused.length, 1, JSON.stringify(ended));
      assert.match(refused[0].details, /max-subscribers-per-connection/);
      const m = await scrape(svc.metricsPort);
      const refusals = (reason: string) =>
        m.value(`notification_server_calls_refused_total{reason="${reason}"}`);
      assert.equal(refusals("send_rate"), codes.filter((c) => c === grpc.status.RESOURCE_EXHAUSTED).length);
      assert.equal(refusals("subscribers_per_connection"), 1);
      // No token and a bad recipient: who is asking is checked first.
      const anonymous = await new Promise<number>((resolve) => {
        const stream = client.subscribe({ recipient: "" }) as grpc.ClientReadableStream<unknown>;
        stream.on("error", (e: grpc.ServiceError) => resolve(e.code));
        stream.on("data", () => {});
      });
      assert.equal(anonymous, grpc.status.UNAUTHENTICATED);
      // Refusals are logged, rate-limited, with the reason and the caller's address, never the token.
      await svc.waitForLine(
        /WARN (Worker \d+: )?Refused calls: .*over send-rate-per-identity \(last from 127\.0\.0\.1\)/,
        11_000,
      );
      await svc.waitForLine(/WARN Auth without TLS: bearer tokens travel in clear/, 1_000);
      const token = sender.get("authorization")[0] as string;
      assert.ok(!svc.lines.some((l) => l.includes(token.slice(7, 40))), "no line holds the token");
    } finally {
      client.close();
    }
  },
);

Deno.test(
  "a three-instance cluster with auth on still delivers to every stream (delivered = 3)",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const secret = await newSecret();
    const name = `authcl-${crypto.randomUUID().slice(0, 8)}`;
    const started = [];
    for (const id of ["a", "b", "c"]) {
      started.push(
        await authService(etcd.endpoints, "", { secret, name, id }),
      );
    }
    await using a = started[0].svc;
    await using b = started[1].svc;
    await using c = started[2].svc;
    const config = started[0].config;
    const erin = bearer(await cliToken(config, "--sub", "erin"));
    const sender = bearer(await cliToken(config, "--sub", "backend", "--scope", "notifications:send"));
    const clients = [a, b, c].map((svc) => notificationClient(svc.addr));
    const titles: string[][] = [[], [], []];
    const streams = clients.map((client, i) => {
      const stream = client.subscribe({ recipient: "erin" }, erin) as grpc.ClientReadableStream<
        { title: string }
      >;
      stream.on("data", (n: { title: string }) => (titles[i].push(n.title), changed()));
      stream.on("error", () => {});
      return stream;
    });
    try {
      await eventually(
        async () =>
          (await send(clients[0], { recipient: "erin", title: "probe" }, undefined, sender)).delivered === 3,
        10_000,
        "every instance's stream routed",
      );
      const result = await send(clients[1], { recipient: "erin", title: "to all three" }, undefined, sender);
      assert.equal(result.delivered, 3);
      await eventually(() => titles.every((t) => t.includes("to all three")), 5_000, "every stream got it");
    } finally {
      for (const stream of streams) stream.cancel();
      for (const client of clients) client.close();
    }
  },
);

Deno.test(
  "per-identity limits hold per instance with workers: 2 (subscriptions and the Send rate, exactly)",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const { svc, config } = await authService(
      etcd.endpoints,
      '  max-subscribers-per-identity: 4\n  send-rate-per-identity: 5\n  metrics-addr: "127.0.0.1:0"\n',
      { workers: 2 },
    );
    await using _ = svc;
    const frank = bearer(await cliToken(config, "--sub", "frank"));
    const sender = bearer(await cliToken(config, "--sub", "backend", "--scope", "notifications:send"));
    // 16 connections of one caller: the kernel spreads them over both workers.
    const clients = Array.from(
      { length: 16 },
      () => notificationClient(svc.addr, { "grpc.use_local_subchannel_pool": 1 }),
    );
    try {
      await Promise.all(
        clients.map((client) =>
          new Promise<void>((resolve, reject) =>
            client.waitForReady(Date.now() + 5_000, (error) => error ? reject(error) : resolve())
          )
        ),
      );
      const perWorker = (await scrape(svc.metricsPort)).text.split("\n")
        .filter((l) => l.startsWith("notification_server_worker_connections{"))
        .map((l) => Number(l.slice(l.lastIndexOf(" ") + 1)));
      assert.ok(
        perWorker.length === 2 && perWorker.every((n) => n > 0),
        `both workers hold some: ${perWorker}`,
      );
      const streams = clients.map((client) => {
        const stream = client.subscribe({ recipient: "frank" }, frank) as grpc.ClientReadableStream<unknown>;
        const outcome = { code: -1, stream };
        stream.on("status", (status: grpc.StatusObject) => (outcome.code = status.code));
        stream.on("error", () => {});
        stream.on("data", () => {});
        return outcome;
      });
      // The refused ones end at once; the admitted ones stay open (-1).
      await new Promise((r) => setTimeout(r, 1_500));
      const ended = streams.map((s) => s.code);
      assert.equal(ended.filter((c) => c === -1).length, 4, `4 streams open: ${ended}`);
      assert.equal(ended.filter((c) => c === grpc.status.RESOURCE_EXHAUSTED).length, 12, `${ended}`);
      for (const s of streams) s.stream.cancel();
      // 40 Sends at once over the 16 connections: a burst of 2 s x 5/s, whichever worker takes them.
      const codes = await Promise.all(
        Array.from(
          { length: 40 },
          (_, i) =>
            send(clients[i % 16], { recipient: "nobody", title: `n${i}` }, undefined, sender).then(
              () => grpc.status.OK,
              (e: grpc.ServiceError) => e.code,
            ),
        ),
      );
      const ok = codes.filter((c) => c === grpc.status.OK).length;
      assert.ok(
        ok >= 10 && ok <= 11,
        `${ok} of 40 Sends passed (a burst of 10, plus what refilled meanwhile)`,
      );
    } finally {
      for (const client of clients) client.close();
    }
  },
);

Deno.test(
  "subscribe() asks its token provider again when a token expires, and goes on",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const { svc, config, secret } = await authService(etcd.endpoints);
    await using _ = svc;
    let asked = 0;
    const tokens: string[] = [];
    // Tokens of 2 s: the stream ends at each expiry and subscribe() comes back with the next one.
    for (let i = 0; i < 4; i++) tokens.push(await mint(secret, "gina", "-", 2 + 2 * i));
    const stop = new AbortController();
    const titles: string[] = [];
    const reading = (async () => {
      for await (
        const n of subscribe({
          etcd: { endpoints: etcd.endpoints, dialTimeoutMs: 2_000 },
          name: "notification-server",
          recipient: "gina",
          signal: stop.signal,
          token: () => tokens[Math.min(asked++, tokens.length - 1)],
        })
      ) titles.push(n.title);
    })();
    const sender = bearer(await cliToken(config, "--sub", "backend", "--scope", "notifications:send"));
    const client = notificationClient(svc.addr);
    try {
      await eventually(
        async () =>
          (await send(client, { recipient: "gina", title: "first" }, undefined, sender)).delivered === 1,
        5_000,
        "gina subscribed",
      );
      await eventually(() => asked >= 2, 10_000, "a second token after the first expired");
      await eventually(
        async () =>
          (await send(client, { recipient: "gina", title: "later" }, undefined, sender)).delivered === 1,
        10_000,
        "delivered again with the fresh token",
      );
      await eventually(() => titles.includes("later"), 5_000, "the later notification");
      assert.ok(titles.includes("first"), titles.join(","));
    } finally {
      stop.abort();
      await reading;
      client.close();
    }
  },
);

Deno.test(
  "Subscribes with a token past exp but within the skew take nothing: subscribers, heap and etcd at baseline",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const { svc, secret } = await authService(etcd.endpoints, '  metrics-addr: "127.0.0.1:0"\n', {
      workers: 1,
    });
    await using _ = svc;
    using kv = scopedClient(etcd.endpoints);
    const directory = async () => (await kv.getAll().prefix("/notification-directory/").keys()).length;
    // Expired 10 s ago: accepted by the 30 s skew, already past its exp.
    const subs = Array.from({ length: 20 }, (_, i) => `late-${i}`);
    const tokens = await Promise.all(subs.map((sub) => mint(secret, sub, "-", -10)));
    const client = notificationClient(svc.addr);
    const gauge = async () => (await scrape(svc.metricsPort)).value("notification_server_subscribers");
    const heap = async () => (await scrape(svc.metricsPort)).value("nodejs_heap_size_used_bytes")! / 2 ** 20;
    try {
      const keysBefore = await directory();
      const heapBefore = await heap();
      const codes = new Map<number, number>();
      const one = (i: number) =>
        new Promise<void>((resolve) => {
          const stream = client.subscribe(
            { recipient: subs[i % 20] },
            bearer(tokens[i % 20]),
          ) as grpc.ClientReadableStream<unknown>;
          stream.on("data", () => {});
          stream.on("error", () => {});
          stream.on("status", (s: grpc.StatusObject) => {
            codes.set(s.code, (codes.get(s.code) ?? 0) + 1);
            resolve();
          });
        });
      // Four rounds of 3 000. The heap swings with garbage (no GC is forced), so a leak shows as
      // the lowest reading of the later rounds rising: 3 000 leaked subscriptions held ~25 MiB.
      const readings: number[] = [];
      for (let round = 0; round < 4; round++) {
        for (let i = 0; i < 3_000; i += 50) {
          await Promise.all(Array.from({ length: 50 }, (_, j) => one(i + j)));
        }
        assert.equal(await gauge(), 0, `no phantom subscriber after round ${round}`);
        readings.push(await heap());
      }
      assert.deepEqual([...codes], [[grpc.status.UNAUTHENTICATED, 12_000]]);
      assert.equal(await directory(), keysBefore, "no directory key left in etcd");
      const lowest = Math.min(...readings.slice(1)) - heapBefore;
      const after = readings.map((r) => r.toFixed(1)).join(", ");
      console.log(`12 000 expired-within-skew Subscribes: heap ${heapBefore.toFixed(1)} MiB, then ${after}`);
      assert.ok(lowest < 25, `the heap stays ${lowest.toFixed(1)} MiB above where it was`);
    } finally {
      client.close();
    }
  },
);

Deno.test(
  "unsigned tokens naming thousands of 10 KB algorithms leave the heap where it was",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const dir = await Deno.makeTempDir({ prefix: "auth-pem-" });
    const { exportSPKI, generateKeyPair } = await import("jose");
    const pem = `${dir}/jwt.pub`;
    await Deno.writeTextFile(pem, await exportSPKI((await generateKeyPair("ES256")).publicKey));
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `alg-${crypto.randomUUID()}`,
      workers: 1,
      metricsAddr: "127.0.0.1:0",
      serverExtra: `  auth:\n    jwt:\n      public-key-file: "${pem}"\n`,
      // Collecting often, so that a reading is what is kept: uncollected garbage moved it by 60 MiB.
      script: ["--v8-flags=--expose-gc", "tests/fixtures/collected_service.ts"],
    });
    const heap = async () => (await scrape(svc.metricsPort)).value("nodejs_heap_size_used_bytes")! / 2 ** 20;
    const b64 = (o: object) =>
      btoa(JSON.stringify(o)).replaceAll("=", "").replaceAll("+", "-").replaceAll("/", "_");
    const claims = b64({ sub: "x", exp: Math.floor(Date.now() / 1000) + 600 });
    const client = notificationClient(svc.addr);
    try {
      const before = await heap();
      const readings: number[] = [];
      let n = 0;
      // Four rounds of 1 500; the lowest reading of the later rounds shows what is kept (a cache
      // keyed by alg kept ~22 KB per token: +33 MiB a round, which no collection frees).
      for (let round = 0; round < 4; round++) {
        for (let i = 0; i < 1_500; i += 50) {
          await Promise.all(Array.from({ length: 50 }, () => {
            const token = `${b64({ alg: `X${n++}${"a".repeat(10_000)}` })}.${claims}.c2ln`;
            return send(client, { recipient: "r", title: "t" }, undefined, bearer(token)).then(
              () => assert.fail("an unsigned token was accepted"),
              (e: grpc.ServiceError) => assert.equal(e.code, grpc.status.UNAUTHENTICATED),
            );
          }));
        }
        readings.push(await heap());
      }
      const kept = Math.min(...readings.slice(1)) - before;
      console.log(
        `6 000 tokens with 10 KB algs: heap ${before.toFixed(1)} MiB, then ${
          readings.map((r) => r.toFixed(1))
        }`,
      );
      assert.ok(kept < 25, `the heap stays ${kept.toFixed(1)} MiB above where it was`);
    } finally {
      client.close();
    }
  },
);
