/**
 * `deno task compile` → ./notification-server, then the binary run as a user would. deno compile
 * needs a `denort` runtime: from DENORT_BIN, or downloaded from dl.deno.land. Where neither is
 * possible the test is reported as ignored, with the reason printed — never a fake pass.
 */
import assert from "node:assert/strict";
import { useEtcd } from "@notification-server/registry/testing";
import { healthCheck } from "./helpers/grpc.ts";
import { readRecord, scopedClient } from "./helpers/kv.ts";
import { ServiceProcess, writeConfig } from "./helpers/service.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function unavailableReason(): Promise<string | undefined> {
  const denort = Deno.env.get("DENORT_BIN");
  if (denort) {
    try {
      Deno.statSync(denort);
      return undefined;
    } catch {
      return `DENORT_BIN=${denort} does not exist`;
    }
  }
  try {
    await Promise.race([
      Deno.resolveDns("dl.deno.land", "A"),
      new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), 3_000)),
    ]);
    return undefined;
  } catch {
    return "DENORT_BIN is not set and dl.deno.land cannot be reached to download denort";
  }
}

const reason = await unavailableReason();
if (reason) console.log(`compile test ignored: ${reason}`);

Deno.test({
  name: "the compiled ./notification-server registers, serves from 2 workers, lists and deregisters",
  ignore: reason !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const compiled = await new Deno.Command(Deno.execPath(), { args: ["task", "compile"], cwd: ROOT })
      .output();
    assert.equal(compiled.code, 0, new TextDecoder().decode(compiled.stderr));
    const binary = `${ROOT}notification-server`;
    await using etcd = await useEtcd();
    using kv = scopedClient(etcd.endpoints);
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name: "compiled",
      executable: binary,
      workers: 2, // the worker module must be inside the binary
    });
    assert.ok(await readRecord(kv, svc.key));
    assert.ok(svc.lines.some((l) => l.includes("Serving gRPC from 2 workers")), svc.lines.join("\n"));
    assert.equal(await healthCheck(svc.addr, "registration"), "SERVING", "a worker answers");
    const config = await writeConfig({ endpoints: etcd.endpoints });
    const listed = await new Deno.Command(binary, {
      args: ["discover", "compiled", "--json", "--config", config],
    }).output();
    assert.equal(listed.code, 0, new TextDecoder().decode(listed.stderr));
    assert.equal(JSON.parse(new TextDecoder().decode(listed.stdout).trim()).addr, svc.addr);
    svc.signal("SIGTERM");
    assert.equal((await svc.status).code, 0, svc.lines.join("\n"));
    assert.equal(await readRecord(kv, svc.key), undefined);
  },
});
