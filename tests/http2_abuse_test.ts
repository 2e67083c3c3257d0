/**
 * HTTP/2 abuse, written as an attacker would send it (frames built by hand,
 * tests/helpers/h2_attack.ts), against a real service: memory stays bounded, the service stays
 * alive, SERVING and registered, and a normal client is served throughout. Before the inbound
 * limits (src/transport/http2_inbound.ts) the HPACK bomb grew RSS by ~480 MiB per attacking connection and
 * never gave it back, and the fat open streams took ~0.5 MB each.
 */
import assert from "node:assert/strict";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { healthClient } from "./helpers/grpc.ts";
import {
  type HeaderAttack,
  headerAttack,
  holdStreams,
  pipelineWithoutWindow,
  PREFACE,
  send,
  serverSettings,
  SETTING,
} from "./helpers/h2_attack.ts";
import { python } from "./helpers/foreign.ts";
import { readRecord, scopedClient } from "./helpers/kv.ts";
import { rssMiB } from "./helpers/proc.ts";
import { ServiceProcess } from "./helpers/service.ts";

const PIPELINED_CUT = new URL("./interop/h2_pipelined_cut.py", import.meta.url).pathname;
/** RSS may grow at most this far above idle during the attack. */
const MAX_GROWTH_MIB = 100;

for (const attack of ["hpack-bomb", "fat-open-streams"] as HeaderAttack[]) {
  Deno.test(
    `${attack}: RSS stays within ${MAX_GROWTH_MIB} MiB of idle and the service keeps serving`,
    NETWORK_TEST,
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

/** The service is running, answers SERVING on a new connection, and its record is in etcd. */
async function assertServing(svc: ServiceProcess, endpoints: string[]): Promise<void> {
  assert.equal(svc.exited, false, svc.lines.join("\n"));
  const probe = healthClient(svc.addr);
  try {
    assert.equal(await probe.check(), "SERVING");
  } finally {
    probe.close();
  }
  using kv = scopedClient(endpoints);
  assert.ok(await readRecord(kv, svc.key), "still registered");
}

Deno.test("the server advertises its stream and header limits in SETTINGS", NETWORK_TEST, async () => {
  await using etcd = await useEtcd();
  await using svc = await ServiceProcess.start({
    endpoints: etcd.endpoints,
    instanceId: `settings-${crypto.randomUUID()}`,
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: svc.port });
  try {
    await send(conn, PREFACE);
    const values = await serverSettings(conn);
    assert.equal(values.get(SETTING.MAX_CONCURRENT_STREAMS), 100);
    assert.equal(values.get(SETTING.MAX_HEADER_LIST_SIZE), 16_384);
  } finally {
    conn.close();
  }
});

Deno.test(
  "a cut answers every whole request sent before the offending one, then GOAWAY names the last",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `pipelined-cut-${crypto.randomUUID()}`,
    });
    // 20 Health/Checks and then one whose headers are 20 000 bytes decoded, in one write.
    const out = JSON.parse(await python(PIPELINED_CUT, svc.addr, "20", "20000"));
    const streams = Array.from({ length: 20 }, (_, i) => String(1 + 2 * i));
    assert.deepEqual(out.answered, Object.fromEntries(streams.map((id) => [id, 0])), JSON.stringify(out));
    assert.deepEqual(out.goaway, { code: 0xb, last_stream: 39 }, "ENHANCE_YOUR_CALM, last stream 39");
    // Just under the limit: nothing is cut.
    const under = JSON.parse(await python(PIPELINED_CUT, svc.addr, "2", "15000"));
    assert.deepEqual(under, { answered: { 1: 0, 3: 0, 5: 0 }, goaway: null }, JSON.stringify(under));
    await assertServing(svc, etcd.endpoints);
  },
);

