/** The `discover`, `send`, `subscribe` and `token` commands (run through main.ts or the compiled binary). */
import * as grpc from "@grpc/grpc-js";
import { type Config, serviceNameProblem } from "../config/mod.ts";
import { services } from "../transport/protos.ts";
import {
  createEtcdClient,
  deadlineAfter,
  describeEtcdError,
  waitForEtcd,
} from "../../packages/registry/src/etcd_client.ts";
import { EtcdDiscovery } from "../../packages/registry/src/etcd_discovery.ts";
import {
  registerEtcdResolver,
  ROUND_ROBIN_SERVICE_CONFIG,
} from "../../packages/registry/src/grpc_resolver.ts";
import type { ServiceInstance } from "../../packages/registry/src/types.ts";
import { consoleLogger } from "../_util/logger.ts";
import { serviceKey } from "../../packages/registry/src/codec.ts";
import { formatDuration, parseDuration } from "../../packages/registry/src/duration.ts";
import { makeToken } from "../auth/tokens.ts";
import { subscribe } from "../../packages/registry/src/subscribe.ts";
import { bearer } from "../../packages/registry/src/notification_client.ts";

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
  /** Bearer token for Send/Subscribe (else NOTIFICATION_TOKEN). */
  token?: string;
  /** `token`: the subject, scopes and lifetime of the token to print. */
  sub?: string;
  scope?: string;
  ttl?: string;
}

/** Runs `discover`, `send`, `subscribe` or `token`; resolves with the exit code. */
export function runCommand(
  command: string,
  args: string[],
  flags: CommandFlags,
  config: Config,
): Promise<number> {
  switch (command) {
    case "discover": {
      if (args.length !== 1) throw new UsageError("discover takes exactly one service name");
      const problem = serviceNameProblem(args[0]);
      if (problem) throw new UsageError(`discover: ${problem}`);
      return discover(args[0], flags, config);
    }
    case "send":
      if (args.length !== 0) {
        throw new UsageError(`send takes no positional arguments, found ${JSON.stringify(args)}`);
      }
      return send(flags, config);
    case "subscribe":
      if (args.length !== 0) {
        throw new UsageError(`subscribe takes no positional arguments, found ${JSON.stringify(args)}`);
      }
      return subscribeCommand(flags, config);
    case "token":
      if (args.length !== 0) {
        throw new UsageError(`token takes no positional arguments, found ${JSON.stringify(args)}`);
      }
      return tokenCommand(flags, config);
    default:
      throw new UsageError(`Unknown command ${JSON.stringify(command)}`);
  }
}

/** Standard output went away (`discover --watch | head -1`): the command is done. */
class OutputClosed extends Error {}

const encoder = new TextEncoder();

/** Writes one line to stdout; throws {@link OutputClosed} when nobody reads it any more. */
function printLine(line: string): void {
  const bytes = encoder.encode(`${line}\n`);
  try {
    for (let at = 0; at < bytes.length;) at += Deno.stdout.writeSync(bytes.subarray(at));
  } catch (error) {
    if (error instanceof Deno.errors.BrokenPipe) throw new OutputClosed();
    throw error;
  }
}

