/**
 * `deno task bench`: starts its own etcd and servers on loopback, runs bounded loads, and prints one
 * table of medians over interleaved rounds. Peers: the Go original (../shared/peers/go-original)
 * and the same grpc-js server code on Node. Load comes from Go clients so the client is not the
 * bottleneck: Health/Check from ../shared/tools/loadgen, Send from bench/sendload (same flags and
 * output). Server CPU per call is reported beside rps: it moves far less with noisy neighbours.
 * Nothing here asserts timings.
 *
 * Options: --rounds N (default 3), --seconds S per load run (default 5), --quick (1 round, 2 s),
 * --workers LIST (the workers dimension, default "1,2"; e.g. "1,4,8,auto" on many cores),
 * --only directory (the recipient directory at size: load time and memory of a starting instance;
 * --sizes N,N, --root DIR),
 * --only workers (that section alone), --only http2 (the HTTP/2 guard and limits: soak, cost, header
 * attacks; --root DIR runs another checkout's service there, --soak-clients N, --soak-runs N,
 * --parts cost,soak,attacks,auth), --only routing (a Send's cost and latency by where its subscriber
 * is: same worker, other worker, other instance; --root DIR as for http2, --sends N per path and round),
 * --only broker (the mesh beside the NATS JetStream broker: Sends, fan-out, replay, memory),
 * --only http (the web edge: Send over HTTP JSON and Connect beside gRPC and a Go net/http handler,
 * SSE fan-out beside gRPC's; --streams N, default 10000), --only sendmany (one SendMany of 1 000
 * recipients beside the 1 000 Sends it replaces, mesh and broker), --only replay (--replayed N stored
 * notifications, default 5000, replayed to one recovering stream), --only broker-scale (the broker
 * mode holding --recipients N, default 100000, over 3 instances; --subjects M, default 0, adds M
 * recipients as NATS holds them, without their gRPC streams).
 */
import * as grpc from "@grpc/grpc-js";
import { parseArgs } from "node:util";
import { createEtcdClient } from "../packages/registry/src/etcd_client.ts";
import { clusterBench } from "./cluster.ts";
import { fanOutStall, subscriberConnections } from "./fanout.ts";
import { http2Bench } from "./http2.ts";
import { directoryBench } from "./directory.ts";
import { routingBench } from "./routing.ts";
import { brokerBench, replayBench } from "./broker.ts";
import { brokerScaleBench } from "./broker_scale.ts";
import { httpBench } from "./http.ts";
import { sendManyBench } from "./send_many.ts";
import { cpuSeconds, rssMiB } from "../tests/helpers/proc.ts";
import { workersBench, workersTable } from "./workers.ts";
import { fmt, goLoadRun, type LoadResult, median, type Target } from "./load.ts";
import { recordingCostNs } from "./metrics_cost.ts";
import { EtcdDiscovery } from "../packages/registry/src/etcd_discovery.ts";
import { registerEtcdResolver, ROUND_ROBIN_SERVICE_CONFIG } from "../packages/registry/src/grpc_resolver.ts";
import { freePort, startEtcd, waitForPort } from "@notification-server/registry/testing";
import { notificationClient, send } from "../tests/helpers/grpc.ts";
import { rawClient, scopedClient } from "../tests/helpers/kv.ts";
import { ServiceProcess } from "../tests/helpers/service.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SHARED = `${ROOT}../shared`;
const BUILD = `${ROOT}.bench`;
const args = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "3" },
    seconds: { type: "string", default: "5" },
    quick: { type: "boolean" },
    workers: { type: "string", default: "1,2" },
    only: { type: "string" },
    root: { type: "string" },
    "soak-clients": { type: "string", default: "2000" },
    "soak-runs": { type: "string", default: "3" },
    parts: { type: "string", default: "cost,soak,attacks,auth" },
    sends: { type: "string", default: "1000" },
    sizes: { type: "string", default: "10000,100000" },
    streams: { type: "string", default: "10000" },
    replayed: { type: "string", default: "5000" },
    recipients: { type: "string", default: "100000" },
    subjects: { type: "string", default: "0" },
  },
});
const ROUNDS = args.values.quick ? 1 : Number(args.values.rounds);
const SECONDS = args.values.quick ? 2 : Number(args.values.seconds);
const CALLERS = 32;

