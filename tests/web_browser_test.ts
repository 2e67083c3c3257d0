/**
 * The web edge in a real browser: Debian's headless Chromium (tests/helpers/browser.ts). A page on
 * another origin follows a recipient with EventSource and with connect-web's Connect and gRPC-Web
 * transports; a page on an origin the config does not list is refused by the browser itself; the
 * built-in page sends and receives; and with a broker, the built-in page's instance is stopped and
 * started again while Sends go on, and the page shows every notification once, in order.
 */
import assert from "node:assert/strict";
import { freePort, NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { Browser } from "./helpers/browser.ts";
import { serveInProcess } from "./helpers/in_process.ts";
import { notificationClient, send } from "./helpers/grpc.ts";
import { brokerYaml, startNats } from "./helpers/nats.ts";
import { ServiceProcess, writeConfig } from "./helpers/service.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** tests/fixtures/web_client.ts bundled for the browser. */
async function bundledClient(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "web-client-" });
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "-q", "--platform", "browser", "tests/fixtures/web_client.ts", "-o", `${dir}/client.js`],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  const code = await Deno.readTextFile(`${dir}/client.js`);
  await Deno.remove(dir, { recursive: true });
  return code;
}

/** A site of its own (another origin than the service's): a blank page and the bundled client. */
function serveSite(client: string): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    if (new URL(request.url).pathname === "/client.js") {
      return new Response(client, { headers: { "content-type": "text/javascript" } });
    }
    return new Response('<!doctype html><title>site</title><script src="/client.js"></script>', {
      headers: { "content-type": "text/html" },
    });
  });
}

Deno.test(
  "a page on another origin follows with EventSource, Connect and gRPC-Web; an unlisted origin is refused by the browser",
  NETWORK_TEST,
  async () => {
    const site = serveSite(await bundledClient());
    const origin = `http://127.0.0.1:${site.addr.port}`;
    try {
      await using server = await serveInProcess(
        `  http: { addr: "127.0.0.1:0", cors: { allowed-origins: ["${origin}"] } }\n`,
      );
      const service = `http://127.0.0.1:${server.serving.httpPort}`;
      await using browser = await Browser.start();
      await browser.open(`${origin}/`);
      await browser.evaluate(`(async () => {
        const { createClient, createConnectTransport, createGrpcWebTransport, NotificationService } = notifications;
        window.got = [];
        window.source = new EventSource("${service}/v1/recipients/alice/events");
        source.onmessage = (event) => got.push("sse:" + JSON.parse(event.data).title);
        await new Promise((resolve, reject) => { source.onopen = resolve; source.onerror = reject; });
        window.clients = {
          connect: createClient(NotificationService, createConnectTransport({ baseUrl: "${service}" })),
          grpcweb: createClient(NotificationService, createGrpcWebTransport({ baseUrl: "${service}" })),
        };
        for (const [name, client] of Object.entries(clients)) {
          (async () => {
            for await (const n of client.subscribe({ recipient: "alice" })) got.push(name + ":" + n.title);
          })().catch((error) => got.push(name + " failed: " + error.message));
        }
      })()`);
      // Connect streams send their headers with the first message: probe until all three have one.
      await browser.until(
        `(async () => {
          await clients.connect.send({ recipient: "alice", title: "probe" });
          await new Promise((r) => setTimeout(r, 100));
          return ["sse:", "connect:", "grpcweb:"].every((p) => got.some((g) => g.startsWith(p)));
        })()`,
        10_000,
        "all three streams",
      );
      const receipt = await browser.evaluate<{ delivered: number; recovered: string }>(`(async () => {
        const r = await clients.grpcweb.send({ recipient: "alice", title: "final" });
        return { delivered: r.delivered };
      })()`);
      assert.equal(receipt.delivered, 3, "the SSE, Connect and gRPC-Web streams");
      const got = await browser.until<string[]>(
        `got.filter((g) => g.endsWith(":final")).length === 3 && got`,
        5_000,
        "final on every stream",
      );
      assert.deepEqual(got.filter((g) => !g.endsWith(":probe")).sort(), [
        "connect:final",
        "grpcweb:final",
        "sse:final",
      ]);
      assert.ok(!got.some((g) => g.includes("failed")), got.join(", "));

      // The same site under another name is another origin, not listed: the browser refuses.
      await browser.open(`http://localhost:${site.addr.port}/`);
      const refused = await browser.evaluate<{ fetch: string; sse: number }>(`(async () => {
        let fetchOutcome;
        try {
          await fetch("${service}/notification.v1.NotificationService/Send", {
            method: "POST", headers: { "content-type": "application/json" }, body: '{"recipient":"alice","title":"x"}',
          });
          fetchOutcome = "allowed";
        } catch (error) {
          fetchOutcome = error.name;
        }
        const source = new EventSource("${service}/v1/recipients/alice/events");
        const sse = await new Promise((resolve) => { source.onopen = () => resolve(-1); source.onerror = () => resolve(source.readyState); });
        source.close();
        return { fetch: fetchOutcome, sse };
      })()`);
      assert.deepEqual(refused, { fetch: "TypeError", sse: 2 }, "fetch fails, EventSource is CLOSED");
    } finally {
      await site.shutdown();
    }
  },
);

