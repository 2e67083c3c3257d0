/**
 * Hostile and unlucky conditions (issue 11), each against a real etcd and a real service process:
 * faults inside the process, closed output pipes, hang-ups, absurd config values, odd input files.
 */
import assert from "node:assert/strict";
import { useEtcd } from "./helpers/etcd.ts";
import { rawClient, readRecord } from "./helpers/kv.ts";
import { ServiceProcess } from "./helpers/service.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

for (const fault of ["throw", "reject"] as const) {
  Deno.test(`an unexpected ${fault} inside the service deregisters, then exits 1`, opts, async () => {
    await using etcd = await useEtcd();
    const kv = rawClient(etcd.endpoints);
    try {
      await using svc = await ServiceProcess.start({
        endpoints: etcd.endpoints,
        instanceId: `fault-${crypto.randomUUID()}`,
        script: ["tests/fixtures/faulty_service.ts", fault],
      });
      const key = svc.key;
      const status = await svc.status;
      assert.equal(status.code, 1, svc.lines.join("\n"));
      assert.ok(
        svc.lines.some((l) =>
          /ERROR Unexpected error: Error: injected .*; deregistering and exiting/.test(l)
        ),
        svc.lines.join("\n"),
      );
      assert.ok(svc.lines.some((l) => l.includes("Service deregistered from etcd")), svc.lines.join("\n"));
      assert.equal(await readRecord(kv, key), undefined, "no record left behind");
    } finally {
      kv.close();
    }
  });
}
