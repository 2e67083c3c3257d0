/**
 * `deno task dev`: make sure an etcd answers on localhost:2379 (reuse one that does; else
 * `docker compose up -d` where a Docker engine answers; else the `etcd` binary with data under
 * `.etcd/`) and, when the config names a NATS broker on this machine (config/platform/nats.yaml),
 * that a nats-server with JetStream answers there (else Debian's `nats-server`, data under
 * `.nats/`); then run the service exactly as `deno task start` does. Ctrl+C stops the service
 * (which deregisters) and then what this script started, by PID.
 */
import { parse as parseYaml } from "yaml";

const ROOT = new URL("../", import.meta.url).pathname;
const CLIENT_PORT = 2379;

async function answers(port: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1_000) });
    return (await res.text()).includes('"true"');
  } catch {
    return false;
  }
}

/** Whether `check` comes true within `timeoutMs`, asked every 200 ms. */
async function within(timeoutMs: number, check: () => Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

function waitHealthy(port: number, timeoutMs: number): Promise<boolean> {
  return within(timeoutMs, () => answers(port));
}

async function succeeds(cmd: string, args: string[]): Promise<boolean> {
  try {
    return (await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output()).success;
  } catch {
    return false;
  }
}

async function startEtcd(): Promise<Deno.ChildProcess | undefined> {
  if (await answers(CLIENT_PORT)) {
    console.error(`dev: using the etcd already answering on localhost:${CLIENT_PORT}`);
    return undefined;
  }
  if (await succeeds("docker", ["info"])) {
    console.error("dev: starting etcd with docker compose");
    if (!(await succeeds("docker", ["compose", "-f", `${ROOT}docker-compose.yml`, "up", "-d"]))) {
      throw new Error("docker compose up -d failed (run it yourself to see why)");
    }
    if (!(await waitHealthy(CLIENT_PORT, 30_000))) {
      throw new Error("etcd from docker compose did not become healthy");
    }
    return undefined;
  }
  if (!(await succeeds("etcd", ["--version"]))) {
    throw new Error(
      "No etcd on PATH and no Docker engine: run scripts/setup.sh (or apt-get install etcd-server)",
    );
  }
  const dataDir = `${ROOT}.etcd/dev`;
  await Deno.mkdir(dataDir, { recursive: true });
  const log = await Deno.open(`${ROOT}.etcd/etcd.log`, { write: true, create: true, append: true });
  console.error(`dev: starting etcd on localhost:${CLIENT_PORT} (data in .etcd/dev, log in .etcd/etcd.log)`);
  // Own session (setsid): Ctrl+C must reach the service first, so it can deregister while etcd is up.
  const child = new Deno.Command("setsid", {
    args: [
      "etcd",
      "--name=dev",
      `--data-dir=${dataDir}`,
      `--listen-client-urls=http://127.0.0.1:${CLIENT_PORT}`,
      `--advertise-client-urls=http://127.0.0.1:${CLIENT_PORT}`,
      "--listen-peer-urls=http://127.0.0.1:2380",
      "--initial-advertise-peer-urls=http://127.0.0.1:2380",
      "--initial-cluster=dev=http://127.0.0.1:2380",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  void child.stderr.pipeTo(log.writable).catch(() => {});
  if (!(await waitHealthy(CLIENT_PORT, 15_000))) {
    child.kill("SIGTERM");
    throw new Error("etcd did not become healthy within 15 s; see .etcd/etcd.log");
  }
  return child;
}

/** The local NATS port the config's broker names (localhost/127.0.0.1 only), if it names one. */
async function localBrokerPort(): Promise<number | undefined> {
  const at = Deno.args.indexOf("--config");
  const path = at >= 0 ? Deno.args[at + 1] : `${ROOT}config/platform/config.yaml`;
  let config: unknown;
  try {
    config = parseYaml(await Deno.readTextFile(path));
  } catch {
    return undefined; // the service reports a config it cannot read, in its own words
  }
  const servers = (config as { "notification-server"?: { broker?: { nats?: { servers?: unknown } } } })
    ?.["notification-server"]?.broker?.nats?.servers;
  const first = Array.isArray(servers) && typeof servers[0] === "string" ? servers[0] : undefined;
  const match = first && /^(?:nats:\/\/)?(?:localhost|127\.0\.0\.1)(?::(\d+))?$/.exec(first);
  return match ? Number(match[1] ?? 4222) : undefined;
}

/** Whether a NATS server answers on `port` (it greets with INFO). */
async function natsAnswers(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      const buffer = new Uint8Array(4);
      const n = await Promise.race([
        conn.read(buffer),
        new Promise<null>((r) => setTimeout(() => r(null), 1_000)),
      ]);
      return n === 4 && new TextDecoder().decode(buffer) === "INFO";
    } finally {
      conn.close();
    }
  } catch {
    return false;
  }
}

async function startNats(port: number): Promise<Deno.ChildProcess | undefined> {
  if (await natsAnswers(port)) {
    console.error(`dev: using the NATS server already answering on localhost:${port}`);
    return undefined;
  }
  if (!(await succeeds("nats-server", ["--version"]))) {
    throw new Error("No nats-server on PATH: run scripts/setup.sh (or apt-get install nats-server)");
  }
  const dataDir = `${ROOT}.nats/dev`;
  await Deno.mkdir(dataDir, { recursive: true });
  const log = await Deno.open(`${ROOT}.nats/nats.log`, { write: true, create: true, append: true });
  console.error(
    `dev: starting nats-server with JetStream on localhost:${port} (data in .nats/dev, log in .nats/nats.log)`,
  );
  // Own session, as etcd: the service stops first, and stores nothing after the broker is gone.
  const child = new Deno.Command("setsid", {
    args: ["nats-server", "-js", "-a", "127.0.0.1", "-p", String(port), "-sd", dataDir],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  void child.stderr.pipeTo(log.writable).catch(() => {});
  if (await within(15_000, () => natsAnswers(port))) return child;
  child.kill("SIGTERM");
  throw new Error("nats-server did not answer within 15 s; see .nats/nats.log");
}

async function stopChild(name: string, child: Deno.ChildProcess | undefined): Promise<void> {
  if (!child) return;
  console.error(`dev: stopping ${name}`);
  try {
    child.kill("SIGTERM");
  } catch { /* gone */ }
  await child.status;
}

async function main(): Promise<number> {
  let etcd: Deno.ChildProcess | undefined;
  let nats: Deno.ChildProcess | undefined;
  try {
    etcd = await startEtcd();
    const natsPort = await localBrokerPort();
    if (natsPort !== undefined) nats = await startNats(natsPort);
  } catch (error) {
    console.error(`dev: ${(error as Error).message}`);
    await stopChild("etcd", etcd);
    return 1;
  }
  const tasks = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks as Record<string, string>;
  const service = new Deno.Command(Deno.execPath(), {
    args: [...tasks.start.split(/\s+/).slice(1), ...Deno.args],
    cwd: ROOT,
  }).spawn();
  // Ctrl+C already reaches the service through the process group: forwarding SIGINT too would
  // deliver it twice. SIGTERM sent to this script alone is passed on.
  const ignoreInt = () => {};
  const onTerm = () => {
    try {
      service.kill("SIGTERM");
    } catch { /* already gone */ }
  };
  Deno.addSignalListener("SIGINT", ignoreInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  const { code } = await service.status;
  Deno.removeSignalListener("SIGINT", ignoreInt);
  Deno.removeSignalListener("SIGTERM", onTerm);
  await stopChild("nats-server", nats);
  await stopChild("etcd", etcd);
  return code;
}

Deno.exit(await main());