const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const note = (msg: string) => console.error(`bench: ${msg}`);

async function run(cmd: string, argv: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  let out;
  try {
    out = await new Deno.Command(cmd, { args: argv, ...opts, stdout: "piped", stderr: "piped" }).output();
  } catch (error) {
    return { ok: false, text: String(error) }; // no such program or directory (../shared missing)
  }
  return {
    ok: out.success,
    text: new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr),
  };
}

interface GoTools {
  loadgen?: string;
  httpload?: string;
  httpanchor?: string;
  fanload?: string;
  sendload?: string;
  peer?: string;
  reason?: string;
}

/** Builds the Go peer and both load generators from Debian's Go packages (GOPATH mode, no downloads). */
async function buildGo(): Promise<GoTools> {
  await Deno.mkdir(BUILD, { recursive: true });
  if (!(await run("go", ["version"]).catch(() => ({ ok: false })) as { ok: boolean }).ok) {
    return {
      reason: "no Go toolchain: apt-get install -y golang-go golang-google-grpc-dev golang-etcd-server-dev",
    };
  }
  const env = {
    GOPATH: "/usr/share/gocode",
    GO111MODULE: "off",
    GOFLAGS: "",
    HOME: Deno.env.get("HOME") ?? "/root",
    PATH: Deno.env.get("PATH") ?? "",
  };
  const out: GoTools = {};
  const sources = [
    ["loadgen", `${SHARED}/tools/loadgen`],
    ["sendload", `${ROOT}bench/sendload`],
    ["httpload", `${ROOT}bench/httpload`],
    ["httpanchor", `${ROOT}bench/httpanchor`],
    ["fanload", `${ROOT}bench/fanload`],
    ["peer", `${SHARED}/peers/go-original`],
  ] as const;
  for (const [key, dir] of sources) {
    const bin = `${BUILD}/${key}`;
    const built = await run("go", ["build", "-o", bin, "."], { cwd: dir, env });
    if (built.ok) out[key] = bin;
    else out.reason = `go build ${dir} failed: ${built.text.split("\n")[0]}`;
  }
  return out;
}

/** A peer process listening on 127.0.0.1:`port`, stopped with SIGTERM. */
function childTarget(name: string, port: number, child: Deno.ChildProcess): Target {
  return {
    name,
    addr: `127.0.0.1:${port}`,
    pid: child.pid,
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

async function startGoPeer(bin: string, endpoints: string[]): Promise<Target> {
  const dir = await Deno.makeTempDir({ prefix: "go-peer-" });
  await Deno.mkdir(`${dir}/config/platform`, { recursive: true });
  const port = freePort();
  await Deno.writeTextFile(
    `${dir}/config/platform/config.yaml`,
    `notification-server:\n  addr: "127.0.0.1:${port}"\n  name: "go-peer"\netcd:\n  endpoints: ${
      JSON.stringify(endpoints)
    }\n  dial-timeout: 5s\n`,
  );
  const child = new Deno.Command(bin, { cwd: dir, stdout: "null", stderr: "null" }).spawn();
  await waitForPort(port, 10_000);
  return childTarget("go", port, child);
}

/** The service as `deno task start` runs it; `metrics` also serves /metrics (to price recording). */
async function startDeno(endpoints: string[], metrics = false): Promise<Target> {
  const svc = await ServiceProcess.start({
    endpoints,
    name: "bench-deno",
    instanceId: metrics ? "deno-metrics" : "deno",
    maxSubscribers: 5000,
    // The main table compares one thread with Go and Node; the workers section does the rest.
    workers: 1,
    serverExtra: metrics ? `  metrics-addr: "127.0.0.1:0"\n` : "",
  });
  return {
    name: metrics ? "deno+metrics" : "deno",
    addr: svc.addr,
    pid: svc.pid,
    stop: async () => {
      svc.signal("SIGTERM");
      await svc.status;
    },
  };
}

/** Copies the files under `from` into `to` (created as needed). */
async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    if (entry.isDirectory) await copyTree(`${from}/${entry.name}`, `${to}/${entry.name}`);
    else await Deno.copyFile(`${from}/${entry.name}`, `${to}/${entry.name}`);
  }
}

