/**
 * `deno task bench --only directory [--sizes 10000,100000] [--root DIR]`: the recipient directory
 * at size. For each size N, a fresh etcd is filled the way DirectoryPublisher writes it (two other
 * instances' recipients, each under its own lease, transactions of 128: "y" holds min(N, 100 000)
 * of them, "z" the rest), then an instance starts. First table: how long its view took to load
 * (its "Recipient directory loaded" line), its heap and RSS once loaded, and etcd's Range calls
 * meanwhile. Second table, on that loaded instance: Subscribes to new recipients (20 connections,
 * 50 each, all in flight), their rate and etcd calls per Subscribe; then y's lease is revoked (as
 * when an instance holding that many dies): how long until the view dropped them all, and whether
 * the watch resynced or a keep-alive failed meanwhile. `--root` runs another checkout's main.ts
 * (before/after); the second table needs the metrics of this one.
 */
import { directoryRoot } from "../src/mesh/directory.ts";
import { fillDirectory } from "../tests/helpers/directory.ts";
import { startEtcd } from "@notification-server/registry/testing";
import { scrape } from "../tests/helpers/metrics.ts";
import { rawClient } from "../tests/helpers/kv.ts";
import { rssMiB } from "../tests/helpers/proc.ts";
import type * as grpc from "@grpc/grpc-js";
import { notificationClient } from "../tests/helpers/grpc.ts";
import { ServiceProcess } from "../tests/helpers/service.ts";

export interface DirectoryBenchOptions {
  sizes: number[];
  root?: string;
  note: (message: string) => void;
}

/** The most recipients the revoked instance holds (the "revoke of 100 k"). */
const REVOKED = 100_000;
/** Subscribes measured per size: this many connections, this many streams on each (under 100). */
const SUB_CONNECTIONS = 20;
const SUB_PER_CONNECTION = 50;

/**
 * Writes `count` recipients: min(count, REVOKED) of instance "y", the rest of instance "z", each
 * under its own lease, several transactions in flight. Answers y's lease (the one to revoke).
 */
async function fill(endpoints: string[], name: string, count: number): Promise<string> {
  const kv = rawClient(endpoints);
  try {
    const root = directoryRoot("/notification-directory", name);
    const revoked = Math.min(count, REVOKED);
    const y = await kv.lease(3_600, { autoKeepAlive: false }).grant();
    await fillDirectory(kv, root, { instance: "y", prefix: "held", count: revoked, lease: y, lanes: 8 });
    if (count > revoked) {
      const z = await kv.lease(3_600, { autoKeepAlive: false }).grant();
      await fillDirectory(kv, root, {
        instance: "z",
        prefix: "user",
        count: count - revoked,
        lease: z,
        lanes: 8,
      });
    }
    return y;
  } finally {
    kv.close();
  }
}

/**
 * Subscribes to new recipients on `addr`, all in flight, each until ready (its barrier passed);
 * answers how long they took. Cancelled after; a refused one, or a minute without all, throws.
 */
async function subscribeAll(addr: string): Promise<number> {
  // Each its own connection (grpc-js shares one between clients of a target by default).
  const clients = Array.from(
    { length: SUB_CONNECTIONS },
    () => notificationClient(addr, { "grpc.use_local_subchannel_pool": 1 }),
  );
  const streams: grpc.ClientReadableStream<unknown>[] = [];
  const ready: Promise<void>[] = [];
  try {
    const started = performance.now();
    for (const [c, client] of clients.entries()) {
      for (let i = 0; i < SUB_PER_CONNECTION; i++) {
        const stream = client.subscribe({ recipient: `reader-${c}-${i}` }) as grpc.ClientReadableStream<
          unknown
        >;
        streams.push(stream);
        ready.push(
          new Promise((resolve, reject) => {
            stream.on("metadata", () => resolve());
            stream.on("error", reject);
          }),
        );
      }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const bound = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("Subscribes not all ready within 60 s")), 60_000);
    });
    await Promise.race([Promise.all(ready), bound]).finally(() => clearTimeout(timer));
    return performance.now() - started;
  } finally {
    for (const s of streams) s.cancel();
    for (const c of clients) c.close();
  }
}

/**
 * One row per size in each table: load time, heap and RSS loaded, etcd calls during the load; then
 * the Subscribe rate and the revoke of up to 100 000 recipients on the loaded instance.
 */
