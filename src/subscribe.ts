/**
 * A subscription that outlives instances: notifications for one recipient from whichever instance
 * of the service `etcd:///<name>` resolves to, re-subscribing with backoff whenever a stream ends
 * (an instance stopping, a network fault). Used by the `subscribe` command.
 *
 * Delivery is live and at most once per stream: what is sent while no stream is open (the gap) is
 * not replayed. Each gap is reported through `onGap` when it starts and `onResumed` when it ends.
 *
 * @example
 * ```ts
 * for await (const n of subscribe({ etcd: { endpoints: ["localhost:2379"], dialTimeoutMs: 5000 },
 *   name: "notification-server", recipient: "alice" })) console.log(n.title);
 * ```
 */
import * as grpc from "@grpc/grpc-js";
import { Backoff, sleep } from "./backoff.ts";
import type { Notification } from "./notification/hub.ts";
import { services } from "./protos.ts";
import { createEtcdClient, type EtcdClientOptions } from "./registry/etcd_client.ts";
import { registerEtcdResolver, ROUND_ROBIN_SERVICE_CONFIG } from "./registry/grpc_resolver.ts";

/** Options for {@link subscribe}. */
export interface SubscribeOptions {
  etcd: EtcdClientOptions;
  /** Registration prefix. @default "/services" */
  prefix?: string;
  /** The service to follow. */
  name: string;
  recipient: string;
  signal?: AbortSignal;
  /** A stream ended: why, and how long until the next try. */
  onGap?: (gap: { reason: string; retryInMs: number }) => void;
  /** A stream is open again after a gap of `gapMs`. */
  onResumed?: (resumed: { gapMs: number }) => void;
  /** A stream is routed: a Send to any instance from now on reaches it (each (re)subscription). */
  onReady?: () => void;
}

/** Notifications for `recipient`, across instance restarts, until `signal` aborts. */
export async function* subscribe(options: SubscribeOptions): AsyncGenerator<Notification> {
  const etcd = createEtcdClient(options.etcd);
  const closeResolver = registerEtcdResolver({ ...options.etcd, prefix: options.prefix, client: etcd });
  const { Notification: Client } = services();
  const client = new Client(`etcd:///${options.name}`, grpc.credentials.createInsecure(), {
    "grpc.service_config": ROUND_ROBIN_SERVICE_CONFIG,
  });
  const signal = options.signal;
  const backoff = new Backoff({ initialMs: 100, maxMs: 5_000 });
  let gapSince = 0;
  try {
    while (!signal?.aborted) {
      const stream = client.subscribe({ recipient: options.recipient }, {
        waitForReady: true,
      }) as grpc.ClientReadableStream<Notification>;
      stream.on("metadata", () => {
        backoff.reset(); // subscribed: the next gap starts from the shortest wait again
        options.onReady?.();
      });
      const cancel = () => stream.cancel();
      signal?.addEventListener("abort", cancel);
      let ended: string | undefined;
      try {
        for await (const notification of readAll(stream, (reason) => (ended = reason))) {
          if (gapSince) {
            options.onResumed?.({ gapMs: Date.now() - gapSince });
            gapSince = 0;
          }
          backoff.reset();
          yield notification;
        }
      } finally {
        signal?.removeEventListener("abort", cancel);
        stream.cancel();
      }
      if (signal?.aborted) return;
      const retryInMs = backoff.next();
      if (!gapSince) gapSince = Date.now();
      options.onGap?.({ reason: ended ?? "stream ended", retryInMs });
      await sleep(retryInMs, signal);
    }
  } finally {
    client.close();
    closeResolver();
    etcd.close();
  }
}

/** The stream's messages as an async iterable; `onEnd` gets the status that ended it, in words. */
async function* readAll(
  stream: grpc.ClientReadableStream<Notification>,
  onEnd: (reason: string) => void,
): AsyncGenerator<Notification> {
  const queue: Notification[] = [];
  let done = false;
  let wake = () => {};
  stream.on("data", (n: Notification) => {
    queue.push(n);
    wake();
  });
  stream.on("status", (status: grpc.StatusObject) => {
    onEnd(`${grpc.status[status.code]}${status.details ? `: ${status.details}` : ""}`);
    done = true;
    wake();
  });
  stream.on("error", () => {}); // the status says it
  for (;;) {
    while (queue.length > 0) yield queue.shift()!;
    if (done) return;
    await new Promise<void>((resolve) => (wake = resolve));
  }
}
