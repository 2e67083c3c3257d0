/**
 * `deno task bench --only http`: the web edge beside gRPC on the same instance (one serving thread,
 * so every number is per core), and beside the Send a user would write with Go's net/http
 * (bench/httpanchor, GOMAXPROCS=1):
 *
 * - Send: gRPC (bench/sendload, 32 callers on one connection), HTTP/1.1 keep-alive JSON and Connect
 *   binary proto (bench/httpload, 32 callers on 32 connections), and the Go anchor with the same
 *   JSON; rps, p50/p99, server CPU µs per Send.
 * - Fan-out: `--streams` subscribers of one recipient over SSE and over gRPC (bench/fanload), 20
 *   Sends; deliveries/s from the first delivery to the last, server CPU per delivery and RSS per
 *   stream; and the same SSE fan-out from bare Deno.serve streams (bench/sse_floor.ts), the floor.
 *
 * Nothing is asserted; medians of interleaved rounds.
 */
import { freePort, waitForPort } from "@notification-server/registry/testing";
import { fmt, goLoadRun, type LoadResult, median, type Target } from "./load.ts";
import { notificationClient, send } from "../tests/helpers/grpc.ts";
import { cpuSeconds, rssMiB } from "../tests/helpers/proc.ts";
import { ServiceProcess } from "../tests/helpers/service.ts";

export interface HttpBenchTools {
  sendload: string;
  httpload: string;
  httpanchor: string;
  fanload: string;
}

export interface HttpBenchOptions {
  endpoints: string[];
  tools: HttpBenchTools;
  rounds: number;
  seconds: number;
  streams: number;
  note: (line: string) => void;
}

const CALLERS = 32;

