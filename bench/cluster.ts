/**
 * Cluster delivery, measured on real service processes over loopback (all bounded, all local):
 *
 * - latency: Send on A -> stream on B (forwarded) and on A (local), p50 and p99, Sends paced at
 *   1 000/s for `seconds`;
 * - CPU per delivered notification, local vs forwarded (A's CPU, or A's and B's together);
 * - Send throughput (Go sendload, closed loop): one instance holding every subscriber vs three
 *   instances with the subscribers spread and the load spread;
 * - directory scale: `recipients` directory keys in etcd, the time for a new instance to load
 *   them, and its RSS beside one with an empty directory.
 *
 * Standalone: `deno run -A bench/cluster.ts [--seconds S] [--recipients N]`; `deno task bench`
 * runs it too.
 */
import type * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { parseArgs } from "node:util";
import { startEtcd } from "@notification-server/registry/testing";
import { type NotificationClient, notificationClient, send } from "../tests/helpers/grpc.ts";
import { scopedClient } from "../tests/helpers/kv.ts";
import { ServiceProcess } from "../tests/helpers/service.ts";
import { cpuSeconds, rssMiB } from "../tests/helpers/proc.ts";

/** What {@link clusterBench} measured. */
export interface ClusterResult {
  latency: { forwardedP50: number; forwardedP99: number; localP50: number; localP99: number };
  /** Subscribe -> response headers (routed from every instance), new recipients on B. */
  readyMs: { p50: number; p99: number };
  cpuUsPerDelivered: { local: number; forwarded: number };
  throughput?: { oneInstance: number; threeInstances: number };
  directory: { recipients: number; writeMs: number; loadMs: number; rssMiB: number; emptyRssMiB: number };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))];

/** A stream whose arrivals are timed against the send times recorded in `sentAt`. */
function timedSubscriber(client: NotificationClient, recipient: string, sentAt: Map<string, number>) {
  const latencies: number[] = [];
  const stream = client.subscribe({ recipient }) as grpc.ClientReadableStream<{ title: string }>;
  const ready = new Promise<void>((resolve) => stream.on("metadata", () => resolve()));
  stream.on("data", (n: { title: string }) => {
    const t = sentAt.get(n.title);
    if (t !== undefined) latencies.push(performance.now() - t);
  });
  stream.on("error", () => {});
  return { latencies, ready, cancel: () => stream.cancel() };
}

/** Sends `count` notifications to `recipient` through `client`, paced at `perSecond`. */
async function paced(
  client: NotificationClient,
  recipient: string,
  count: number,
  perSecond: number,
  sentAt: Map<string, number>,
) {
  const start = performance.now();
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < count; i++) {
    const due = start + (i * 1000) / perSecond;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    const title = `${recipient}-${i}`;
    sentAt.set(title, performance.now());
    pending.push(send(client, { recipient, title }).catch(() => {}));
  }
  await Promise.all(pending);
}

