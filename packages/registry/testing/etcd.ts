/**
 * A real etcd for tests (`@notification-server/registry/testing`: the registry's own tests, the
 * client's and the service's use it). `ETCD_ENDPOINTS` wins when set (shared, never stopped by us); otherwise a
 * private `etcd` process on free loopback ports with a temporary data dir, stopped by its PID; as a
 * last resort, Docker's etcd image where a Docker engine answers.
 */

/** A running etcd the test may stop, kill, freeze and restart (private ones only). */
export interface EtcdHandle extends AsyncDisposable {
  readonly endpoints: string[];
  /** False for ETCD_ENDPOINTS: fault tests skip themselves then. */
  readonly controllable: boolean;
  readonly pid?: number;
  /** Stops etcd (SIGTERM, then SIGKILL after 5 s). */
  stop(): Promise<void>;
  /** Sends a signal to the etcd process (SIGKILL, SIGSTOP, SIGCONT). */
  signal(signal: Deno.Signal): void;
  /**
   * Starts it again on the same ports, optionally with an empty data dir. `crash` stops it with
   * SIGKILL instead of SIGTERM: no HTTP/2 GOAWAY, which can abort a Deno process holding a
   * connection (denoland/deno#36788) — for tests whose own process must stay connected.
   */
  restart(options?: { wipe?: boolean; crash?: boolean }): Promise<void>;
}

/** Options for a private etcd. */
export interface StartEtcdOptions {
  /** Extra flags (auth, TLS). */
  args?: string[];
  /** Use https on the client URL. */
  tls?: boolean;
}

/** Returns a free loopback TCP port. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function etcdBinary(): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/etcd`).isFile) return `${dir}/etcd`;
    } catch { /* not here */ }
  }
  return undefined;
}

async function dockerAnswers(): Promise<boolean> {
  try {
    const out = await new Deno.Command("docker", { args: ["info"], stdout: "null", stderr: "null" }).output();
    return out.success;
  } catch {
    return false;
  }
}

/** ETCD_ENDPOINTS when set, else a private etcd. */
export async function useEtcd(options: StartEtcdOptions = {}): Promise<EtcdHandle> {
  const shared = Deno.env.get("ETCD_ENDPOINTS");
  if (shared && !options.args && !options.tls) {
    const endpoints = shared.split(",").map((e) => e.trim());
    const unsupported = () => Promise.reject(new Error("ETCD_ENDPOINTS etcd is not ours to control"));
    return {
      endpoints,
      controllable: false,
      stop: () => Promise.resolve(),
      signal: () => {
        throw new Error("ETCD_ENDPOINTS etcd is not ours to control");
      },
      restart: unsupported,
      [Symbol.asyncDispose]: () => Promise.resolve(),
    };
  }
  return await startEtcd(options);
}

