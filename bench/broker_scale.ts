/**
 * `deno task bench --only broker-scale [--recipients N]`: the broker mode holding N recipients, each
 * with one Subscribe stream, spread over 3 instances (`workers: 1`), against one nats-server:
 *
 * - the instances' start (spawn to registered) and the time to open and route all N streams;
 * - nats-server RSS before and after (the live-subject interest: one NATS subscription per held
 *   recipient per instance), and each instance's RSS over idle;
 * - Send rps (32 in flight, to recipients picked at random, each reaching its one stream) and
 *   fan-out deliveries/s to 10 000 streams of one recipient, both with the N held;
 * - with `--subjects M`: M recipients' histories stored (one notification each) and M live
 *   subscriptions held over 3 raw NATS connections, as M held recipients would have the instances
 *   hold them (where M streams through gRPC would not fit this machine).
 *
 * Numbers, not thresholds.
 */
import * as grpc from "@grpc/grpc-js";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { notificationClient, send } from "../tests/helpers/grpc.ts";
import { brokerYaml, type NatsHandle, startNats } from "../tests/helpers/nats.ts";
import { rssMiB } from "../tests/helpers/proc.ts";
import { ServiceProcess } from "../tests/helpers/service.ts";
import { subscriberConnections } from "./fanout.ts";
import { fmt } from "./load.ts";

const INSTANCES = 3;
const CALLERS = 32;
const FAN_OUT_STREAMS = 10_000;
/** Streams opened before waiting for them to be routed (openStreams). */
const WAVE = 1_000;
/** As bench/fanout.ts spreads them. */
const SUBSCRIBERS_PER_CONNECTION = 50;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface BrokerScaleOptions {
  endpoints: string[];
  recipients: number;
  subjects: number;
  seconds: number;
  note(message: string): void;
}

/**
 * Opens one stream per recipient `recipient(i)`, i < count, on `addr`, in waves of {@link WAVE}
 * (all at once, this one client process falls behind its own connections, and the server cuts
 * those that send nothing within handshake-timeout); resolves once all are routed.
 */
async function openStreams(addr: string, count: number, recipient: (i: number) => string) {
  const clients = subscriberConnections(addr, count);
  const streams: grpc.ClientReadableStream<unknown>[] = [];
  let received = 0;
  let routed = 0;
  let refused = 0;
  let reason = "";
  for (let wave = 0; wave < count; wave += WAVE) {
    for (let i = wave; i < Math.min(count, wave + WAVE); i++) {
      const stream = clients[Math.floor(i / SUBSCRIBERS_PER_CONNECTION) % clients.length].subscribe({
        recipient: recipient(i),
      }) as grpc.ClientReadableStream<unknown>;
      stream.on("data", () => void received++);
      stream.on("error", (error: Error) => {
        refused++;
        reason ||= error.message;
      });
      stream.on("metadata", () => void routed++);
      streams.push(stream);
    }
    const until = Math.min(count, wave + WAVE);
    for (let last = -1, since = Date.now(); routed + refused < until; await sleep(10)) {
      if (routed + refused !== last) [last, since] = [routed + refused, Date.now()];
      if (Date.now() - since > 60_000) {
        throw new Error(`${addr}: ${routed} of ${count} streams routed, then nothing for 60 s`);
      }
    }
  }
  if (refused > 0) throw new Error(`${refused} of ${count} streams on ${addr} were refused: ${reason}`);
  return {
    received: () => received,
    close() {
      for (const s of streams) s.cancel();
      for (const c of clients) c.close();
    },
  };
}

