/**
 * The registry and client as packages (packages/registry, packages/client and what they use): the
 * example consumer (examples/registry) is copied outside the checkout and wired the way the README
 * tells users, with `links` to the packages in its own deno.json and nothing of this repository's config, then run against a real
 * etcd and a real service: it registers, discovers itself, and receives a notification.
 */
import assert from "node:assert/strict";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { eventually, notificationClient, send } from "./helpers/grpc.ts";
import { ServiceProcess } from "./helpers/service.ts";

const ROOT = new URL("../", import.meta.url).pathname;

Deno.test(
  "a program outside the checkout uses the registry and client packages: register, watch, subscribe",
  NETWORK_TEST,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "registry-consumer-" });
    await Deno.copyFile(`${ROOT}examples/registry/main.ts`, `${dir}/main.ts`);
    const links = ["registry", "client", "timing", "http2_guard"].map((p) => `${ROOT}packages/${p}`);
    await Deno.writeTextFile(`${dir}/deno.json`, JSON.stringify({ links }));
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `consumer-${crypto.randomUUID()}`,
    });
    const recipient = `consumer-${crypto.randomUUID().slice(0, 8)}`;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "main.ts", "--etcd", etcd.endpoints[0], "--recipient", recipient],
      cwd: dir,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const lines: string[] = [];
    const reading = (async () => {
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        lines.push(...chunk.split("\n").filter((l) => l));
      }
    })();
    const errors = new Response(child.stderr).text();
    const client = notificationClient(svc.addr);
    try {
      // The first run may fetch the package's npm dependencies.
      await eventually(
        () => lines.some((l) => l.startsWith("subscribing")),
        60_000,
        "the consumer to subscribe",
      );
      await eventually(
        async () => {
          await send(client, { recipient, title: "hello from the service" });
          return lines.some((l) => l.startsWith("received"));
        },
        15_000,
        "the consumer to receive a notification",
      );
      const status = await child.status;
      await reading;
      assert.equal(status.code, 0, `${lines.join("\n")}\n${await errors}`);
      assert.match(lines[0], /^registered \/services\/example-greeter\/example-[0-9a-f]{8}$/);
      assert.match(lines[1], /^discovered example-[0-9a-f]{8} 127\.0\.0\.1:50051$/);
      assert.ok(lines.includes("received hello from the service"), lines.join("\n"));
      assert.equal(lines.at(-1), "done");
    } finally {
      client.close();
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await Deno.remove(dir, { recursive: true });
    }
  },
);
