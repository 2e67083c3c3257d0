/**
 * `send --to R [--to R2 ...] [--title T] [--body B] [--data k=v ...] [--key K]`: one notification
 * through `etcd:///<name>` (SendMany when given several recipients; `--key` is the idempotency key).
 */
import * as grpc from "@grpc/grpc-js";
import type { Config } from "../config/mod.ts";
import {
  createEtcdClient,
  deadlineAfter,
  describeEtcdError,
  EtcdDiscovery,
  registerEtcdResolver,
  type ServiceInstance,
  serviceKey,
  waitForEtcd,
} from "@notification-server/registry";
import { bearer, dialNotifications } from "@notification-server/client";
import { dialOptions } from "../client/dial.ts";
import { bearerToken, type Command, parseFlags, serviceName, UsageError } from "./command.ts";
import { OutputClosed, printLine } from "./output.ts";

interface SendFlags {
  to: string[];
  key?: string;
  title: string;
  body: string;
  data: string[];
  name?: string;
  token?: string;
}

export const sendCommand: Command = {
  name: "send",
  usage:
    "send --to RECIPIENT [--to RECIPIENT ...] [--title T] [--body B] [--data k=v ...] [--key IDEMPOTENCY_KEY] [--name NAME] [--token JWT]",
  parse(args) {
    const { values } = parseFlags("send", args, {
      to: { type: "string", multiple: true, default: [] },
      key: { type: "string" },
      title: { type: "string", default: "" },
      body: { type: "string", default: "" },
      data: { type: "string", multiple: true, default: [] },
      name: { type: "string" },
      token: { type: "string" },
    });
    const to = values.to;
    if (to.length === 0) throw new UsageError("send needs --to RECIPIENT");
    if (!values.title && !values.body) throw new UsageError("send needs --title or --body (or both)");
    return {
      configPath: values.config,
      help: values.help,
      run: (config) => send({ ...values, to }, config),
    };
  },
};

async function send(flags: SendFlags, config: Config): Promise<number> {
  const data: Record<string, string> = {};
  for (const pair of flags.data) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new UsageError(`--data ${JSON.stringify(pair)} is not key=value`);
    data[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const name = serviceName(flags.name, config);
  const dial = dialOptions(config);
  const where = config.etcd.endpoints.join(",");
  const etcd = createEtcdClient(config.etcd);
  const closeResolver = registerEtcdResolver({ ...config.etcd, client: etcd });
  const client = dialNotifications(`etcd:///${name}`, dial);
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
    const content = { title: flags.title, body: flags.body, data, idempotencyKey: flags.key ?? "" };
    const many = flags.to.length > 1;
    const request = many ? { recipients: flags.to, ...content } : { recipient: flags.to[0], ...content };
    const response = await new Promise<SendReply | { results: SendReply[] }>(
      (resolve, reject) => {
        const call = client[many ? "sendMany" : "send"](
          request,
          bearer(bearerToken(flags.token)),
          { deadline: Date.now() + config.etcd.dialTimeoutMs, waitForReady: true },
          (error: grpc.ServiceError | null, value: SendReply) =>
            error ? reject(new Error(sendFailure(error, call.getPeer(), instances))) : resolve(value),
        );
      },
    );
    if (!("results" in response)) {
      printLine(receiptLine(response));
      return 0;
    }
    let failed = 0;
    for (const [i, result] of response.results.entries()) {
      if (result.code) failed++;
      printLine(`${flags.to[i]}: ${result.code ? `failed: ${result.error}` : receiptLine(result)}`);
    }
    return failed ? 1 : 0;
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

interface SendReply {
  id: string;
  delivered: number;
  instanceId: string;
  position: number;
  stored: boolean;
  /** SendMany results only: why this recipient's copy failed. */
  code?: number;
  error?: string;
}

/** `<id> delivered=N instance=I`, with a broker ` position=P`: a subscriber can start after it (subscribe --since). */
function receiptLine(reply: SendReply): string {
  const stored = reply.stored ? ` position=${reply.position}` : "";
  return `${reply.id} delivered=${reply.delivered} instance=${reply.instanceId}${stored}`;
}
