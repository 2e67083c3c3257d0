/**
 * Private nats-server processes with JetStream for the broker tests: one server, or a cluster of
 * three, on free loopback ports with temporary store directories; stopped by PID. Debian's
 * `nats-server` (scripts/setup.sh installs it).
 */
import { freePort } from "@notification-server/registry/testing";

/** One nats-server process of a {@link NatsHandle}. */
interface Node {
  name: string;
  port: number;
  monitorPort: number;
  args: string[];
  child?: Deno.ChildProcess;
  log: string[];
}

export interface NatsHandle extends AsyncDisposable {
  /** host:port of every node, for `broker.nats.servers`. */
  readonly servers: string[];
  /** Stops node `i` (SIGKILL: a crash; SIGTERM: a clean stop) and waits for it to exit. */
  stop(i: number, signal?: Deno.Signal): Promise<void>;
  /** Starts node `i` again, with the same ports and store. */
  start(i: number): Promise<void>;
  /** The node that leads `stream` now (its index), read from the monitoring endpoint. */
  leaderOf(stream: string): Promise<number | undefined>;
  /** What each node logged, for failure messages. */
  logs(): string;
  /** PIDs of the nodes running now (for CPU and memory readings). */
  pids(): number[];
}

/**
 * Starts `nodes` servers (1, or 3 forming one JetStream cluster), each with `args` too (`--user`,
 * `--auth`...), on `ports` when given, and waits until they answer.
 */
export async function startNats(
  options: { nodes?: 1 | 3; args?: string[]; ports?: number[] } = {},
): Promise<NatsHandle> {
  const count = options.nodes ?? 1;
  const dir = await Deno.makeTempDir({ prefix: "nats-test-" });
  const clusterPorts = Array.from({ length: count }, () => freePort());
  const nodes: Node[] = Array.from({ length: count }, (_, i) => {
    const port = options.ports?.[i] ?? freePort();
    const monitorPort = freePort();
    const name = `n${i + 1}`;
    const args = [
      "-js",
      "-a",
      "127.0.0.1",
      "-p",
      String(port),
      "-m",
      String(monitorPort),
      "-sd",
      `${dir}/${name}`,
    ];
    args.push("--server_name", name, ...options.args ?? []);
    if (count > 1) {
      const routes = clusterPorts.filter((_, j) => j !== i).map((p) => `nats://127.0.0.1:${p}`).join(",");
      args.push(
        "--cluster_name",
        "test",
        "--cluster",
        `nats://127.0.0.1:${clusterPorts[i]}`,
        "--routes",
        routes,
      );
    }
    return { name, port, monitorPort, args, log: [] };
  });
  const launch = (node: Node) => {
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command("nats-server", { args: node.args, stdout: "null", stderr: "piped" }).spawn();
    } catch (error) {
      throw new Error(
        `cannot run nats-server (run scripts/setup.sh, or apt-get install nats-server): ${error}`,
      );
    }
    node.child = child;
    void child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
      new WritableStream({ write: (chunk) => void node.log.push(...chunk.split("\n").filter((l) => l)) }),
    ).catch(() => {});
  };
  const healthy = async (node: Node, deadline: number) => {
    while (Date.now() < deadline) {
      try {
        const res = await fetch(`http://127.0.0.1:${node.monitorPort}/healthz`, {
          signal: AbortSignal.timeout(1_000),
        });
        await res.body?.cancel();
        if (res.ok) return;
      } catch { /* not up yet */ }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`nats-server ${node.name} not healthy:\n${node.log.join("\n")}`);
  };
  const stop = async (node: Node, signal: Deno.Signal) => {
    const child = node.child;
    if (!child) return;
    node.child = undefined;
    try {
      child.kill(signal);
    } catch { /* exited */ }
    await child.status;
  };
  for (const node of nodes) launch(node);
  const deadline = Date.now() + 30_000;
  await Promise.all(nodes.map((n) => healthy(n, deadline)));
  return {
    servers: nodes.map((n) => `127.0.0.1:${n.port}`),
    stop: (i, signal = "SIGKILL") => stop(nodes[i], signal),
    async start(i) {
      launch(nodes[i]);
      await healthy(nodes[i], Date.now() + 30_000);
    },
    async leaderOf(stream) {
      for (const node of nodes) {
        if (!node.child) continue;
        try {
          const res = await fetch(`http://127.0.0.1:${node.monitorPort}/jsz?streams=true`, {
            signal: AbortSignal.timeout(1_000),
          });
          const jsz = await res.json() as {
            account_details?: { stream_detail?: { name: string; cluster?: { leader?: string } }[] }[];
          };
          for (const account of jsz.account_details ?? []) {
            for (const s of account.stream_detail ?? []) {
              const leader = s.name === stream ? s.cluster?.leader : undefined;
              if (leader) return nodes.findIndex((n) => n.name === leader);
            }
          }
        } catch { /* that node is down */ }
      }
      return undefined;
    },
    pids: () => nodes.flatMap((n) => n.child ? [n.child.pid] : []),
    logs: () => nodes.map((n) => `--- ${n.name}\n${n.log.slice(-30).join("\n")}`).join("\n"),
    async [Symbol.asyncDispose]() {
      await Promise.all(nodes.map((n) => stop(n, "SIGTERM")));
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** `notification-server.broker` YAML for a test config (indented for `serverExtra`). */
export function brokerYaml(servers: string[], extra: Record<string, string | number> = {}): string {
  const lines = [
    "  broker:",
    "    nats:",
    `      servers: ${JSON.stringify(servers)}`,
    ...Object.entries(extra).map(([k, v]) => `      ${k}: ${typeof v === "string" ? JSON.stringify(v) : v}`),
  ];
  return `${lines.join("\n")}\n`;
}
