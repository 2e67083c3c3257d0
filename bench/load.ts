/** Closed-loop load runs with the Go load generators, and the numbers they give. */
import { cpuSeconds, rssMiB } from "../tests/helpers/proc.ts";

/** A server under test: a name, its address, its PID, and how to stop it. */
export interface Target {
  name: string;
  addr: string;
  pid: number;
  stop(): Promise<void>;
}

export interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  rss: number;
  /** Server CPU time per call, µs: noisy neighbours move rps far more than this. */
  cpuUs: number;
}

/**
 * One closed-loop run of a Go load generator (`loadgen`: Health/Check, `sendload`: Send; same flags
 * and output), sampling the server's RSS and CPU meanwhile.
 */
export async function goLoadRun(
  bin: string,
  target: Target,
  load: { callers: number; conns: number; seconds: number },
  extra: string[] = [],
): Promise<LoadResult> {
  const SECONDS = load.seconds;
  let peak = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, rssMiB(target.pid) || 0);
      await sleep(250);
    }
  })();
  const cpuBefore = cpuSeconds(target.pid);
  const out = await run(bin, [
    "-addr",
    target.addr,
    "-c",
    String(load.callers),
    "-conns",
    String(load.conns),
    "-d",
    `${SECONDS}s`,
    "-w",
    "1s",
    ...extra,
  ]);
  const cpu = cpuSeconds(target.pid) - cpuBefore;
  sampling = false;
  await sampler;
  const m = out.match(/rps=(\S+) ok=\S+ errors=(\S+) p50_ms=(\S+) p99_ms=(\S+)/);
  if (!m) throw new Error(`${bin} said: ${out}`);
  const rps = Number(m[1]);
  // The CPU covers the 1 s warm-up too; assume it ran at the measured rate.
  const cpuUs = cpu * 1e6 / (rps * (SECONDS + 1));
  return { rps, errors: Number(m[2]), p50: Number(m[3]), p99: Number(m[4]), rss: peak, cpuUs };
}

export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0
    ? NaN
    : s.length % 2
    ? s[(s.length - 1) / 2]
    : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export function fmt(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toFixed(digits) : "n/a";
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function run(cmd: string, argv: string[]) {
  const out = await new Deno.Command(cmd, { args: argv, stdout: "piped", stderr: "piped" }).output();
  return new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
}