/** Go sendload's Sends per second to `recipient` at `addr`, `callers` in flight on one connection. */
export async function sendload(
  bin: string,
  addr: string,
  recipient: string,
  seconds: number,
  callers = 16,
): Promise<number> {
  const out = await new Deno.Command(bin, {
    args: [
      "-addr",
      addr,
      "-c",
      String(callers),
      "-conns",
      "1",
      "-d",
      `${seconds}s`,
      "-w",
      "1s",
      "-recipient",
      recipient,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const rps = /rps=(\S+)/.exec(text)?.[1];
  if (!rps) throw new Error(`sendload said: ${text}`);
  return Number(rps);
}

/** Runs every measurement against a fresh cluster on `endpoints`. */
export async function clusterBench(
  endpoints: string[],
  options: { seconds: number; recipients: number; sendload?: string },
): Promise<ClusterResult> {
  const name = `bench-cluster-${crypto.randomUUID().slice(0, 6)}`;
  const start = (id: string) =>
    ServiceProcess.start({ endpoints, name, instanceId: id, maxSubscribers: 1000, workers: 1 });
  const [a, b, c] = await Promise.all([start("a"), start("b"), start("c")]);
  const [toA, toB, toC] = [a, b, c].map((s) => notificationClient(s.addr));
  try {
    // How soon a new subscriber is reachable from every instance (the "ready" headers).
    const ready: number[] = [];
    for (let i = 0; i < 50; i++) {
      const t0 = performance.now();
      const s = timedSubscriber(toB, `ready-${i}`, new Map());
      await s.ready;
      ready.push(performance.now() - t0);
      s.cancel();
    }
    // Latency at a steady 1 000 Sends/s, forwarded (A -> B) and local (A -> A).
    const sentAt = new Map<string, number>();
    const remote = timedSubscriber(toB, "lat-remote", sentAt);
    const local = timedSubscriber(toA, "lat-local", sentAt);
    await Promise.all([remote.ready, local.ready]);
    const count = options.seconds * 1000;
    await paced(toA, "lat-remote", count, 1000, sentAt);
    await paced(toA, "lat-local", count, 1000, sentAt);
    await sleep(200);
    remote.cancel();
    local.cancel();

    // CPU per delivered: the same paced load, once to a local subscriber, once to a remote one.
    const cpuRun = async (recipient: string, via: NotificationClient, pids: number[]) => {
      const before = pids.map(cpuSeconds);
      await paced(via, recipient, count, 1000, new Map());
      return pids.map((pid, i) => cpuSeconds(pid) - before[i]).reduce((x, y) => x + y, 0) * 1e6 / count;
    };
    const sinkLocal = timedSubscriber(toA, "cpu-local", new Map());
    const sinkRemote = timedSubscriber(toB, "cpu-remote", new Map());
    await Promise.all([sinkLocal.ready, sinkRemote.ready]);
    const cpuLocal = await cpuRun("cpu-local", toA, [a.pid]);
    const cpuForwarded = await cpuRun("cpu-remote", toA, [a.pid, b.pid]);
    sinkLocal.cancel();
    sinkRemote.cancel();

    // Throughput: every subscriber on one instance vs spread, with the load spread likewise.
    let throughput: ClusterResult["throughput"];
    if (options.sendload) {
      const one = [
        timedSubscriber(toA, "tp1", new Map()),
        timedSubscriber(toA, "tp1", new Map()),
        timedSubscriber(toA, "tp1", new Map()),
      ];
      await Promise.all(one.map((s) => s.ready));
      const oneInstance = await sendload(options.sendload, a.addr, "tp1", options.seconds);
      for (const s of one) s.cancel();
      const spread = [
        timedSubscriber(toA, "tp3", new Map()),
        timedSubscriber(toB, "tp3", new Map()),
        timedSubscriber(toC, "tp3", new Map()),
      ];
      await Promise.all(spread.map((s) => s.ready));
      const rates = await Promise.all(
        [a, b, c].map((s) => sendload(options.sendload!, s.addr, "tp3", options.seconds)),
      );
      for (const s of spread) s.cancel();
      throughput = { oneInstance, threeInstances: rates.reduce((x, y) => x + y, 0) };
    }

    // Directory scale: keys as subscribed instances write them (under a lease), then a new instance loads them.
    using kv = scopedClient(endpoints);
    const lease = await kv.leaseClient.leaseGrant({ TTL: 600 });
    const t0 = performance.now();
    for (let i = 0; i < options.recipients; i += 128) {
      const success = [];
      for (let j = i; j < Math.min(options.recipients, i + 128); j++) {
        const key = `/notification-directory/${name}/user-${j}/${["a", "b", "c"][j % 3]}`;
        success.push({ request_put: { key: Buffer.from(key), value: Buffer.from("x"), lease: lease.ID } });
      }
      await kv.kv.txn({ compare: [], success, failure: [] });
    }
    const writeMs = performance.now() - t0;
    const other = await ServiceProcess.start({
      endpoints,
      name: `${name}-empty`,
      instanceId: "e",
      workers: 1,
    });
    const d = await ServiceProcess.start({ endpoints, name, instanceId: "d", workers: 1 });
    const line = await d.waitForLine(/Recipient directory loaded: \d+ recipients in/, 60_000);
    await sleep(1_000);
    const [, recipients, amount, unit] = /loaded: (\d+) recipients in (\d+(?:\.\d+)?)(ms|s)/.exec(line)!;
    const directory = {
      recipients: Number(recipients),
      writeMs,
      loadMs: Number(amount) * (unit === "s" ? 1000 : 1),
      rssMiB: rssMiB(d.pid),
      emptyRssMiB: rssMiB(other.pid),
    };
    await kv.leaseClient.leaseRevoke({ ID: lease.ID });
    await d[Symbol.asyncDispose]();
    await other[Symbol.asyncDispose]();
    return {
      readyMs: { p50: pct(ready, 0.5), p99: pct(ready, 0.99) },
      latency: {
        forwardedP50: pct(remote.latencies, 0.5),
        forwardedP99: pct(remote.latencies, 0.99),
        localP50: pct(local.latencies, 0.5),
        localP99: pct(local.latencies, 0.99),
      },
      cpuUsPerDelivered: { local: cpuLocal, forwarded: cpuForwarded },
      throughput,
      directory,
    };
  } finally {
    for (const client of [toA, toB, toC]) client.close();
    for (const s of [a, b, c]) await s[Symbol.asyncDispose]();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seconds: { type: "string", default: "3" },
      recipients: { type: "string", default: "100000" },
      sendload: { type: "string" },
    },
  });
  await using etcd = await startEtcd();
  const r = await clusterBench(etcd.endpoints, {
    seconds: Number(values.seconds),
    recipients: Number(values.recipients),
    sendload: values.sendload,
  });
  console.log(JSON.stringify(r, null, 2));
  Deno.exit(0);
}