async function startNode(): Promise<Target | undefined> {
  // In the bundle every module's `import.meta.dirname` is the bundle's, .bench/node/: the protos go
  // where src/transport/protos.ts looks from there (../../proto; notification.proto is embedded).
  await Deno.mkdir(`${BUILD}/node`, { recursive: true });
  await copyTree(`${ROOT}proto`, `${BUILD}/proto`);
  const bundled = await run(Deno.execPath(), [
    "bundle",
    "--platform",
    "node",
    "--external",
    "@grpc/*",
    "-o",
    `${BUILD}/node/node_peer.mjs`,
    `${ROOT}bench/node_peer.ts`,
  ]);
  if (!bundled.ok) {
    note(`node peer not bundled: ${bundled.text.split("\n")[0]}`);
    return undefined;
  }
  const child = new Deno.Command("node", {
    args: [`${BUILD}/node/node_peer.mjs`, "0"],
    stdout: "piped",
    stderr: "inherit",
  })
    .spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/listening (\d+)/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`node peer exited: ${text}`);
    text += value;
  }
  void reader.cancel();
  return childTarget("node", Number(text.match(/listening (\d+)/)![1]), child);
}

/** Send through a grpc-js client in this process (32 callers on one channel): without Go only. */
async function sendRun(target: Target): Promise<LoadResult> {
  const client = notificationClient(target.addr);
  const lat: number[] = [];
  let errors = 0;
  let calls = 0;
  let peak = 0;
  const cpuBefore = cpuSeconds(target.pid);
  const warmEnd = performance.now() + 1000;
  const end = warmEnd + SECONDS * 1000;
  await Promise.all(Array.from({ length: CALLERS }, async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      try {
        await send(client, { recipient: "bench", title: "t", body: "b" });
        calls++;
        if (t0 >= warmEnd) lat.push(performance.now() - t0);
      } catch {
        errors++;
      }
      if (lat.length % 500 === 0) peak = Math.max(peak, rssMiB(target.pid) || 0);
    }
  }));
  const cpuUs = (cpuSeconds(target.pid) - cpuBefore) * 1e6 / calls;
  client.close();
  return { rps: lat.length / SECONDS, p50: pct(lat, 0.5), p99: pct(lat, 0.99), errors, rss: peak, cpuUs };
}

/** Process start → record visible; SIGTERM → record deleted; SIGTERM → exit. */
async function lifecycleTimes(endpoints: string[], runs: number) {
  const raw = rawClient(endpoints);
  const events = new Map<string, { put?: number; del?: number }>();
  const watcher = await raw.watch().prefix("/services/bench-life/").create();
  watcher.on(
    "put",
    (kv) => events.set(kv.key.toString(), { ...events.get(kv.key.toString()), put: performance.now() }),
  );
  watcher.on(
    "delete",
    (kv) => events.set(kv.key.toString(), { ...events.get(kv.key.toString()), del: performance.now() }),
  );
  const reg: number[] = [];
  const dereg: number[] = [];
  const exit: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const svc = await ServiceProcess.start({
      endpoints,
      name: "bench-life",
      instanceId: `r${i}`,
      drainDelay: "1s",
    });
    const key = svc.key;
    while (!events.get(key)?.put) await sleep(5);
    reg.push(events.get(key)!.put! - t0);
    const t1 = performance.now();
    svc.signal("SIGTERM");
    await svc.status;
    exit.push(performance.now() - t1);
    while (!events.get(key)?.del) await sleep(5);
    dereg.push(events.get(key)!.del! - t1);
  }
  await watcher.cancel();
  raw.close();
  return { reg: median(reg), dereg: median(dereg), exit: median(exit) };
}

