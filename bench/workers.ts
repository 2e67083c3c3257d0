/**
 * The workers dimension: one service process with `workers: N` for each N asked, beside
 * the Go original, under the same closed-loop loads spread over many connections (the kernel
 * hands each connection to one worker, so one connection would measure one worker). Reports rps,
 * server CPU µs per call (the figure that means something on a 2-core machine, where the load
 * generator competes for the cores) and peak RSS, medians over interleaved rounds.
 */
import { ServiceProcess } from "../tests/helpers/service.ts";
import { fmt, goLoadRun, type LoadResult, median, type Target } from "./load.ts";
import { rssMiB } from "../tests/helpers/proc.ts";

/** What {@link workersBench} needs. */
export interface WorkersBenchOptions {
  endpoints: string[];
  /** e.g. [1, 2] or [1, 4, 8, "auto"]. */
  counts: (number | "auto")[];
  loadgen: string;
  sendload: string;
  /** The Go original, already running (compared in the same rounds). */
  go?: Target;
  rounds: number;
  seconds: number;
  callers: number;
  conns: number;
  note(message: string): void;
}

/** Per target: Health and Send results, and idle RSS. */
export interface WorkersRow {
  name: string;
  workers: string;
  health: LoadResult[];
  send: LoadResult[];
  idleRss: number;
}

async function startWorkers(
  endpoints: string[],
  count: number | "auto",
): Promise<Target & { svc: ServiceProcess }> {
  const svc = await ServiceProcess.start({
    endpoints,
    name: "bench-workers",
    instanceId: `w-${count}`,
    maxSubscribers: 5000,
    workers: count,
    serverExtra: `  max-connections: 5000\n`,
  });
  return {
    name: `deno w=${count}`,
    addr: svc.addr,
    pid: svc.pid,
    svc,
    stop: async () => {
      svc.signal("SIGTERM");
      await svc.status;
    },
  };
}

export async function workersBench(options: WorkersBenchOptions): Promise<WorkersRow[]> {
  const load = { callers: options.callers, conns: options.conns, seconds: options.seconds };
  const rows: WorkersRow[] = [];
  const targets: Target[] = [];
  if (options.go) targets.push(options.go);
  for (const count of options.counts) targets.push(await startWorkers(options.endpoints, count));
  await new Promise((r) => setTimeout(r, 2_000));
  for (const t of targets) {
    const workers = t.name === "go" ? "-" : t.name.slice("deno w=".length);
    rows.push({ name: t.name, workers, health: [], send: [], idleRss: rssMiB(t.pid) });
  }
  for (let round = 0; round < options.rounds; round++) {
    for (const [i, t] of targets.entries()) {
      options.note(
        `workers round ${round + 1}: Health/Check on ${t.name} (c=${load.callers}, conns=${load.conns})`,
      );
      rows[i].health.push(await goLoadRun(options.loadgen, t, load));
      if (t.name === "go") continue;
      options.note(`workers round ${round + 1}: Send on ${t.name}`);
      rows[i].send.push(await goLoadRun(options.sendload, t, load));
    }
  }
  for (const t of targets) if (t !== options.go) await t.stop();
  return rows;
}

/** The section's table rows: rps, CPU per call and RSS per target, and the ratios to Go and to w=1. */
export function workersTable(rows: WorkersRow[], callers: number, conns: number): string[][] {
  const out: string[][] = [[
    `workers (c=${callers}, conns=${conns})`,
    "Health rps",
    "Health CPU µs/call",
    "Send rps",
    "Send CPU µs/call",
    "peak RSS MiB (idle)",
    "Health vs go",
    "Health / Send vs w=1",
  ]];
  const go = rows.find((r) => r.name === "go");
  const one = rows.find((r) => r.workers === "1");
  const med = (xs: LoadResult[], f: (r: LoadResult) => number) => median(xs.map(f));
  for (const r of rows) {
    const h = med(r.health, (x) => x.rps);
    const s = med(r.send, (x) => x.rps);
    out.push([
      r.name,
      fmt(h, 0),
      fmt(med(r.health, (x) => x.cpuUs)),
      r.send.length ? fmt(s, 0) : "",
      r.send.length ? fmt(med(r.send, (x) => x.cpuUs)) : "",
      `${fmt(med(r.health, (x) => x.rss), 0)} (${fmt(r.idleRss, 0)})`,
      go ? fmt(h / med(go.health, (x) => x.rps), 2) : "",
      one && r.send.length
        ? `${fmt(h / med(one.health, (x) => x.rps), 2)} / ${fmt(s / med(one.send, (x) => x.rps), 2)}`
        : "",
    ]);
  }
  return out;
}
