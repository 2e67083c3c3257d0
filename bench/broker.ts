/**
 * `deno task bench --only broker` (and a table of the full run): the mesh beside the broker (NATS
 * JetStream), measured the same way on the same machine, medians over interleaved rounds.
 *
 * - Send rps and CPU µs per Send (the service processes, and the NATS server's share) with 32 Sends
 *   in flight over 1 000 recipients, on 1 instance and on 3 (Sends spread over them);
 * - the same Sends all to one hot recipient, on 1 instance; with Go, also from bench/sendload to an
 *   instance with `workers: 2` (as issue 37 measured it);
 * - fan-out: deliveries per second from Sends to one recipient with 10 000 open streams;
 * - replay: 1 000 notifications stored while nobody listened, then a Subscribe for everything: the
 *   time until the last is read, and until the stream is live;
 * - memory: the instance's RSS holding streams of 10 000 distinct recipients, over its idle RSS.
 *
 * Every instance runs `workers: 1` (but the Go hot-recipient row's) so the figures compare the
 * delivery paths, not the threads. Nothing here asserts timings.
 */
import * as grpc from "@grpc/grpc-js";
import { type NotificationClient, notificationClient, recoverer, send } from "../tests/helpers/grpc.ts";
import { brokerYaml, type NatsHandle, startNats } from "../tests/helpers/nats.ts";
import { cpuSeconds, rssMiB } from "../tests/helpers/proc.ts";
import { ServiceProcess } from "../tests/helpers/service.ts";
import { fmt, median } from "./load.ts";
import { subscriberConnections } from "./fanout.ts";
import { sendload } from "./cluster.ts";

export interface BrokerBenchOptions {
  endpoints: string[];
  /** Go sendload (bench/sendload): adds the hot recipient measured as issue 37 measured it. */
  sendload?: string;
  rounds: number;
  seconds: number;
  note(message: string): void;
}

type Mode = "mesh" | "broker";
const MODES: Mode[] = ["mesh", "broker"];
const CALLERS = 32;
const RECIPIENTS = 1_000;
const FAN_OUT_STREAMS = 10_000;
const REPLAYED = 1_000;
const HELD = 10_000;
/** One connection per client: grpc-js shares connections between channels unless told not to. */
const OWN_CONNECTION: grpc.ChannelOptions = { "grpc.use_local_subchannel_pool": 1 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Cluster {
  instances: ServiceProcess[];
  clients: NotificationClient[];
  stop(): Promise<void>;
}

async function startCluster(
  mode: Mode,
  count: number,
  endpoints: string[],
  nats: NatsHandle,
  stream: string,
  historySize = 1_000,
  workers = 1,
): Promise<Cluster> {
  const name = `bench-${mode}-${crypto.randomUUID().slice(0, 6)}`;
  const serverExtra = mode === "broker"
    ? brokerYaml(nats.servers, {
      stream,
      "subject-prefix": stream.toLowerCase(),
      "history-size": historySize,
    })
    : "";
  const instances: ServiceProcess[] = [];
  for (let i = 0; i < count; i++) {
    instances.push(
      await ServiceProcess.start({
        endpoints,
        name,
        workers,
        maxSubscribers: FAN_OUT_STREAMS + HELD,
        serverExtra,
      }),
    );
  }
  const clients = instances.map((i) => notificationClient(i.addr, OWN_CONNECTION));
  return {
    instances,
    clients,
    async stop() {
      for (const c of clients) c.close();
      for (const i of instances) await i[Symbol.asyncDispose]();
    },
  };
}

/**
 * 32 Sends in flight for `seconds` over `recipients` (1: every Send to one hot recipient): Sends per
 * second, CPU µs per Send (services; NATS).
 */
async function sendLoad(cluster: Cluster, nats: NatsHandle, seconds: number, recipients = RECIPIENTS) {
  const pids = cluster.instances.map((i) => i.pid);
  const natsPids = nats.pids();
  const cpu = (list: number[]) => list.reduce((s, pid) => s + cpuSeconds(pid), 0);
  const warmEnd = Date.now() + 500;
  let ok = 0;
  let errors = 0;
  let measuring = false;
  let end = Infinity;
  let before = 0;
  let natsBefore = 0;
  const caller = async (c: number) => {
    for (let i = c; Date.now() < end; i += CALLERS) {
      if (!measuring && Date.now() >= warmEnd) {
        measuring = true;
        before = cpu(pids);
        natsBefore = cpu(natsPids);
        end = Date.now() + seconds * 1000;
      }
      try {
        await send(cluster.clients[i % cluster.clients.length], {
          recipient: recipients === 1 ? "hot" : `r${i % recipients}`,
          title: "t",
        });
        if (measuring) ok++;
      } catch {
        errors++;
      }
    }
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: CALLERS }, (_, c) => caller(c)));
  const elapsed = (Date.now() - Math.max(started, warmEnd)) / 1000;
  return {
    rps: ok / elapsed,
    cpuUs: ((cpu(pids) - before) / ok) * 1e6,
    natsCpuUs: ((cpu(natsPids) - natsBefore) / ok) * 1e6,
    errors,
  };
}