/** Starts a private single-member etcd. */
export async function startEtcd(options: StartEtcdOptions = {}): Promise<EtcdHandle> {
  const binary = etcdBinary();
  if (!binary) {
    if (await dockerAnswers()) return await startDockerEtcd();
    throw new Error(
      "No etcd binary on PATH and no Docker engine: install it with `apt-get install -y etcd-server` or set ETCD_ENDPOINTS",
    );
  }
  let clientPort = freePort();
  let peerPort = freePort();
  let dataDir = await Deno.makeTempDir({ prefix: "etcd-test-" });
  const scheme = options.tls ? "https" : "http";
  let client = `${scheme}://127.0.0.1:${clientPort}`;
  let peer = `http://127.0.0.1:${peerPort}`;
  let child: Deno.ChildProcess | undefined;
  let logFile = "";

  const launch = async () => {
    logFile = `${dataDir}.log`;
    const log = await Deno.open(logFile, { write: true, create: true, append: true });
    child = new Deno.Command(binary, {
      args: [
        "--name=test",
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${client}`,
        `--advertise-client-urls=${client}`,
        `--listen-peer-urls=${peer}`,
        `--initial-advertise-peer-urls=${peer}`,
        `--initial-cluster=test=${peer}`,
        "--log-level=error",
        ...(options.args ?? []),
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    void child.stderr.pipeTo(log.writable).catch(() => {});
    await waitForPort(clientPort, 10_000, () => Deno.readTextFileSync(logFile));
    if (!options.tls) await waitForHealthy(`${client}/health`, 10_000);
  };

  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    const running = child;
    child = undefined;
    if (!running) return;
    try {
      running.kill("SIGCONT");
      running.kill(signal);
    } catch { /* already gone */ }
    const timer = setTimeout(() => {
      try {
        running.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5_000);
    await running.status;
    clearTimeout(timer);
  };

  // A port found free can be taken by someone else's bind(0) before etcd binds it (tests start
  // services on port 0 all the time): then etcd gets new ports, a bounded number of times.
  for (let attempt = 1;; attempt++) {
    try {
      await launch();
      break;
    } catch (error) {
      const said = await Deno.readTextFile(logFile).catch(() => "");
      await stop("SIGKILL");
      if (attempt === 3 || !said.includes("address already in use")) throw error;
      clientPort = freePort();
      peerPort = freePort();
      client = `${scheme}://127.0.0.1:${clientPort}`;
      peer = `http://127.0.0.1:${peerPort}`;
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      dataDir = await Deno.makeTempDir({ prefix: "etcd-test-" });
    }
  }
  return {
    endpoints: [`127.0.0.1:${clientPort}`],
    controllable: true,
    get pid() {
      return child?.pid;
    },
    stop: () => stop(),
    signal: (signal) => child?.kill(signal),
    restart: async ({ wipe = false, crash = false } = {}) => {
      await stop(crash ? "SIGKILL" : "SIGTERM");
      if (wipe) {
        await Deno.remove(dataDir, { recursive: true });
        dataDir = await Deno.makeTempDir({ prefix: "etcd-test-" });
      }
      await launch();
    },
    [Symbol.asyncDispose]: async () => {
      // SIGKILL: its data is thrown away, and a graceful stop would send GOAWAY to clients this
      // process may still hold, which can abort a Deno process (denoland/deno#36788).
      await stop("SIGKILL");
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      await Deno.remove(logFile).catch(() => {});
    },
  };
}

/** Waits until something accepts TCP on 127.0.0.1:port. */
export async function waitForPort(
  port: number,
  timeoutMs: number,
  diagnostics?: () => string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`Nothing listened on 127.0.0.1:${port} within ${timeoutMs} ms. ${diagnostics?.() ?? ""}`);
}

async function waitForHealthy(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url);
      const body = await res.text();
      if (body.includes('"true"')) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`etcd at ${url} did not report healthy within ${timeoutMs} ms`);
}

async function startDockerEtcd(): Promise<EtcdHandle> {
  const port = freePort();
  const name = `etcd-test-${port}`;
  const image = "quay.io/coreos/etcd:v3.5.17";
  const run = () =>
    new Deno.Command("docker", {
      args: [
        "run",
        "-d",
        "--rm",
        "--name",
        name,
        "-p",
        `127.0.0.1:${port}:2379`,
        image,
        "etcd",
        "--listen-client-urls=http://0.0.0.0:2379",
        `--advertise-client-urls=http://127.0.0.1:${port}`,
      ],
    }).output();
  const docker = (...args: string[]) =>
    new Deno.Command("docker", { args, stdout: "null", stderr: "null" }).output();
  await run();
  await waitForPort(port, 30_000);
  const stop = async () => {
    await docker("rm", "-f", name);
  };
  return {
    endpoints: [`127.0.0.1:${port}`],
    controllable: true,
    stop,
    signal: (signal) => {
      void docker("kill", `--signal=${signal}`, name);
    },
    restart: async () => {
      await stop();
      await run();
      await waitForPort(port, 30_000);
    },
    [Symbol.asyncDispose]: stop,
  };
}