/** Record written → watch snapshot, over 200 changes; list() and resolver time with 1000 instances. */
async function discoveryTimes(endpoints: string[]) {
  using raw = scopedClient(endpoints);
  const client = createEtcdClient({ endpoints, dialTimeoutMs: 5_000 });
  const discovery = new EtcdDiscovery(client);
  const abort = new AbortController();
  let last = 0;
  let count = 0;
  const watching = (async () => {
    for await (const _ of discovery.watch("bench-watch", { signal: abort.signal })) {
      last = performance.now();
      count++;
    }
  })();
  while (count === 0) await sleep(5);
  const lat: number[] = [];
  for (let i = 0; i < 200; i++) {
    const before = count;
    const t0 = performance.now();
    await raw.put("/services/bench-watch/a").value(JSON.stringify({ Op: 0, Addr: `10.0.0.1:${1000 + i}` }))
      .exec();
    while (count === before) await sleep(0);
    lat.push(last - t0);
  }
  abort.abort();
  await watching;

  for (let i = 0; i < 1000; i += 100) {
    await Promise.all(
      Array.from({ length: 100 }, (_, j) =>
        raw.put(`/services/bench-many/i${i + j}`).value(
          JSON.stringify({ Op: 0, Addr: `10.1.${(i + j) >> 8}.${(i + j) & 255}:80` }),
        ).exec()),
    );
  }
  const listTimes: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    const list = await discovery.list("bench-many");
    listTimes.push(performance.now() - t0);
    if (list.length !== 1000) throw new Error(`list() returned ${list.length}`);
  }
  let firstList = 0;
  const t0 = performance.now();
  const close = registerEtcdResolver({
    client,
    endpoints,
    onUpdate: (_n, addrs) => {
      if (!firstList && addrs.length === 1000) firstList = performance.now() - t0;
    },
  });
  const channel = notificationClient("etcd:///bench-many", {
    "grpc.service_config": ROUND_ROBIN_SERVICE_CONFIG,
  });
  channel.getChannel().getConnectivityState(true);
  while (!firstList) await sleep(2);
  channel.close();
  close();
  client.close();
  return { p50: pct(lat, 0.5), p99: pct(lat, 0.99), list: median(listTimes), resolver: firstList };
}

/** One Send to a recipient with 1000 live Subscribe streams: time until all have it. */
async function fanOut(target: Target): Promise<number> {
  const client = notificationClient(target.addr);
  const holders = subscriberConnections(target.addr, 1000);
  let received = 0;
  let allAt = 0;
  let armed = false;
  const streams: grpc.ClientReadableStream<unknown>[] = [];
  for (let i = 0; i < 1000; i++) {
    const s = holders[i % holders.length].subscribe({ recipient: "fan" }) as grpc.ClientReadableStream<
      unknown
    >;
    s.on("data", () => {
      if (++received === 1000 && armed) allAt = performance.now();
    });
    s.on("error", () => {});
    streams.push(s);
  }
  // Probe until the server holds all 1000, then let every probe's copies arrive before timing.
  let delivered = 0;
  for (;;) {
    const probe = await send(client, { recipient: "fan", title: "count" });
    delivered += probe.delivered;
    if (probe.delivered === 1000) break;
    await sleep(20);
  }
  while (received < delivered) await sleep(5);
  received = 0;
  armed = true;
  const t0 = performance.now();
  await send(client, { recipient: "fan", title: "go" });
  while (!allAt) await sleep(1);
  for (const s of streams) s.cancel();
  client.close();
  for (const holder of holders) holder.close();
  return allAt - t0;
}

const describe = (r: LoadResult) =>
  `rps=${fmt(r.rps, 0)} p50=${fmt(r.p50, 2)} p99=${fmt(r.p99, 2)} cpu_us/call=${
    fmt(r.cpuUs)
  } errors=${r.errors}`;