Deno.test(
  "a client that pipelines calls and never opens its window is cut; memory stays bounded",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `window-${crypto.randomUUID()}`,
    });
    const idle = rssMiB(svc.pid);
    const result = await pipelineWithoutWindow(svc.port, 20_000);
    const peak = rssMiB(svc.pid);
    console.log(
      `zero-window pipelining: ${result.written} calls written, cut ${result.cut}; RSS ${
        idle.toFixed(0)
      } -> ${peak.toFixed(0)} MiB`,
    );
    assert.ok(result.cut, `the connection was not closed after ${result.written} calls`);
    await svc.waitForLine(
      /Cut client connections over their limits: .*streams over max-concurrent-streams/,
      11_000,
    );
    assert.ok(peak - idle < MAX_GROWTH_MIB, `RSS grew ${(peak - idle).toFixed(0)} MiB`);
    await assertServing(svc, etcd.endpoints);
  },
);

Deno.test(
  "connections that start no request lose their slot after handshake-timeout, whatever they sent",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `slots-${crypto.randomUUID()}`,
      serverExtra: "  max-connections: 30\n  handshake-timeout: 1s\n",
    });
    // Every slot taken: ten send one byte, ten a slow preface, ten a whole preface and SETTINGS.
    const payloads = [PREFACE.subarray(0, 1), PREFACE.subarray(0, 10), PREFACE];
    const conns = await Promise.all(Array.from({ length: 30 }, async (_, i) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: svc.port });
      await send(conn, payloads[i % 3]);
      return conn;
    }));
    try {
      const closed = await Promise.all(conns.map(async (conn) => {
        const buffer = new Uint8Array(1024);
        const deadline = setTimeout(() => conn.close(), 5_000);
        try {
          while (await conn.read(buffer) !== null);
          return true;
        } catch {
          return false;
        } finally {
          clearTimeout(deadline);
        }
      }));
      assert.deepEqual(
        closed.filter((c) => !c).length,
        0,
        "every silent connection was closed by the server",
      );
      await assertServing(svc, etcd.endpoints);
      await svc.waitForLine(
        /WARN (Worker \d+: )?Cut client connections over their limits: .*no request within handshake-timeout/,
        11_000,
      );
    } finally {
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* closed */ }
      }
    }
  },
);

Deno.test(
  "streams that fill the heap within every per-connection bound are shed before V8 runs out",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    // A small heap, so that 120 connections x 100 streams x 12 KB of headers reach it quickly.
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `heap-${crypto.randomUUID()}`,
      workers: 1,
      env: { DENO_V8_FLAGS: "--max-old-space-size=160" },
    });
    const held = await holdStreams(svc.port, { connections: 120, streams: 100 });
    try {
      await svc.waitForLine(/WARN Heap at \d+% of V8's limit/, 10_000);
      await svc.waitForLine(/WARN Heap back down to \d+% of V8's limit/, 10_000);
      console.log(`heap pressure: ${held.open()} of 120 attacking connections left open`);
      assert.ok(held.open() < 120, "connections were shed");
      assert.equal(svc.exited, false, svc.lines.join("\n"));
      // While the heap is over the mark new streams are refused; with the attacker gone, all is back.
      held.close();
      await assertServing(svc, etcd.endpoints);
    } finally {
      held.close();
    }
  },
);

Deno.test(
  "with every slot held by silent connections, a new client still gets in at once",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `evict-${crypto.randomUUID()}`,
      workers: 1,
      serverExtra: "  max-connections: 20\n  handshake-timeout: 60s\n",
    });
    const conns = await Promise.all(Array.from({ length: 20 }, async () => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: svc.port });
      await send(conn, PREFACE.subarray(0, 1));
      return conn;
    }));
    try {
      // Long before the 60 s handshake timeout: the oldest silent connection makes room.
      await assertServing(svc, etcd.endpoints);
      await svc.waitForLine(
        /WARN Cut client connections over their limits: 1 for no request within handshake-timeout/,
        5_000,
      );
    } finally {
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* closed */ }
      }
    }
  },
);
