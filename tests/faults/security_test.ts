/**
 * Security against real processes: etcd with auth (a role limited to the prefix), etcd with TLS and
 * client-certificate auth from a CA made here with openssl, and TLS on the gRPC server.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { createEtcdClient } from "../../packages/registry/src/etcd_client.ts";
import { services } from "../../src/transport/protos.ts";
import { PRIVATE_ETCD_ONLY, startEtcd } from "@notification-server/registry/testing";
import { changed, eventually } from "../helpers/grpc.ts";
import { readRecord } from "../helpers/kv.ts";
import { makeCertificates, sh } from "../helpers/certs.ts";
import { runMain, ServiceProcess, subscribeProcess, writeConfig } from "../helpers/service.ts";

Deno.test(
  "etcd auth: a user limited to the prefix registers; a wrong password fails fast in one line",
  PRIVATE_ETCD_ONLY,
  async () => {
    await using etcd = await startEtcd();
    const ctl = (...args: string[]) => sh("etcdctl", [`--endpoints=${etcd.endpoints[0]}`, ...args]);
    await ctl("user", "add", "root", "--new-user-password=rootpw");
    await ctl("user", "add", "svc", "--new-user-password=s3cret-pw");
    await ctl("role", "add", "svc-role");
    await ctl("role", "grant-permission", "svc-role", "readwrite", "/services/", "--prefix=true");
    await ctl("user", "grant-role", "svc", "svc-role");
    await ctl("auth", "enable");

    const passwordFile = await Deno.makeTempFile();
    await Deno.writeTextFile(passwordFile, "s3cret-pw\n");
    const svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      etcdExtra: `  username: "svc"\n  password-file: "${passwordFile}"\n`,
    });
    const kv = createEtcdClient({
      endpoints: etcd.endpoints,
      dialTimeoutMs: 2_000,
      username: "root",
      password: "rootpw",
    });
    try {
      assert.ok(await readRecord(kv, svc.key), "registered with auth");
      svc.signal("SIGTERM");
      assert.equal((await svc.status).code, 0, svc.lines.join("\n"));
      assert.equal(await readRecord(kv, svc.key), undefined, "deregistered (delete and revoke allowed)");
      assert.ok(!svc.lines.join("\n").includes("s3cret-pw"), "password never logged");

      await using wrong = await ServiceProcess.spawn({
        endpoints: etcd.endpoints,
        etcdExtra: `  username: "svc"\n`,
        env: { ETCD_PASSWORD: "wrong-pw" },
      });
      const t0 = Date.now();
      const status = await wrong.status;
      assert.equal(status.code, 1);
      assert.ok(Date.now() - t0 < 5_000, "not retried for the whole startup-timeout");
      const errors = wrong.lines.filter((l) => l.includes("ERROR"));
      assert.equal(errors.length, 1, wrong.lines.join("\n"));
      assert.match(errors[0], /refused us: .*authentication failed/i);
      assert.ok(!wrong.lines.join("\n").includes("wrong-pw"), "password never logged");
    } finally {
      kv.close();
      await svc[Symbol.asyncDispose]();
    }
  },
);

Deno.test(
  "etcd over TLS with client certificates, and mutual TLS on the gRPC server",
  PRIVATE_ETCD_ONLY,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "certs-" });
    await makeCertificates(dir);
    await using etcd = await startEtcd({
      tls: true,
      args: [
        `--cert-file=${dir}/server.pem`,
        `--key-file=${dir}/server.key`,
        "--client-cert-auth",
        `--trusted-ca-file=${dir}/ca.pem`,
      ],
    });
    const tls = {
      caFile: `${dir}/ca.pem`,
      certFile: `${dir}/client.pem`,
      keyFile: `${dir}/client.key`,
      serverName: "localhost",
    };
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      // 127.0.0.1 endpoint: server-name is required under Deno (see config.ts); the cert has DNS:localhost.
      etcdExtra:
        `  tls:\n    ca-file: "${tls.caFile}"\n    cert-file: "${tls.certFile}"\n    key-file: "${tls.keyFile}"\n    server-name: "localhost"\n`,
      serverExtra:
        `  tls:\n    cert-file: "${dir}/server.pem"\n    key-file: "${dir}/server.key"\n    client-ca-file: "${dir}/ca.pem"\n`,
    });
    const kv = createEtcdClient({ endpoints: etcd.endpoints, dialTimeoutMs: 2_000, tls });
    try {
      assert.ok(await readRecord(kv, svc.key), "registered over TLS");
      const { Health } = services();
      const check = (creds: grpc.ChannelCredentials) =>
        new Promise<string>((resolve, reject) => {
          // Dialing an IP with TLS under Deno needs a DNS name for SNI (the cert has DNS:localhost).
          const client = new Health(svc.addr, creds, { "grpc.ssl_target_name_override": "localhost" });
          client.check(
            { service: "" },
            { deadline: Date.now() + 3_000 },
            (e: grpc.ServiceError | null, v: { status: string }) => {
              client.close();
              if (e) reject(e);
              else resolve(v.status);
            },
          );
        });
      const ca = Buffer.from(await Deno.readFile(`${dir}/ca.pem`));
      const clientKey = Buffer.from(await Deno.readFile(`${dir}/client.key`));
      const clientCert = Buffer.from(await Deno.readFile(`${dir}/client.pem`));
      assert.equal(await check(grpc.credentials.createSsl(ca, clientKey, clientCert)), "SERVING");
      await assert.rejects(check(grpc.credentials.createSsl(ca)), "no client certificate: refused");
      await assert.rejects(check(grpc.credentials.createInsecure()));
      svc.signal("SIGTERM");
      assert.equal((await svc.status).code, 0, svc.lines.join("\n"));
      assert.equal(await readRecord(kv, svc.key), undefined);
    } finally {
      kv.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "cluster forwarding over mutual TLS: peers dial each other with the instances' own certificates",
  PRIVATE_ETCD_ONLY,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "peer-tls-" });
    await makeCertificates(dir);
    await using etcd = await startEtcd();
    const name = `tls-${crypto.randomUUID().slice(0, 6)}`;
    // client-ca-file doubles as the peers' CA; peers are dialed by IP, so the name in the
    // certificates is given (Deno refuses an IP as the TLS name).
    const serverExtra =
      `  tls:\n    cert-file: "${dir}/server.pem"\n    key-file: "${dir}/server.key"\n    client-ca-file: "${dir}/ca.pem"\n    peer-server-name: "localhost"\n`;
    await using a = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name,
      instanceId: "a",
      serverExtra,
    });
    await using b = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      name,
      instanceId: "b",
      serverExtra,
    });
    const creds = grpc.credentials.createSsl(
      Buffer.from(await Deno.readFile(`${dir}/ca.pem`)),
      Buffer.from(await Deno.readFile(`${dir}/client.key`)),
      Buffer.from(await Deno.readFile(`${dir}/client.pem`)),
    );
    const { Notification } = services();
    const options = { "grpc.ssl_target_name_override": "localhost" };
    const toA = new Notification(a.addr, creds, options);
    const toB = new Notification(b.addr, creds, options);
    try {
      assert.ok(!a.lines.some((l) => l.includes("Cluster forwarding is off")), a.lines.join("\n"));
      const stream = toB.subscribe({ recipient: "secure" }) as grpc.ClientReadableStream<{ title: string }>;
      const titles: string[] = [];
      stream.on("data", (n: { title: string }) => (titles.push(n.title), changed()));
      stream.on("error", () => {});
      await new Promise<void>((resolve) => stream.on("metadata", () => resolve()));
      const delivered = await new Promise<number>((resolve, reject) =>
        toA.send(
          { recipient: "secure", title: "over tls", body: "", data: {} },
          { deadline: Date.now() + 5_000 },
          (e: grpc.ServiceError | null, v: { delivered: number }) => (e ? reject(e) : resolve(v.delivered)),
        )
      );
      assert.equal(delivered, 1, `forwarded from a to b over TLS\n${a.lines.join("\n")}`);
      await eventually(() => titles.length === 1, 2_000, "the forwarded notification");
      assert.deepEqual(titles, ["over tls"]);
      stream.cancel();
    } finally {
      toA.close();
      toB.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "our CLI dials a TLS service over TLS: send and subscribe trust the instances' CA, plaintext fails",
  PRIVATE_ETCD_ONLY,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "cli-tls-" });
    await makeCertificates(dir);
    await using etcd = await startEtcd();
    const name = `clitls-${crypto.randomUUID().slice(0, 6)}`;
    const serverExtra =
      `  tls:\n    cert-file: "${dir}/server.pem"\n    key-file: "${dir}/server.key"\n    client-ca-file: "${dir}/ca.pem"\n    peer-server-name: "localhost"\n`;
    await using svc = await ServiceProcess.start({ endpoints: etcd.endpoints, name, serverExtra });
    const config = await writeConfig({ endpoints: etcd.endpoints, name, serverExtra });
    const sub = subscribeProcess(config, "tls-cli");
    try {
      // Sends until the subscriber's stream is ready (its ready line is not printed by the CLI).
      let sent: { code: number; stdout: string; stderr: string } | undefined;
      await eventually(
        async () => {
          sent = await runMain(["send", "--to", "tls-cli", "--title", "over tls", "--config", config]);
          return sent.code === 0 && sub.titles.length > 0;
        },
        20_000,
        "a send over TLS that reaches the TLS subscriber",
      );
      assert.match(sent!.stdout, /delivered=1 instance=/, sent!.stderr);
      assert.equal(sub.titles[0], "over tls");
      // Without a CA to trust, the CLI says so in one line instead of dialing in plaintext.
      const noCa = await writeConfig({
        endpoints: etcd.endpoints,
        name,
        serverExtra: `  tls:\n    cert-file: "${dir}/server.pem"\n    key-file: "${dir}/server.key"\n`,
      });
      const refused = await runMain(["send", "--to", "tls-cli", "--title", "x", "--config", noCa]);
      assert.equal(refused.code, 1);
      assert.match(
        refused.stderr,
        /The service serves TLS .*; to dial it, set notification-server\.tls\.peer-ca-file/,
      );
      assert.equal(refused.stderr.trim().split("\n").length, 1, refused.stderr);
    } finally {
      sub.child.kill("SIGTERM");
      await sub.child.status;
      await sub.reading;
      await Deno.remove(dir, { recursive: true });
    }
    assert.ok(svc.lines.some((l) => l.includes("gRPC server listening on")));
  },
);
