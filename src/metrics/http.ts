/** The `/metrics` endpoint on its own address, and one scrape merged from every thread. */
import client from "prom-client";
import { formatHostPort, type HostPort } from "@notification-server/registry";

/** A running `/metrics` endpoint. */
export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/** Metric values as `Registry.getMetricsAsJSON()` gives them (what workers send the main thread). */
export type MetricsJson = Awaited<ReturnType<client.Registry["getMetricsAsJSON"]>>;

/** `own` and the workers' metrics as one registry: counters, histograms and gauges summed. */
export async function mergedRegistry(own: client.Registry, workers: MetricsJson[]): Promise<client.Registry> {
  if (workers.length === 0) return own;
  return client.AggregatorRegistry.aggregate([await own.getMetricsAsJSON(), ...workers]);
}

/** Serves the registry `collect` gives as Prometheus text on `http://addr/metrics` (and nothing else). */
export function serveMetrics(
  addr: HostPort,
  collect: () => Promise<client.Registry>,
): Promise<MetricsServer> {
  return new Promise((resolve, reject) => {
    try {
      const server = Deno.serve({
        hostname: addr.host === "" ? "0.0.0.0" : addr.host,
        port: addr.port,
        onListen: ({ port }) => resolve({ port, close: () => server.shutdown() }),
        onError: () => new Response("internal error\n", { status: 500 }),
      }, async (request) => {
        if (new URL(request.url).pathname !== "/metrics") return new Response("not found\n", { status: 404 });
        const registry = await collect();
        return new Response(await registry.metrics(), { headers: { "content-type": registry.contentType } });
      });
    } catch (error) {
      reject(new Error(`Cannot serve metrics on ${formatHostPort(addr)}: ${(error as Error).message}`));
    }
  });
}
