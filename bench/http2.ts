/**
 * `deno task bench --only http2`: what the HTTP/2 guard (src/http2_guard.ts) and the inbound limits
 * (src/http2_inbound.ts) buy and cost, on loopback, bounded in count and time.
 * - soak: Node grpc-js clients that connect, call Health/Check and close (every one sends a GOAWAY),
 *   without MALLOC_PERTURB_, several runs; crashes counted.
 * - cost: Health/Check through h2load (plain and TLS), rps and the service's CPU µs per call.
 * - attacks: those of tests/http2_abuse_test.ts at bench size, and 400 subscribers that never read,
 *   plain and under MALLOC_PERTURB_=165: RSS idle, peak and 10 s after, a normal client's Health
 *   p99 during (one connection, every 20 ms), survival.
 * `--root DIR` runs another checkout's main.ts (e.g. a `git worktree` of an older commit) for a
 * before/after comparison; this checkout's clients and attacks are used either way.
 */
import { healthClient, notificationClient, send as sendNotification } from "../tests/helpers/grpc.ts";
import { makeCertificates } from "../tests/helpers/certs.ts";
import { node } from "../tests/helpers/foreign.ts";
import {
  type HeaderAttack,
  headerAttack,
  holdStreams,
  pipelineWithoutWindow,
  PREFACE,
  send,
  stalledSubscribers,
} from "../tests/helpers/h2_attack.ts";
import { cpuSeconds, rssMiB } from "../tests/helpers/proc.ts";
import { ServiceProcess } from "../tests/helpers/service.ts";
import { makeToken } from "../src/auth/tokens.ts";
import { fmt, median } from "./load.ts";

const NODE_CLIENTS = new URL("../tests/interop/node_clients.cjs", import.meta.url).pathname;

