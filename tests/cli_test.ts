/** `main.ts discover` and `main.ts send`, run as users run them, against real instances. */
import assert from "node:assert/strict";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { eventually, type NotificationClient, notificationClient, send } from "./helpers/grpc.ts";
import { scopedClient } from "./helpers/kv.ts";
import {
  runMain as run,
  ServiceProcess,
  startTaskArgs,
  subscribeProcess,
  writeConfig,
} from "./helpers/service.ts";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test(
  "discover prints live instances as a table and as JSON lines; send goes through the resolver",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const name = `cli-${crypto.randomUUID().slice(0, 8)}`;
    await using a = await ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: "a" });
    await using b = await ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: "b" });
    const config = await writeConfig({ endpoints: etcd.endpoints, name });

    const json = await run(["discover", name, "--json", "--config", config]);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(json.stdout.trim().split("\n").map((l) => JSON.parse(l)), [
      { id: "a", addr: a.addr, metadata: { version: "test" } },
      { id: "b", addr: b.addr, metadata: { version: "test" } },
    ]);

    const table = await run(["discover", name, "--config", config]);
    assert.equal(table.code, 0, table.stderr);
    const rows = table.stdout.trim().split("\n");
    assert.match(rows[0], /^ID\s+ADDRESS\s+METADATA$/);
    assert.match(rows[1], new RegExp(`^a\\s+${a.addr.replace(/\./g, "\\.")}\\s+version=test$`));

    const sent = await run(["send", "--to", "alice", "--title", "hi", "--data", "k=v", "--config", config]);
    assert.equal(sent.code, 0, sent.stderr);
    assert.match(sent.stdout, /^[0-9a-f-]{36} delivered=0 instance=(a|b)\n$/);

    // Several --to: one SendMany, a line per recipient; --key: a retry answers the same ids.
    const many = ["send", "--to", "bob", "--to", "x\u0001", "--to", "carol", "--title", "hi", "--key", "k1"];
    const first = await run([...many, "--config", config]);
    assert.equal(first.code, 1, "a recipient failed");
    const lines = first.stdout.trim().split("\n");
    assert.match(lines[0], /^bob: [0-9a-f-]{36} delivered=0 instance=(a|b)$/);
    assert.equal(lines[1], "x\u0001: failed: recipient must not contain control characters");
    assert.match(lines[2], /^carol: [0-9a-f-]{36} /);
    // In the mesh an instance remembers keys: one instance alone, so that the retry reaches it.
    await using solo = await ServiceProcess.start({ endpoints: etcd.endpoints, name: `${name}-solo` });
    const soloConfig = await writeConfig({ endpoints: etcd.endpoints, name: `${name}-solo` });
    const ids = async () => {
      const out = await run([...many, "--config", soloConfig]);
      assert.equal(solo.exited, false);
      return out.stdout.split("\n").map((l) => /: ([0-9a-f-]{36}) /.exec(l)?.[1]);
    };
    const firstIds = await ids();
    assert.equal(firstIds.filter((id) => id).length, 2);
    assert.deepEqual(await ids(), firstIds, "a retry with --key answers the same ids");

    const bad = await run(["send", "--title", "x", "--config", config]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /send needs --to RECIPIENT/);
  },
);

