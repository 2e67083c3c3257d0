/** `discover <name> [--watch] [--json]`: the registered instances of a service, and (watching) their changes. */
import type { Config } from "../config/mod.ts";
import { serviceNameProblem } from "../config/mod.ts";
import {
  createEtcdClient,
  deadlineAfter,
  EtcdDiscovery,
  type ServiceInstance,
  waitForEtcd,
} from "@notification-server/registry";
import { consoleLogger } from "../_util/logger.ts";
import { type Command, parseFlags, UsageError } from "./command.ts";
import { capped, cell, type Interrupt, onInterrupt, OutputClosed, printLine } from "./output.ts";

export const discoverCommand: Command = {
  name: "discover",
  usage: "discover <name> [--watch] [--json]",
  parse(args) {
    const { values, positionals } = parseFlags("discover", args, {
      watch: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
    }, true);
    if (positionals.length !== 1) throw new UsageError("discover takes exactly one service name");
    const problem = serviceNameProblem(positionals[0]);
    if (problem) throw new UsageError(`discover: ${problem}`);
    return {
      configPath: values.config,
      help: values.help,
      run: (config) => discover(positionals[0], values, config),
    };
  },
};

async function discover(
  name: string,
  flags: { watch: boolean; json: boolean },
  config: Config,
): Promise<number> {
  const client = createEtcdClient(config.etcd);
  const discovery = new EtcdDiscovery(client, { prefix: config.etcd.prefix, logger: consoleLogger() });
  let interrupt: Interrupt | undefined;
  try {
    await waitForEtcd(client, {
      endpoints: config.etcd.endpoints,
      deadline: deadlineAfter(config.etcd.dialTimeoutMs),
    });
    if (!flags.watch) {
      printInstances(await discovery.list(name), flags.json);
      return 0;
    }
    interrupt = onInterrupt();
    let previous = new Map<string, ServiceInstance>();
    let first = true;
    for await (const snapshot of discovery.watch(name, { signal: interrupt.signal })) {
      const current = new Map(snapshot.map((i) => [i.id, i]));
      if (first) {
        printInstances(snapshot, flags.json);
        first = false;
      } else {
        for (const change of diff(previous, current)) printChange(change, flags.json);
      }
      previous = current;
    }
    return 0;
  } catch (error) {
    if (error instanceof OutputClosed) return 0;
    throw error;
  } finally {
    interrupt?.dispose();
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

function jsonInstance(i: ServiceInstance): Record<string, unknown> {
  return {
    id: capped(i.id),
    addr: capped(i.addr),
    metadata: Object.fromEntries(Object.entries(i.metadata).map(([k, v]) => [capped(k), capped(v)])),
  };
}

function printInstances(instances: ServiceInstance[], json: boolean): void {
  if (json) {
    for (const i of instances) printLine(JSON.stringify(jsonInstance(i)));
    return;
  }
  const rows = [
    ["ID", "ADDRESS", "METADATA"],
    ...instances.map((i) => [cell(i.id), cell(i.addr), formatMetadata(i.metadata)]),
  ];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  for (const row of rows) printLine(row.map((value, c) => value.padEnd(widths[c])).join("  ").trimEnd());
  if (instances.length === 0) printLine("(no instances)");
}

function printChange({ event, instance: i }: Change, json: boolean): void {
  if (json) printLine(JSON.stringify({ event, ...jsonInstance(i) }));
  else {
    printLine(
      `${new Date().toISOString()} ${event.padEnd(7)} ${cell(i.id)} ${cell(i.addr)} ${
        formatMetadata(i.metadata)
      }`,
    );
  }
}

function formatMetadata(metadata: Readonly<Record<string, string>>): string {
  return cell(Object.entries(metadata).map(([k, v]) => `${k}=${v}`).join(","));
}
