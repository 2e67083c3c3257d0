/**
 * `deno task bench --only routing`: what one Send costs by where its subscriber is, with `workers: 2`
 * on two instances. A sender connection on instance A; a subscriber on the
 * sender's worker ("same worker"), one on A's other worker ("other worker"), one on instance B
 * ("other instance"). Which worker took a connection is read from `worker_connections` on A's
 * `/metrics` after each connection opens, so the classification needs nothing of the code measured
 * and `--root DIR` (another checkout's main.ts) compares before and after with the same bench.
 *
 * Per path: p50/p99 from a Send's start to the subscriber's receipt, one Send at a time; and the
 * CPU µs both service processes spend per Send with 32 Sends in flight for `seconds`, the Sends
 * per second that made, and the lowest share of them any round delivered (it must be 100%: a
 * subscriber cut meanwhile would make Sends look cheap). Medians over interleaved rounds.
 */
import * as grpc from "@grpc/grpc-js";
import { type NotificationClient, notificationClient, send } from "../tests/helpers/grpc.ts";
import { scrape } from "../tests/helpers/metrics.ts";
import { cpuSeconds } from "../tests/helpers/proc.ts";
import { freePort } from "@notification-server/registry/testing";
import { ServiceProcess } from "../tests/helpers/service.ts";
import { fmt, median } from "./load.ts";

export interface RoutingBenchOptions {
  endpoints: string[];
  root?: string;
  rounds: number;
  seconds: number;
  /** Sequential Sends per path and round for the latency figures. */
  sends: number;
  note(message: string): void;
}

type Path = "same worker" | "other worker" | "other instance";
const PATHS: Path[] = ["same worker", "other worker", "other instance"];

/** One connection per client: grpc-js shares connections between channels unless told not to. */
const OWN_CONNECTION: grpc.ChannelOptions = { "grpc.use_local_subchannel_pool": 1 };

interface Receiver {
  recipient: string;
  client: NotificationClient;
  /** Resolved by the next notification with this title. */
  waiting: Map<string, () => void>;
  received: number;
}

async function workerConnections(port: number): Promise<number[]> {
  const metrics = await scrape(port);
  return [1, 2].map((w) => metrics.value(`notification_server_worker_connections{worker="${w}"}`) ?? 0);
}

/** Runs `open`, then says which of A's workers got the new connection (undefined: unclear). */
async function workerOf(metricsPort: number, open: () => Promise<void>): Promise<number | undefined> {
  const before = await workerConnections(metricsPort);
  await open();
  const after = await workerConnections(metricsPort);
  const grew = after.map((n, i) => n - before[i]);
  const index = grew.findIndex((d) => d === 1);
  return index >= 0 && grew.filter((d) => d !== 0).length === 1 ? index + 1 : undefined;
}

function subscribe(addr: string, recipient: string): Promise<Receiver> {
  const client = notificationClient(addr, OWN_CONNECTION);
  const receiver: Receiver = { recipient, client, waiting: new Map(), received: 0 };
  const stream = client.subscribe({ recipient }) as grpc.ClientReadableStream<{ title: string }>;
  stream.on("data", (n: { title: string }) => {
    receiver.received++;
    receiver.waiting.get(n.title)?.();
    receiver.waiting.delete(n.title);
  });
  stream.on("error", () => {});
  return new Promise((resolve) => stream.on("metadata", () => resolve(receiver)));
}

async function latencies(sender: NotificationClient, receiver: Receiver, count: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const title = `l${i}`;
    const started = performance.now();
    const got = new Promise<void>((resolve) => receiver.waiting.set(title, resolve));
    await send(sender, { recipient: receiver.recipient, title });
    await got;
    out.push(performance.now() - started);
  }
  return out;
}

async function cpuPerSend(
  sender: NotificationClient,
  receiver: Receiver,
  pids: number[],
  seconds: number,
): Promise<{ cpuUs: number; sendsPerSecond: number; delivered: number }> {
  const until = Date.now() + seconds * 1000;
  const cpu0 = pids.map(cpuSeconds);
  let sent = 0;
  let delivered = 0;
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (Date.now() < until) {
      const { delivered: n } = await send(sender, { recipient: receiver.recipient, title: "c" });
      delivered += n;
      sent++;
    }
  }));

  const cpu = pids.map((pid, i) => cpuSeconds(pid) - cpu0[i]).reduce((a, b) => a + b, 0);
  // delivered: the share that reached the subscriber (a cut subscriber would make Sends cheap).
  return { cpuUs: (cpu * 1e6) / sent, sendsPerSecond: sent / seconds, delivered: delivered / sent };
}

