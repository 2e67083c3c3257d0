/**
 * Runs the real service as a child process (`deno run` with exactly the permission flags of
 * `deno task start`, read from deno.json) with a config written to a temp file.
 */
import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { availableCpus } from "../../src/config/cpus.ts";
import { readRecord } from "./kv.ts";
import { changed } from "./grpc.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

/** The `deno run ...` flags of `deno task start`, so tests run the service the way users do. */
export function startTaskArgs(): string[] {
  const tasks = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks as Record<string, string>;
  const words = tasks.start.split(/\s+/);
  return words.slice(1); // drop "deno"
}

/** Config knobs the tests vary. */
export interface ServiceOptions {
  endpoints: string[];
  name?: string;
  instanceId?: string;
  addr?: string;
  leaseTtl?: string;
  layout?: "instance" | "service";
  prefix?: string;
  drainDelay?: string;
  shutdownTimeout?: string;
  startupTimeout?: string;
  maxSubscribers?: number;
  /** `workers:` (TEST_WORKERS, else the config's default, auto, when unset). */
  workers?: number | "auto";
  /** `metrics-addr:` (off when unset). */
  metricsAddr?: string;
  /** Raw YAML appended under `etcd:` (indented by the caller). */
  etcdExtra?: string;
  /** Raw YAML appended under `notification-server:` (indented by the caller). */
  serverExtra?: string;
  env?: Record<string, string>;
  /** Run this executable with `args` instead of `deno run main.ts` (the compiled binary). */
  executable?: string;
  /** Run `deno run -A <script...> --config PATH` instead of main.ts (tests/fixtures). */
  script?: string[];
}

/**
 * TEST_WORKERS runs a whole suite with that many workers; "other" with the mode `auto` does not give
 * here (1 where auto gives several, 2 where it gives 1): `deno task test` runs the lifecycle and
 * fault tests a second time that way, so both modes are tested on any machine.
 */
function testWorkers(): string | undefined {
  const asked = Deno.env.get("TEST_WORKERS");
  if (asked !== "other") return asked;
  return availableCpus() > 1 ? "1" : "2";
}

/** Writes a config file for `options`; returns its path. */
export async function writeConfig(options: ServiceOptions): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "svc-config-" });
  const path = `${dir}/config.yaml`;
  const workers = options.workers ?? testWorkers();
  const yaml = `notification-server:
  addr: "${options.addr ?? "127.0.0.1:0"}"
  name: "${options.name ?? "notification-server"}"
  instance-id: "${options.instanceId ?? ""}"
  metadata: { version: "test" }
  drain-delay: ${options.drainDelay ?? "0s"}
  shutdown-timeout: ${options.shutdownTimeout ?? "5s"}
  max-subscribers: ${options.maxSubscribers ?? 100}
${workers ? `  workers: ${workers}\n` : ""}${
    options.metricsAddr ? `  metrics-addr: "${options.metricsAddr}"\n` : ""
  }${options.serverExtra ?? ""}
etcd:
  endpoints: ${JSON.stringify(options.endpoints)}
  dial-timeout: 2s
  lease-ttl: ${options.leaseTtl ?? "10s"}
  prefix: "${options.prefix ?? "/services"}"
  layout: "${options.layout ?? "instance"}"
  startup-timeout: ${options.startupTimeout ?? "10s"}
${options.etcdExtra ?? ""}`;
  await Deno.writeTextFile(path, yaml);
  return path;
}

/** A running service process with its stderr lines collected. */
export class ServiceProcess implements AsyncDisposable {
  readonly lines: string[] = [];
  readonly status: Promise<Deno.CommandStatus>;
  readonly startedAt: number;
  readonly #child: Deno.ChildProcess;
  readonly #waiters = new Set<() => void>();
  #done = false;
  #exited = false;

