/**
 * The service's serving side in this process, wired as the service wires it: YAML as a user writes
 * it → parseConfig → the app's health entries → startServing on one thread. No etcd: nothing is
 * registered and there is no cluster (the mesh alone). For tests of the gRPC surface that look
 * inside (subscriber counts, health entries) where a child process would hide them.
 */
import { silentLogger } from "../../packages/registry/src/logger.ts";
import { parseConfig } from "../../src/config/mod.ts";
import type { HealthService } from "../../src/serving/health.ts";
import { type Serving, startServing } from "../../src/serving/mod.ts";
import { serviceHealth } from "../../src/serving/services.ts";
import { MeshMode } from "../../src/mesh/mode.ts";

export interface InProcessServer extends AsyncDisposable {
  addr: string;
  port: number;
  health: HealthService;
  serving: Serving;
}

/**
 * Serves on a free loopback port; `serverYaml` adds lines under `notification-server:` (two-space
 * indented, e.g. `"  max-subscribers: 2\n"`). Disposing drains it (2 s).
 */
export async function serveInProcess(serverYaml = ""): Promise<InProcessServer> {
  const yaml = `notification-server:
  addr: "127.0.0.1:0"
  name: "notification-server"
  instance-id: "test-1"
  workers: 1
${serverYaml}etcd:
  endpoints: ["127.0.0.1:2379"]
`;
  const config = parseConfig(yaml, "in-process.yaml");
  const health = serviceHealth(config.server);
  const serving = await startServing(config, {
    health,
    mode: new MeshMode(config.server, { alone: true }),
    logger: silentLogger,
  });
  serving.setInstanceId(config.server.instanceId ?? "test-1");
  return {
    addr: `127.0.0.1:${serving.port}`,
    port: serving.port,
    health,
    serving,
    [Symbol.asyncDispose]: async () => void await serving.drain(2_000),
  };
}