async function main(): Promise<void> {
  note(`rounds=${ROUNDS}, ${SECONDS}s per load run, ${CALLERS} callers, ${Deno.env.get("HOSTNAME") ?? ""}`);
  await using etcd = await startEtcd();
  // Needs no Go: h2load and Node clients.
  if (args.values.only === "routing") {
    printTable(
      await routingBench({
        endpoints: etcd.endpoints,
        root: args.values.root,
        rounds: ROUNDS,
        seconds: SECONDS,
        sends: Number(args.values.sends),
        note,
      }),
    );
    return;
  }
  if (args.values.only === "replay") {
    printTable(
      await replayBench({
        endpoints: etcd.endpoints,
        rounds: ROUNDS,
        count: Number(args.values.replayed),
        note,
      }),
    );
    return;
  }
  if (args.values.only === "sendmany") {
    printTable(await sendManyBench({ endpoints: etcd.endpoints, rounds: ROUNDS, note }));
    return;
  }
  if (args.values.only === "broker-scale") {
    printTable(
      await brokerScaleBench({
        endpoints: etcd.endpoints,
        recipients: Number(args.values.recipients),
        subjects: Number(args.values.subjects),
        seconds: SECONDS,
        note,
      }),
    );
    return;
  }
  if (args.values.only === "directory") {
    const tables = await directoryBench({
      sizes: args.values.sizes.split(",").map(Number),
      root: args.values.root,
      note,
    });
    for (const table of tables) printTable(table);
    return;
  }
  if (args.values.only === "http2") {
    for (const table of await http2Section(etcd.endpoints)) printTable(table);
    return;
  }
  const go = await buildGo();
  if (go.reason) note(go.reason);
  const brokerTable = () =>
    brokerBench({ endpoints: etcd.endpoints, sendload: go.sendload, rounds: ROUNDS, seconds: SECONDS, note });
  if (args.values.only === "broker") {
    printTable(await brokerTable());
    return;
  }
  if (args.values.only === "http") {
    const { sendload, httpload, httpanchor, fanload } = go;
    if (!sendload || !httpload || !httpanchor || !fanload) {
      throw new Error(`the http section needs Go: ${go.reason}`);
    }
    printTable(
      await httpBench({
        endpoints: etcd.endpoints,
        tools: { sendload, httpload, httpanchor, fanload },
        rounds: ROUNDS,
        seconds: SECONDS,
        streams: Number(args.values.streams),
        note,
      }),
    );
    return;
  }
  if (args.values.only === "workers") {
    if (!go.loadgen || !go.sendload || !go.peer) {
      throw new Error(`the workers section needs Go: ${go.reason}`);
    }
    const peer = await startGoPeer(go.peer, etcd.endpoints);
    printTable(await workersSection(etcd.endpoints, go, peer));
    await peer.stop();
    return;
  }
  const targets: Target[] = [];
  if (go.peer) targets.push(await startGoPeer(go.peer, etcd.endpoints));
  targets.push(await startDeno(etcd.endpoints));
  targets.push(await startDeno(etcd.endpoints, true));
  const node = await startNode();
  if (node) targets.push(node);
  await sleep(2_000);
  const idle = new Map(targets.map((t) => [t.name, rssMiB(t.pid)]));

  const health = new Map<string, LoadResult[]>();
  const sendResults = new Map<string, LoadResult[]>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const t of targets) {
      if (go.loadgen) {
        note(`round ${round + 1}: Health/Check on ${t.name}`);
        const result = await goLoadRun(go.loadgen, t, { callers: CALLERS, conns: 1, seconds: SECONDS });
        note(`  ${describe(result)}`);
        health.set(t.name, [...health.get(t.name) ?? [], result]);
      }
      if (t.name !== "go") {
        note(`round ${round + 1}: Send on ${t.name}`);
        const result = go.sendload
          ? await goLoadRun(go.sendload, t, { callers: CALLERS, conns: 1, seconds: SECONDS })
          : await sendRun(t);
        note(`  ${describe(result)}`);
        sendResults.set(t.name, [...sendResults.get(t.name) ?? [], result]);
      }
    }
  }
  const deno = targets.find((t) => t.name === "deno")!;
  note("fan-out to 1000 subscribers");
  const fan = await fanOut(deno);
  note("Health/Check during 4 Sends of 60 KB to 1000 subscribers");
  const stall = await fanOutStall(deno.addr, { subscribers: 1000, bodyBytes: 60 * 1024, sends: 4 });
  const workerRows = go.loadgen && go.sendload
    ? await workersSection(etcd.endpoints, go, targets.find((t) => t.name === "go"))
    : undefined;
  for (const t of targets) await t.stop();
  note("lifecycle timings (5 runs)");
  const life = await lifecycleTimes(etcd.endpoints, 5);
  note("discovery timings");
  const disc = await discoveryTimes(etcd.endpoints);
  note("cluster: latency, CPU per delivered, throughput, directory of 100 000 recipients");
  const cl = await clusterBench(etcd.endpoints, {
    seconds: SECONDS,
    recipients: 100_000,
    sendload: go.sendload,
  });

  const med = (m: Map<string, LoadResult[]>, name: string, f: (r: LoadResult) => number) =>
    median((m.get(name) ?? []).map(f));
  const rows: string[][] = [["metric", "go", "deno", "node", "deno/go", "deno/node"]];
  const row = (label: string, m: Map<string, LoadResult[]>, f: (r: LoadResult) => number, digits = 1) => {
    const [g, d, n] = ["go", "deno", "node"].map((name) => med(m, name, f));
    rows.push([label, fmt(g, digits), fmt(d, digits), fmt(n, digits), fmt(d / g, 2), fmt(d / n, 2)]);
  };
  row("Health/Check rps (loadgen, c=32)", health, (r) => r.rps, 0);
  row("Health/Check p50 ms", health, (r) => r.p50, 2);
  row("Health/Check p99 ms", health, (r) => r.p99, 2);
  row("Health/Check errors", health, (r) => r.errors, 0);
  row("Health/Check server CPU µs per call", health, (r) => r.cpuUs, 1);
  row(`Send rps (${go.sendload ? "sendload" : "grpc-js client"}, c=32)`, sendResults, (r) => r.rps, 0);
  row("Send p50 ms", sendResults, (r) => r.p50, 2);
  row("Send p99 ms", sendResults, (r) => r.p99, 2);
  row("Send server CPU µs per call", sendResults, (r) => r.cpuUs, 1);
  row("RSS under Health load MiB", health, (r) => r.rss, 0);
  const [gi, di, ni] = ["go", "deno", "node"].map((n) => idle.get(n) ?? NaN);
  rows.push(["idle RSS MiB", fmt(gi, 0), fmt(di, 0), fmt(ni, 0), fmt(di / gi, 2), fmt(di / ni, 2)]);
  const single = (label: string, v: number, digits = 1) => rows.push([label, "", fmt(v, digits), "", "", ""]);
  single("start -> record visible ms", life.reg, 0);
  single("SIGTERM -> record deleted ms", life.dereg, 1);
  single("SIGTERM -> exit ms (drain-delay 1s)", life.exit, 0);
  single("watch propagation p50 ms (200)", disc.p50, 2);
  single("watch propagation p99 ms (200)", disc.p99, 2);
  single("list() with 1000 instances ms", disc.list, 1);
  single("resolver first list, 1000 instances ms", disc.resolver, 1);
  single("fan-out 1 Send -> 1000 subscribers ms", fan, 1);
  single("cluster: Subscribe -> routed everywhere p50 / p99 ms", cl.readyMs.p50, 2);
  rows[rows.length - 1][2] += ` / ${fmt(cl.readyMs.p99, 2)}`;
  single("cluster: Send A -> stream on B p50 ms (1000/s)", cl.latency.forwardedP50, 2);
  single("cluster: Send A -> stream on B p99 ms (1000/s)", cl.latency.forwardedP99, 2);
  single("cluster: Send A -> stream on A p50 / p99 ms", cl.latency.localP50, 2);
  rows[rows.length - 1][2] += ` / ${fmt(cl.latency.localP99, 2)}`;
  single("cluster: CPU µs per delivered, local", cl.cpuUsPerDelivered.local, 0);
  single("cluster: CPU µs per delivered, forwarded (A+B)", cl.cpuUsPerDelivered.forwarded, 0);
  if (cl.throughput) {
    single("cluster: Send rps, 1 instance, all subscribers", cl.throughput.oneInstance, 0);
    single("cluster: Send rps, 3 instances, spread", cl.throughput.threeInstances, 0);
  }
  single("cluster: write 100k directory keys ms", cl.directory.writeMs, 0);
  single("cluster: new instance loads 100k recipients ms", cl.directory.loadMs, 0);
  single("cluster: RSS with 100k recipients (empty) MiB", cl.directory.rssMiB, 0);
  rows[rows.length - 1][2] += ` (${fmt(cl.directory.emptyRssMiB, 0)})`;
  // Recording metrics must not cost the hot path (target: within 5 % CPU per call).
  const onOff = (m: Map<string, LoadResult[]>) =>
    [med(m, "deno+metrics", (r) => r.cpuUs), med(m, "deno", (r) => r.cpuUs)] as const;
  for (const [label, m] of [["Health/Check", health], ["Send", sendResults]] as const) {
    const [on, off] = onOff(m);
    rows.push([`${label} CPU µs/call, metrics on (off)`, "", `${fmt(on)} (${fmt(off)})`, "", "", ""]);
    rows.push([`${label} metrics on/off CPU ratio`, "", fmt(on / off, 3), "", "", ""]);
  }
  // The two runs above differ by far more than recording costs on a noisy machine; this prices it.
  const { plainNs, instrumentedNs } = recordingCostNs();
  const addedUs = (instrumentedNs - plainNs) / 1000;
  rows.push([
    "metrics recording per call µs (% of CPU/call)",
    "",
    `${fmt(addedUs, 2)} (${fmt(100 * addedUs / med(health, "deno", (r) => r.cpuUs), 1)} %)`,
    "",
    "",
    "",
  ]);
  single("fan-out 4 x 60 KB -> 1000 subscribers ms", stall.allDeliveredMs, 0);
  single("  Health/Check meanwhile p99 ms", stall.probeP99Ms, 1);
  single("  Health/Check meanwhile max ms", stall.probeMaxMs, 1);

  printTable(rows);
  if (workerRows) printTable(workerRows);
  note("HTTP/2 guard and limits: cost, soak, header attacks");
  for (const table of await http2Section(etcd.endpoints)) printTable(table);
  note("the mesh beside the broker (NATS JetStream)");
  printTable(await brokerTable());
}

