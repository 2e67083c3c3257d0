/**
 * What operators see: `/metrics` scraped from a real service process (checked with promtool and
 * scraped by a real Prometheus server on loopback), and JSON logs that parse line by line.
 */
import assert from "node:assert/strict";
import { freePort, NETWORK_TEST, useEtcd, waitForPort } from "@notification-server/registry/testing";
import { eventually, healthClient, notificationClient, send } from "./helpers/grpc.ts";
import { scopedClient } from "./helpers/kv.ts";
import { ServiceProcess, writeConfig } from "./helpers/service.ts";

import { scrape } from "./helpers/metrics.ts";
import { headerAttack } from "./helpers/h2_attack.ts";
const METRICS = `  metrics-addr: "127.0.0.1:0"\n`;

Deno.test(
  "/metrics: the registration gauge follows the record, and call counters move with real calls",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const id = `metrics-${crypto.randomUUID()}`;
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: id,
      serverExtra: METRICS,
    });
    const port = svc.metricsPort;
    const key = svc.key;
    using kv = scopedClient(etcd.endpoints);
    const health = healthClient(svc.addr);
    const notify = notificationClient(svc.addr);
    try {
      let m = await scrape(port);
      assert.equal(m.value("notification_server_registration_state"), 1);
      assert.ok(
        m.etcdCalls("Txn") >= 1,
      );
      assert.ok((m.value("process_resident_memory_bytes") ?? 0) > 0, "process metrics");
      assert.ok(m.value("nodejs_eventloop_lag_p99_seconds") !== undefined, "event-loop lag");
      assert.equal(m.value("notification_server_http2_guard"), 1, "the HTTP/2 crash guard is installed");
      // A connection cut for its headers is counted, by whichever thread cut it.
      await headerAttack(svc.port, "hpack-bomb", { rounds: 1, streams: 10 });
      await eventually(
        async () =>
          ((await scrape(port)).value(
            'notification_server_connections_cut_total{reason="header_list_size"}',
          ) ??
            0) >= 1,
        5_000,
        "the cut counted",
      );

      for (let i = 0; i < 3; i++) await health.check();
      await send(notify, { recipient: "ops", title: "a" });
      await send(notify, { recipient: "ops", title: "b" });
      await assert.rejects(send(notify, { recipient: "", title: "c" })); // INVALID_ARGUMENT
      m = await scrape(port);
      const calls = (service: string, method: string, code: string) =>
        m.value(
          `notification_server_grpc_calls_total{service="${service}",method="${method}",code="${code}"}`,
        );
      assert.equal(calls("grpc.health.v1.Health", "Check", "OK"), 3);
      assert.equal(calls("notification.v1.NotificationService", "Send", "OK"), 2);
      assert.equal(calls("notification.v1.NotificationService", "Send", "INVALID_ARGUMENT"), 1);
      assert.equal(m.value("notification_server_notifications_sent_total"), 2);
      assert.equal(
        m.value(
          'notification_server_grpc_call_duration_seconds_count{service="grpc.health.v1.Health",method="Check"}',
        ),
        3,
      );

      // Taken over from outside by another lease: not ours, so 0 until that lease goes.
      const other = await kv.leaseClient.leaseGrant({ TTL: 30 });
      await kv.put(key).value('{"Op":0,"Addr":"127.0.0.1:1"}').lease(other.ID).exec();
      await eventually(
        async () => (await scrape(port)).value("notification_server_registration_state") === 0,
        5_000,
        "gauge 0 while another lease holds the key",
      );
      await kv.leaseClient.leaseRevoke({ ID: other.ID });
      await eventually(
        async () => (await scrape(port)).value("notification_server_registration_state") === 1,
        10_000,
        "gauge back to 1 once the key is ours again",
      );
      // A plain delete is repaired at once, and counted.
      await kv.delete().key(key).exec();
      await eventually(
        async () =>
          ((await scrape(port)).value("notification_server_registrations_restored_total") ?? 0) >= 2,
        5_000,
        "restored twice",
      );
      m = await scrape(port);
      assert.ok((m.value("notification_server_registrations_lost_total") ?? 0) >= 2);

      // The exposition is valid by Prometheus's own checker.
      const check = new Deno.Command("promtool", {
        args: ["check", "metrics"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      })
        .spawn();
      const writer = check.stdin.getWriter();
      await writer.write(new TextEncoder().encode(m.text));
      await writer.close();
      const out = await check.output();
      const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `promtool check metrics:\n${said}`);
    } finally {
      health.close();
      notify.close();
    }
  },
);

