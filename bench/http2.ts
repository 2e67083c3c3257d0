/**
 * `deno task bench --only http2`: what the HTTP/2 guard (src/http2_guard.ts) and the inbound limits
 * (src/http2_inbound.ts) buy and cost, on loopback, bounded in count and time.
 * - soak: Node grpc-js clients that connect, call Health/Check and close (every one sends a GOAWAY),
 *   without MALLOC_PERTURB_, several runs; crashes counted.
 * - cost: Health/Check through h2load (plain and TLS), rps and the service's CPU µs per call.
 * - attacks: the header attacks of tests/http2_abuse_test.ts, plain and under MALLOC_PERTURB_=165:
 *   RSS idle, peak and 10 s after, a normal client's Health p99 during, survival.
 * `--root DIR` runs another checkout's main.ts (e.g. a `git worktree` of an older commit) for a
 * before/after comparison; this checkout's clients and attacks are used either way.
 */
import { healthClient } from "../tests/helpers/grpc.ts";
import { makeCertificates } from "../tests/helpers/certs.ts";
import { node } from "../tests/helpers/foreign.ts";
import { type HeaderAttack, headerAttack } from "../tests/helpers/h2_attack.ts";
import { cpuSeconds, rssMiB } from "../tests/helpers/proc.ts";
import { ServiceProcess } from "../tests/helpers/service.ts";
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
  note(message: string): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function start(
  options: Http2BenchOptions,
  extra: { tls?: string; env?: Record<string, string>; workers?: number },
): Promise<ServiceProcess> {
  const script = options.root ? [`--config=${options.root}/deno.json`, `${options.root}/main.ts`] : undefined;
  return ServiceProcess.start({
    endpoints: options.endpoints,
    instanceId: `bench-h2-${crypto.randomUUID().slice(0, 8)}`,
    workers: extra.workers ?? 1,
    env: extra.env,
    script,
    serverExtra: extra.tls
      ? `  tls:\n    cert-file: "${extra.tls}/server.pem"\n    key-file: "${extra.tls}/server.key"\n`
      : undefined,
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
): Promise<{ rps: number; cpu: number }> {
  await using svc = await start(options, { tls });
  const body = await Deno.makeTempFile();
  await Deno.writeFile(body, new Uint8Array(5)); // an empty gRPC message
  const url = `${tls ? "https" : "http"}://127.0.0.1:${svc.port}/grpc.health.v1.Health/Check`;
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

/** One attack on a fresh service: RSS idle, peak, 10 s after; Health p99 during; survival. */
async function attackRow(
  options: Http2BenchOptions,
  attack: HeaderAttack,
  perturb: boolean,
): Promise<string[]> {
  await using svc = await start(options, { env: perturb ? { MALLOC_PERTURB_: "165" } : undefined });
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
    const results = await Promise.all(
      [0, 1].map(() => headerAttack(svc.port, attack, { rounds: 3, streams: 1_000 })),
    ).finally(() => (attacking = false));
    await probing;
    await sleep(10_000);
    const after = rssMiB(svc.pid);
    const sorted = latencies.sort((a, b) => a - b);
    return [
      `${attack}${perturb ? " (perturb)" : ""}`,
      String(results.reduce((n, r) => n + r.streams, 0)),
      fmt(idle, 0),
      fmt(peak, 0),
      Number.isNaN(after) ? "gone" : fmt(after, 0),
      fmt(sorted[Math.floor(0.99 * (sorted.length - 1))] ?? NaN),
      String(failures),
      svc.exited ? "died" : "alive",
    ];
  } finally {
    probe.close();
  }
}

/** The section's tables, ready to print. */
export async function http2Bench(options: Http2BenchOptions): Promise<string[][][]> {
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
  const soakRows = [["soak", "clients", "crashes"], await soak(options, 1), await soak(options, 2)];
  const attackRows = [[
    "attack (2 attackers x 3 connections)",
    "streams sent",
    "RSS idle MiB",
    "peak",
    "10 s after",
    "Health p99 ms",
    "probe failures",
    "service",
  ]];
  for (const perturb of [false, true]) {
    for (const attack of ["hpack-bomb", "fat-open-streams"] as const) {
      options.note(`attack ${attack}${perturb ? " under MALLOC_PERTURB_" : ""}`);
      attackRows.push(await attackRow(options, attack, perturb));
    }
  }
  return [costRows, soakRows, attackRows];
}