  private constructor(child: Deno.ChildProcess, startedAt: number) {
    this.#child = child;
    this.startedAt = startedAt;
    void child.status.then(() => (this.#exited = true));
    const output = Promise.allSettled([
      this.#collect(child.stderr),
      child.stdout.pipeTo(new WritableStream({ write: (c) => this.#push(new TextDecoder().decode(c)) })),
    ]);
    // Resolves once the output is read to the end too: a test that checks lines after exit sees all.
    this.status = child.status.then(async (status) => {
      await output;
      return status;
    });
  }

  /** Spawns the service with a config for `options` (or `configPath`); does not wait for it. */
  static async spawn(options: ServiceOptions, configPath?: string): Promise<ServiceProcess> {
    const path = configPath ?? await writeConfig(options);
    const exe = options.executable ?? Deno.execPath();
    const args = options.executable
      ? ["--config", path]
      : options.script
      ? ["run", "-A", ...options.script, "--config", path]
      : [...startTaskArgs(), "--config", path];
    const started = Date.now();
    const child = new Deno.Command(exe, {
      args,
      cwd: ROOT,
      env: options.env ?? {},
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new ServiceProcess(child, started);
  }

  /** Spawns and waits for "gRPC server listening on". */
  static async start(options: ServiceOptions): Promise<ServiceProcess> {
    const service = await ServiceProcess.spawn(options);
    await service.waitForLine(/gRPC server listening on/, 20_000);
    return service;
  }

  /** True once the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  get pid(): number {
    return this.#child.pid;
  }

  /** The bound port, from the "listening" line. */
  get port(): number {
    const line = this.lines.find((l) => l.includes("gRPC server listening on"));
    const match = line?.match(/:(\d+)\s*$/);
    if (!match) throw new Error(`No listening line yet:\n${this.lines.join("\n")}`);
    return Number(match[1]);
  }

  /** The /metrics port, from the "Metrics on http://host:port/metrics" line. */
  get metricsPort(): number {
    const match = this.lines.map((l) => /Metrics on http:\/\/\S+:(\d+)\/metrics/.exec(l)).find((m) => m);
    if (!match) throw new Error(`No metrics line:\n${this.lines.join("\n")}`);
    return Number(match[1]);
  }

  get addr(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The HTTP port (`notification-server.http`), from its "listening on http://host:port" line. */
  get httpPort(): number {
    const match = this.lines.map((l) => /listening on https?:\/\/\S+:(\d+)\s*$/.exec(l)).find((m) => m);
    if (!match) throw new Error(`No HTTP listening line:\n${this.lines.join("\n")}`);
    return Number(match[1]);
  }

  /** The key from "Service registered to etcd: <key> -> ...". */
  get key(): string {
    const line = this.lines.find((l) => l.includes("Service registered to etcd:"));
    const match = line?.match(/Service registered to etcd: (\S+) ->/);
    if (!match) throw new Error(`Not registered:\n${this.lines.join("\n")}`);
    return match[1];
  }

  signal(signal: Deno.Signal): void {
    this.#child.kill(signal);
  }

  /** Resolves with the first line matching `pattern`; rejects on timeout or exit. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.lines.find((l) => pattern.test(l));
        if (hit) {
          finish();
          resolve(hit);
        } else if (this.#done) {
          finish();
          reject(new Error(`Exited before ${pattern}:\n${this.lines.join("\n")}`));
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`No line matching ${pattern} within ${timeoutMs} ms:\n${this.lines.join("\n")}`));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* already exited */ }
    await this.status;
  }

  #push(text: string): void {
    for (const line of text.split("\n")) if (line.trim() !== "") this.lines.push(line);
    for (const waiter of [...this.#waiters]) waiter();
    changed();
  }

  async #collect(stream: ReadableStream<Uint8Array>): Promise<void> {
    let pending = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      pending += chunk;
      const cut = pending.lastIndexOf("\n");
      if (cut < 0) continue;
      this.#push(pending.slice(0, cut));
      pending = pending.slice(cut + 1);
    }
    if (pending) this.#push(pending);
    this.#done = true;
    for (const waiter of [...this.#waiters]) waiter();
  }
}

/**
 * `main.ts subscribe --to RECIPIENT --json` as a child process: the titles it prints, its log
 * lines, and whether it is still running.
 */
export function subscribeProcess(config: string, recipient: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [...startTaskArgs(), "subscribe", "--to", recipient, "--json", "--config", config],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const titles: string[] = [];
  const log: string[] = [];
  const reading = Promise.all([
    readLines(child.stdout, (line) => (titles.push(JSON.parse(line).title), changed())),
    readLines(child.stderr, (line) => (log.push(line), changed())),
  ]);
  const state = { exit: "running" };
  void child.status.then((st) => (state.exit = `exited ${st.code} ${st.signal ?? ""}`));
  /** Ctrl+C, as a user stops it; resolves once it exited and its output is read. */
  const stop = async () => {
    try {
      child.kill("SIGINT");
    } catch { /* exited */ }
    await child.status;
    await reading.catch(() => {});
  };
  return { child, titles, log, reading, state, stop };
}

/** Calls `onLine` with each non-empty line of `stream` (a line split across chunks is one line). */
async function readLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  let pending = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    const lines = pending.split("\n");
    pending = lines.pop()!;
    for (const line of lines) if (line.trim() !== "") onLine(line);
  }
}

/** `main.ts ARGS` as a user runs it (a command, with `deno task start`'s flags): exit code and output. */
export async function runMain(
  args: string[],
  options: { timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  // A command that should end by itself is killed past `timeoutMs`, so a regression fails the test
  // (exit code of a signal) instead of hanging it.
  const signal = options.timeoutMs === undefined ? undefined : AbortSignal.timeout(options.timeoutMs);
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...startTaskArgs(), ...args],
    cwd: ROOT,
    signal,
  })
    .output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Shutdown lines, in the order a clean stop logs them. */
const CLEAN_STOP_LINES = ["Shutting down server...", "Service deregistered from etcd: ", "Server stopped"];

/**
 * Stops `svc` with `signal` (null: it is stopping by itself) and asserts a clean stop: exit `code`,
 * one deregistration, the shutdown lines in order, and no record left at its key in etcd (read
 * through `kv`). Returns the whole log.
 */
export async function assertCleanStop(
  svc: ServiceProcess,
  kv: Etcd3,
  options: { signal?: Deno.Signal | null; code?: number } = {},
): Promise<string> {
  const key = svc.key;
  if (options.signal !== null) svc.signal(options.signal ?? "SIGTERM");
  const status = await svc.status;
  const text = svc.lines.join("\n");
  assert.equal(status.code, options.code ?? 0, text);
  assert.equal(svc.lines.filter((l) => l.includes(`Service deregistered from etcd: ${key}`)).length, 1, text);
  const at = CLEAN_STOP_LINES.map((line) => text.indexOf(line));
  assert.ok(at.every((i) => i >= 0), `log has ${JSON.stringify(CLEAN_STOP_LINES)}:\n${text}`);
  assert.deepEqual([...at].sort((a, b) => a - b), at, `shutdown lines in order:\n${text}`);
  assert.equal(await readRecord(kv, key), undefined, "record deleted");
  return text;
}
