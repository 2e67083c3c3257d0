/**
 * Prometheus metrics (prom-client) and the `/metrics` endpoint on its own address.
 *
 * Names follow Prometheus conventions: `notification_server_` prefix, `_total` counters, base
 * units (`_seconds`). `instance` is never a label: Prometheus adds it from the scrape target.
 * Recording stays off the hot path's budget: label children are looked up once and cached, and
 * gauges of live things (streams, subscribers) are read only when scraped.
 */
import type * as grpc from "@grpc/grpc-js";
import { status as grpcStatus } from "@grpc/grpc-js";
import client from "prom-client";
import { instrumentService } from "./grpc.ts";
import { registerProcessMetrics } from "./process.ts";
import { CutReporter } from "../transport/connection_cuts.ts";
import { http2Guard } from "@notification-server/http2-guard";
import type { CutReason } from "../transport/http2_inbound.ts";

const PREFIX = "notification_server_";
/** etcd calls are milliseconds on a LAN; the top buckets catch a frozen etcd (dial-timeout 5 s). */
const ETCD_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const GRPC_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];

/** Live values read at scrape time. */
export interface LiveGauges {
  subscribers(): number;
  healthWatches(): number;
  /** Serving workers (1 on the main thread). */
  workers(): number;
}

/** Which parts of {@link Metrics} a thread records. */
export interface MetricsOptions {
  /**
   * Gauges of live streams, read from what {@link Metrics.setLive} is given (0 until then); off in
   * serving workers (the main thread reads the instance's).
   */
  live?: boolean;
  /** Process metrics (memory, CPU, event loop); off in workers, which share the process. */
  process?: boolean;
  /** In a serving worker: its number and its open connections (how evenly the kernel spreads them). */
  worker?: { id: number; connections(): number };
}

/** Reports cut connections as a metric and a rate-limited WARN line (see connection_cuts.ts). */
export function cutReporter(warn: (message: string) => void, metrics?: Metrics): (reason: CutReason) => void {
  const reporter = new CutReporter(warn, (reason) => metrics?.connectionsCut.inc({ reason }));
  return (reason) => reporter.cut(reason);
}

/**
 * Everything the service records: one per process, or with workers one per thread, merged into
 * one scrape by the main thread (counters and histograms summed).
 */
export class Metrics {
  readonly registry = new client.Registry();
  #live?: LiveGauges;
  readonly registrationState: client.Gauge;
  readonly registrationsLost: client.Counter;
  readonly registrationsRestored: client.Counter;
  readonly keepaliveFailures: client.Counter;
  readonly etcdWatchDisconnects: client.Counter;
  readonly etcdWatchResyncs: client.Counter<"watch" | "reason">;
  readonly notificationsSent: client.Counter;
  readonly notificationsDelivered: client.Counter;
  readonly notificationsDropped: client.Counter;
  readonly notificationsForwarded: client.Counter;
  readonly notificationsReceived: client.Counter;
  readonly workerRestarts: client.Counter;
  readonly brokerConnected: client.Gauge;
  readonly brokerStoreSeconds: client.Histogram;
  readonly brokerReplays: client.Counter<"recovered">;
  readonly brokerHistoryGaps: client.Counter;
  readonly sendsUnavailable: client.Counter;
  readonly connectionsAccepted: client.Counter;
  readonly connectionsCut: client.Counter<"reason">;
  readonly callsRefused: client.Counter<"reason">;
  readonly httpRequests: client.Counter<"route" | "code">;
  readonly sseStreams: client.Gauge;
  readonly #etcdDuration: client.Histogram<"operation" | "code">;
  readonly #grpcCalls: client.Counter<"service" | "method" | "code">;
  readonly #grpcDuration: client.Histogram<"service" | "method">;
  readonly #etcdChildren = new Map<string, client.Histogram.Internal<"operation" | "code">>();

