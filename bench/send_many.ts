/**
 * `deno task bench --only sendmany`: one SendMany of 1 000 recipients beside the 1 000 Sends it
 * replaces (32 in flight, from one grpc-js client), in the mesh and with the broker; each recipient
 * has one live subscriber on a second instance (mesh: the copies are forwarded to it; broker: it
 * holds them). Wall time and both instances' CPU (the sender's, and the whole cluster's with NATS).
 * Nothing is asserted; medians of interleaved rounds.
 */
import { fmt, median } from "./load.ts";
import { notificationClient, send, sendMany, subscriber } from "../tests/helpers/grpc.ts";
import { brokerYaml, startNats } from "../tests/helpers/nats.ts";
import { cpuSeconds } from "../tests/helpers/proc.ts";
import { ServiceProcess } from "../tests/helpers/service.ts";

export interface SendManyBenchOptions {
  endpoints: string[];
  rounds: number;
  note: (line: string) => void;
}

const RECIPIENTS = 1_000;
const IN_FLIGHT = 32;

interface Run {
  ms: number;
  /** CPU ms of the instance that took the calls. */
  senderMs: number;
  /** CPU ms of both instances and NATS. */
  allMs: number;
}

export async function sendManyBench(options: SendManyBenchOptions): Promise<string[][]> {
  const { endpoints, rounds, note } = options;
  await using nats = await startNats();
  const results = new Map<string, Run[]>();
  const add = (key: string, run: Run) => results.set(key, [...results.get(key) ?? [], run]);
  for (const mode of ["mesh", "broker"] as const) {
    // One client connection holds every subscriber.
    const extra = "  max-concurrent-streams: 2000\n  max-subscribers-per-connection: 2000\n" +
      (mode === "broker" ? brokerYaml(nats.servers, { stream: "MANY", "subject-prefix": "many" }) : "");
    const base = {
      endpoints,
      name: `many-${mode}`,
      workers: 1,
      maxSubscribers: RECIPIENTS + 10,
      serverExtra: extra,
    };
    await using sender = await ServiceProcess.start({ ...base, instanceId: `${mode}-sender` });
    await using holder = await ServiceProcess.start({ ...base, instanceId: `${mode}-holder` });
    const client = notificationClient(sender.addr);
    const holding = notificationClient(holder.addr);
    const recipients = Array.from({ length: RECIPIENTS }, (_, i) => `bench-${i}`);
    const streams = recipients.map((r) => subscriber(holding, r));
    await Promise.all(streams.map((s) => s.ready));
    const pids = [sender.pid, holder.pid, ...(mode === "broker" ? nats.pids() : [])];
    const measure = async (work: () => Promise<void>): Promise<Run> => {
      const before = pids.map(cpuSeconds);
      const started = performance.now();
      await work();
      const ms = performance.now() - started;
      const used = pids.map((pid, i) => cpuSeconds(pid) - before[i]);
      return { ms, senderMs: used[0] * 1000, allMs: used.reduce((a, b) => a + b, 0) * 1000 };
    };
    try {
      for (let round = 0; round < rounds; round++) {
        const sends = await measure(async () => {
          let next = 0;
          await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
            while (next < RECIPIENTS) await send(client, { recipient: recipients[next++], title: "one" });
          }));
        });
        const many = await measure(async () => void await sendMany(client, { recipients, title: "many" }));
        note(
          `${mode} round ${round + 1}: 1 000 Sends ${fmt(sends.ms, 0)} ms, ${
            fmt(sends.senderMs, 0)
          } ms CPU; ` +
            `SendMany ${fmt(many.ms, 0)} ms, ${fmt(many.senderMs, 0)} ms CPU`,
        );
        add(`${mode} sends`, sends);
        add(`${mode} many`, many);
      }
    } finally {
      for (const s of streams) s.cancel();
      client.close();
      holding.close();
    }
  }
  const m = (key: string, pick: (r: Run) => number) => median((results.get(key) ?? []).map(pick));
  const rows = [["mode", "call", "wall ms", "sender CPU ms", "cluster CPU ms", "CPU vs the Sends"]];
  for (const mode of ["mesh", "broker"]) {
    for (const [call, key] of [["1 000 Sends (32 in flight)", "sends"], ["SendMany of 1 000", "many"]]) {
      rows.push([
        mode,
        call,
        fmt(m(`${mode} ${key}`, (r) => r.ms), 0),
        fmt(m(`${mode} ${key}`, (r) => r.senderMs), 0),
        fmt(m(`${mode} ${key}`, (r) => r.allMs), 0),
        `${fmt(m(`${mode} ${key}`, (r) => r.senderMs) / m(`${mode} sends`, (r) => r.senderMs), 2)}×`,
      ]);
    }
  }
  return rows;
}
