/**
 * Large fan-out and what it does to everyone else: `sends` Sends of a `bodyBytes` body to
 * `subscribers` live streams, with a Health/Check probe on its own connection every 2 ms
 * throughout. Reports the time until every stream had every notification and the probe's
 * latencies (a fan-out that blocks the event loop shows up as a huge probe max).
 *
 * Standalone: `deno run -A bench/fanout.ts [--subscribers N] [--body-kb K] [--sends S]` starts its
 * own etcd and service process on loopback. `deno task bench` uses {@link fanOutStall}.
 */
import type * as grpc from "@grpc/grpc-js";
import { parseArgs } from "node:util";
import { startEtcd } from "@notification-server/registry/testing";
import { healthClient, type NotificationClient, notificationClient, send } from "../tests/helpers/grpc.ts";
import { ServiceProcess } from "../tests/helpers/service.ts";

/** What one fan-out run measured. */
export interface FanOutResult {
  /** From the first Send until every stream had every notification. */
  allDeliveredMs: number;
  probeP50Ms: number;
  probeP99Ms: number;
  probeMaxMs: number;
  probes: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))];

/** Subscribers held per connection: under the server's max-concurrent-streams and per-connection bounds (100). */
const SUBSCRIBERS_PER_CONNECTION = 50;

/** Enough clients, each on its own connection, for `subscribers` streams within the per-connection bounds. */
export function subscriberConnections(addr: string, subscribers: number): NotificationClient[] {
  return Array.from(
    { length: Math.max(4, Math.ceil(subscribers / SUBSCRIBERS_PER_CONNECTION)) },
    () => notificationClient(addr, { "grpc.use_local_subchannel_pool": 1 }),
  );
}

/** Runs the fan-out against the server at `addr` (which must allow `subscribers` subscribers). */
export async function fanOutStall(
  addr: string,
  options: { subscribers: number; bodyBytes: number; sends: number },
): Promise<FanOutResult> {
  const { subscribers, bodyBytes, sends } = options;
  // Subscribers on several connections, as many clients would be; the probe has its own.
  const clients = subscriberConnections(addr, subscribers);
  const streams: grpc.ClientReadableStream<unknown>[] = [];
  let received = 0;
  for (let i = 0; i < subscribers; i++) {
    const s = clients[i % clients.length].subscribe({ recipient: "fan" }) as grpc.ClientReadableStream<
      unknown
    >;
    s.on("data", () => received++);
    s.on("error", () => {});
    streams.push(s);
  }
  let delivered = 0;
  for (;;) {
    const probe = await send(clients[0], { recipient: "fan", title: "count" });
    delivered += probe.delivered;
    if (probe.delivered === subscribers) break;
    await sleep(20);
  }
  while (received < delivered) await sleep(5);
  received = 0;

  const health = healthClient(addr);
  await health.check();
  const latencies: number[] = [];
  let probing = true;
  const probeLoop = (async () => {
    while (probing) {
      const t = performance.now();
      await health.check();
      latencies.push(performance.now() - t);
      await sleep(2);
    }
  })();
  await sleep(50);
  const body = "x".repeat(bodyBytes);
  const t0 = performance.now();
  await Promise.all(
    Array.from(
      { length: sends },
      () => send(clients[0], { recipient: "fan", title: "big", body }, { deadline: Date.now() + 60_000 }),
    ),
  );
  while (received < subscribers * sends) await sleep(1);
  const allDeliveredMs = performance.now() - t0;
  probing = false;
  await probeLoop;
  health.close();
  for (const s of streams) s.cancel();
  for (const c of clients) c.close();
  return {
    allDeliveredMs,
    probeP50Ms: pct(latencies, 0.5),
    probeP99Ms: pct(latencies, 0.99),
    probeMaxMs: Math.max(...latencies),
    probes: latencies.length,
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      subscribers: { type: "string", default: "1000" },
      "body-kb": { type: "string", default: "60" },
      sends: { type: "string", default: "4" },
    },
  });
  const subscribers = Number(values.subscribers);
  await using etcd = await startEtcd();
  await using svc = await ServiceProcess.start({
    endpoints: etcd.endpoints,
    maxSubscribers: subscribers + 10,
    workers: 1,
  });
  const r = await fanOutStall(svc.addr, {
    subscribers,
    bodyBytes: Number(values["body-kb"]) * 1024,
    sends: Number(values.sends),
  });
  console.log(
    `fan-out ${values.sends} x ${values["body-kb"]} KB -> ${subscribers} subscribers: all delivered in ` +
      `${r.allDeliveredMs.toFixed(0)} ms; Health/Check meanwhile p50 ${r.probeP50Ms.toFixed(1)} ms, ` +
      `p99 ${r.probeP99Ms.toFixed(1)} ms, max ${r.probeMaxMs.toFixed(1)} ms (${r.probes} probes)`,
  );
  Deno.exit(0);
}
