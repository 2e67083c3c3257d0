/**
 * HTTP/2 header abuse, written as an attacker would send it (frames built by hand,
 * tests/helpers/h2_attack.ts), against a real service: memory stays bounded, the service stays
 * alive, SERVING and registered, and a normal client is served throughout. Before the inbound
 * limits (src/http2_inbound.ts) the HPACK bomb grew RSS by ~480 MiB per attacking connection and
 * never gave it back, and the fat open streams took ~0.5 MB each.
 */
import assert from "node:assert/strict";
import { useEtcd } from "./helpers/etcd.ts";
import { healthClient } from "./helpers/grpc.ts";
import { type HeaderAttack, headerAttack } from "./helpers/h2_attack.ts";
import { readRecord, scopedClient } from "./helpers/kv.ts";
import { rssMiB } from "./helpers/proc.ts";
import { ServiceProcess } from "./helpers/service.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
/** RSS may grow at most this far above idle during the attack. */
const MAX_GROWTH_MIB = 100;

for (const attack of ["hpack-bomb", "fat-open-streams"] as HeaderAttack[]) {
  Deno.test(
    `${attack}: RSS stays within ${MAX_GROWTH_MIB} MiB of idle and the service keeps serving`,
    opts,
    async () => {
      await using etcd = await useEtcd();
      await using svc = await ServiceProcess.start({
        endpoints: etcd.endpoints,
        instanceId: `${attack}-${crypto.randomUUID()}`,
      });
      const probe = healthClient(svc.addr);
      try {
        assert.equal(await probe.check(), "SERVING");
        const idle = rssMiB(svc.pid);
        let peak = idle;
        let attacking = true;
        const latencies: number[] = [];
        // A normal client on its own connection, every 20 ms while the attack runs.
        const probing = (async () => {
          while (attacking) {
            const started = performance.now();
            assert.equal(await probe.check(), "SERVING");
            latencies.push(performance.now() - started);
            peak = Math.max(peak, rssMiB(svc.pid));
            await new Promise((r) => setTimeout(r, 20));
          }
        })();
        // Two attackers at once, three connections each, up to 1 000 streams per connection.
        const results = await Promise.all(
          [0, 1].map(() => headerAttack(svc.port, attack, { rounds: 3, streams: 1_000 })),
        ).finally(() => (attacking = false));
        await probing;
        peak = Math.max(peak, rssMiB(svc.pid));
        const sorted = latencies.sort((a, b) => a - b);
        const p99 = sorted[Math.floor(0.99 * (sorted.length - 1))];
        console.log(
          `${attack}: ${results.map((r) => `${r.streams} streams, ${r.cut} cut`).join("; ")}; RSS idle ${
            idle.toFixed(0)
          } MiB, peak ${peak.toFixed(0)} MiB; Health p99 ${p99.toFixed(1)} ms over ${sorted.length} probes`,
        );
        assert.ok(peak - idle < MAX_GROWTH_MIB, `RSS grew ${(peak - idle).toFixed(0)} MiB above idle`);
        assert.equal(results.reduce((n, r) => n + r.cut, 0), 6, "every attacking connection was cut");
        assert.equal(svc.exited, false, svc.lines.join("\n"));
        assert.equal(await probe.check(), "SERVING");
        using kv = scopedClient(etcd.endpoints);
        assert.ok(await readRecord(kv, svc.key), "still registered");
        assert.ok(
          svc.lines.some((l) =>
            /WARN .*Cut client connections over their limits: \d+ for request headers/.test(l)
          ),
          svc.lines.join("\n"),
        );
      } finally {
        probe.close();
      }
    },
  );
}