/** Opens `count` streams of `recipient(i)` on `addr`, spread as the fan-out bench spreads them; resolves once all are routed. */
async function openStreams(addr: string, count: number, recipient: (i: number) => string) {
  const clients = subscriberConnections(addr, count);
  const streams: grpc.ClientReadableStream<unknown>[] = [];
  let received = 0;
  const ready: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const stream = clients[i % clients.length].subscribe({
      recipient: recipient(i),
    }) as grpc.ClientReadableStream<
      unknown
    >;
    stream.on("data", () => void received++);
    stream.on("error", () => {});
    ready.push(new Promise((resolve) => stream.on("metadata", () => resolve())));
    streams.push(stream);
  }
  await Promise.all(ready);
  return {
    received: () => received,
    close() {
      for (const s of streams) s.cancel();
      for (const c of clients) c.close();
    },
  };
}

/** Deliveries per second from 20 Sends to one recipient with 10 000 streams. */
async function fanOut(cluster: Cluster): Promise<number> {
  const streams = await openStreams(cluster.instances[0].addr, FAN_OUT_STREAMS, () => "fan");
  const sends = 20;
  const started = performance.now();
  for (let i = 0; i < sends; i++) await send(cluster.clients[0], { recipient: "fan", title: `f${i}` });
  const deadline = Date.now() + 60_000;
  while (streams.received() < sends * FAN_OUT_STREAMS && Date.now() < deadline) await sleep(5);
  const seconds = (performance.now() - started) / 1000;
  const delivered = streams.received();
  streams.close();
  return delivered / seconds;
}

/** 1 000 stored while nobody listened, then everything: ms to the last replayed, and to live. */
async function replay(cluster: Cluster, count = REPLAYED): Promise<{ lastMs: number; liveMs: number }> {
  const recipient = `offline-${crypto.randomUUID().slice(0, 6)}`;
  const client = cluster.clients[0];
  await Promise.all(Array.from({ length: 8 }, async (_, lane) => {
    for (let i = lane; i < count; i += 8) await send(client, { recipient, title: `m${i}` });
  }));
  const started = performance.now();
  const stream = recoverer(client, recipient);
  await stream.ready;
  while (stream.items.length < count) await sleep(1);
  const lastMs = performance.now() - started;
  // Live: the next one sent arrives on the same stream.
  await send(client, { recipient, title: "live" });
  while (stream.items.length < count + 1) await sleep(1);
  const liveMs = performance.now() - started;
  stream.cancel();
  return { lastMs, liveMs };
}

/**
 * `--only replay`: `count` stored notifications (history-size large enough to hold them) replayed to
 * one recovering stream of one instance, in notifications per second; medians of `rounds`.
 */
export async function replayBench(
  options: { endpoints: string[]; rounds: number; count: number; note: (line: string) => void },
): Promise<string[][]> {
  await using nats = await startNats();
  const cluster = await startCluster("broker", 1, options.endpoints, nats, "REPLAY", options.count + 10);
  const rates: number[] = [];
  try {
    for (let round = 0; round < options.rounds; round++) {
      const { lastMs } = await replay(cluster, options.count);
      rates.push(options.count / (lastMs / 1000));
      options.note(`round ${round + 1}: ${options.count} replayed in ${fmt(lastMs, 0)} ms`);
    }
  } finally {
    await cluster.stop();
  }
  return [["replayed to one stream", "per second (median)"], [String(options.count), fmt(median(rates), 0)]];
}

/** RSS over idle with streams of 10 000 distinct recipients on one instance. */
async function heldMemory(cluster: Cluster): Promise<number> {
  const pid = cluster.instances[0].pid;
  const idle = rssMiB(pid);
  const streams = await openStreams(cluster.instances[0].addr, HELD, (i) => `held-${i}`);
  await sleep(1_000);
  const held = rssMiB(pid);
  streams.close();
  return held - idle;
}

