/**
 * What recording metrics adds to one call, measured directly: the same trivial unary handler,
 * plain and wrapped by Metrics.instrument, called in a loop. Set against the server's measured CPU
 * per call (`deno task bench`), this prices recording far more precisely than comparing two noisy
 * load runs. `deno run -A bench/metrics_cost.ts [--calls N]`
 */
import { parseArgs } from "node:util";
import type * as grpc from "@grpc/grpc-js";
import { Metrics } from "../src/metrics/mod.ts";

/** Nanoseconds per call added by instrumentation: median of `rounds` interleaved runs. */
export function recordingCostNs(calls = 1_000_000, rounds = 7): { plainNs: number; instrumentedNs: number } {
  const metrics = new Metrics({ live: true });
  const reply = { status: "SERVING" };
  const plain: grpc.UntypedServiceImplementation = {
    check: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, reply),
  };
  const instrumented = metrics.instrument("grpc.health.v1.Health", plain);
  const run = (impl: grpc.UntypedServiceImplementation) => {
    const handler = impl.check as (call: unknown, callback: grpc.sendUnaryData<unknown>) => void;
    const callback = () => {};
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) handler({}, callback);
    return (performance.now() - t0) * 1e6 / calls;
  };
  run(plain);
  run(instrumented); // warm both up
  const a: number[] = [];
  const b: number[] = [];
  for (let r = 0; r < rounds; r++) {
    a.push(run(plain));
    b.push(run(instrumented));
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  return { plainNs: median(a), instrumentedNs: median(b) };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { calls: { type: "string", default: "1000000" } },
  });
  const { plainNs, instrumentedNs } = recordingCostNs(Number(values.calls));
  console.log(
    `handler call: plain ${plainNs.toFixed(0)} ns, with metrics ${instrumentedNs.toFixed(0)} ns: ` +
      `recording adds ${(instrumentedNs - plainNs).toFixed(0)} ns per call`,
  );
  Deno.exit(0);
}
