/**
 * Builds the etcd3 client with the guard rails the library lacks (each measured against a real
 * etcd when it was added; the tests that pin them are in tests/faults/): every unary call gets a
 * deadline, the per-host circuit breaker reopens quickly, and watches reconnect within about two
 * seconds.
 */
// Our HTTP/2 clients close idle connections without a GOAWAY (a Deno crash; see the module).
import "@notification-server/http2-guard";
import "@notification-server/http2-guard";
import * as grpc from "@grpc/grpc-js";
import { circuitBreaker, ConsecutiveBreaker, ExponentialBackoff, handleWhen, retry } from "cockatiel";
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdPermissionDeniedError,
  EtcdUserNotFoundError,
  GRPCResourceExhastedError,
  type IOptions,
  isRecoverableError,
} from "etcd3";
import { readFileSync } from "node:fs";
import { Backoff, sleep, untilAborted } from "@notification-server/timing";
import { formatDuration } from "@notification-server/timing";

/** TLS towards etcd. */
export interface EtcdTlsOptions {
  /** PEM file of the CA that signed etcd's certificate. */
  caFile: string;
  /** PEM client certificate, with `keyFile`, for etcd's client-certificate auth. */
  certFile?: string;
  /** PEM private key of `certFile`. */
  keyFile?: string;
  /** Name expected in etcd's certificate when it differs from the endpoint host. */
  serverName?: string;
}

/** How to reach etcd (the service's `etcd:` config section holds the same fields). */
export interface EtcdClientOptions {
  /** host:port, or http(s)://host:port. */
  endpoints: readonly string[];
  /** Bound on connecting and on every unary etcd call. */
  dialTimeoutMs: number;
  /** etcd user (with `password`) when etcd's auth is on. */
  username?: string;
  /** The user's password. */
  password?: string;
  /** TLS towards etcd; plaintext when absent. */
  tls?: EtcdTlsOptions;
  /** Told of every unary request: operation (`Range`, `Txn`, `LeaseGrant`, ...), seconds, gRPC code. */
  observe?: (operation: string, seconds: number, code: number) => void;
  /**
   * Largest message taken from etcd, in bytes. A watch delivers one revision in one message: a
   * lease revoked with 100 000 directory keys is ~9 MB, over grpc-js's 4 MiB default (etcd's Go
   * client takes 2 GiB). @default {@link DEFAULT_MAX_RESPONSE_BYTES}
   */
  maxResponseBytes?: number;
}

/** 256 MiB: a revision of ~3 million deletes of directory-sized keys. */
export const DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024;

/**
 * Watch streams carry etcd's require-leader flag (Go's `clientv3.WithRequireLeader`): a member cut
 * off from its leader then ends the stream with "no leader" instead of keeping it open and silent,
 * so watchers reconnect to a member that still hears the cluster.
 */
const requireLeader: grpc.Interceptor = (options, nextCall) =>
  new grpc.InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      metadata.set("hasleader", "true");
      next(metadata, listener);
    },
  });

/**
 * etcd3 counts RESOURCE_EXHAUSTED (a response over the message limit) as a failing host: three
 * large reads opened the breaker and locked everyone out. It says nothing about the host; readers
 * page smaller instead (readRanges in range_watch.ts halves a page that comes back too large), and a
 * watch re-reads (watchRanges).
 */
function isHostFault(error: Error): boolean {
  return isRecoverableError(error) && !(error instanceof GRPCResourceExhastedError);
}

/** An interceptor that reports each call's method name, duration and status code to `observe`. */
function timeRequests(observe: NonNullable<EtcdClientOptions["observe"]>): grpc.Interceptor {
  return (options, nextCall) => {
    const path = options.method_definition.path;
    const operation = path.slice(path.lastIndexOf("/") + 1);
    const started = performance.now();
    return new grpc.InterceptingCall(nextCall(options), {
      start(metadata, _listener, next) {
        // A partial listener: grpc-js supplies the other callbacks (spreading `listener` in
        // would make it an intercepting listener, whose onReceiveStatus gets no `next`).
        next(metadata, {
          onReceiveStatus(status, nextStatus) {
            observe(operation, (performance.now() - started) / 1000, status.code);
            nextStatus(status);
          },
        });
      },
    });
  };
}

/**
 * An etcd client: the npm package etcd3's `Etcd3`, which this library takes and returns (its
 * own API is there for anything else you need from etcd).
 */
export type EtcdClient = Etcd3;

