/**
 * The whole process, spawned as users run it (`deno task start` flags), against a real etcd:
 * register → serve → SIGTERM → deregister → exit 0; SIGKILL → record expires; bad input → one line.
 */
import assert from "node:assert/strict";
import { freePort, NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { eventually, healthClient, notificationClient, send } from "./helpers/grpc.ts";
import { readRecord, scopedClient } from "./helpers/kv.ts";
import { assertCleanStop, ServiceProcess, writeConfig } from "./helpers/service.ts";

Deno.test(
  "the service registers, reports SERVING, and on SIGTERM deregisters before exiting 0",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    using kv = scopedClient(etcd.endpoints);
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `life-${crypto.randomUUID()}`,
    });
    const key = svc.key;
    assert.match(key, /^\/services\/notification-server\/life-/);
    const record = await readRecord(kv, key);
    assert.ok(record, "record is in etcd");
    assert.deepEqual(JSON.parse(record.value), { Op: 0, Addr: svc.addr, Metadata: `{"version":"test"}` });
    assert.equal(record.grantedTtl, 10);
    assert.ok(record.ttl > 0 && record.ttl <= 10, `lease ttl ${record.ttl}`);
    const health = healthClient(svc.addr);
    try {
      assert.equal(await health.check(), "SERVING");
      assert.equal(await health.check("notification.v1.NotificationService"), "SERVING");
      assert.equal(await health.check("registration"), "SERVING");
    } finally {
      health.close();
    }

    const text = await assertCleanStop(svc, kv);
    for (
      const line of [
        "Using config file: ",
        `Service registered to etcd: ${key} -> ${svc.addr}`,
        `gRPC server listening on 127.0.0.1:${svc.port}`,
        "Server stopped gracefully",
      ]
    ) assert.ok(text.includes(line), `log has ${JSON.stringify(line)}:\n${text}`);
  },
);

Deno.test(
  "the service layout writes the original single key with a plain host:port value",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    using kv = scopedClient(etcd.endpoints);
    const name = `svc-${crypto.randomUUID().slice(0, 8)}`;
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name,
      layout: "service",
      leaseTtl: "7s",
    });
    assert.equal(svc.key, `/services/${name}`);
    const record = await readRecord(kv, `/services/${name}`);
    assert.equal(record?.value, svc.addr);
    assert.equal(record?.grantedTtl, 7);
    await assertCleanStop(svc, kv, { signal: "SIGINT" });
  },
);

Deno.test("after SIGKILL the record disappears within the lease TTL", NETWORK_TEST, async () => {
  await using etcd = await useEtcd();
  using kv = scopedClient(etcd.endpoints);
  const svc = await ServiceProcess.start({
    endpoints: etcd.endpoints,
    instanceId: `kill-${crypto.randomUUID()}`,
    leaseTtl: "2s",
  });
  const key = svc.key;
  assert.ok(await readRecord(kv, key));
  const killedAt = Date.now();
  svc.signal("SIGKILL");
  await svc.status;
  await eventually(async () => (await readRecord(kv, key)) === undefined, 2_000 + 1_500, "record expiry");
  const gone = Date.now() - killedAt;
  assert.ok(gone <= 3_500, `gone after ${gone} ms`);
});

Deno.test(
  "a Send in flight during shutdown completes, and open Subscribe streams end with OK",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({ endpoints: etcd.endpoints, drainDelay: "1500ms" });
    const client = notificationClient(svc.addr);
    try {
      const received: string[] = [];
      const stream = client.subscribe({ recipient: "alice" });
      stream.on("data", (n: { title: string }) => received.push(n.title));
      const ended = new Promise<number>((resolve) =>
        stream.on("status", (s: { code: number }) => resolve(s.code))
      );
      stream.on("error", () => {});
      await eventually(
        async () => (await send(client, { recipient: "alice", title: "before" })).delivered === 1,
        5_000,
        "subscriber",
      );

      svc.signal("SIGTERM");
      await svc.waitForLine(/Service deregistered from etcd/, 5_000);
      // Deregistered but still draining: calls already routed here must succeed.
      const during = await send(client, { recipient: "alice", title: "during shutdown" });
      assert.equal(during.delivered, 1);
      assert.equal(await ended, 0, "stream ends with OK");
      assert.deepEqual(received.slice(-1), ["during shutdown"]);
      assert.equal((await svc.status).code, 0, svc.lines.join("\n"));
    } finally {
      client.close();
    }
  },
);