Deno.test(
  "a real Prometheus server scrapes /metrics and answers queries about it",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `prom-${crypto.randomUUID()}`,
      serverExtra: METRICS,
    });
    const dir = await Deno.makeTempDir({ prefix: "prometheus-" });
    const promPort = freePort();
    const target = `127.0.0.1:${svc.metricsPort}`;
    await Deno.writeTextFile(
      `${dir}/prometheus.yml`,
      `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: notification-server\n    static_configs:\n      - targets: ["${target}"]\n`,
    );
    const prometheus = new Deno.Command("prometheus", {
      args: [
        `--config.file=${dir}/prometheus.yml`,
        `--storage.tsdb.path=${dir}/data`,
        `--web.listen-address=127.0.0.1:${promPort}`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await waitForPort(promPort, 20_000);
      const query = encodeURIComponent("notification_server_registration_state");
      const result = await eventually(
        async () => {
          const body = await (await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${query}`)).json();
          return body.data?.result?.[0];
        },
        20_000,
        "Prometheus has scraped the service",
      );
      assert.equal(result.value[1], "1");
      assert.equal(
        result.metric.instance,
        target,
        "instance comes from the scrape, not from a label of ours",
      );
      assert.equal(result.metric.job, "notification-server");
    } finally {
      prometheus.kill("SIGTERM");
      await prometheus.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);

Deno.test("log-format: json: every line parses, errors at start-up included", NETWORK_TEST, async () => {
  await using etcd = await useEtcd();
  const json = `  log-format: json\n`;
  const parse = (lines: string[]) =>
    lines.map((line) => {
      const entry = JSON.parse(line);
      assert.match(entry.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, line);
      assert.ok(["debug", "info", "warn", "error"].includes(entry.level), line);
      assert.equal(typeof entry.msg, "string", line);
      return entry;
    });
  {
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `json-${crypto.randomUUID()}`,
      serverExtra: json,
    });
    await eventually(() => svc.lines.some((l) => l.includes("gRPC server listening")), 5_000, "started");
    svc.signal("SIGTERM");
    assert.equal((await svc.status).code, 0);
    const entries = parse(svc.lines);
    const registered = entries.find((e) => e.msg.startsWith("Service registered to etcd"));
    assert.ok(registered.key && registered.lease && registered.addr, JSON.stringify(registered));
    assert.ok(entries.some((e) => e.msg.startsWith("Service deregistered from etcd") && e.key));
    assert.ok(
      entries.some((e) => e.msg.startsWith("Server stopped gracefully") && typeof e.duration_ms === "number"),
    );
  }
  {
    // etcd unreachable at start-up: the error line is JSON too.
    await using down = await ServiceProcess.spawn({
      endpoints: ["127.0.0.1:1"],
      startupTimeout: "1s",
      serverExtra: json,
    });
    assert.equal((await down.status).code, 1);
    const entries = parse(down.lines);
    assert.equal(entries.at(-1).level, "error");
    assert.match(entries.at(-1).msg, /Cannot reach etcd at 127\.0\.0\.1:1/);
  }
  {
    // log-level: warn drops the info lines ("Using config file: ..."); the start-up error stays.
    await using quiet = await ServiceProcess.spawn({
      endpoints: ["127.0.0.1:1"],
      startupTimeout: "1s",
      serverExtra: json + `  log-level: warn\n`,
    });
    assert.equal((await quiet.status).code, 1);
    assert.deepEqual(parse(quiet.lines).map((e) => e.level), ["error"], quiet.lines.join("\n"));
  }
  {
    // A config error in a file that asks for JSON: one JSON line, exit 2.
    const path = await writeConfig({
      endpoints: etcd.endpoints,
      serverExtra: json + `  handshake-timeout: soon\n`,
    });
    await using bad = await ServiceProcess.spawn({ endpoints: etcd.endpoints }, path);
    assert.equal((await bad.status).code, 2);
    const entries = parse(bad.lines);
    assert.equal(entries.length, 1, bad.lines.join("\n"));
    assert.match(entries[0].msg, /handshake-timeout: "soon" is not a duration/);
  }
});
