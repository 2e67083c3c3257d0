/** Real grpc-js clients for the tests, with promise wrappers. */
import * as grpc from "@grpc/grpc-js";
import { services } from "../../src/transport/protos.ts";
import { EPOCH_HEADER, RECOVERED_HEADER } from "@notification-server/client";

/** A NotificationService client. */
export type NotificationClient = grpc.Client & Record<string, CallableFunction>;

export function notificationClient(target: string, options: grpc.ChannelOptions = {}): NotificationClient {
  const { Notification } = services();
  return new Notification(
    target,
    grpc.credentials.createInsecure(),
    options,
  ) as unknown as NotificationClient;
}

/** What Send answers. */
export interface SendResult {
  id: string;
  createdAtMs: number;
  delivered: number;
  instanceId: string;
  /** With a broker: where it is stored. */
  position: number;
  epoch: string;
  stored: boolean;
  peer: string;
}

/** A SendMany result: a SendResult, or `code` and `error` when this recipient failed. */
export interface SendManyResult extends Omit<SendResult, "peer"> {
  code: number;
  error: string;
}

/** Calls SendMany; resolves with its results, rejects with the ServiceError. */
export function sendMany(
  client: NotificationClient,
  request: { recipients: string[]; title?: string; body?: string; idempotencyKey?: string },
  options: grpc.CallOptions = { deadline: Date.now() + 10_000 },
): Promise<SendManyResult[]> {
  return new Promise((resolve, reject) => {
    client.sendMany(
      { title: "", body: "", data: {}, ...request },
      new grpc.Metadata(),
      options,
      (error: grpc.ServiceError | null, value: { results: SendManyResult[] }) => {
        if (error) reject(error);
        else resolve(value.results);
      },
    );
  });
}

/** Calls Send; resolves with the response and the peer that answered, rejects with the ServiceError. */
export function send(
  client: NotificationClient,
  request: {
    recipient: string;
    title?: string;
    body?: string;
    data?: Record<string, string>;
    idempotencyKey?: string;
  },
  options: grpc.CallOptions = { deadline: Date.now() + 5_000 },
  metadata: grpc.Metadata = new grpc.Metadata(),
): Promise<SendResult> {
  return new Promise((resolve, reject) => {
    const call: grpc.ClientUnaryCall = client.send(
      { title: "", body: "", data: {}, ...request },
      metadata,
      options,
      (error: grpc.ServiceError | null, value: Omit<SendResult, "peer">) => {
        if (error) reject(error);
        else resolve({ ...value, peer: call.getPeer() });
      },
    );
  });
}

/** A Health client on one connection: `check(service)` resolves with the status or rejects. */
export function healthClient(addr: string): { check(service?: string): Promise<string>; close(): void } {
  const { Health } = services();
  const client = new Health(addr, grpc.credentials.createInsecure());
  return {
    check: (service = "") =>
      new Promise<string>((resolve, reject) => {
        client.check(
          { service },
          { deadline: Date.now() + 5_000 },
          (error: grpc.ServiceError | null, value: { status: string }) =>
            error ? reject(error) : resolve(value.status),
        );
      }),
    close: () => client.close(),
  };
}

/**
 * One Health/Check on its own connection. Prefer {@link healthClient} for several: opening and
 * closing connections in a loop is what provokes Deno's HTTP/2 aborts (denoland/deno#36788).
 */
export async function healthCheck(addr: string, service = ""): Promise<string> {
  const client = healthClient(addr);
  try {
    return await client.check(service);
  } finally {
    client.close();
  }
}

const waiting = new Set<() => void>();

/**
 * Something a test may be waiting for happened: a notification reached a {@link subscriber}, a
 * service process or a `subscribe` process printed a line. Every {@link eventually} re-checks now.
 */
export function changed(): void {
  for (const wake of [...waiting]) wake();
}

/**
 * How often {@link eventually} re-checks without an event: for what no helper announces (etcd's
 * contents, a Send's count, /metrics).
 */
const POLL_MS = 100;

/**
 * Waits until `condition` holds, checking it again on each {@link changed} and at least every
 * 100 ms; throws with `what` after `timeoutMs`.
 */
export async function eventually<T>(
  condition: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs: number,
  what: string | (() => string),
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await condition();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      last = error;
    }
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        waiting.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, Math.min(POLL_MS, deadline - Date.now())));
      waiting.add(done);
    });
  }
  const described = typeof what === "string" ? what : what();
  throw new Error(`Timed out after ${timeoutMs} ms waiting for ${described}${last ? `: ${last}` : ""}`);
}

/** A Subscribe stream that records titles and resolves `ready` on the response headers. */
export function subscriber(client: NotificationClient, recipient: string) {
  const titles: string[] = [];
  const stream = client.subscribe({ recipient }) as grpc.ClientReadableStream<{ title: string }>;
  const ready = new Promise<void>((resolve) => stream.on("metadata", () => resolve()));
  stream.on("data", (n: { title: string }) => (titles.push(n.title), changed()));
  stream.on("error", () => {});
  return { titles, ready, stream, cancel: () => stream.cancel() };
}

/** A notification as a test reads it off a stream. */
export interface Received {
  id: string;
  title: string;
  position: number;
  epoch: string;
}

/**
 * A Subscribe stream with `recover` (from `position`, 0: everything held): its notifications, and
 * its response headers' `recovered` once they come.
 */
export function recoverer(
  client: NotificationClient,
  recipient: string,
  from: { position?: number; epoch?: string; recover?: boolean } = {},
) {
  const items: Received[] = [];
  const request = {
    recipient,
    recover: from.recover ?? true,
    position: from.position ?? 0,
    epoch: from.epoch ?? "",
  };
  const stream = client.subscribe(request) as grpc.ClientReadableStream<Received>;
  const state: { recovered?: string; epoch?: string; status?: grpc.StatusObject } = {};
  const ready = new Promise<void>((resolve) =>
    stream.on("metadata", (headers: grpc.Metadata) => {
      state.recovered = headers.get(RECOVERED_HEADER)[0] as string | undefined;
      state.epoch = headers.get(EPOCH_HEADER)[0] as string | undefined;
      resolve();
      changed();
    })
  );
  stream.on("data", (n: Received) => (items.push(n), changed()));
  stream.on("status", (status: grpc.StatusObject) => ((state.status = status), changed()));
  stream.on("error", () => {});
  return { items, ready, stream, state, cancel: () => stream.cancel() };
}

/**
 * Sends to `recipient` one after another (titles n0, n1, ...) until `stop()`: what was acknowledged,
 * in order, how many were refused with UNAVAILABLE, and any other failure (none is expected: a test
 * asserts `unexpected` is empty).
 */
export function steadySends(client: NotificationClient, recipient: string, pauseMs = 5) {
  const acked: SendResult[] = [];
  const unexpected: string[] = [];
  const counts = { refused: 0 };
  let sending = true;
  const load = (async () => {
    for (let i = 0; sending; i++) {
      try {
        acked.push(await send(client, { recipient, title: `n${i}` }));
      } catch (error) {
        if ((error as grpc.ServiceError).code === grpc.status.UNAVAILABLE) counts.refused++;
        else unexpected.push(String(error));
      }
      await new Promise((r) => setTimeout(r, pauseMs));
    }
  })();
  return {
    acked,
    unexpected,
    refused: () => counts.refused,
    async stop() {
      sending = false;
      await load;
    },
  };
}