Deno.test("a second signal during shutdown exits at once with a non-zero code", NETWORK_TEST, async () => {
  await using etcd = await useEtcd();
  await using svc = await ServiceProcess.start({ endpoints: etcd.endpoints, drainDelay: "20s" });
  svc.signal("SIGTERM");
  await svc.waitForLine(/Service deregistered from etcd/, 5_000);
  // A repeat within 300 ms is taken as the same Ctrl+C (see app.ts); a person's second press is later.
  await new Promise((r) => setTimeout(r, 400));
  const t0 = Date.now();
  svc.signal("SIGTERM");
  const status = await svc.status;
  assert.equal(status.code, 143);
  assert.ok(Date.now() - t0 < 3_000);
});

Deno.test(
  "a bad config file exits 2 with one line naming file and field, and registers nothing",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const path = await writeConfig({ endpoints: etcd.endpoints });
    const text = (await Deno.readTextFile(path)).replace("dial-timeout: 2s", 'dial-timeout: "soon"');
    await Deno.writeTextFile(path, text);
    using kv = scopedClient(etcd.endpoints);
    const before = (await kv.getAll().prefix("/services/").keys()).length;
    await using svc = await ServiceProcess.spawn({ endpoints: etcd.endpoints }, path);
    const status = await svc.status;
    assert.equal(status.code, 2);
    assert.equal(svc.lines.length, 1, svc.lines.join("\n"));
    assert.match(svc.lines[0], new RegExp(`${path}: etcd.dial-timeout: "soon" is not a duration like 5s$`));
    assert.equal((await kv.getAll().prefix("/services/").keys()).length, before);
  },
);

Deno.test(
  "an unreachable etcd fails start-up with one line naming the endpoint, exit 1",
  NETWORK_TEST,
  async () => {
    const port = freePort(); // nothing listens there
    await using svc = await ServiceProcess.spawn({
      endpoints: [`127.0.0.1:${port}`],
      startupTimeout: "1500ms",
    });
    const status = await svc.status;
    assert.equal(status.code, 1);
    const errors = svc.lines.filter((l) => l.includes("ERROR"));
    assert.equal(errors.length, 1, svc.lines.join("\n"));
    assert.match(errors[0], new RegExp(`Cannot reach etcd at 127\\.0\\.0\\.1:${port} after`));
    assert.ok(!svc.lines.some((l) => /^\s+at /.test(l)), "no stack trace");
  },
);

Deno.test("ETCD_ENDPOINTS and NOTIFICATION_ADDR override the file", NETWORK_TEST, async () => {
  await using etcd = await useEtcd();
  const path = await writeConfig({ endpoints: ["127.0.0.1:1"] });
  await using svc = await ServiceProcess.spawn({
    endpoints: [],
    env: { ETCD_ENDPOINTS: etcd.endpoints.join(","), NOTIFICATION_ADDR: "127.0.0.1:0" },
  }, path);
  await svc.waitForLine(/Service registered to etcd/, 15_000);
  svc.signal("SIGTERM");
  assert.equal((await svc.status).code, 0);
});

Deno.test(
  "Ctrl+C on `deno task start` (SIGINT to the whole process group) still deregisters and exits 0",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    using kv = scopedClient(etcd.endpoints);
    const path = await writeConfig({ endpoints: etcd.endpoints, instanceId: `ctrlc-${crypto.randomUUID()}` });
    // setsid makes the task its own process group, as a terminal's foreground job is.
    const child = new Deno.Command("setsid", {
      args: [Deno.execPath(), "task", "start", "--config", path],
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      const lines: string[] = [];
      const reader = (async () => {
        for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
          lines.push(
            ...chunk.split("\n"),
          );
        }
      })();
      const registered = await eventually(
        () => lines.find((l) => l.includes("Service registered to etcd:")),
        15_000,
        "registration",
      );
      const key = registered.match(/etcd: (\S+) ->/)![1];
      Deno.kill(-child.pid, "SIGINT");
      const status = await child.status;
      await reader;
      const text = lines.join("\n");
      assert.equal(status.code, 0, text);
      assert.ok(text.includes(`Service deregistered from etcd: ${key}`), text);
      assert.ok(!text.includes("exiting now"), text);
      assert.equal(await readRecord(kv, key), undefined);
    } finally {
      try {
        Deno.kill(-child.pid, "SIGKILL");
      } catch { /* already gone */ }
    }
  },
);
