/**
 * No client may crash the service (packages/http2_guard/src/http2_guard.ts): Deno's node:http2 frees a session inside
 * nghttp2 when a GOAWAY or an unsolicited PING ACK arrives on a session with no open stream
 * (denoland/deno#36788). Every process here runs with MALLOC_PERTURB_=165, under which glibc
 * fills freed memory and the use-after-free crashes on the first such frame instead of at random:
 * without the guard the service died on the first Node client that closed, and on the first PING
 * ACK. Real Node grpc-js clients, a real Node HTTP/2 server, real etcd.
 */
import assert from "node:assert/strict";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { node, spawnNode } from "./helpers/foreign.ts";
import { eventually, healthCheck } from "./helpers/grpc.ts";
import { readRecord, scopedClient } from "./helpers/kv.ts";
import { ServiceProcess, startTaskArgs, writeConfig } from "./helpers/service.ts";

const PERTURB = { MALLOC_PERTURB_: "165" };
const NODE_CLIENTS = new URL("./interop/node_clients.cjs", import.meta.url).pathname;
const NODE_GOAWAY_SERVER = new URL("./interop/node_goaway_server.cjs", import.meta.url).pathname;
const ROOT = new URL("../", import.meta.url).pathname;

/** The service is running, answers SERVING, and its record is in etcd. */
async function assertAliveAndRegistered(svc: ServiceProcess, endpoints: string[]): Promise<void> {
  assert.equal(svc.exited, false, `the service died:\n${svc.lines.join("\n")}`);
  assert.equal(await healthCheck(svc.addr), "SERVING");
  using kv = scopedClient(endpoints);
  assert.ok(await readRecord(kv, svc.key), "still registered");
}

for (const workers of [1, 2]) {
  Deno.test(
    `50 Node grpc-js clients that connect, call and close leave the service alive (workers: ${workers})`,
    NETWORK_TEST,
    async () => {
      await using etcd = await useEtcd();
      await using svc = await ServiceProcess.start({
        endpoints: etcd.endpoints,
        instanceId: `node-clients-${workers}-${crypto.randomUUID()}`,
        workers,
        env: PERTURB,
      });
      const result = JSON.parse(await node(NODE_CLIENTS, svc.addr, "50"));
      assert.deepEqual(result, { ok: 50, failed: 0, firstError: "" });
      await assertAliveAndRegistered(svc, etcd.endpoints);
    },
  );
}

Deno.test(
  "an unsolicited PING ACK on an idle connection leaves the service alive",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `ping-ack-${crypto.randomUUID()}`,
      env: PERTURB,
    });
    const preface = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    const settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    // PING (type 6) with ACK (flag 1) on stream 0, 8 opaque bytes: an answer to nothing we sent.
    const pingAck = [0, 0, 8, 6, 1, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    for (let i = 0; i < 3; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: svc.port });
      await conn.write(new Uint8Array([...preface, ...settings, ...pingAck]));
      // The server's SETTINGS arrive whatever it does with the PING ACK; then its reaction has run.
      await conn.read(new Uint8Array(1024));
      await new Promise((r) => setTimeout(r, 100));
      conn.close();
    }
    await assertAliveAndRegistered(svc, etcd.endpoints);
  },
);

Deno.test(
  "our clients (discover, send, subscribe) survive a GOAWAY on an idle session from a Node server",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    // A Node HTTP/2 server that answers Send and Subscribe and relays the rest to etcd, sending a
    // GOAWAY on every connection that goes idle: our CLI meets it as an instance and as etcd.
    const server = spawnNode(NODE_GOAWAY_SERVER, [etcd.endpoints[0]]);
    const lines: string[] = [];
    void new Response(server.stderr).text();
    const reading = (async () => {
      for await (const chunk of server.stdout.pipeThrough(new TextDecoderStream())) {
        lines.push(...chunk.split("\n").filter((l) => l));
      }
    })();
    try {
      const port = await eventually(
        () => lines.map((l) => /^listening (\d+)$/.exec(l)?.[1]).find((p) => p),
        10_000,
        "the Node server",
      );
      const goaways = () => lines.filter((l) => l.startsWith("goaway")).length;
      using kv = scopedClient(etcd.endpoints);
      await kv.put("/services/nodepeer/n1").value(JSON.stringify({ Op: 0, Addr: `127.0.0.1:${port}` }));
      const config = await writeConfig({ endpoints: [`127.0.0.1:${port}`], name: "nodepeer" });
      const cli = async (...args: string[]) => {
        const out = await new Deno.Command(Deno.execPath(), {
          args: [...startTaskArgs(), ...args, "--config", config],
          cwd: ROOT,
          env: PERTURB,
          stdin: "null",
        }).output();
        const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
        assert.equal(out.code, 0, `${args[0]} exited ${out.code} ${out.signal ?? ""}:\n${text}`);
        return new TextDecoder().decode(out.stdout);
      };
      assert.match(await cli("discover", "nodepeer"), /n1\s+127\.0\.0\.1:\d+/);
      assert.match(await cli("send", "--to", "x", "--title", "hi"), /^node-1 delivered=1 instance=node$/m);

      const before = goaways();
      const subscriber = new Deno.Command(Deno.execPath(), {
        args: [...startTaskArgs(), "subscribe", "--to", "x", "--json", "--config", config],
        cwd: ROOT,
        env: PERTURB,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const printed = new Response(subscriber.stdout).text();
      const logged = new Response(subscriber.stderr).text();
      // Each stream ends after one notification and its connection gets a GOAWAY once idle: the
      // subscriber re-subscribes through several of them.
      await eventually(() => goaways() >= before + 3, 10_000, "GOAWAYs sent to the subscriber");
      subscriber.kill("SIGTERM");
      const status = await subscriber.status;
      const log = await logged;
      assert.equal(status.code, 0, `subscribe exited ${status.code} ${status.signal ?? ""}:\n${log}`);
      assert.match(await printed, /"title":"from node"/);
      assert.ok(goaways() >= 3, "the Node server sent GOAWAYs");
    } finally {
      server.kill("SIGTERM");
      await server.status;
      await reading;
    }
  },
);
