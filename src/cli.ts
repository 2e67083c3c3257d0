/** The `discover` and `send` commands (run through main.ts or the compiled binary). */
import * as grpc from "@grpc/grpc-js";
import type { Config } from "./config.ts";
import { services } from "./protos.ts";
import { createEtcdClient, deadlineAfter, waitForEtcd } from "./registry/etcd_client.ts";
import { EtcdDiscovery } from "./registry/etcd_discovery.ts";
import { registerEtcdResolver, ROUND_ROBIN_SERVICE_CONFIG } from "./registry/grpc_resolver.ts";
import type { ServiceInstance } from "./registry/types.ts";
import { consoleLogger } from "./logger.ts";

/** Bad command-line usage (exit 2). */
export class UsageError extends Error {}

/** Flags main.ts parsed for the commands. */
export interface CommandFlags {
  watch?: boolean;
  json?: boolean;
  to?: string;
  title?: string;
  body?: string;
  data?: string[];
  name?: string;
}

/** Runs `discover` or `send`; resolves with the exit code. */
export function runCommand(
  command: string,
  args: string[],
  flags: CommandFlags,
  config: Config,
): Promise<number> {
  switch (command) {
    case "discover":
      if (args.length !== 1) throw new UsageError("discover takes exactly one service name");
      return discover(args[0], flags, config);
    case "send":
      if (args.length !== 0) {
        throw new UsageError(`send takes no positional arguments, found ${JSON.stringify(args)}`);
      }
      return send(flags, config);
    default:
      throw new UsageError(`Unknown command ${JSON.stringify(command)}`);
  }
}

async function discover(name: string, flags: CommandFlags, config: Config): Promise<number> {
  const client = createEtcdClient(config.etcd);
  const discovery = new EtcdDiscovery(client, { prefix: config.etcd.prefix, logger: consoleLogger() });
  try {
    await waitForEtcd(client, {
      endpoints: config.etcd.endpoints,
      deadline: deadlineAfter(config.etcd.dialTimeoutMs),
    });
    if (!flags.watch) {
      printInstances(await discovery.list(name), flags.json ?? false);
      return 0;
    }
    const abort = new AbortController();
    const stop = () => abort.abort();
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
    try {
      let previous = new Map<string, ServiceInstance>();
      let first = true;
      for await (const snapshot of discovery.watch(name, { signal: abort.signal })) {
        const current = new Map(snapshot.map((i) => [i.id, i]));
        if (first) {
          printInstances(snapshot, flags.json ?? false);
          first = false;
        } else {
          for (const change of diff(previous, current)) printChange(change, flags.json ?? false);
        }
        previous = current;
      }
    } finally {
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
    }
    return 0;
  } finally {
    client.close();
  }
}

type Change = { event: "added" | "updated" | "removed"; instance: ServiceInstance };

function diff(before: Map<string, ServiceInstance>, after: Map<string, ServiceInstance>): Change[] {
  const changes: Change[] = [];
  for (const [id, instance] of after) {
    const old = before.get(id);
    if (!old) changes.push({ event: "added", instance });
    else if (JSON.stringify(old) !== JSON.stringify(instance)) changes.push({ event: "updated", instance });
  }
  for (const [id, instance] of before) if (!after.has(id)) changes.push({ event: "removed", instance });
  return changes;
}

function printInstances(instances: ServiceInstance[], json: boolean): void {
  if (json) {
    for (const i of instances) console.log(JSON.stringify({ id: i.id, addr: i.addr, metadata: i.metadata }));
    return;
  }
  const rows = [
    ["ID", "ADDRESS", "METADATA"],
    ...instances.map((i) => [i.id, i.addr, formatMetadata(i.metadata)]),
  ];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  for (const row of rows) console.log(row.map((cell, c) => cell.padEnd(widths[c])).join("  ").trimEnd());
  if (instances.length === 0) console.log("(no instances)");
}

function printChange({ event, instance: i }: Change, json: boolean): void {
  if (json) console.log(JSON.stringify({ event, id: i.id, addr: i.addr, metadata: i.metadata }));
  else {console.log(
      `${new Date().toISOString()} ${event.padEnd(7)} ${i.id} ${i.addr} ${formatMetadata(i.metadata)}`,
    );}
}

function formatMetadata(metadata: Readonly<Record<string, string>>): string {
  return Object.entries(metadata).map(([k, v]) => `${k}=${v}`).join(",");
}

async function send(flags: CommandFlags, config: Config): Promise<number> {
  if (!flags.to) throw new UsageError("send needs --to RECIPIENT");
  const data: Record<string, string> = {};
  for (const pair of flags.data ?? []) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new UsageError(`--data ${JSON.stringify(pair)} is not key=value`);
    data[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const name = flags.name ?? config.server.name;
  const closeResolver = registerEtcdResolver({ ...config.etcd });
  const { Notification } = services();
  const client = new Notification(`etcd:///${name}`, grpc.credentials.createInsecure(), {
    "grpc.service_config": ROUND_ROBIN_SERVICE_CONFIG,
  });
  try {
    const response = await new Promise<{ id: string; delivered: number; instanceId: string }>(
      (resolve, reject) => {
        client.send(
          { recipient: flags.to, title: flags.title ?? "", body: flags.body ?? "", data },
          { deadline: Date.now() + config.etcd.dialTimeoutMs, waitForReady: true },
          (error: grpc.ServiceError | null, value: { id: string; delivered: number; instanceId: string }) =>
            error
              ? reject(new Error(`Send to etcd:///${name} failed: ${error.details || error.message}`))
              : resolve(value),
        );
      },
    );
    console.log(`${response.id} delivered=${response.delivered} instance=${response.instanceId}`);
    return 0;
  } finally {
    client.close();
    closeResolver();
  }
}
