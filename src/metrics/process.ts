import process from "node:process";
import { monitorEventLoopDelay } from "node:perf_hooks";
import client from "prom-client";

/**
 * Process metrics under their usual names. prom-client's defaults read /proc/self, which Deno
 * allows only with --allow-all (so they reported zeros under our permission set); these come from
 * Deno's and Node's own APIs. Open file descriptors cannot be had without /proc and are left out.
 */
export function registerProcessMetrics(registry: client.Registry): void {
  const registers = [registry];
  const gauge = (name: string, help: string, read: () => number) =>
    new client.Gauge({
      name,
      help,
      registers,
      collect(this: client.Gauge) {
        this.set(read());
      },
    });
  gauge("process_resident_memory_bytes", "Resident memory size in bytes.", () => Deno.memoryUsage().rss);
  gauge("nodejs_heap_size_used_bytes", "V8 heap in use, in bytes.", () => Deno.memoryUsage().heapUsed);
  gauge("nodejs_heap_size_total_bytes", "V8 heap reserved, in bytes.", () => Deno.memoryUsage().heapTotal);
  gauge(
    "nodejs_external_memory_bytes",
    "Memory outside the V8 heap (buffers), in bytes.",
    () => Deno.memoryUsage().external,
  );
  const started = Date.now() / 1000 - performance.now() / 1000;
  gauge(
    "process_start_time_seconds",
    "Start time of the process since the Unix epoch, in seconds.",
    () => started,
  );
  let cpuSeconds = 0;
  new client.Counter({
    name: "process_cpu_seconds_total",
    help: "User and system CPU time spent, in seconds.",
    registers,
    collect(this: client.Counter) {
      const { user, system } = process.cpuUsage();
      const now = (user + system) / 1e6;
      if (now > cpuSeconds) this.inc(now - cpuSeconds);
      cpuSeconds = now;
    },
  });
  // Event-loop delay since the last scrape: what every call waited on top of its own work.
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const lag = (name: string, help: string, read: () => number) =>
    gauge(name, help, () => (Number.isFinite(read()) ? read() / 1e9 : 0));
  lag(
    "nodejs_eventloop_lag_p50_seconds",
    "Event-loop delay, median since the last scrape.",
    () => delay.percentile(50),
  );
  lag(
    "nodejs_eventloop_lag_p99_seconds",
    "Event-loop delay, 99th percentile since the last scrape.",
    () => delay.percentile(99),
  );
  lag("nodejs_eventloop_lag_max_seconds", "Event-loop delay, maximum since the last scrape.", () => {
    const max = delay.max;
    delay.reset(); // read last: the three gauges are collected in registration order
    return max;
  });
}
