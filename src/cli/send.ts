/** `send --to R [--title T] [--body B] [--data k=v ...]`: one notification through `etcd:///<name>`. */
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
  to: string;
  title: string;
  body: string;
  data: string[];
  name?: string;
  token?: string;
}

export const sendCommand: Command = {
  name: "send",
  usage: "send --to RECIPIENT [--title T] [--body B] [--data k=v ...] [--name NAME] [--token JWT]",
  parse(args) {
    const { values } = parseFlags("send", args, {
      to: { type: "string" },
      title: { type: "string", default: "" },
      body: { type: "string", default: "" },
      data: { type: "string", multiple: true, default: [] },
      name: { type: "string" },
      token: { type: "string" },
    });
    const to = values.to;
    if (!to) throw new UsageError("send needs --to RECIPIENT");
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
    const response = await new Promise<SendReply>(
      (resolve, reject) => {
        const call = client.send(
          { recipient: flags.to, title: flags.title, body: flags.body, data },
          bearer(bearerToken(flags.token)),
          { deadline: Date.now() + config.etcd.dialTimeoutMs, waitForReady: true },
          (error: grpc.ServiceError | null, value: SendReply) =>
            error ? reject(new Error(sendFailure(error, call.getPeer(), instances))) : resolve(value),
        );
      },
    );
    // With a broker, where it is stored: a subscriber can start after it (subscribe --since).
    const stored = response.stored ? ` position=${response.position}` : "";
    printLine(`${response.id} delivered=${response.delivered} instance=${response.instanceId}${stored}`);
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

interface SendReply {
  id: string;
  delivered: number;
  instanceId: string;
  position: number;
  stored: boolean;
}