/**
 * Test options for tests that talk to etcd or gRPC (or spawn processes that do): Deno's op and
 * resource sanitizers off, because grpc-js and etcd3 keep timers and sockets past `close()` (a
 * channel's idle and backoff timers, a subchannel's socket until its GOAWAY round trip, etcd3's
 * keep-alive), which the sanitizers report as leaks of the test. Turned on, every test of
 * peer_links_test.ts, subscribe_test.ts and the suites under tests/ fails on those, not on ours.
 * Tests without such a client keep the sanitizers.
 */
export const NETWORK_TEST: Pick<Deno.TestDefinition, "sanitizeOps" | "sanitizeResources"> = {
  sanitizeOps: false,
  sanitizeResources: false,
};

/**
 * Test options for tests that stop, freeze or restart etcd: they need a private one, so they are
 * reported as ignored when ETCD_ENDPOINTS points at a shared etcd.
 */
export const PRIVATE_ETCD_ONLY: Pick<Deno.TestDefinition, "ignore" | "sanitizeOps" | "sanitizeResources"> = {
  ignore: Deno.env.get("ETCD_ENDPOINTS") !== undefined,
  ...NETWORK_TEST,
};

/** A private multi-member etcd cluster on loopback. */
export interface EtcdCluster extends AsyncDisposable {
  readonly endpoints: string[];
  /** SIGKILLs member `i` (its data dir is kept). */
  kill(i: number): Promise<void>;
  /** Starts member `i` again with its data. */
  start(i: number): Promise<void>;
}

/** Starts `size` etcd members on free loopback ports (needs the `etcd` binary). */
export async function startEtcdCluster(size: number): Promise<EtcdCluster> {
  const binary = etcdBinary();
  if (!binary) throw new Error("The cluster tests need the etcd binary: apt-get install -y etcd-server");
  const members = await Promise.all(Array.from({ length: size }, async (_, i) => ({
    name: `m${i}`,
    client: freePort(),
    peer: freePort(),
    dataDir: await Deno.makeTempDir({ prefix: `etcd-cluster-m${i}-` }),
    child: undefined as Deno.ChildProcess | undefined,
    started: false,
  })));
  const initialCluster = members.map((m) => `${m.name}=http://127.0.0.1:${m.peer}`).join(",");
  const launch = (i: number) => {
    const m = members[i];
    m.child = new Deno.Command(binary, {
      args: [
        `--name=${m.name}`,
        `--data-dir=${m.dataDir}`,
        `--listen-client-urls=http://127.0.0.1:${m.client}`,
        `--advertise-client-urls=http://127.0.0.1:${m.client}`,
        `--listen-peer-urls=http://127.0.0.1:${m.peer}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${m.peer}`,
        `--initial-cluster=${initialCluster}`,
        `--initial-cluster-state=${m.started ? "existing" : "new"}`,
        "--initial-cluster-token=test-cluster",
        "--log-level=error",
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    m.started = true;
  };
  for (let i = 0; i < size; i++) launch(i);
  for (const m of members) await waitForHealthy(`http://127.0.0.1:${m.client}/health`, 20_000);
  const kill = async (i: number) => {
    const child = members[i].child;
    members[i].child = undefined;
    if (!child) return;
    child.kill("SIGKILL");
    await child.status;
  };
  return {
    endpoints: members.map((m) => `127.0.0.1:${m.client}`),
    kill,
    start: async (i) => {
      launch(i);
      await waitForHealthy(`http://127.0.0.1:${members[i].client}/health`, 20_000);
    },
    [Symbol.asyncDispose]: async () => {
      for (let i = 0; i < size; i++) await kill(i);
      for (const m of members) await Deno.remove(m.dataDir, { recursive: true }).catch(() => {});
    },
  };
}