async function discover(name: string, flags: CommandFlags, config: Config): Promise<number> {
  const client = createEtcdClient(config.etcd);
  const discovery = new EtcdDiscovery(client, { prefix: config.etcd.prefix, logger: consoleLogger() });
  let interrupt: Interrupt | undefined;
  try {
    await waitForEtcd(client, {
      endpoints: config.etcd.endpoints,
      deadline: deadlineAfter(config.etcd.dialTimeoutMs),
    });
    if (!flags.watch) {
      printInstances(await discovery.list(name), flags.json ?? false);
      return 0;
    }
    interrupt = onInterrupt();
    let previous = new Map<string, ServiceInstance>();
    let first = true;
    for await (const snapshot of discovery.watch(name, { signal: interrupt.signal })) {
      const current = new Map(snapshot.map((i) => [i.id, i]));
      if (first) {
        printInstances(snapshot, flags.json ?? false);
        first = false;
      } else {
        for (const change of diff(previous, current)) printChange(change, flags.json ?? false);
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

interface Interrupt {
  /** Aborted by the first SIGINT or SIGTERM (or by `dispose`). */
  signal: AbortSignal;
  dispose(): void;
}

/** For commands that run until interrupted: Ctrl+C or SIGTERM ends them cleanly (exit 0). */
function onInterrupt(): Interrupt {
  const abort = new AbortController();
  const stop = () => abort.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  return {
    signal: abort.signal,
    dispose: () => {
      stop();
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
    },
  };
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

// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

/** Longest value printed in a table cell or JSON field; records are written by anyone. */
const MAX_FIELD = 256;

/** A value safe for one terminal line: control characters escaped (no ESC sequences), capped. */
function cell(text: string): string {
  const escaped = text.replace(CONTROL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
  return escaped.length > MAX_FIELD ? `${escaped.slice(0, MAX_FIELD)}...` : escaped;
}

/** The same cap for JSON output (JSON.stringify already escapes control characters). */
function capped(text: string): string {
  return text.length > MAX_FIELD ? `${text.slice(0, MAX_FIELD)}...` : text;
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

async function send(flags: CommandFlags, config: Config): Promise<number> {
  if (!flags.to) throw new UsageError("send needs --to RECIPIENT");
  if (!flags.title && !flags.body) throw new UsageError("send needs --title or --body (or both)");
  const data: Record<string, string> = {};
  for (const pair of flags.data ?? []) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new UsageError(`--data ${JSON.stringify(pair)} is not key=value`);
    data[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const name = flags.name ?? config.server.name;
  const problem = serviceNameProblem(name);
  if (problem) throw new UsageError(`--name: ${problem}`);
  const where = config.etcd.endpoints.join(",");
  const etcd = createEtcdClient(config.etcd);
  const closeResolver = registerEtcdResolver({ ...config.etcd, client: etcd });
  const { Notification } = services();
  const client = new Notification(`etcd:///${name}`, grpc.credentials.createInsecure(), {
    "grpc.service_config": ROUND_ROBIN_SERVICE_CONFIG,
  });
  try {
    // Said in user terms before the call, rather than as "circuit breaker is open" or
    // "Waiting for LB pick" after it.
    await waitForEtcd(etcd, {
      endpoints: config.etcd.endpoints,
      deadline: deadlineAfter(config.etcd.dialTimeoutMs),
    });
    const instances = await new EtcdDiscovery(etcd, { prefix: config.etcd.prefix }).list(name).catch(
      (error) => {
        throw new Error(
          `Reading ${serviceKey(config.etcd.prefix, name)}/ from etcd at ${where} failed: ${
            describeEtcdError(error)
          }`,
        );
      },
    );
    if (instances.length === 0) {
      throw new Error(
        `No instance of ${JSON.stringify(name)} is registered in etcd at ${where} (under ${
          serviceKey(config.etcd.prefix, name)
        }/); is the service running with the same etcd.prefix?`,
      );
    }
    const response = await new Promise<{ id: string; delivered: number; instanceId: string }>(
      (resolve, reject) => {
        const call = client.send(
          { recipient: flags.to, title: flags.title ?? "", body: flags.body ?? "", data },
          bearer(bearerToken(flags)),
          { deadline: Date.now() + config.etcd.dialTimeoutMs, waitForReady: true },
          (error: grpc.ServiceError | null, value: { id: string; delivered: number; instanceId: string }) =>
            error ? reject(new Error(sendFailure(error, call.getPeer(), instances))) : resolve(value),
        );
      },
    );
    printLine(`${response.id} delivered=${response.delivered} instance=${response.instanceId}`);
    return 0;
  } catch (error) {
    if (error instanceof OutputClosed) return 0;
    throw error;
  } finally {
    client.close();
    closeResolver();
    etcd.close();
  }
}

/** One line saying which address failed and how, in user terms. */
function sendFailure(error: grpc.ServiceError, peer: string, instances: ServiceInstance[]): string {
  const addrs = instances.map((i) => i.addr).join(", ");
  const via = peer && peer !== "unknown" ? peer : addrs;
  const http = /Received HTTP status code (\d+)/.exec(error.details ?? "");
  if (http) return `Send via ${via} failed: not a gRPC server there (it answered HTTP ${http[1]})`;
  if (error.code === grpc.status.DEADLINE_EXCEEDED || error.code === grpc.status.UNAVAILABLE) {
    return `Send failed: no registered instance answered (${addrs}): ${error.details || error.message}`;
  }
  return `Send via ${via} failed: ${grpc.status[error.code]}: ${error.details || error.message}`;
}

/** `subscribe --to R`: prints notifications as they arrive, across instance restarts, until a signal. */
async function subscribeCommand(flags: CommandFlags, config: Config): Promise<number> {
  if (!flags.to) throw new UsageError("subscribe needs --to RECIPIENT");
  const name = flags.name ?? config.server.name;
  const problem = serviceNameProblem(name);
  if (problem) throw new UsageError(`--name: ${problem}`);
  const log = consoleLogger();
  const interrupt = onInterrupt();
  try {
    const notifications = subscribe({
      etcd: config.etcd,
      prefix: config.etcd.prefix,
      name,
      recipient: flags.to,
      signal: interrupt.signal,
      token: bearerToken(flags),
      onGap: ({ reason, retryInMs }) =>
        log.warn(`Subscription to ${name} ended (${reason}); re-subscribing in ${formatDuration(retryInMs)}`),
      onHandover: ({ from, to }) => log.info(`Moved to ${to}: ${from} left ${name} (no gap)`),
      onResumed: ({ gapMs }) =>
        log.info(
          `Re-subscribed after ${formatDuration(gapMs)}; notifications sent meanwhile were not delivered`,
        ),
    });
    for await (const n of notifications) {
      if (flags.json) {
        printLine(JSON.stringify({
          id: n.id,
          recipient: capped(n.recipient),
          title: capped(n.title),
          body: capped(n.body),
          data: n.data,
          createdAtMs: n.createdAtMs,
        }));
      } else {
        const data = Object.entries(n.data).map(([k, v]) => ` ${k}=${v}`).join("");
        const text = [n.title, n.body].filter((part) => part !== "").join(": ");
        printLine(`${new Date(n.createdAtMs).toISOString()} ${n.id} ${cell(`${text}${data}`)}`);
      }
    }
    return 0;
  } catch (error) {
    if (error instanceof OutputClosed) return 0;
    throw error;
  } finally {
    interrupt.dispose();
  }
}

/** `token --sub S [--scope X] [--ttl 1h]`: an HS256 token for development, signed with the configured secret. */
async function tokenCommand(flags: CommandFlags, config: Config): Promise<number> {
  if (!flags.sub) throw new UsageError("token needs --sub SUBJECT (the recipient it may subscribe to)");
  if (!config.server.auth) {
    throw new UsageError(`token needs notification-server.auth in ${config.path} (the secret it signs with)`);
  }
  const ttlMs = parseDuration(flags.ttl ?? "1h");
  if (!ttlMs) throw new UsageError(`--ttl: ${JSON.stringify(flags.ttl)} is not a duration like 1h or 15m`);
  printLine(
    await makeToken(config.server.auth, {
      sub: flags.sub,
      scope: flags.scope,
      ttlSeconds: Math.max(1, Math.round(ttlMs / 1000)),
    }),
  );
  return 0;
}

/** The bearer token for Send/Subscribe: `--token`, else NOTIFICATION_TOKEN; none when both are unset. */
function bearerToken(flags: CommandFlags): string | undefined {
  return flags.token ?? (Deno.env.get("NOTIFICATION_TOKEN") || undefined);
}