Deno.test("the built-in page follows a recipient and sends to it", NETWORK_TEST, async () => {
  await using server = await serveInProcess('  http: { addr: "127.0.0.1:0" }\n');
  await using browser = await Browser.start();
  await browser.open(`http://127.0.0.1:${server.serving.httpPort}/`);
  await browser.evaluate(
    `document.getElementById("recipient").value = "page-user"; document.getElementById("follow").click()`,
  );
  await browser.until(
    `document.getElementById("state").textContent === "following page-user"`,
    5_000,
    "following",
  );
  await browser.evaluate(`document.getElementById("send").click()`);
  const items = await browser.until<string[]>(
    `document.querySelectorAll("#log li").length > 0 && [...document.querySelectorAll("#log li")].map((li) => li.textContent)`,
    5_000,
    "the notification on the page",
  );
  assert.deepEqual(items, ["hello: from the built-in page"]);
  assert.equal(
    await browser.until(`document.getElementById("sent").textContent`, 5_000, "the Send's answer"),
    "sent (1 delivered)",
  );
});

Deno.test(
  "with a broker, the page's instance restarts while Sends go on: every notification once, in order",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    await using nats = await startNats();
    const httpPort = await freePort();
    const name = `web-restart-${crypto.randomUUID().slice(0, 8)}`;
    const broker = brokerYaml(nats.servers);
    const pageOptions = {
      endpoints: etcd.endpoints,
      name,
      instanceId: "page-instance",
      workers: 1,
      serverExtra: `${broker}  http: { addr: "127.0.0.1:${httpPort}", sse-retry: 200ms }\n`,
    };
    const pageConfig = await writeConfig(pageOptions);
    let page = await ServiceProcess.spawn(pageOptions, pageConfig);
    await using sender = await ServiceProcess.start({ endpoints: etcd.endpoints, name, serverExtra: broker });
    await page.waitForLine(/Service registered to etcd/, 20_000);
    const client = notificationClient(sender.addr);
    await using browser = await Browser.start();
    try {
      await browser.open(`http://127.0.0.1:${httpPort}/`);
      await browser.evaluate(
        `document.getElementById("recipient").value = "restarting"; document.getElementById("follow").click()`,
      );
      await browser.until(
        `document.getElementById("state").textContent === "following restarting"`,
        5_000,
        "following",
      );
      const titles = () =>
        `[...document.querySelectorAll("#log li")].map((li) => li.textContent.split(":")[0])`;
      const sent: string[] = [];
      let sending = true;
      const sends = (async () => {
        for (let i = 0; sending; i++) {
          await send(client, { recipient: "restarting", title: `n${i}` });
          sent.push(`n${i}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      await browser.until(`${titles()}.length >= 10`, 10_000, "ten before the restart");
      page.signal("SIGTERM");
      assert.equal((await page.status).code, 0);
      await page[Symbol.asyncDispose]();
      const before = sent.length;
      page = await ServiceProcess.spawn(pageOptions, pageConfig);
      await page.waitForLine(/Service registered to etcd/, 20_000);
      assert.ok(sent.length > before, "Sends went on while the page's instance was down");
      await browser.until(`${titles()}.length >= ${before + 10}`, 15_000, "ten more after the restart");
      sending = false;
      await sends;
      const shown = await browser.until<string[]>(
        `${titles()}.length >= ${sent.length} && ${titles()}`,
        10_000,
        `all ${sent.length} on the page`,
      );
      assert.deepEqual(shown, sent, "every notification once, in order");
    } finally {
      client.close();
      await page[Symbol.asyncDispose]();
    }
  },
);
