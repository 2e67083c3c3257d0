/** The one permission set in deno.json (`deno run -P`) covers everything the service reads. */
import assert from "node:assert/strict";
import { ENV_OVERRIDES } from "../src/config/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("every environment variable our code or grpc-js reads is in deno.json's permission set", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const allowed = new Set<string>(config.permissions.default.env);
  const wanted = new Set<string>(Object.keys(ENV_OVERRIDES));
  // Every Deno.env.get("NAME") in the code that `deno task start` runs.
  const files = ["main.ts", ...sourcesUnder("src"), ...sourcesUnder("packages/registry/src")];
  for (const file of files.filter((f) => f.endsWith(".ts") && !f.endsWith("_test.ts"))) {
    for (
      const m of (await Deno.readTextFile(`${ROOT}${file}`)).matchAll(/Deno\.env\.get\("([A-Za-z_]+)"\)/g)
    ) {
      wanted.add(m[1]);
    }
  }
  // What grpc-js reads from process.env (asking for one outside the set would throw).
  for (
    const name of ["GRPC_VERBOSITY", "GRPC_NODE_VERBOSITY", "GRPC_TRACE", "GRPC_NODE_TRACE", "grpc_proxy"]
  ) {
    wanted.add(name);
  }
  const missing = [...wanted].filter((name) => !allowed.has(name));
  assert.deepEqual(missing, [], `add these to deno.json permissions.default.env: ${missing.join(", ")}`);
  for (const task of ["start", "discover", "compile"]) {
    assert.match(config.tasks[task], / -P /, `deno task ${task} uses the permission set`);
  }
});

/** Every file under `dir` (relative to the repository root), recursively. */
function sourcesUnder(dir: string): string[] {
  return [...Deno.readDirSync(`${ROOT}${dir}`)].flatMap((e) =>
    e.isDirectory ? sourcesUnder(`${dir}/${e.name}`) : [`${dir}/${e.name}`]
  );
}