const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))];

export async function routingBench(options: RoutingBenchOptions): Promise<string[][]> {
  const script = options.root ? [`--config=${options.root}/deno.json`, `${options.root}/main.ts`] : undefined;
  const start = async (id: string) => {
    const metricsPort = freePort();
    const svc = await ServiceProcess.start({
      endpoints: options.endpoints,
      name: "bench-routing",
      instanceId: id,
      workers: 2,
      metricsAddr: `127.0.0.1:${metricsPort}`,
      script,
    });
    return { svc, metricsPort };
  };
  const a = await start("routing-a");
  const b = await start("routing-b");
  const opened: NotificationClient[] = [];
  try {
    const sender = notificationClient(a.svc.addr, OWN_CONNECTION);
    opened.push(sender);
    const senderWorker = await workerOf(a.metricsPort, async () => {
      await send(sender, { recipient: "warm-up", title: "w" });
    });
    if (!senderWorker) throw new Error("could not tell which worker took the sender's connection");
    const receivers = new Map<Path, Receiver>();
    for (let i = 0; receivers.size < 2 && i < 40; i++) {
      let receiver: Receiver | undefined;
      const worker = await workerOf(a.metricsPort, async () => {
        receiver = await subscribe(a.svc.addr, `local-${i}`);
      });
      opened.push(receiver!.client);
      const path: Path = worker === senderWorker ? "same worker" : "other worker";
      if (worker && !receivers.has(path)) receivers.set(path, receiver!);
    }
    if (receivers.size < 2) throw new Error("the kernel put 40 connections on one worker");
    // On B: A's peer link is there already (the barriers of A's subscribers opened it); the remote
    // subscriber's connection comes next. Whether the two share a worker decides B's crossings.
    const linkOnB = (await workerConnections(b.metricsPort)).findIndex((n) => n === 1) + 1;
    let remote: Receiver | undefined;
    const remoteWorker = await workerOf(b.metricsPort, async () => {
      remote = await subscribe(b.svc.addr, "remote");
    });
    opened.push(remote!.client);
    receivers.set("other instance", remote!);
    options.note(
      `sender on worker ${senderWorker} of A; on B the peer link is on worker ${
        linkOnB || "?"
      }, the subscriber on ${remoteWorker ?? "?"} (${
        linkOnB && linkOnB === remoteWorker ? "same worker" : "other workers"
      })`,
    );

    const lat = new Map<
      Path,
      { p50: number[]; p99: number[]; cpu: number[]; rate: number[]; delivered: number[] }
    >(
      PATHS.map((p) => [p, { p50: [], p99: [], cpu: [], rate: [], delivered: [] }]),
    );
    await latencies(sender, receivers.get("other instance")!, 50); // peer links warm
    for (let round = 0; round < options.rounds; round++) {
      for (const path of PATHS) {
        const r = receivers.get(path)!;
        const xs = await latencies(sender, r, options.sends);
        const row = lat.get(path)!;
        row.p50.push(pct(xs, 0.5));
        row.p99.push(pct(xs, 0.99));
        const load = await cpuPerSend(sender, r, [a.svc.pid, b.svc.pid], options.seconds);
        row.cpu.push(load.cpuUs);
        row.rate.push(load.sendsPerSecond);
        row.delivered.push(load.delivered);
        options.note(
          `round ${round + 1} ${path}: p50 ${fmt(pct(xs, 0.5), 3)} ms p99 ${fmt(pct(xs, 0.99), 3)} ms cpu ${
            fmt(row.cpu.at(-1)!)
          } µs/send`,
        );
      }
    }
    const table = [[
      "path (workers: 2)",
      "p50 ms",
      "p99 ms",
      "CPU µs/Send (both instances)",
      "Sends/s (32 in flight)",
      "delivered",
    ]];
    for (const path of PATHS) {
      const row = lat.get(path)!;
      table.push([
        path,
        fmt(median(row.p50), 3),
        fmt(median(row.p99), 3),
        fmt(median(row.cpu)),
        fmt(median(row.rate)),
        `${(Math.min(...row.delivered) * 100).toFixed(0)}%`,
      ]);
    }
    return table;
  } finally {
    for (const client of opened) client.close();
    for (const s of [a.svc, b.svc]) {
      s.signal("SIGTERM");
      await s.status;
    }
  }
}