/** Creates a client; it connects lazily, so pair it with {@link waitForEtcd}. */
export function createEtcdClient(options: EtcdClientOptions): EtcdClient {
  const secure = options.tls !== undefined;
  const timing = options.observe ? timeRequests(options.observe) : undefined;
  const hosts = options.endpoints.map((e) =>
    /^https?:\/\//.test(e) ? e : `${secure ? "https" : "http"}://${e}`
  );
  const opts: IOptions = {
    hosts,
    // etcd3 ignores its own dialTimeout and sets no deadline on unary calls; a stalled etcd would
    // otherwise hang a grant or a get for minutes.
    defaultCallOptions: (ctx) =>
      ctx.isStream
        ? (ctx.service === "Watch" ? { interceptors: [requireLeader] } : {})
        : { deadline: Date.now() + options.dialTimeoutMs, ...(timing ? { interceptors: [timing] } : {}) },
    faultHandling: {
      // Skip a failing member for half a second, not five: with one endpoint, the default breaker
      // turns a one-second etcd restart into five seconds of BrokenCircuitError.
      host: () =>
        circuitBreaker(handleWhen(isHostFault), {
          halfOpenAfter: 500,
          breaker: new ConsecutiveBreaker(3),
        }),
      global: retry(handleWhen(isHostFault), { maxAttempts: Math.max(2, options.endpoints.length) }),
      // etcd3's default grows to 30 s and resets only when etcd answers: watches came back up to
      // 10 s after an etcd restart. etcd3 wants a backoff state, not a factory: take the first step.
      watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 2_000 }).next(),
    },
    grpcOptions: {
      "grpc.keepalive_time_ms": 10_000,
      "grpc.max_receive_message_length": options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 2_000,
      ...(options.tls?.serverName ? { "grpc.ssl_target_name_override": options.tls.serverName } : {}),
    },
  };
  if (options.username) {
    opts.auth = { username: options.username, password: options.password ?? "" };
  }
  if (options.tls) {
    opts.credentials = {
      rootCertificate: readFileSync(options.tls.caFile),
      privateKey: options.tls.keyFile ? readFileSync(options.tls.keyFile) : undefined,
      certChain: options.tls.certFile ? readFileSync(options.tls.certFile) : undefined,
    };
  }
  return new Etcd3(opts);
}

/** etcd could not be reached (or refused us) within the allowed time. */
export class EtcdUnavailableError extends Error {
  /** `message` names the endpoints and the last error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "EtcdUnavailableError";
  }
}

/** Errors that retrying will not fix: bad credentials, permission, TLS trust. */
export function isPermanentEtcdError(error: unknown): boolean {
  if (
    error instanceof EtcdAuthenticationFailedError || error instanceof EtcdPermissionDeniedError ||
    error instanceof EtcdUserNotFoundError
  ) {
    return true;
  }
  // TLS failures reach us as untyped gRPC errors; their text is all there is.
  const text = String((error as Error)?.message ?? error);
  return /certificate|self[- ]signed|SSL|handshake/i.test(text);
}

/** A one-line description of an etcd error without a stack or secrets. */
export function describeEtcdError(error: unknown): string {
  const e = error as Error;
  const text = `${e?.name ?? "Error"}: ${e?.message ?? String(error)}`;
  return text.split("\n")[0];
}

/** Options for {@link retryTransient}. */
export interface RetryOptions {
  /** Give up once the next wait would end after this time (epoch ms); undefined retries forever. */
  deadline?: number;
  signal?: AbortSignal;
  /** The error to throw when giving up; `permanent` when retrying could not help (auth, TLS trust). */
  giveUp: (error: unknown, elapsedMs: number, permanent: boolean) => Error;
}

/** Epoch-ms deadline `ms` from now, or undefined (forever) for 0. */
export function deadlineAfter(ms: number): number | undefined {
  return ms > 0 ? Date.now() + ms : undefined;
}

/**
 * Runs `attempt` until it succeeds, backing off (250 ms doubling to 5 s, jittered) after errors
 * retrying can fix, until `deadline`; fails at once on errors it cannot fix. When `signal` aborts,
 * rejects at once with its reason, even with an attempt still waiting on etcd.
 */
export async function retryTransient<T>(attempt: () => Promise<T>, options: RetryOptions): Promise<T> {
  const started = Date.now();
  const backoff = new Backoff();
  for (;;) {
    options.signal?.throwIfAborted();
    try {
      return await untilAborted(attempt(), options.signal);
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason;
      const elapsed = Date.now() - started;
      if (isPermanentEtcdError(error)) throw options.giveUp(error, elapsed, true);
      const wait = backoff.next();
      if (options.deadline !== undefined && Date.now() + wait > options.deadline) {
        throw options.giveUp(error, elapsed, false);
      }
      await sleep(wait, options.signal);
    }
  }
}

/** Waits until etcd answers, retrying until `deadline` (see {@link retryTransient}). */
export async function waitForEtcd(
  client: EtcdClient,
  options: { endpoints: readonly string[]; deadline?: number; signal?: AbortSignal },
): Promise<void> {
  const where = options.endpoints.join(",");
  await retryTransient(() => client.maintenance.status(), {
    ...options,
    giveUp: (error, elapsed, permanent) =>
      new EtcdUnavailableError(
        permanent
          ? `etcd at ${where} refused us: ${describeEtcdError(error)}`
          : `Cannot reach etcd at ${where} after ${formatDuration(elapsed)}: ${describeEtcdError(error)}`,
        { cause: error },
      ),
  });
}
