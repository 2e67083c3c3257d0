/**
 * Clients we did not write: a Go client built from Debian's packages (GOPATH mode, no module
 * downloads; scripts/setup.sh installs them) dials our instances through etcd's own naming
 * resolver with grpc-go's round_robin, and checks our reflection descriptors with protodesc.
 */
import assert from "node:assert/strict";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { eventually } from "./helpers/grpc.ts";
import { goClient, python } from "./helpers/foreign.ts";
import { ServiceProcess } from "./helpers/service.ts";
import { brokerYaml, startNats } from "./helpers/nats.ts";

/** Runs the Go client; its output, or an error with its stderr. */
async function runGo(client: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(client, { args }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}

/** What reflection lists: the public services and itself, never the internal Cluster. */
const LISTED_SERVICES = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
  "notification.v1.NotificationService",
];
const PYTHON_REFLECT = new URL("./interop/python_reflect.py", import.meta.url).pathname;
const PYTHON_ONCE = new URL("./interop/python_once.py", import.meta.url).pathname;

Deno.test(
  "a Go client through etcd's naming resolver and round_robin reaches all three instances; a stopped one drops out",
  NETWORK_TEST,
  async () => {
    const client = await goClient();
    await using etcd = await useEtcd();
    const name = `go-${crypto.randomUUID().slice(0, 8)}`;
    const start = (id: string) =>
      ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: id, drainDelay: "1s" });
    await using a = await start("a");
    await using b = await start("b");
    await using c = await start("c");
    const child = new Deno.Command(client, {
      args: [
        "calls",
        "-etcd",
        etcd.endpoints[0],
        "-target",
        `/services/${name}`,
        "-authority",
        name,
        "-seconds",
        "5",
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const windows: { counts: Record<string, number>; errors: number; lastError: string }[] = [];
    const stdout = (async () => {
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        for (const line of chunk.split("\n")) if (line.trim()) windows.push(JSON.parse(line));
      }
    })();
    const stderr = new Response(child.stderr).text();
    await eventually(() => windows.length >= 2, 10_000, "two windows of calls");
    const early = windows.at(-1)!;
    assert.deepEqual(Object.keys(early.counts).sort(), ["a", "b", "c"], JSON.stringify(windows));
    c.signal("SIGTERM"); // deregisters, then serves for drain-delay: the resolver must drop it first
    assert.equal((await c.status).code, 0);
    const status = await child.status;
    await stdout;
    const errors = await stderr;
    assert.equal(status.code, 0, `go client failed (a panic shows here):\n${errors}`);
    const last = windows.at(-1)!;
    assert.deepEqual(Object.keys(last.counts).sort(), ["a", "b"], JSON.stringify(windows));
    assert.equal(windows.reduce((n, w) => n + w.errors, 0), 0, JSON.stringify(windows));
    const total = (id: string) => windows.reduce((n, w) => n + (w.counts[id] ?? 0), 0);
    console.log(
      `Go client calls per instance: a=${total("a")} b=${total("b")} c=${total("c")} (c stopped mid-run)`,
    );
    assert.ok(a.addr && b.addr);
  },
);

Deno.test(
  "reflection serves descriptors Go's protodesc accepts, and lists itself",
  NETWORK_TEST,
  async () => {
    const client = await goClient();
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `refl-${crypto.randomUUID()}`,
    });
    const out = await new Deno.Command(client, { args: ["reflect", "-addr", svc.addr] }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.ok(out.success, text);
    const result = JSON.parse(text);
    assert.deepEqual(result.services, LISTED_SERVICES);
    assert.ok(result.files.includes("notification.proto"), text);
    assert.ok(!result.files.includes("cluster.proto"), `the internal Cluster proto is not served: ${text}`);
  },
);

Deno.test(
  "reflection serves descriptors Python's DescriptorPool accepts, and a Send built from them works",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `pyrefl-${crypto.randomUUID()}`,
    });
    const text = await python(PYTHON_REFLECT, svc.addr);
    const result = JSON.parse(text);
    assert.deepEqual(result.services, LISTED_SERVICES);
    assert.deepEqual(result.send_fields, [
      "id",
      "created_at_ms",
      "delivered",
      "instance_id",
      "position",
      "epoch",
      "stored",
      "code",
      "error",
    ]);
    assert.equal(result.delivered, 0);
  },
);

Deno.test(
  "grpc-go and Python grpcio call SendMany and retry with idempotency keys (raw protobuf), with a broker",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name: "once-foreign",
      workers: 1,
      serverExtra: brokerYaml(nats.servers),
    });
    const go = await goClient();
    const answers = {
      go: await runGo(go, "once", "-addr", svc.addr, "-key", crypto.randomUUID(), "g1", "g2", "g1"),
      python: await python(PYTHON_ONCE, svc.addr, crypto.randomUUID(), "p1", "p2", "p1"),
    };
    for (const [client, text] of Object.entries(answers)) {
      const { send, many } = JSON.parse(text) as {
        send: [string, number][];
        many: [string, number, number][][];
      };
      assert.deepEqual(send[1], send[0], `${client}: the retried Send answers the first's id and position`);
      assert.ok(send[0][1] > 0, `${client}: stored`);
      assert.deepEqual(many[1], many[0], `${client}: the retried SendMany answers the first's results`);
      assert.equal(many[0].length, 3, `${client}: a result per entry`);
      assert.deepEqual(many[0][2], many[0][0], `${client}: a repeated recipient, one result`);
      assert.notEqual(many[0][0][0], many[0][1][0], `${client}: an id per recipient`);
      assert.ok(many[0].every(([, position, code]) => position > 0 && code === 0), `${client}: ${text}`);
    }
  },
);
