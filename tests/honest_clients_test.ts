/**
 * Clients we did not write, calling as services call each other, are never cut: grpc-go (Debian's
 * packages), Node's own grpc-js and Python's grpcio, each on one connection, run the same patterns
 * (tests/interop/node_matrix.cjs describes them): a deadline on every call, per-call request ids
 * and binary metadata, 100 keys, fixed metadata of 1, 8, 12 and 15.4 KiB (the last a whole header
 * list 15.9-16.0 KiB decoded: within 15 bytes of the advertised 16 KiB for grpc-js), 20
 * concurrent callers, and a Subscribe held open beside unary calls. Every call succeeds, the
 * service cuts nothing, each client used one connection, and the Subscribe is still open at the end.
 */
import assert from "node:assert/strict";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { goClient, nodeGrpcDir } from "./helpers/foreign.ts";
import { scrape } from "./helpers/metrics.ts";
import { ServiceProcess } from "./helpers/service.ts";

const PATTERNS = [
  "deadline:1000",
  "request-id:1000",
  "binary:500",
  "keys:100:200",
  "fixed:1024:1",
  "fixed:8192:8",
  "fixed:12288:12",
  "fixed:15808:1",
  "concurrent:20:100",
  "subscribe:1000",
];
const INTEROP = new URL("./interop/", import.meta.url).pathname;

interface PatternResult {
  pattern: string;
  ok: number;
  failed: number;
  firstError: string;
  open?: boolean;
}

/** The client's command line for the patterns. */
type Client = (addr: string) => Promise<{ command: string; args: string[]; env?: Record<string, string> }>;

const CLIENTS: Record<string, Client> = {
  "grpc-go": async (addr) => ({ command: await goClient(), args: ["matrix", "-addr", addr, ...PATTERNS] }),
  "grpc-js (Node)": (addr) =>
    Promise.resolve({
      command: "node",
      args: [`${INTEROP}node_matrix.cjs`, addr, ...PATTERNS],
      env: { NODE_PATH: `${nodeGrpcDir()}/node_modules` },
    }),
  "grpcio (Python)": (addr) =>
    Promise.resolve({ command: "/usr/bin/python3", args: [`${INTEROP}python_matrix.py`, addr, ...PATTERNS] }),
};

for (const [name, client] of Object.entries(CLIENTS)) {
  Deno.test(
    `${name} on one connection: every call of every pattern succeeds, nothing is cut`,
    NETWORK_TEST,
    async () => {
      await using etcd = await useEtcd();
      await using svc = await ServiceProcess.start({
        endpoints: etcd.endpoints,
        instanceId: `honest-${crypto.randomUUID().slice(0, 8)}`,
        metricsAddr: "127.0.0.1:0",
      });
      const counts = async () => {
        const m = await scrape(svc.metricsPort);
        const cut = m.text.split("\n").filter((l) =>
          l.startsWith("notification_server_connections_cut_total{")
        );
        return {
          accepted: m.value("notification_server_connections_accepted_total") ?? 0,
          cut: cut.reduce((n, line) => n + Number(line.slice(line.lastIndexOf(" ") + 1)), 0),
        };
      };
      const before = await counts();
      const { command, args, env } = await client(svc.addr);
      const out = await new Deno.Command(command, { args, env, stdin: "null" }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.ok(out.success, `${name} failed:\n${text}${new TextDecoder().decode(out.stderr)}`);
      const results = text.trim().split("\n").map((line) => JSON.parse(line) as PatternResult);
      assert.deepEqual(results.map((r) => r.pattern), PATTERNS);
      const after = await counts();
      for (const r of results) {
        assert.equal(r.failed, 0, `${name} ${r.pattern}: ${r.failed} failed, first: ${r.firstError}`);
        assert.ok(r.ok > 0, `${name} ${r.pattern}: no call made`);
        if (r.pattern.startsWith("subscribe")) assert.equal(r.open, true, `${name}: ${r.firstError}`);
      }
      assert.equal(after.cut - before.cut, 0, `${name}: connections cut`);
      assert.equal(after.accepted - before.accepted, 1, `${name}: connections opened`);
      console.log(`${name}: ${results.reduce((n, r) => n + r.ok, 0)} calls ok, 1 connection, 0 cut`);
    },
  );
}