Deno.test("discover --watch prints each change as it happens until interrupted", NETWORK_TEST, async () => {
  await using etcd = await useEtcd();
  const name = `cliw-${crypto.randomUUID().slice(0, 8)}`;
  const config = await writeConfig({ endpoints: etcd.endpoints, name });
  const child = new Deno.Command(Deno.execPath(), {
    args: [...startTaskArgs(), "discover", name, "--watch", "--json", "--config", config],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const reading = (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      lines.push(...chunk.split("\n").filter((l) => l.trim() !== ""));
    }
  })();
  void child.stderr.cancel();
  using kv = scopedClient(etcd.endpoints);
  try {
    // A seed record, so the first listing prints a line: once it is out, the watch is open.
    await kv.put(`/services/${name}/seed`).value(JSON.stringify({ Op: 0, Addr: "127.0.0.1:9" })).exec();
    await eventually(() => lines.length === 1, 10_000, "initial listing");
    lines.length = 0;
    const svc = await ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: "w1" });
    await eventually(() => lines.some((l) => l.includes('"added"')), 5_000, "added line");
    svc.signal("SIGTERM");
    await svc.status;
    await eventually(() => lines.some((l) => l.includes('"removed"')), 5_000, "removed line");
    const events = lines.map((l) => JSON.parse(l)).map((e) => `${e.event}:${e.id}`);
    assert.deepEqual(events, ["added:w1", "removed:w1"]);
    child.kill("SIGINT");
    assert.equal((await child.status).code, 0);
    await reading;
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }
});

Deno.test("send says what is wrong in user terms, naming the endpoint or address", NETWORK_TEST, async () => {
  await using etcd = await useEtcd();
  const name = `clie-${crypto.randomUUID().slice(0, 8)}`;
  const config = await writeConfig({ endpoints: etcd.endpoints, name });
  const sendArgs = ["send", "--to", "alice", "--title", "hi", "--config", config];

  const usage = await run(["send", "--to", "alice", "--config", config]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /send needs --title or --body/);
  const badName = await run(["discover", "bad name!", "--config", config]);
  assert.equal(badName.code, 2);
  assert.match(badName.stderr, /discover: "bad name!" is not a service name/);

  const none = await run(sendArgs);
  assert.equal(none.code, 1);
  assert.match(
    none.stderr,
    new RegExp(
      `ERROR No instance of "${name}" is registered in etcd at ${
        etcd.endpoints[0]
      } \\(under /services/${name}/\\)`,
    ),
  );

  // A registered address where something that is not gRPC answers (plain HTTP/1).
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("nope", { status: 404 }),
  );
  using kv = scopedClient(etcd.endpoints);
  try {
    const addr = `127.0.0.1:${http.addr.port}`;
    await kv.put(`/services/${name}/web`).value(JSON.stringify({ Op: 0, Addr: addr })).exec();
    const wrong = await run(sendArgs);
    assert.equal(wrong.code, 1);
    assert.ok(wrong.stderr.includes(addr), wrong.stderr);
    assert.equal(wrong.stderr.trim().split("\n").length, 1, wrong.stderr);
  } finally {
    await http.shutdown();
  }

  const unreachable = await writeConfig({ endpoints: ["127.0.0.1:1"], name });
  const down = await run(["send", "--to", "alice", "--title", "hi", "--config", unreachable]);
  assert.equal(down.code, 1);
  assert.match(down.stderr, /ERROR Cannot reach etcd at 127\.0\.0\.1:1 after/);
  assert.doesNotMatch(down.stderr, /circuit breaker/);
});