export async function brokerBench(options: BrokerBenchOptions): Promise<string[][]> {
  const { endpoints, rounds, seconds, note } = options;
  await using nats = await startNats();
  const results = new Map<string, number[]>();
  const add = (key: string, value: number) => results.set(key, [...results.get(key) ?? [], value]);
  for (let round = 0; round < rounds; round++) {
    for (const mode of MODES) {
      for (const count of [1, 3]) {
        note(`round ${round + 1}: ${mode}, ${count} instance(s): Sends`);
        const cluster = await startCluster(mode, count, endpoints, nats, `B${round}${mode[0]}${count}`);
        try {
          await sleep(500);
          const load = await sendLoad(cluster, nats, seconds);
          note(
            `  ${fmt(load.rps, 0)} Sends/s, ${fmt(load.cpuUs, 0)} µs CPU each (NATS ${
              fmt(load.natsCpuUs, 0)
            }), ${load.errors} errors`,
          );
          add(`${mode} ${count} rps`, load.rps);
          add(`${mode} ${count} cpu`, load.cpuUs);
          if (mode === "broker") add(`${mode} ${count} nats`, load.natsCpuUs);
          if (count === 1) {
            note(`round ${round + 1}: ${mode}: Sends to one hot recipient`);
            const hot = await sendLoad(cluster, nats, seconds, 1);
            note(`  ${fmt(hot.rps, 0)} Sends/s, ${fmt(hot.cpuUs, 0)} µs CPU each, ${hot.errors} errors`);
            add(`${mode} hot`, hot.rps);
            note(`round ${round + 1}: ${mode}: fan-out to ${FAN_OUT_STREAMS} streams`);
            add(`${mode} fan`, await fanOut(cluster));
            if (mode === "broker") {
              note(`round ${round + 1}: broker: replay of ${REPLAYED}`);
              const r = await replay(cluster);
              add("replay last", r.lastMs);
              add("replay live", r.liveMs);
            }
            note(`round ${round + 1}: ${mode}: ${HELD} held recipients`);
            add(`${mode} held`, await heldMemory(cluster));
          }
        } finally {
          await cluster.stop();
        }
      }
    }
    if (options.sendload) {
      for (const mode of MODES) {
        note(`round ${round + 1}: ${mode}: Go sendload to one hot recipient, workers: 2`);
        const cluster = await startCluster(mode, 1, endpoints, nats, `H${round}${mode[0]}`, 1_000, 2);
        try {
          await sleep(500);
          const rps = await sendload(options.sendload, cluster.instances[0].addr, "hot", seconds, CALLERS);
          note(`  ${fmt(rps, 0)} Sends/s`);
          add(`${mode} hot go`, rps);
        } finally {
          await cluster.stop();
        }
      }
    }
  }
  const m = (key: string) => median(results.get(key) ?? []);
  // The ratio is the median of each round's (the two modes ran side by side in it): on a shared
  // machine whose speed drifts between rounds, steadier than the ratio of the medians.
  const both = (label: string, key: (mode: Mode) => string, digits = 0): string[] => {
    const [mesh, broker] = MODES.map((mode) => results.get(key(mode)) ?? []);
    const ratios = broker.map((b, round) => b / mesh[round]);
    return [label, fmt(median(mesh), digits), fmt(median(broker), digits), fmt(median(ratios), 2)];
  };
  return [
    ["broker vs mesh (workers: 1, medians)", "mesh", "broker", "broker/mesh (median of rounds)"],
    both(`Send rps, 1 instance (c=${CALLERS}, ${RECIPIENTS} recipients)`, (mode) => `${mode} 1 rps`),
    both("Send CPU µs per Send, 1 instance", (mode) => `${mode} 1 cpu`),
    both(`Send rps to one hot recipient, 1 instance (c=${CALLERS})`, (mode) => `${mode} hot`),
    ...(options.sendload
      ? [
        both(
          `the same from Go sendload, workers: 2 (c=${CALLERS}, one connection)`,
          (mode) => `${mode} hot go`,
        ),
      ]
      : []),
    both("Send rps, 3 instances", (mode) => `${mode} 3 rps`),
    both("Send CPU µs per Send, 3 instances (all)", (mode) => `${mode} 3 cpu`),
    [
      "NATS server CPU µs per Send, 1 / 3 instances",
      "",
      `${fmt(m("broker 1 nats"), 0)} / ${fmt(m("broker 3 nats"), 0)}`,
      "",
    ],
    both(`fan-out deliveries/s to ${FAN_OUT_STREAMS} streams`, (mode) => `${mode} fan`),
    [
      "replay of 1000 missed: last read / live, ms",
      "",
      `${fmt(m("replay last"), 0)} / ${fmt(m("replay live"), 0)}`,
      "",
    ],
    both(`RSS of ${HELD} held recipients over idle, MiB`, (mode) => `${mode} held`),
  ];
}
