/**
 * `deno task bench --only directory [--sizes 10000,100000] [--root DIR]`: the recipient directory
 * at size. For each size, a fresh etcd is filled the way DirectoryPublisher writes it (another
 * instance's recipients under its lease, transactions of 128), then an instance starts: how long
 * its view took to load (its "Recipient directory loaded" line), its heap and RSS once loaded, and
 * etcd's Range and Txn calls meanwhile. `--root` runs another checkout's main.ts (before/after).
 */
import { directoryRoot } from "../src/cluster/directory.ts";
import { fillDirectory } from "../tests/helpers/directory.ts";
import { startEtcd } from "../tests/helpers/etcd.ts";
import { scrape } from "../tests/helpers/metrics.ts";
import { rawClient } from "../tests/helpers/kv.ts";
import { rssMiB } from "../tests/helpers/proc.ts";
import { ServiceProcess } from "../tests/helpers/service.ts";

export interface DirectoryBenchOptions {
  sizes: number[];
  root?: string;
  note: (message: string) => void;
}

/** Writes `count` recipients of instance "z" under one lease, several transactions in flight. */
async function fill(endpoints: string[], name: string, count: number): Promise<void> {
  const kv = rawClient(endpoints);
  try {
    const lease = await kv.lease(3_600, { autoKeepAlive: false }).grant();
    const root = directoryRoot("/notification-directory", name);
    await fillDirectory(kv, root, { instance: "z", prefix: "user", count, lease, lanes: 8 });
  } finally {
    kv.close();
  }
}

/** One row per size: load time, heap and RSS loaded, etcd calls during the load. */
export async function directoryBench(options: DirectoryBenchOptions): Promise<string[][]> {
  const rows = [["recipients", "load", "heap MiB", "RSS MiB", "etcd Range calls", "fill s"]];
  for (const size of options.sizes) {
    await using etcd = await startEtcd({ args: ["--quota-backend-bytes", String(8 * 2 ** 30)] });
    const name = `dir-${size}`;
    const filling = performance.now();
    await fill(etcd.endpoints, name, size);
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
      script,
      startupTimeout: "0s",
    });
    const line = await svc.waitForLine(/Recipient directory loaded: \d+ recipients in \S+/, 1_800_000);
    const took = line.match(/in (\S+)$/)?.[1] ?? "?";
    await svc.waitForLine(/gRPC server listening on/, 60_000);
    const m = await scrape(svc.metricsPort);
    const heap = (m.value("nodejs_heap_size_used_bytes") ?? 0) / 2 ** 20;
    const ranges = m.value(
      'notification_server_etcd_request_duration_seconds_count{operation="Range",code="OK"}',
    );
    rows.push([
      String(size),
      took,
      heap.toFixed(0),
      rssMiB(svc.pid).toFixed(0),
      String(ranges ?? "?"),
      fillS.toFixed(1),
    ]);
    options.note(`directory ${size}: loaded in ${took}`);
  }
  return rows;
}