Deno.test("discover escapes control characters and caps fields written by anyone", NETWORK_TEST, async () => {
  await using etcd = await useEtcd();
  const name = `clix-${crypto.randomUUID().slice(0, 8)}`;
  const config = await writeConfig({ endpoints: etcd.endpoints, name });
  using kv = scopedClient(etcd.endpoints);
  const metadata = JSON.stringify({ note: "\u001b[2J\u001b[31mred\nline2", long: "y".repeat(5_000) });
  await kv.put(`/services/${name}/evil\u001b[1m`).value(
    JSON.stringify({ Op: 0, Addr: "127.0.0.1:9", Metadata: metadata }),
  )
    .exec();
  await kv.put(`/services/${name}/quoted`).value('{"Op":"0","Addr":"127.0.0.1:8"}').exec();
  const table = await run(["discover", name, "--config", config]);
  assert.equal(table.code, 0, table.stderr);
  assert.ok(!table.stdout.includes("\u001b"), "no raw ESC in the table");
  const rows = table.stdout.trim().split("\n");
  assert.equal(rows.length, 2, table.stdout); // header + one instance; the newline did not split it
  assert.match(rows[1], /^evil\\x1b\[1m\s+127\.0\.0\.1:9\s+/);
  assert.ok(rows[1].length < 600, `row capped: ${rows[1].length}`);
  assert.match(table.stderr, /Skipping malformed record .*quoted.*Op "0" is neither 0/);
  const json = await run(["discover", name, "--json", "--config", config]);
  assert.ok(!json.stdout.includes("\u001b"));
  const parsed = JSON.parse(json.stdout.trim());
  assert.equal(parsed.metadata.note, "\u001b[2J\u001b[31mred\nline2");
  assert.equal(parsed.metadata.long.length, 256 + 3);
});

Deno.test("discover --watch ends when its output is closed (`| head -1`)", NETWORK_TEST, async () => {
  await using etcd = await useEtcd();
  const name = `clih-${crypto.randomUUID().slice(0, 8)}`;
  const config = await writeConfig({ endpoints: etcd.endpoints, name });
  const child = new Deno.Command(Deno.execPath(), {
    args: [...startTaskArgs(), "discover", name, "--watch", "--json", "--config", config],
    cwd: ROOT,
    stdout: "piped",
    stderr: "null",
  }).spawn();
  using kv = scopedClient(etcd.endpoints);
  try {
    await kv.put(`/services/${name}/a`).value(JSON.stringify({ Op: 0, Addr: "127.0.0.1:9" })).exec();
    const reader = child.stdout.getReader();
    await reader.read(); // the first line, as head -1 takes it
    await reader.cancel(); // and goes away
    // The next line it prints meets the closed pipe and ends the command.
    await kv.put(`/services/${name}/b`).value(JSON.stringify({ Op: 0, Addr: "127.0.0.1:8" })).exec();
    const status = await Promise.race([
      child.status,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 10_000)),
    ]);
    assert.ok(status, "discover --watch still running after its output closed");
    assert.equal(status.code, 0);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }
});

Deno.test(
  "subscribe follows the service across an instance restart and logs the gap",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const name = `clis-${crypto.randomUUID().slice(0, 8)}`;
    const config = await writeConfig({ endpoints: etcd.endpoints, name });
    const a = await ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: "a" });
    const subscriber = subscribeProcess(config, "bob");
    const { child, titles, log: err } = subscriber;
    // One connection per instance, closed before that instance stops: connecting and closing in a
    // loop, or holding a connection through a server's GOAWAY, can abort a Deno process in nghttp2
    // (denoland/deno#36788).
    const toA = notificationClient(a.addr);
    const sendVia = async (client: NotificationClient, title: string) =>
      (await send(client, { recipient: "bob", title })).delivered;
    try {
      await eventually(
        async () => (await sendVia(toA, "probe-a")) === 1,
        10_000,
        `subscribed to a\n${a.lines.join("\n")}\n${err.join("\n")}`,
      );
      await eventually(() => titles.includes("probe-a"), 5_000, "printed from a");
      toA.close();
      a.signal("SIGTERM");
      await a.status;
      await using b = await ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: "b" });
      const toB = notificationClient(b.addr);
      try {
        await eventually(
          async () => (await sendVia(toB, "probe-b")) === 1,
          15_000,
          `re-subscribed to b\n${err.join("\n")}`,
        );
      } finally {
        toB.close();
      }
      await eventually(() => titles.includes("probe-b"), 5_000, "printed from b");
      await eventually(() => err.some((l) => /Re-subscribed after/.test(l)), 5_000, "gap logged");
      assert.ok(
        err.some((l) => /Subscription to .* ended \(.*\); re-subscribing in/.test(l)),
        err.join("\n"),
      );
      child.kill("SIGINT");
      assert.equal((await child.status).code, 0);
      await subscriber.reading;
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      toA.close();
      await a[Symbol.asyncDispose]();
    }
  },
);
