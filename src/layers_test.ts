/**
 * The folder listing tells the layers: each folder of src/ imports only from folders below it in
 * {@link LAYERS} (folders on one level import nothing of each other), and the packages under
 * packages/ only through their names (their `mod.ts`, or a named second export such as
 * `@notification-server/registry/testing`). A package imports nothing of src/ and, of the other
 * packages, only those below it in {@link PACKAGES}. The notification core imports no transport
 * library. README's "Architecture" draws the same order. A new import that goes upward, sideways,
 * or reaches into a package's files, fails here, naming it.
 */
import assert from "node:assert/strict";
import { dirname, join, normalize, relative } from "node:path";
import { fileURLToPath } from "node:url";

/** The packages, bottom to top, by folder and by name. */
const PACKAGES = [
  ["timing", "@notification-server/timing"],
  ["http2_guard", "@notification-server/http2-guard"],
  ["registry", "@notification-server/registry"],
  ["client", "@notification-server/client"],
] as const;

/**
 * src/ bottom to top; the names on one line are one level. `app` is the files at the top of src/
 * (app.ts, mode.ts, worker.ts); sub-folders count as their folder (serving/workers → serving). The
 * web edge (HTTP) is a transport of the core that the serving threads start beside gRPC. The
 * delivery modes sit above the serving threads, which know them only through serving/mode.ts.
 */
const LAYERS: readonly (readonly string[])[] = [
  ["_util"],
  ["config"],
  ["transport"],
  ["metrics"],
  ["auth"],
  ["notification"],
  ["web"],
  ["serving"],
  ["mesh", "broker"],
  ["client"],
  ["cli"],
  ["app"],
];

/** The level of a layer in {@link LAYERS}, or -1. */
function levelOf(layer: string): number {
  return LAYERS.findIndex((level) => level.includes(layer));
}

const ROOT = normalize(join(dirname(fileURLToPath(import.meta.url)), ".."));
const IMPORT = /(?:from|import)\s*\(?\s*"([^"]+)"/g;

/** The layer of a repo-relative path in src/, or undefined. */
function layerOf(path: string): string | undefined {
  const parts = path.split("/");
  if (parts[0] !== "src") return undefined;
  return parts.length === 2 ? "app" : parts[1];
}

/** The package folder a repo-relative path is in, or undefined. */
function packageOf(path: string): string | undefined {
  const parts = path.split("/");
  return parts[0] === "packages" ? parts[1] : undefined;
}

/** The package a bare specifier names (`@notification-server/x` or `@notification-server/x/sub`). */
function packageNamed(specifier: string): string | undefined {
  return PACKAGES.find(([, name]) => specifier === name || specifier.startsWith(`${name}/`))?.[0];
}

function* sources(dir: string, tests = false): Generator<string> {
  for (const entry of Deno.readDirSync(join(ROOT, dir))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) yield* sources(path, tests);
    else if (path.endsWith(".ts") && (tests || !path.endsWith("_test.ts"))) yield path;
  }
}

/** Every import of `file`: the specifier, and the repo-relative target for a relative one. */
function* importsOf(file: string): Generator<{ specifier: string; target?: string }> {
  // Not the examples in doc comments.
  const code = Deno.readTextFileSync(join(ROOT, file)).replace(/\/\*[\s\S]*?\*\//g, "");
  for (const match of code.matchAll(IMPORT)) {
    const specifier = match[1];
    const target = specifier.startsWith(".")
      ? relative(ROOT, join(ROOT, dirname(file), specifier))
      : undefined;
    yield { specifier, target };
  }
}

Deno.test("every import in src/ goes to its own folder, a lower layer, or a package by its name", () => {
  const upward: string[] = [];
  const deep: string[] = [];
  const unknown: string[] = [];
  for (const file of sources("src")) {
    const from = layerOf(file);
    if (!from || levelOf(from) < 0) {
      unknown.push(file);
      continue;
    }
    for (const { specifier, target } of importsOf(file)) {
      if (target === undefined) continue; // npm, node: or a package by name
      if (packageOf(target)) {
        deep.push(`${file} imports ${specifier}: use the package's name`);
        continue;
      }
      const to = layerOf(target);
      if (to === undefined || to === from) continue;
      const b = levelOf(to);
      if (b < 0 || b >= levelOf(from)) {
        upward.push(`${file} (${from}) imports ${target} (${to})`);
      }
    }
  }
  assert.deepEqual(unknown, [], "files outside every layer: add their folder to LAYERS and the README");
  assert.deepEqual(deep, [], "imports that reach into a package's files");
  assert.deepEqual(upward, [], "imports that go up a layer, or sideways");
});

Deno.test("the notification core imports no transport: gRPC is one adapter of it (serving/)", () => {
  const transports: string[] = [];
  for (const file of sources("src/notification")) {
    for (const { specifier } of importsOf(file)) {
      if (/grpc|connectrpc/.test(specifier)) transports.push(`${file} imports ${specifier}`);
    }
  }
  assert.deepEqual(transports, []);
});

Deno.test("a package imports only its own files and lower packages by name, tests included", () => {
  const wrong: string[] = [];
  for (const [folder] of PACKAGES) {
    const level = PACKAGES.findIndex(([f]) => f === folder);
    for (const file of sources(`packages/${folder}`, true)) {
      for (const { specifier, target } of importsOf(file)) {
        if (target !== undefined) {
          if (packageOf(target) !== folder) wrong.push(`${file} imports ${specifier}: outside its package`);
          continue;
        }
        const named = packageNamed(specifier);
        if (named === undefined) continue; // npm: or node:
        const to = PACKAGES.findIndex(([f]) => f === named);
        // Its own name only for a second export (the registry's tests use /testing).
        if (to > level || (to === level && !specifier.includes("/testing"))) {
          wrong.push(`${file} imports ${specifier}: not a lower package`);
        }
      }
    }
  }
  assert.deepEqual(wrong, []);
});
