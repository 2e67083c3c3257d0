/**
 * `subscribe --to R [--since POS|all] [--json]`: prints R's notifications as they arrive, across
 * instance restarts; with a broker, from its history first.
 */
import type { Config } from "../config/mod.ts";
import { consoleLogger } from "../_util/logger.ts";
import { formatDuration } from "@notification-server/timing";
import { subscribe } from "@notification-server/client";
import { dialOptions } from "../client/dial.ts";
import { bearerToken, type Command, parseFlags, serviceName, UsageError } from "./command.ts";
import { capped, cell, onInterrupt, OutputClosed, printLine } from "./output.ts";

interface SubscribeFlags {
  to: string;
  json: boolean;
  name?: string;
  token?: string;
  since?: number | "all";
}

export const subscribeCommand: Command = {
  name: "subscribe",
  usage: "subscribe --to RECIPIENT [--since POSITION|all] [--json] [--name NAME] [--token JWT]",
  parse(args) {
    const { values } = parseFlags("subscribe", args, {
      to: { type: "string" },
      json: { type: "boolean", default: false },
      name: { type: "string" },
      token: { type: "string" },
      since: { type: "string" },
    });
    const to = values.to;
    if (!to) throw new UsageError("subscribe needs --to RECIPIENT");
    const since = values.since === undefined ? undefined : parseSince(values.since);
    return {
      configPath: values.config,
      help: values.help,
      run: (config) => subscribeTo({ ...values, to, since }, config),
    };
  },
};

/** `subscribe --to R`: prints notifications as they arrive, across instance restarts, until a signal. */
async function subscribeTo(flags: SubscribeFlags, config: Config): Promise<number> {
  const name = serviceName(flags.name, config);
  const dial = dialOptions(config);
  const log = consoleLogger();
  const interrupt = onInterrupt();
  try {
    const notifications = subscribe({
      etcd: config.etcd,
      prefix: config.etcd.prefix,
      name,
      recipient: flags.to,
      signal: interrupt.signal,
      token: bearerToken(flags.token),
      since: flags.since,
      credentials: dial.credentials,
      channelOptions: dial.channelOptions,
      onGap: ({ reason, retryInMs }) =>
        log.warn(`Subscription to ${name} ended (${reason}); re-subscribing in ${formatDuration(retryInMs)}`),
      onHandover: ({ from, to }) => log.info(`Moved to ${to}: ${from} left ${name} (no gap)`),
      onResumed: ({ gapMs, recovered }) =>
        recovered
          ? log.info(`Re-subscribed after ${formatDuration(gapMs)}; nothing missed (resumed from the broker)`)
          : log.warn(
            `Re-subscribed after ${formatDuration(gapMs)}; notifications sent meanwhile were not delivered${
              recovered === false ? " (older than the broker's history)" : ""
            }`,
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
          ...(n.position ? { position: n.position, epoch: n.epoch } : {}),
        }));
      } else {
        const data = Object.entries(n.data).map(([k, v]) => ` ${k}=${v}`).join("");
        const text = [n.title, n.body].filter((part) => part !== "").join(": ");
        const position = n.position ? ` #${n.position}` : "";
        printLine(`${new Date(n.createdAtMs).toISOString()} ${n.id}${position} ${cell(`${text}${data}`)}`);
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

/** `--since`: a position (a whole number) or `all`. */
function parseSince(text: string): number | "all" {
  if (text === "all") return "all";
  const position = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(position)) {
    throw new UsageError(
      `subscribe --since: ${JSON.stringify(text)} is not a position (a whole number) or "all"`,
    );
  }
  return position;
}
