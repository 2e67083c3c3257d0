/**
 * Hostile and unlucky conditions, each against a real etcd and a real service process:
 * faults inside the process, closed output pipes, hang-ups, absurd config values, odd input files.
 */
import assert from "node:assert/strict";
import { NETWORK_TEST, PRIVATE_ETCD_ONLY, startEtcd, useEtcd } from "@notification-server/registry/testing";
import { eventually } from "./helpers/grpc.ts";
import { readRecord, scopedClient } from "./helpers/kv.ts";
import { assertCleanStop, ServiceProcess, startTaskArgs, writeConfig } from "./helpers/service.ts";

for (const fault of ["throw", "reject"] as const) {
  Deno.test(`an unexpected ${fault} inside the service deregisters, then exits 1`, NETWORK_TEST, async () => {
    await using etcd = await useEtcd();
    using kv = scopedClient(etcd.endpoints);
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `fault-${crypto.randomUUID()}`,
      script: ["tests/fixtures/faulty_service.ts", fault],
    });
    const text = await assertCleanStop(svc, kv, { signal: null, code: 1 });
    assert.match(text, /ERROR Unexpected error: Error: injected .*; deregistering and exiting/);
  });
}

Deno.test(
  "a closed output pipe does not kill the service: it repairs, then deregisters on SIGTERM",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    using kv = scopedClient(etcd.endpoints);
    const id = `pipe-${crypto.randomUUID()}`;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        ...startTaskArgs(),
        "--config",
        await writeConfig({ endpoints: etcd.endpoints, instanceId: id }),
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
      let seen = "";
      while (!seen.includes("gRPC server listening on")) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`exited early:\n${seen}`);
        seen += value;
      }
      await reader.cancel(); // like `| head -3` exiting: every later write to stderr fails with EPIPE
      const key = `/services/notification-server/${id}`;
      // An outside delete makes the service log a warning while it repairs the record.
      await kv.delete().key(key).exec();
      await eventually(() => readRecord(kv, key), 5_000, "record written back with stderr closed");
      child.kill("SIGTERM");
      assert.equal((await child.status).code, 0);
      assert.equal(await readRecord(kv, key), undefined, "deregistered");
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
    }
  },
);

Deno.test(
  "SIGHUP (a closed SSH session) stops the service gracefully: deregistered, exit 0",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    using kv = scopedClient(etcd.endpoints);
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `hup-${crypto.randomUUID()}`,
    });
    await assertCleanStop(svc, kv, { signal: "SIGHUP" });
  },
);

Deno.test(
  "etcd frozen: SIGTERM during start-up ends at once, and SIGTERM when registered is bounded by dial-timeout",
  PRIVATE_ETCD_ONLY,
  async () => {
    await using etcd = await startEtcd();
    // Start-up: etcd answers nothing (frozen, connections accepted); the stop must not wait on it.
    etcd.signal("SIGSTOP");
    {
      await using starting = await ServiceProcess.spawn({ endpoints: etcd.endpoints, startupTimeout: "30s" });
      // In start-up (its stop signals handled from this line on), then waiting on etcd a while. A
      // fixed sleep was not enough on a fresh clone, whose first run loads slower: SIGTERM came
      // before the process had started, and killed it (exit 143).
      await starting.waitForLine(/Using config file/, 30_000);
      await new Promise((r) => setTimeout(r, 500));
      const t0 = Date.now();
      starting.signal("SIGTERM");
      const status = await starting.status;
      const took = Date.now() - t0;
      console.log(`SIGTERM during start-up, etcd frozen -> exit in ${took} ms (dial-timeout 2s)`);
      assert.equal(status.code, 0, starting.lines.join("\n"));
      assert.ok(starting.lines.some((l) => l.includes("Stopped during start-up")), starting.lines.join("\n"));
      assert.ok(took < 2_000, `exited in ${took} ms, within one dial-timeout`);
    }
    etcd.signal("SIGCONT");
    // Registered, then etcd freezes: deregistration gets one dial-timeout (2 s) in all.
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      drainDelay: "0s",
      shutdownTimeout: "1s",
    });
    etcd.signal("SIGSTOP");
    const t0 = Date.now();
    svc.signal("SIGTERM");
    const status = await svc.status;
    const took = Date.now() - t0;
    etcd.signal("SIGCONT");
    console.log(`SIGTERM with etcd frozen -> exit in ${took} ms (dial-timeout 2s + 0.2 s for watches)`);
    assert.equal(status.code, 0, svc.lines.join("\n"));
    assert.ok(
      svc.lines.some((l) => l.includes("Service not deregistered (etcd unreachable)")),
      svc.lines.join("\n"),
    );
    // No call to drain, so none of shutdown-timeout is spent: dial-timeout for the deregistration,
    // then at most 0.2 s for the cluster's watches (a frozen etcd never confirms their cancels).
    assert.ok(took < 2_000 + 200 + 600, `exit in ${took} ms is within dial-timeout + 0.2 s`);
  },
);

for (const workers of [1, 2]) {
  Deno.test(
    `a port already in use (workers: ${workers}): one clear line, exit 1, nothing registered`,
    NETWORK_TEST,
    async () => {
      await using etcd = await useEtcd();
      using kv = scopedClient(etcd.endpoints);
      const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      try {
        const addr = `127.0.0.1:${(taken.addr as Deno.NetAddr).port}`;
        const id = `busy-${crypto.randomUUID()}`;
        await using svc = await ServiceProcess.spawn({
          endpoints: etcd.endpoints,
          addr,
          instanceId: id,
          workers,
        });
        assert.equal((await svc.status).code, 1);
        const after = svc.lines.filter((l) => !l.includes("Using config file"));
        assert.deepEqual(
          after.map((l) => l.replace(/^\S+ \S+ /, "")),
          [`ERROR Cannot bind gRPC server to ${addr}: address already in use (another process listens there)`],
        );
        assert.equal(await readRecord(kv, `/services/notification-server/${id}`), undefined);
      } finally {
        taken.close();
      }
    },
  );
}