export interface Http2BenchOptions {
  endpoints: string[];
  /** The checkout whose service runs (default this one). */
  root?: string;
  rounds: number;
  seconds: number;
  soakClients: number;
  soakRuns: number;
  /** Which parts to run (default all). */
  parts?: ("cost" | "soak" | "attacks" | "auth")[];
  note(message: string): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function start(
  options: Http2BenchOptions,
  extra: { tls?: string; env?: Record<string, string>; workers?: number | undefined; serverExtra?: string },
): Promise<ServiceProcess> {
  const script = options.root ? [`--config=${options.root}/deno.json`, `${options.root}/main.ts`] : undefined;
  return ServiceProcess.start({
    endpoints: options.endpoints,
    instanceId: `bench-h2-${crypto.randomUUID().slice(0, 8)}`,
    workers: extra.workers ?? 1,
    env: extra.env,
    script,
    serverExtra: (extra.tls
      ? `  tls:\n    cert-file: "${extra.tls}/server.pem"\n    key-file: "${extra.tls}/server.key"\n`
      : "") + (extra.serverExtra ?? ""),
  });
}

/** Soak: `runs` services, each meeting `clients` Node clients; how many of them died. */
async function soak(options: Http2BenchOptions, workers: number): Promise<string[]> {
  let crashes = 0;
  const details: string[] = [];
  for (let run = 0; run < options.soakRuns; run++) {
    await using svc = await start(options, { workers });
    const started = performance.now();
    const out = await node(NODE_CLIENTS, svc.addr, String(options.soakClients), "4").catch((e) => `${e}`);
    const seconds = (performance.now() - started) / 1000;
    await sleep(200);
    const died = svc.exited;
    if (died) crashes++;
    details.push(`${died ? "died" : "alive"} after ${out.trim().slice(0, 60)} in ${fmt(seconds)}s`);
    options.note(`soak workers=${workers} run ${run + 1}: ${details.at(-1)}`);
  }
  return [
    `soak w=${workers}`,
    `${options.soakRuns} x ${options.soakClients} Node clients`,
    `${crashes} of ${options.soakRuns} runs crashed`,
  ];
}

/** h2load against Health/Check: requests per second and the service's CPU µs per call. */
async function cost(
  options: Http2BenchOptions,
  tls: string | undefined,
  call: { path: string; message: Uint8Array; headers?: readonly string[]; serverExtra?: string } =
    HEALTH_CHECK,
): Promise<{ rps: number; cpu: number }> {
  await using svc = await start(options, { tls, serverExtra: call.serverExtra });
  const body = await Deno.makeTempFile();
  const frame = new Uint8Array(5 + call.message.length); // a gRPC message: flag, length, bytes
  new DataView(frame.buffer).setUint32(1, call.message.length);
  frame.set(call.message, 5);
  await Deno.writeFile(body, frame);
  const url = `${tls ? "https" : "http"}://127.0.0.1:${svc.port}${call.path}`;
  const run = async (seconds: number) => {
    const cpu0 = cpuSeconds(svc.pid);
    const out = await new Deno.Command("h2load", {
      args: [
        "-D",
        String(seconds),
        "-c",
        "4",
        "-m",
        "32",
        "-d",
        body,
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        ...(call.headers ?? []).flatMap((h) => ["-H", h]),
        url,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const done = Number(/(\d+) succeeded/.exec(text)?.[1] ?? 0);
    const cpu = cpuSeconds(svc.pid) - cpu0;
    return { rps: done / seconds, cpu: done > 0 ? (cpu / done) * 1e6 : NaN };
  };
  await run(1); // warm-up
  return await run(options.seconds);
}

const HEALTH_CHECK = { path: "/grpc.health.v1.Health/Check", message: new Uint8Array() };

/**
 * Send's cost with auth on and off: h2load sends one SendRequest (to a recipient nobody holds)
 * over and over, with one bearer token (cached after its first check) when auth is on.
 */
async function authCost(options: Http2BenchOptions): Promise<string[][]> {
  const dir = await Deno.makeTempDir({ prefix: "bench-auth-" });
  const secretFile = `${dir}/jwt.key`;
  await Deno.writeTextFile(secretFile, `${crypto.randomUUID()}${crypto.randomUUID()}\n`);
  const auth = { jwt: { hmacSecretFile: secretFile }, sendScope: "notifications:send" };
  const token = await makeToken(auth, { sub: "bench", scope: "notifications:send", ttlSeconds: 3_600 });
  const text = (field: number, value: string) => {
    const bytes = new TextEncoder().encode(value);
    return [field << 3 | 2, bytes.length, ...bytes];
  };
  const message = new Uint8Array([...text(1, "nobody"), ...text(2, "t")]);
  const path = "/notification.v1.NotificationService/Send";
  const variants = [
    ["auth off", { path, message }],
    ["auth on (JWT, HS256)", {
      path,
      message,
      headers: [`authorization: Bearer ${token}`],
      serverExtra: `  auth:\n    jwt:\n      hmac-secret-file: "${secretFile}"\n`,
    }],
  ] as const;
  const rows = [["Send via h2load (c=4, m=32)", "rps", "CPU µs/call"]];
  const runs = new Map<string, { rps: number; cpu: number }[]>();
  for (let round = 0; round < options.rounds; round++) {
    for (const [name, call] of variants) {
      const result = await cost(options, undefined, call);
      runs.set(name, [...runs.get(name) ?? [], result]);
      options.note(`auth cost ${name} round ${round + 1}: ${fmt(result.rps, 0)} rps, ${fmt(result.cpu)} µs`);
    }
  }
  for (const [name] of variants) {
    const r = runs.get(name)!;
    rows.push([name, fmt(median(r.map((x) => x.rps)), 0), fmt(median(r.map((x) => x.cpu)))]);
  }
  return rows;
}

/** An attack as the bench runs it: how the service is configured, and what the attacker does. */
interface Attack {
  name: string;
  /** Service environment (a smaller V8 heap for the heap attack). */
  env?: Record<string, string>;
  workers?: number;
  /** What the attacker did, in a few words. */
  run(svc: ServiceProcess): Promise<string>;
}

/** The attacks of tests/http2_abuse_test.ts and the slow-subscriber flood, at bench size. */
const ATTACKS: Attack[] = [
  ...(["hpack-bomb", "fat-open-streams"] as HeaderAttack[]).map((name) => ({
    name,
    run: async (svc: ServiceProcess) => {
      const results = await Promise.all(
        [0, 1].map(() => headerAttack(svc.port, name, { rounds: 3, streams: 1_000 })),
      );
      return `${results.reduce((n, r) => n + r.streams, 0)} streams on 6 conns`;
    },
  })),
  {
    name: "zero-window pipelining",
    run: async (svc) => {
      const results = await Promise.all([0, 1].map(() => pipelineWithoutWindow(svc.port, 100_000)));
      return `${results.reduce((n, r) => n + r.written, 0)} calls on 2 conns`;
    },
  },
  {
    name: "1 000 silent connections",
    run: async (svc) => {
      // One byte each, as many as max-connections allows; held until the server closes them.
      const conns = await Promise.all(Array.from({ length: 1_000 }, async () => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: svc.port });
        await send(conn, PREFACE.subarray(0, 1));
        return conn;
      }));
      const started = performance.now();
      const closedIn = await Promise.all(conns.map(async (conn) => {
        const buffer = new Uint8Array(64);
        const timer = setTimeout(() => conn.close(), 30_000);
        try {
          while (await conn.read(buffer) !== null);
        } catch { /* closed */ }
        clearTimeout(timer);
        return performance.now() - started;
      }));
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* closed by the server */ }
      }
      return `all closed by ${fmt(Math.max(...closedIn) / 1000)} s`;
    },
  },
  {
    name: "400 stalled subscribers",
    run: async (svc) => {
      const close = await stalledSubscribers(svc.port, "stalled", 400);
      const sender = notificationClient(svc.addr);
      const body = "x".repeat(8 * 1024);
      let delivered = 0;
      for (let i = 0; i < 200; i++) {
        delivered +=
          (await sendNotification(sender, { recipient: "stalled", title: `n${i}`, body })).delivered;
      }
      sender.close();
      close();
      return `${delivered} of ${200 * 400} queued`;
    },
  },
  {
    name: "heap: 120 conns x 100 streams (160 MB heap)",
    env: { DENO_V8_FLAGS: "--max-old-space-size=160" },
    workers: 1,
    run: async (svc) => {
      const held = await holdStreams(svc.port, { connections: 120, streams: 100 });
      await sleep(3_000);
      const open = held.open();
      held.close();
      return `${120 - open} of 120 conns shed`;
    },
  },
];

