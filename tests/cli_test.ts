/** `main.ts discover` and `main.ts send`, run as users run them, against real instances. */
import assert from "node:assert/strict";
import { useEtcd } from "./helpers/etcd.ts";
import { eventually } from "./helpers/grpc.ts";
import { ServiceProcess, startTaskArgs, writeConfig } from "./helpers/service.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const ROOT = new URL("..", import.meta.url).pathname;

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), { args: [...startTaskArgs(), ...args], cwd: ROOT })
    .output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test(
  "discover prints live instances as a table and as JSON lines; send goes through the resolver",
  opts,
  async () => {
    await using etcd = await useEtcd();
    const name = `cli-${crypto.randomUUID().slice(0, 8)}`;
    await using a = await ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: "a" });
    await using b = await ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: "b" });
    const config = await writeConfig({ endpoints: etcd.endpoints, name });

    const json = await run(["discover", name, "--json", "--config", config]);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(json.stdout.trim().split("\n").map((l) => JSON.parse(l)), [
      { id: "a", addr: a.addr, metadata: { version: "test" } },
      { id: "b", addr: b.addr, metadata: { version: "test" } },
    ]);

    const table = await run(["discover", name, "--config", config]);
    assert.equal(table.code, 0, table.stderr);
    const rows = table.stdout.trim().split("\n");
    assert.match(rows[0], /^ID\s+ADDRESS\s+METADATA$/);
    assert.match(rows[1], new RegExp(`^a\\s+${a.addr.replace(/\./g, "\\.")}\\s+version=test$`));

    const sent = await run(["send", "--to", "alice", "--title", "hi", "--data", "k=v", "--config", config]);
    assert.equal(sent.code, 0, sent.stderr);
    assert.match(sent.stdout, /^[0-9a-f-]{36} delivered=0 instance=(a|b)\n$/);

    const bad = await run(["send", "--title", "x", "--config", config]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /send needs --to RECIPIENT/);
  },
);

Deno.test("discover --watch prints each change as it happens until interrupted", opts, async () => {
  await using etcd = await useEtcd();
  const name = `cliw-${crypto.randomUUID().slice(0, 8)}`;
  const config = await writeConfig({ endpoints: etcd.endpoints, name });
  const child = new Deno.Command(Deno.execPath(), {
    args: [...startTaskArgs(), "discover", name, "--watch", "--json", "--config", config],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const reading = (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      lines.push(...chunk.split("\n").filter((l) => l.trim() !== ""));
    }
  })();
  void child.stderr.cancel();
  try {
    await new Promise((r) => setTimeout(r, 1_000)); // the watch is open once the process has listed
    const svc = await ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: "w1" });
    await eventually(() => lines.some((l) => l.includes('"added"')), 5_000, "added line");
    svc.signal("SIGTERM");
    await svc.status;
    await eventually(() => lines.some((l) => l.includes('"removed"')), 5_000, "removed line");
    const events = lines.map((l) => JSON.parse(l)).map((e) => `${e.event}:${e.id}`);
    assert.deepEqual(events, ["added:w1", "removed:w1"]);
    child.kill("SIGINT");
    assert.equal((await child.status).code, 0);
    await reading;
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }
});
