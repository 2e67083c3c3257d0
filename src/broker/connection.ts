/**
 * The connection to NATS and the JetStream stream every notification is stored in. One connection
 * per serving thread, and one more on the main thread with workers (mode.ts); the stream is made to
 * match the config by whichever gets there first.
 */
import {
  connect,
  type ConnectionOptions,
  credsAuthenticator,
  type NatsConnection,
  nkeyAuthenticator,
} from "@nats-io/transport-node";
import { type JetStreamManager, jetstreamManager, type StreamConfig } from "@nats-io/jetstream";
import { Backoff, formatDuration, sleep } from "@notification-server/timing";
import type { BrokerConfig } from "../config/types.ts";
import { liveSubjects, storedSubjects } from "./subjects.ts";

export type NatsConfig = BrokerConfig["nats"];

/** Why the broker could not be used at start-up; its message is the one line shown. */
export class BrokerUnavailableError extends Error {
  override name = "BrokerUnavailableError";
}

/** How long one connection attempt may take. */
const CONNECT_TIMEOUT_MS = 2_000;

/**
 * Connects to one of `nats.servers`, trying again with backoff until `deadline` (epoch ms; none:
 * for ever) or `signal`. Once connected, the client reconnects by itself for as long as it runs.
 */
export async function connectBroker(
  nats: NatsConfig,
  options: { name: string; deadline?: number; signal?: AbortSignal },
): Promise<NatsConnection> {
  const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 });
  const at = nats.servers.join(",");
  let last = "";
  for (;;) {
    try {
      return await connect(connectionOptions(nats, options.name));
    } catch (error) {
      last = (error as Error).message;
      // A refused login or certificate will not get better by waiting.
      if (/authoriz|authentic/i.test(last)) {
        throw new BrokerUnavailableError(
          `the NATS broker at ${at} refused our credentials: ${last} (notification-server.broker.nats: user and password, token, nkey-seed-file or creds-file)`,
        );
      }
      if (/certificate|tls/i.test(last)) {
        throw new BrokerUnavailableError(
          `cannot talk TLS with the NATS broker at ${at}: ${last} (notification-server.broker.nats.tls)`,
        );
      }
    }
    const wait = backoff.next();
    if (options.signal?.aborted || (options.deadline !== undefined && Date.now() + wait > options.deadline)) {
      break;
    }
    await sleep(wait, options.signal);
  }
  throw new BrokerUnavailableError(
    `cannot reach the NATS broker at ${at}: ${last} (notification-server.broker.nats.servers)`,
  );
}

function connectionOptions(nats: NatsConfig, name: string): ConnectionOptions {
  const options: ConnectionOptions = {
    servers: nats.servers,
    name,
    timeout: CONNECT_TIMEOUT_MS,
    // Running, the connection never gives up: Sends answer UNAVAILABLE meanwhile and subscribers
    // resume from their positions when it is back.
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    // Otherwise every request makes two Errors up front for their stack traces: 5 % of a Send's CPU.
    noAsyncTraces: true,
  };
  if (nats.user !== undefined) Object.assign(options, { user: nats.user, pass: nats.password });
  if (nats.token !== undefined) options.token = nats.token;
  if (nats.nkeySeedFile) {
    const seed = new TextEncoder().encode(Deno.readTextFileSync(nats.nkeySeedFile).trim());
    options.authenticator = nkeyAuthenticator(seed);
  }
  if (nats.credsFile) options.authenticator = credsAuthenticator(Deno.readFileSync(nats.credsFile));
  if (nats.tls) {
    options.tls = { caFile: nats.tls.caFile, certFile: nats.tls.certFile, keyFile: nats.tls.keyFile };
  }
  return options;
}

/** The stream's config as this service needs it (its history, replicas and subjects from config/broker.ts). */
export function streamConfig(nats: NatsConfig): Partial<StreamConfig> & { name: string } {
  return {
    name: nats.stream,
    subjects: [storedSubjects(nats.subjectPrefix)],
    max_msgs_per_subject: nats.historySize,
    max_age: nats.historyTtlMs * 1_000_000, // nanoseconds
    // A Send's idempotency key (Nats-Msg-Id) is remembered this long.
    duplicate_window: nats.duplicateWindowMs * 1_000_000,
    num_replicas: nats.replicas,
    // Replay reads by subject without a consumer per subscriber.
    allow_direct: true,
    // Every stored notification is republished, with its position and its recipient's previous
    // one, to the subject the instances holding the recipient listen on.
    republish: { src: storedSubjects(nats.subjectPrefix), dest: liveSubjects(nats.subjectPrefix) },
  };
}

/**
 * Makes the stream match the config (creating it, or updating the limits of one that exists) and
 * returns its epoch: when it was created, which changes only when it is recreated.
 */
export async function ensureStream(jsm: JetStreamManager, nats: NatsConfig): Promise<string> {
  const wanted = streamConfig(nats);
  for (let attempt = 0;; attempt++) {
    try {
      const info = await jsm.streams.info(nats.stream);
      const c = info.config;
      if (
        c.max_msgs_per_subject !== wanted.max_msgs_per_subject || c.max_age !== wanted.max_age ||
        c.num_replicas !== wanted.num_replicas || !c.allow_direct ||
        c.duplicate_window !== wanted.duplicate_window ||
        c.republish?.src !== wanted.republish?.src || c.republish?.dest !== wanted.republish?.dest
      ) {
        const updated = await jsm.streams.update(nats.stream, { ...c, ...wanted });
        return updated.created;
      }
      return info.created;
    } catch (error) {
      if (!/stream not found/i.test((error as Error).message) || attempt > 2) {
        throw new BrokerUnavailableError(
          `cannot use the JetStream stream ${JSON.stringify(nats.stream)}: ${(error as Error).message}`,
        );
      }
    }
    try {
      return (await jsm.streams.add(wanted)).created;
    } catch (error) {
      // Another thread or instance created it meanwhile: read it on the next turn.
      if (!/already in use/i.test((error as Error).message)) {
        throw new BrokerUnavailableError(
          `cannot create the JetStream stream ${JSON.stringify(nats.stream)}: ${(error as Error).message}`,
        );
      }
    }
  }
}

/** A JetStream manager on `nc`, or a one-line error when the server has no JetStream. */
export async function streamManager(nc: NatsConnection, timeoutMs: number): Promise<JetStreamManager> {
  try {
    return await jetstreamManager(nc, { timeout: timeoutMs });
  } catch (error) {
    throw new BrokerUnavailableError(
      `the NATS server has no JetStream (${(error as Error).message}): start nats-server with -js`,
    );
  }
}

/** For log lines. */
export function describeTtl(nats: NatsConfig): string {
  const ms = nats.historyTtlMs;
  if (ms === 0) return "no age limit";
  return ms % 3_600_000 === 0 ? `kept ${ms / 3_600_000}h` : `kept ${formatDuration(ms)}`;
}