/** One fan-out's numbers: deliveries/s (first to last), server RSS and CPU per stream and delivery. */
interface Fan {
  perSecond: number;
  kibPerStream: number;
  cpuUs: number;
}
const FAN_SENDS = 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The Go anchor on a free port, stopped with SIGTERM. */
async function startAnchor(bin: string): Promise<Target> {
  const port = await freePort();
  const child = new Deno.Command(bin, {
    args: ["-addr", `127.0.0.1:${port}`],
    env: { GOMAXPROCS: "1" },
    stdout: "null",
    stderr: "null",
  }).spawn();
  await waitForPort(port, 5_000);
  return {
    name: "go net/http",
    addr: `127.0.0.1:${port}`,
    pid: child.pid,
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

/** Where a fan-out goes: the process serving it, its address, and what makes the FAN_SENDS notifications. */
interface FanTarget {
  pid: number;
  addr: string;
  sendAll(recipient: string): Promise<void>;
}

/** The service's FAN_SENDS Sends to `recipient`, over gRPC. */
function serviceSends(svc: ServiceProcess, addr: string): FanTarget {
  return {
    pid: svc.pid,
    addr,
    async sendAll(recipient) {
      const client = notificationClient(svc.addr);
      try {
        for (let i = 0; i < FAN_SENDS; i++) await send(client, { recipient, title: `f${i}` });
      } finally {
        client.close();
      }
    },
  };
}

/** One fan-out: `streams` subscribers over `mode`, FAN_SENDS Sends; deliveries/s and KiB per stream. */
async function fanOut(
  tools: HttpBenchTools,
  target: FanTarget,
  mode: "sse" | "grpc",
  streams: number,
): Promise<Fan> {
  const recipient = `fan-${mode}-${crypto.randomUUID().slice(0, 8)}`;
  const before = rssMiB(target.pid);
  const child = new Deno.Command(tools.fanload, {
    args: [
      "-addr",
      target.addr,
      "-mode",
      mode,
      "-n",
      String(streams),
      "-recipient",
      recipient,
      "-want",
      String(streams * FAN_SENDS),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("ready")) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`fanload (${mode}) ended before its streams were open: ${text}`);
    text += value;
  }
  await sleep(500);
  const kibPerStream = (rssMiB(target.pid) - before) * 1024 / streams;
  const cpuBefore = cpuSeconds(target.pid);
  await target.sendAll(recipient);
  while (!/done got=\d+ ms=\S+/.test(text)) {
    const { value, done } = await lines.read();
    if (done) break;
    text += value;
  }
  const cpuUs = (cpuSeconds(target.pid) - cpuBefore) * 1e6 / (streams * FAN_SENDS);
  await child.status;
  const match = /done got=(\d+) ms=(\S+)/.exec(text);
  if (!match) throw new Error(`fanload (${mode}) said: ${text}`);
  const got = Number(match[1]);
  if (got < streams * FAN_SENDS) {
    throw new Error(`fanload (${mode}): ${got} of ${streams * FAN_SENDS} delivered`);
  }
  return { perSecond: got / (Number(match[2]) / 1000), kibPerStream, cpuUs };
}

/** The same fan-out against bare Deno.serve SSE streams (bench/sse_floor.ts): what no core can beat. */
async function floorFanOut(tools: HttpBenchTools, streams: number): Promise<Fan> {
  const port = await freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", new URL("./sse_floor.ts", import.meta.url).pathname, String(port)],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  try {
    await waitForPort(port, 5_000);
    return await fanOut(
      tools,
      {
        pid: child.pid,
        addr: `127.0.0.1:${port}`,
        sendAll: async () => void await (await fetch(`http://127.0.0.1:${port}/`, { method: "POST" })).text(),
      },
      "sse",
      streams,
    );
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
}

export async function httpBench(options: HttpBenchOptions): Promise<string[][]> {
  const { tools, rounds, seconds, note, streams } = options;
  const results = new Map<string, LoadResult[]>();
  const fans = new Map<string, Fan[]>();
  const add = <T>(map: Map<string, T[]>, key: string, value: T) =>
    map.set(key, [...map.get(key) ?? [], value]);
  for (let round = 0; round < rounds; round++) {
    await using svc = await ServiceProcess.start({
      endpoints: options.endpoints,
      name: `http-bench-${round}`,
      workers: 1,
      maxSubscribers: streams * 2 + 100,
      serverExtra: '  max-connections: 100000\n  http: { addr: "127.0.0.1:0" }\n',
    });
    await svc.waitForLine(/listening on http:/, 20_000);
    const service: Target = { name: "deno", addr: svc.addr, pid: svc.pid, stop: async () => {} };
    const web: Target = { ...service, addr: `127.0.0.1:${svc.httpPort}` };
    const anchor = await startAnchor(tools.httpanchor);
    try {
      // gRPC multiplexes its callers on one connection; HTTP/1.1 takes one connection per caller.
      const load = { callers: CALLERS, conns: 1, seconds };
      const http = { ...load, conns: CALLERS };
      const runs: [string, () => Promise<LoadResult>][] = [
        ["grpc", () => goLoadRun(tools.sendload, service, load)],
        ["http json", () => goLoadRun(tools.httpload, web, http, ["-type", "json"])],
        ["connect proto", () => goLoadRun(tools.httpload, web, http, ["-type", "proto"])],
        // A timeout header sends the same Send through @connectrpc/connect's router.
        [
          "json, router",
          () =>
            goLoadRun(tools.httpload, web, http, ["-type", "json", "-header", "connect-timeout-ms: 10000"]),
        ],
        ["go net/http json", () => goLoadRun(tools.httpload, anchor, http, ["-type", "json"])],
      ];
      for (const [name, run] of runs) {
        const result = await run();
        note(
          `round ${round + 1}: ${name}: ${fmt(result.rps, 0)} Sends/s, ${
            fmt(result.cpuUs)
          } µs CPU each, ${result.errors} errors`,
        );
        add(results, name, result);
      }
      const fanTargets: [string, () => Promise<Fan>][] = [
        ["sse", () => fanOut(tools, serviceSends(svc, web.addr), "sse", streams)],
        ["grpc", () => fanOut(tools, serviceSends(svc, svc.addr), "grpc", streams)],
        ["Deno.serve floor", () => floorFanOut(tools, streams)],
      ];
      for (const [name, run] of fanTargets) {
        const fan = await run();
        note(
          `round ${round + 1}: fan-out over ${name} to ${streams}: ${fmt(fan.perSecond, 0)}/s, ${
            fmt(fan.cpuUs, 1)
          } µs CPU per delivery, ${fmt(fan.kibPerStream)} KiB per stream`,
        );
        add(fans, name, fan);
      }
    } finally {
      await anchor.stop();
    }
  }
  const m = (key: string, pick: (r: LoadResult) => number) => median((results.get(key) ?? []).map(pick));
  const grpcCpu = m("grpc", (r) => r.cpuUs);
  const anchorCpu = m("go net/http json", (r) => r.cpuUs);
  const rows = [[
    "Send over",
    "rps",
    "p50 ms",
    "p99 ms",
    "CPU µs/Send",
    "vs gRPC CPU",
    "Sends per CPU-s vs Go",
  ]];
  for (const key of ["grpc", "http json", "connect proto", "json, router", "go net/http json"]) {
    const cpu = m(key, (r) => r.cpuUs);
    rows.push([
      key,
      fmt(m(key, (r) => r.rps), 0),
      fmt(m(key, (r) => r.p50), 2),
      fmt(m(key, (r) => r.p99), 2),
      fmt(cpu),
      `${fmt(cpu / grpcCpu, 2)}×`,
      `${fmt(anchorCpu / cpu, 2)}×`,
    ]);
  }
  const f = (mode: string, pick: (r: Fan) => number) => median((fans.get(mode) ?? []).map(pick));
  rows.push(["", "", "", "", "", "", ""]);
  rows.push([
    `fan-out to ${streams}`,
    "deliveries/s",
    "",
    "",
    "CPU µs/delivery",
    "deliveries/s vs gRPC",
    "KiB RSS/stream",
  ]);
  for (const mode of ["sse", "grpc", "Deno.serve floor"]) {
    rows.push([
      mode,
      fmt(f(mode, (r) => r.perSecond), 0),
      "",
      "",
      fmt(f(mode, (r) => r.cpuUs), 2),
      `${fmt(f(mode, (r) => r.perSecond) / f("grpc", (r) => r.perSecond), 2)}×`,
      fmt(f(mode, (r) => r.kibPerStream)),
    ]);
  }
  return rows;
}
