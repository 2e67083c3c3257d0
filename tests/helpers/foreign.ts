/**
 * Clients and servers we did not write, run as real processes: Node with its own `@grpc/grpc-js`
 * (installed outside the project tree by scripts/setup.sh) and Debian's Python with grpcio and
 * protobuf.
 */

/** Where scripts/setup.sh installs `@grpc/grpc-js` for Node (outside the project tree). */
export function nodeGrpcDir(): string {
  return Deno.env.get("NODE_GRPC_DIR") ??
    `${Deno.env.get("HOME") ?? "/root"}/.cache/notification-server/node-grpc`;
}

function missing(what: string, error: unknown): Error {
  return new Error(`${what} is missing (${error}): run scripts/setup.sh, which installs it`);
}

/** Output of a finished foreign process; throws with its output when it failed. */
async function finished(child: Deno.ChildProcess, what: string): Promise<string> {
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${what} failed (${out.code}):\n${text}${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

/** Spawns `node SCRIPT ...args` with Node's own grpc-js on its module path. */
export function spawnNode(script: string, args: string[]): Deno.ChildProcess {
  const dir = nodeGrpcDir();
  try {
    Deno.statSync(`${dir}/node_modules/@grpc/grpc-js/package.json`);
  } catch (error) {
    throw missing(`@grpc/grpc-js for Node under ${dir}`, error);
  }
  try {
    return new Deno.Command("node", {
      args: [script, ...args],
      env: { NODE_PATH: `${dir}/node_modules` },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    throw missing("node", error);
  }
}

/** Runs `node SCRIPT ...args` to the end; its standard output. */
export function node(script: string, ...args: string[]): Promise<string> {
  return finished(spawnNode(script, args), `node ${script}`);
}

/** Runs Debian's python3 (where python3-grpcio and python3-protobuf live) to the end; its output. */
export function python(script: string, ...args: string[]): Promise<string> {
  let child;
  try {
    child = new Deno.Command("/usr/bin/python3", {
      args: [script, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    throw missing("Debian's python3", error);
  }
  return finished(child, `python3 ${script}`);
}

const GO_SOURCE = new URL("../interop/go_client/", import.meta.url).pathname;

let built: Promise<string> | undefined;

/** Builds tests/interop/go_client (Debian's Go packages, GOPATH mode) once per test process. */
export function goClient(): Promise<string> {
  built ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "go-client-" });
    let out;
    try {
      out = await new Deno.Command("go", {
        args: ["build", "-o", `${dir}/go_client`, "."],
        cwd: GO_SOURCE,
        env: { GOPATH: "/usr/share/gocode", GO111MODULE: "off", GOFLAGS: "", GOCACHE: `${dir}/cache` },
      }).output();
    } catch (error) {
      throw new Error(
        `No Go toolchain (${error}): run scripts/setup.sh, which installs Debian's golang packages`,
      );
    }
    if (!out.success) {
      throw new Error(
        `go build failed (scripts/setup.sh installs the packages):\n${new TextDecoder().decode(out.stderr)}`,
      );
    }
    return `${dir}/go_client`;
  })();
  return built;
}