/** One attack on a fresh service: RSS idle, peak, 10 s after; Health p99 during; survival. */
async function attackRow(options: Http2BenchOptions, attack: Attack, perturb: boolean): Promise<string[]> {
  const env = { ...attack.env, ...(perturb ? { MALLOC_PERTURB_: "165" } : {}) };
  await using svc = await start(options, { env, workers: attack.workers });
  const probe = healthClient(svc.addr);
  try {
    await probe.check();
    await sleep(500);
    const idle = rssMiB(svc.pid);
    let peak = idle;
    let attacking = true;
    const latencies: number[] = [];
    let failures = 0;
    const probing = (async () => {
      while (attacking) {
        const started = performance.now();
        await probe.check().catch(() => failures++);
        latencies.push(performance.now() - started);
        peak = Math.max(peak, rssMiB(svc.pid) || 0);
        await sleep(20);
      }
    })();
    const what = await attack.run(svc).catch((e) => `attacker failed: ${e}`).finally(
      () => (attacking = false),
    );
    await probing;
    await sleep(10_000);
    const after = rssMiB(svc.pid);
    const sorted = latencies.sort((a, b) => a - b);
    return [
      `${attack.name}${perturb ? " (perturb)" : ""}`,
      what,
      fmt(idle, 0),
      fmt(peak, 0),
      Number.isNaN(after) ? "gone" : fmt(after, 0),
      fmt(sorted[Math.floor(0.99 * (sorted.length - 1))] ?? NaN),
      `${failures}/${latencies.length}`,
      svc.exited ? "died" : "alive",
    ];
  } finally {
    probe.close();
  }
}

/** The section's tables, ready to print. */
export async function http2Bench(options: Http2BenchOptions): Promise<string[][][]> {
  const parts = new Set(options.parts ?? ["cost", "soak", "attacks", "auth"]);
  const tables: string[][][] = [];
  if (parts.has("cost")) {
    const certs = await Deno.makeTempDir({ prefix: "bench-h2-certs-" });
    await makeCertificates(certs);
    const costRows: string[][] = [["Health via h2load (c=4, m=32)", "rps", "CPU µs/call"]];
    for (const [name, tls] of [["plain", undefined], ["TLS", certs]] as const) {
      const runs = [];
      for (let round = 0; round < options.rounds; round++) {
        runs.push(await cost(options, tls));
        options.note(`cost ${name} round ${round + 1}: ${fmt(runs.at(-1)!.rps, 0)} rps`);
      }
      costRows.push([name, fmt(median(runs.map((r) => r.rps)), 0), fmt(median(runs.map((r) => r.cpu)))]);
    }
    tables.push(costRows);
  }
  if (parts.has("auth")) tables.push(await authCost(options));
  if (parts.has("soak")) {
    tables.push([["soak", "clients", "crashes"], await soak(options, 1), await soak(options, 2)]);
  }
  if (parts.has("attacks")) {
    const attackRows = [[
      "attack",
      "what the attacker did",
      "RSS idle MiB",
      "peak",
      "10 s after",
      "Health p99 ms",
      "Health probes failed",
      "service",
    ]];
    for (const perturb of [false, true]) {
      for (const attack of ATTACKS) {
        options.note(`attack ${attack.name}${perturb ? " under MALLOC_PERTURB_" : ""}`);
        attackRows.push(await attackRow(options, attack, perturb));
      }
    }
    tables.push(attackRows);
  }
  return tables;
}