export async function directoryBench(options: DirectoryBenchOptions): Promise<string[][][]> {
  const rows = [["recipients", "load", "heap MiB", "RSS MiB", "etcd Range calls", "fill s"]];
  const after = [[
    "recipients",
    "Subscribes/s",
    "Range per Subscribe",
    "Txn per Subscribe",
    "revoked",
    "view dropped them in",
    "watch resyncs",
    "keep-alive failures",
  ]];
  for (const size of options.sizes) {
    await using etcd = await startEtcd({ args: ["--quota-backend-bytes", String(8 * 2 ** 30)] });
    const name = `dir-${size}`;
    const filling = performance.now();
    const revokable = await fill(etcd.endpoints, name, size);
    const fillS = (performance.now() - filling) / 1000;
    options.note(`directory ${size}: filled in ${fillS.toFixed(1)} s`);
    const script = options.root
      ? [`--config=${options.root}/deno.json`, `${options.root}/main.ts`]
      : undefined;
    await using svc = await ServiceProcess.spawn({
      endpoints: etcd.endpoints,
      name,
      instanceId: "bench",
      workers: 1,
      metricsAddr: "127.0.0.1:0",
      maxSubscribers: SUB_CONNECTIONS * SUB_PER_CONNECTION + 100,
      // One client address: the per-identity bound (100 by default) would refuse the rest.
      serverExtra: `  max-subscribers-per-identity: ${SUB_CONNECTIONS * SUB_PER_CONNECTION}\n`,
      script,
      startupTimeout: "0s",
    });
    const line = await svc.waitForLine(/Recipient directory loaded: \d+ recipients in \S+/, 1_800_000);
    const took = line.match(/in (\S+)$/)?.[1] ?? "?";
    await svc.waitForLine(/gRPC server listening on/, 60_000);
    const m = await scrape(svc.metricsPort);
    const heap = (m.value("nodejs_heap_size_used_bytes") ?? 0) / 2 ** 20;
    const ranges = m.etcdCalls("Range");
    rows.push([
      String(size),
      took,
      heap.toFixed(0),
      rssMiB(svc.pid).toFixed(0),
      String(ranges ?? "?"),
      fillS.toFixed(1),
    ]);
    options.note(`directory ${size}: loaded in ${took}`);
    if (options.root) continue; // the rest reads this checkout's metrics

    const subscribes = SUB_CONNECTIONS * SUB_PER_CONNECTION;
    const subscribing = await subscribeAll(svc.addr);
    const s = await scrape(svc.metricsPort);
    const perSubscribe = (operation: string) =>
      ((s.etcdCalls(operation) - m.etcdCalls(operation)) / subscribes).toFixed(2);

    // The revoke: every recipient of y goes in one etcd revision.
    const resyncs = (metrics: typeof m) =>
      [...metrics.text.matchAll(/^notification_server_etcd_watch_resyncs_total\{[^}]*\} (\d+)/gm)]
        .reduce((sum, match) => sum + Number(match[1]), 0);
    const failures = (metrics: typeof m) =>
      metrics.value("notification_server_lease_keepalive_failures_total") ?? 0;
    const revoked = Math.min(size, REVOKED);
    const held = (metrics: typeof m) => metrics.value("notification_server_directory_recipients") ?? 0;
    const before = await scrape(svc.metricsPort);
    const kv = rawClient(etcd.endpoints);
    const revoking = performance.now();
    try {
      await kv.leaseClient.leaseRevoke({ ID: revokable });
    } finally {
      kv.close();
    }
    let now = before;
    // Polled: a bench, and the gauge is what an operator would watch.
    while (held(now) > held(before) - revoked) {
      await new Promise((r) => setTimeout(r, 20));
      now = await scrape(svc.metricsPort);
    }
    const dropped = performance.now() - revoking;
    after.push([
      String(size),
      (subscribes / (subscribing / 1000)).toFixed(0),
      perSubscribe("Range"),
      perSubscribe("Txn"),
      String(revoked),
      `${(dropped / 1000).toFixed(2)} s`,
      String(resyncs(now) - resyncs(before)),
      String(failures(now) - failures(before)),
    ]);
    options.note(`directory ${size}: ${revoked} revoked, dropped in ${(dropped / 1000).toFixed(2)} s`);
  }
  return options.root ? [rows] : [rows, after];
}