  constructor(options: MetricsOptions) {
    const registers = [this.registry];
    const gauge = (name: string, help: string, collect?: () => number) =>
      new client.Gauge({
        name: PREFIX + name,
        help,
        registers,
        ...(collect
          ? {
            collect(this: client.Gauge) {
              this.set(collect());
            },
          }
          : {}),
      });
    const counter = (name: string, help: string) =>
      new client.Counter({ name: PREFIX + name, help, registers });
    this.registrationState = gauge(
      "registration_state",
      "1 while this instance's record is in etcd, else 0.",
    );
    this.registrationsLost = counter("registrations_lost_total", "Times the registration was lost.");
    this.registrationsRestored = counter(
      "registrations_restored_total",
      "Times a lost registration was restored.",
    );
    this.keepaliveFailures = counter("lease_keepalive_failures_total", "Failed lease keep-alive attempts.");
    this.etcdWatchDisconnects = counter(
      "etcd_watch_disconnects_total",
      "Times the watch on this instance's own record lost its stream (it resumes by itself).",
    );
    this.etcdWatchResyncs = new client.Counter({
      name: `${PREFIX}etcd_watch_resyncs_total`,
      help: "Times the membership or directory watch lost its stream (reason disconnected) or was " +
        "cancelled by etcd (cancelled, e.g. compaction), then re-read etcd to get back in step.",
      labelNames: ["watch", "reason"],
      registers,
    });
    this.notificationsSent = counter("notifications_sent_total", "Notifications accepted by Send.");
    this.notificationsDelivered = counter(
      "notifications_delivered_total",
      "Notifications written to Subscribe streams (one per stream).",
    );
    this.notificationsDropped = counter(
      "notifications_dropped_total",
      "Notifications not delivered because their subscriber was too slow (the stream is then ended).",
    );
    this.notificationsForwarded = counter(
      "notifications_forwarded_total",
      "Notifications forwarded to peers (one per peer that holds subscribers of the recipient).",
    );
    this.notificationsReceived = counter(
      "notifications_received_total",
      "Notifications received from peers for this instance's subscribers.",
    );
    this.brokerConnected = gauge(
      "broker_connected",
      "With a broker: 1 while this thread's NATS connection is up (workers: summed over them).",
    );
    this.brokerStoreSeconds = new client.Histogram({
      name: `${PREFIX}broker_store_duration_seconds`,
      help: "With a broker: from a Send to JetStream's acknowledgement that it is stored.",
      buckets: ETCD_BUCKETS,
      registers,
    });
    this.brokerReplays = new client.Counter({
      name: `${PREFIX}broker_replays_total`,
      help: "Subscribe streams that asked to recover, by whether nothing before them was lost (recovered).",
      labelNames: ["recovered"],
      registers,
    });
    this.brokerHistoryGaps = counter(
      "broker_history_gaps_total",
      "Times a stream had to write past notifications the history (history-size, history-ttl) no longer held.",
    );
    this.sendsUnavailable = counter(
      "sends_unavailable_total",
      "Sends answered UNAVAILABLE because the broker did not acknowledge them as stored.",
    );
    if (options.live) {
      gauge("subscribers", "Live Subscribe streams on this instance.", () => this.#live?.subscribers() ?? 0);
      gauge(
        "health_watches",
        "Live Health/Watch streams on this instance.",
        () => this.#live?.healthWatches() ?? 0,
      );
      gauge("workers", "gRPC serving workers running now.", () => this.#live?.workers() ?? 0);
      gauge(
        "directory_recipients",
        "Recipients in this instance's view of the cluster's directory (held by any instance).",
        () => this.#directory(),
      );
      gauge(
        "http2_guard",
        "1 while the guard against Deno's HTTP/2 use-after-free on GOAWAY is installed (packages/http2_guard/src/http2_guard.ts), " +
          "0 when this Deno's internals did not match and any client closing its connection can crash the process.",
        () => http2Guard().installed ? 1 : 0,
      );
    }
    const worker = options.worker;
    if (worker) {
      new client.Gauge({
        name: `${PREFIX}worker_connections`,
        help: "Client connections open on each serving worker.",
        labelNames: ["worker"],
        registers,
        collect(this: client.Gauge<"worker">) {
          this.set({ worker: String(worker.id) }, worker.connections());
        },
      });
    }
    const byReason = (name: string, help: string) =>
      new client.Counter({ name: PREFIX + name, help, labelNames: ["reason"], registers });
    this.connectionsAccepted = counter(
      "connections_accepted_total",
      "Client connections accepted (handed to the gRPC server); with connections_cut_total, how often clients reconnect.",
    );
    this.connectionsCut = byReason(
      "connections_cut_total",
      "Client connections cut or refused for going over a bound (reason: header_list_size, " +
        "refused_streams, protocol, max_connections, no_request, memory).",
    );
    this.callsRefused = byReason(
      "calls_refused_total",
      "Send and Subscribe calls refused (reason: unauthenticated, permission_denied, " +
        "subscribers_per_connection, subscribers_per_identity, send_rate).",
    );
    this.httpRequests = new client.Counter({
      name: `${PREFIX}http_requests_total`,
      help:
        "Requests on the HTTP port (notification-server.http), by route (send, send_many, subscribe, events, " +
        "healthz, readyz, page, preflight, other) and HTTP status; a stream counts once, when it is answered.",
      labelNames: ["route", "code"],
      registers,
    });
    this.sseStreams = new client.Gauge({
      name: `${PREFIX}sse_streams`,
      help: "Server-Sent Events streams open on the HTTP port.",
      registers,
    });
    this.workerRestarts = counter(
      "worker_restarts_total",
      "Serving workers restarted after a crash (workers > 1).",
    );
    this.#etcdDuration = new client.Histogram({
      name: `${PREFIX}etcd_request_duration_seconds`,
      help: "etcd unary requests by operation (Range, Txn, LeaseGrant, ...) and gRPC status code.",
      labelNames: ["operation", "code"],
      buckets: ETCD_BUCKETS,
      registers,
    });
    this.#grpcCalls = new client.Counter({
      name: `${PREFIX}grpc_calls_total`,
      help: "gRPC calls handled, by service, method and status code.",
      labelNames: ["service", "method", "code"],
      registers,
    });
    this.#grpcDuration = new client.Histogram({
      name: `${PREFIX}grpc_call_duration_seconds`,
      help: "Time to answer unary calls and the lifetime of streams, by service and method.",
      labelNames: ["service", "method"],
      buckets: GRPC_BUCKETS,
      registers,
    });
    if (options.process ?? true) registerProcessMetrics(this.registry);
  }

  #directory = () => 0;

  /** Where the directory gauge reads from (the cluster's view, once there is one). */
  setDirectory(recipients: () => number): void {
    this.#directory = recipients;
  }

  /** Where the live gauges read from (the serving threads, once they are up). */
  setLive(gauges: LiveGauges): void {
    this.#live = gauges;
  }

  /** Records one etcd request (for the etcd client's `observe` hook). */
  readonly observeEtcd = (operation: string, seconds: number, code: number): void => {
    const key = `${operation}|${code}`;
    let child = this.#etcdChildren.get(key);
    if (!child) {
      this.#etcdChildren.set(
        key,
        child = this.#etcdDuration.labels(operation, grpcStatus[code] ?? String(code)),
      );
    }
    child.observe(seconds);
  };

  /**
   * `implementation` with every handler timed and counted. Unary handlers are recorded when they
   * answer, streams when they end (OK, CANCELLED by the client, or the status we ended them with).
   */
  instrument(
    service: string,
    implementation: grpc.UntypedServiceImplementation,
  ): grpc.UntypedServiceImplementation {
    return instrumentService(service, implementation, {
      calls: this.#grpcCalls,
      duration: this.#grpcDuration,
    });
  }
}

export { mergedRegistry, type MetricsJson, type MetricsServer, serveMetrics } from "./http.ts";
