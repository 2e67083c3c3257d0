/**
 * The folder listing tells the layers: each folder of src/ imports only from folders below it in
 * {@link LAYERS} (and from the registry package, which imports nothing of src/). README's
 * "Architecture" draws the same order. A new import that goes upward fails here, naming it.
 */
import assert from "node:assert/strict";
import { dirname, join, normalize, relative } from "node:path";
import { fileURLToPath } from "node:url";

/** Bottom to top. `app` is src/app.ts; sub-folders count as their folder (serving/workers → serving). */
const LAYERS = [
  "packages/registry",
  "_util",
  "config",
  "transport",
  "metrics",
  "auth",
  "notification",
  "cluster",
  "serving",
  "client",
  "cli",
  "app",
] as const;

const ROOT = normalize(join(dirname(fileURLToPath(import.meta.url)), ".."));
const IMPORT = /(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g;

/** The layer of a repo-relative path, or undefined outside src/ and the package. */
function layerOf(path: string): string | undefined {
  if (path.startsWith("packages/registry/")) return "packages/registry";
  const parts = path.split("/");
  if (parts[0] !== "src") return undefined;
  return parts.length === 2 ? (parts[1] === "app.ts" ? "app" : undefined) : parts[1];
}

function* sources(dir: string): Generator<string> {
  for (const entry of Deno.readDirSync(join(ROOT, dir))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) yield* sources(path);
    else if (path.endsWith(".ts") && !path.endsWith("_test.ts")) yield path;
  }
}

Deno.test("every import in src/ goes to its own folder or a lower layer; the package imports nothing of src/", () => {
  const upward: string[] = [];
  const unknown: string[] = [];
  for (const file of [...sources("src"), ...sources("packages/registry")]) {
    const from = layerOf(file);
    if (!from) {
      unknown.push(file);
      continue;
    }
    for (const match of Deno.readTextFileSync(join(ROOT, file)).matchAll(IMPORT)) {
      const target = relative(ROOT, join(ROOT, dirname(file), match[1]));
      const to = layerOf(target);
      if (to === undefined || to === from) continue;
      const [a, b] = [LAYERS.indexOf(from as never), LAYERS.indexOf(to as never)];
      if (a < 0) unknown.push(file);
      else if (b < 0 || b > a) upward.push(`${file} (${from}) imports ${target} (${to})`);
    }
  }
  assert.deepEqual(unknown, [], "files outside every layer: add their folder to LAYERS and the README");
  assert.deepEqual(upward, [], "imports that go up a layer");
});