export async function brokerScaleBench(options: BrokerScaleOptions): Promise<string[][]> {
  const { endpoints, recipients, note } = options;
  await using nats = await startNats();
  const natsPid = () => nats.pids()[0];
  const natsIdle = rssMiB(natsPid());
  const rows: string[][] = [[
    `broker mode, ${recipients} recipients held over ${INSTANCES} instances`,
    "value",
  ]];
  const stream = `SCALE${crypto.randomUUID().slice(0, 4).toUpperCase()}`;
  const serverExtra = brokerYaml(nats.servers, { stream, "subject-prefix": stream.toLowerCase() });
  const name = `scale-${crypto.randomUUID().slice(0, 6)}`;
  const instances: ServiceProcess[] = [];
  const startMs: number[] = [];
  try {
    for (let i = 0; i < INSTANCES; i++) {
      const started = performance.now();
      instances.push(
        await ServiceProcess.start({
          endpoints,
          name,
          workers: 1,
          maxSubscribers: recipients + FAN_OUT_STREAMS,
          serverExtra,
        }),
      );
      startMs.push(performance.now() - started);
    }
    const idle = instances.map((i) => rssMiB(i.pid));
    note(`${INSTANCES} instances started; opening ${recipients} streams`);
    const opened = performance.now();
    const held = await Promise.all(
      instances.map((instance, k) =>
        openStreams(instance.addr, Math.ceil(recipients / INSTANCES), (i) => `u${i * INSTANCES + k}`)
      ),
    );
    const openMs = performance.now() - opened;
    await sleep(1_000);
    const natsHeld = rssMiB(natsPid());
    const instanceRss = instances.map((i, k) => rssMiB(i.pid) - idle[k]);
    note(`held: ${fmt(openMs, 0)} ms; NATS ${fmt(natsIdle, 0)} -> ${fmt(natsHeld, 0)} MiB`);

    // Sends to held recipients at random, through every instance.
    const clients = instances.map((i) => notificationClient(i.addr, { "grpc.use_local_subchannel_pool": 1 }));
    const before = held.reduce((s, h) => s + h.received(), 0);
    let ok = 0;
    let errors = 0;
    const end = Date.now() + options.seconds * 1000;
    const sendStarted = performance.now();
    await Promise.all(Array.from({ length: CALLERS }, async (_, c) => {
      for (let i = c; Date.now() < end; i += CALLERS) {
        try {
          await send(clients[i % INSTANCES], {
            recipient: `u${Math.floor(Math.random() * recipients)}`,
            title: "t",
          });
          ok++;
        } catch {
          errors++;
        }
      }
    }));
    const sendSeconds = (performance.now() - sendStarted) / 1000;
    const deadline = Date.now() + 10_000;
    while (held.reduce((s, h) => s + h.received(), 0) - before < ok && Date.now() < deadline) await sleep(10);
    const reached = held.reduce((s, h) => s + h.received(), 0) - before;

    note(`fan-out to ${FAN_OUT_STREAMS} streams of one recipient, with ${recipients} held`);
    const fan = await openStreams(instances[0].addr, FAN_OUT_STREAMS, () => "fan");
    const sends = 20;
    const fanStarted = performance.now();
    for (let i = 0; i < sends; i++) await send(clients[1], { recipient: "fan", title: `f${i}` });
    while (fan.received() < sends * FAN_OUT_STREAMS && performance.now() - fanStarted < 60_000) {
      await sleep(5);
    }
    const fanRate = fan.received() / ((performance.now() - fanStarted) / 1000);
    fan.close();
    for (const c of clients) c.close();
    for (const h of held) h.close();

    rows.push(
      [
        "instance start, spawn to registered, ms (median of 3)",
        fmt([...startMs].sort((a, b) => a - b)[1], 0),
      ],
      [`open and route ${recipients} streams (${INSTANCES} instances at once), ms`, fmt(openMs, 0)],
      ["nats-server RSS idle -> held, MiB", `${fmt(natsIdle, 0)} -> ${fmt(natsHeld, 0)}`],
      [
        "nats-server RSS per held recipient, KiB",
        fmt(((natsHeld - natsIdle) * 1024) / recipients, 2),
      ],
      ["instance RSS over idle, MiB (each)", instanceRss.map((r) => fmt(r, 0)).join(" / ")],
      [`Send rps (c=${CALLERS}, random held recipients)`, `${fmt(ok / sendSeconds, 0)} (${errors} errors)`],
      ["of those Sends, reached their stream", `${reached} of ${ok}`],
      [`fan-out deliveries/s to ${FAN_OUT_STREAMS} streams`, fmt(fanRate, 0)],
    );
  } catch (error) {
    for (const i of instances) note(i.lines.slice(-8).join("\n"));
    throw error;
  } finally {
    for (const i of instances) await i[Symbol.asyncDispose]();
  }
  if (options.subjects > 0) rows.push(...await subjectsAtScale(nats, options.subjects, note));
  return rows;
}

/**
 * M recipients as NATS sees them in the broker mode, without the gRPC streams: one stored
 * notification each (the stream's subjects), and one live subscription each over 3 connections.
 */
async function subjectsAtScale(
  nats: NatsHandle,
  count: number,
  note: (line: string) => void,
): Promise<string[][]> {
  const pid = nats.pids()[0];
  const nc = await connect({ servers: nats.servers, noAsyncTraces: true });
  const rows: string[][] = [];
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({
      name: "SUBJECTS",
      subjects: ["subjects.in.>"],
      max_msgs_per_subject: 100,
      allow_direct: true,
      republish: { src: "subjects.in.>", dest: "subjects.live.>" },
    });
    const js = jetstream(nc);
    const before = rssMiB(pid);
    note(`storing one notification for each of ${count} recipients`);
    const started = performance.now();
    const body = new Uint8Array(64);
    for (let i = 0; i < count; i += 1_000) {
      await Promise.all(
        Array.from(
          { length: Math.min(1_000, count - i) },
          (_, j) => js.publish(`subjects.in.u${i + j}`, body),
        ),
      );
    }
    const storeRate = count / ((performance.now() - started) / 1000);
    const stored = rssMiB(pid);
    note(`holding ${count} live subscriptions over 3 connections`);
    const subscribers = await Promise.all(
      Array.from({ length: 3 }, () => connect({ servers: nats.servers, noAsyncTraces: true })),
    );
    const subscribed = performance.now();
    for (let i = 0; i < count; i++) {
      subscribers[i % 3].subscribe(`subjects.live.u${i}`, { callback: () => {} });
    }
    await Promise.all(subscribers.map((s) => s.flush()));
    const subscribeMs = performance.now() - subscribed;
    await sleep(1_000);
    const held = rssMiB(pid);
    for (const s of subscribers) await s.close();
    rows.push(
      [`${count} recipients stored (one each), stores/s`, fmt(storeRate, 0)],
      ["nats-server RSS: before -> stored, MiB", `${fmt(before, 0)} -> ${fmt(stored, 0)}`],
      [`${count} live subscriptions over 3 connections, ms to the server`, fmt(subscribeMs, 0)],
      [
        "nats-server RSS with them, MiB (KiB each)",
        `${fmt(held, 0)} (${fmt(((held - stored) * 1024) / count, 2)})`,
      ],
    );
  } finally {
    await nc.close();
  }
  return rows;
}