/** The HTTP/2 guard and inbound limits: soak, cost, header attacks (bench/http2.ts). */
function http2Section(endpoints: string[]): Promise<string[][][]> {
  return http2Bench({
    endpoints,
    root: args.values.root,
    rounds: ROUNDS,
    seconds: SECONDS,
    soakClients: Number(args.values["soak-clients"]),
    soakRuns: Number(args.values["soak-runs"]),
    parts: args.values.parts.split(",").map((p) => p.trim()) as ("cost" | "soak" | "attacks" | "auth")[],
    note,
  });
}

/** Health and Send on one process with each `--workers` count, beside Go, over many connections. */
async function workersSection(
  endpoints: string[],
  go: GoTools,
  peer: Target | undefined,
): Promise<string[][]> {
  const counts = args.values.workers.split(",").map((w) => (w.trim() === "auto" ? "auto" : Number(w)));
  // Many connections, as real clients make: each lands on one worker.
  const callers = Math.max(CALLERS, 16 * navigator.hardwareConcurrency);
  const conns = Math.max(16, 2 * navigator.hardwareConcurrency);
  note(`workers: ${counts.join(", ")}`);
  const rows = await workersBench({
    endpoints,
    counts,
    loadgen: go.loadgen!,
    sendload: go.sendload!,
    go: peer,
    rounds: ROUNDS,
    seconds: SECONDS,
    callers,
    conns,
    note,
  });
  return workersTable(rows, callers, conns);
}

function printTable(rows: string[][]): void {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  console.log(
    `\n${new Date().toISOString().slice(0, 10)}, ${navigator.hardwareConcurrency} cores, ${
      fmt(Deno.systemMemoryInfo().total / 2 ** 30, 0)
    } GiB, medians of ${ROUNDS} interleaved round(s), ${SECONDS}s each\n`,
  );
  for (const r of rows) console.log(`| ${r.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`);
}

await main();
Deno.exit(0);
