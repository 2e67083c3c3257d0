/**
 * Cluster/Forward on the public port: a client posing as a peer got a forged notification, and then
 * raw bytes (`\xff\xff\xff garbage`), delivered to a subscriber of `victim`, acked as delivered.
 * Now a caller must prove it is an instance (a secret only etcd's users can read,
 * src/cluster/peer_secret.ts), and even an instance's payloads are checked like a Send.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { PEER_HEADER, PEER_SECRET_PREFIX, peerCredential } from "../src/cluster/peer_secret.ts";
import { services } from "../src/transport/protos.ts";
import { useEtcd } from "./helpers/etcd.ts";
import { eventually, notificationClient, send, subscriber } from "./helpers/grpc.ts";
import { scopedClient } from "./helpers/kv.ts";
import { ServiceProcess } from "./helpers/service.ts";
import { makeCertificates } from "./helpers/certs.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const encode = (n: object) => services().Notification.service.Subscribe.responseSerialize(n);

/** One Forward stream carrying `bytes` for `recipient`: how it ended and how many it says it delivered. */
function forward(
  peer: grpc.Client & Record<string, CallableFunction>,
  bytes: Uint8Array,
  credential?: string,
): Promise<{ code: number; details: string; acked: number }> {
  const metadata = new grpc.Metadata();
  if (credential) metadata.set(PEER_HEADER, credential);
  const call = peer.forward(metadata) as grpc.ClientDuplexStream<unknown, { acks: { delivered: number }[] }>;
  return new Promise((resolve) => {
    let acked = 0;
    call.on(
      "data",
      (m: { acks: { delivered: number }[] }) => (acked += m.acks.reduce((n, a) => n + a.delivered, 0)),
    );
    call.on("error", (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details, acked }));
    call.on("end", () => resolve({ code: grpc.status.OK, details: "", acked }));
    call.write({ items: [{ seq: 1, recipient: "victim", notification: bytes }] });
    call.end();
  });
}

Deno.test("only instances may Forward, and what they forward is checked like a Send", opts, async () => {
  await using etcd = await useEtcd();
  await using svc = await ServiceProcess.start({
    endpoints: etcd.endpoints,
    instanceId: `fwd-${crypto.randomUUID()}`,
  });
  // No auth section: open, as in the original design, and said once at start with the address.
  await svc.waitForLine(
    new RegExp(
      `WARN No auth configured: anyone who can reach 127\\.0\\.0\\.1:${svc.port} can send to and subscribe on any recipient`,
    ),
    5_000,
  );
  const client = notificationClient(svc.addr);
  const { Cluster } = services();
  const peer = new Cluster(svc.addr, grpc.credentials.createInsecure()) as
    & grpc.Client
    & Record<string, CallableFunction>;
  const victim = subscriber(client, "victim");
  try {
    await victim.ready;
    await eventually(
      async () => (await send(client, { recipient: "victim", title: "probe" })).delivered === 1,
      5_000,
      "subscribed",
    );
    const phishing = encode({
      id: "forged-id",
      recipient: "victim",
      title: "Your password expired: click http://evil",
    });

    // Not an instance: no credential, another secret's, an old one.
    using kv = scopedClient(etcd.endpoints);
    const secret = (await kv.get(`${PEER_SECRET_PREFIX}/notification-server`).string())!.split(" ")[0];
    assert.ok(secret, "the service created its peer secret in etcd");
    for (
      const [what, credential] of [
        ["no credential", undefined],
        ["another secret", peerCredential("not-the-secret", "notification-server", Date.now())],
        ["another service's", peerCredential(secret, "other-service", Date.now())],
        ["ten minutes old", peerCredential(secret, "notification-server", Date.now() - 600_000)],
      ] as const
    ) {
      const result = await forward(peer, phishing, credential);
      assert.equal(result.code, grpc.status.UNAUTHENTICATED, `${what}: ${JSON.stringify(result)}`);
      assert.equal(result.acked, 0, what);
    }

    // An instance's credential, payloads no Send could produce.
    const credential = peerCredential(secret, "notification-server", Date.now());
    const forged: [string, Uint8Array][] = [
      ["garbage", Buffer.from("\xff\xff\xff garbage", "latin1")],
      [
        "invalid UTF-8 title",
        Buffer.from([0x0a, 1, 0x61, 0x12, 6, ...Buffer.from("victim"), 0x1a, 2, 0xc3, 0x28]),
      ],
      ["another recipient", encode({ id: "x", recipient: "bob", title: "hi" })],
      ["a title over Send's limit", encode({ id: "x", recipient: "victim", title: "t".repeat(2_000) })],
    ];
    for (const [what, bytes] of forged) {
      const result = await forward(peer, bytes, credential);
      assert.equal(result.code, grpc.status.INVALID_ARGUMENT, `${what}: ${JSON.stringify(result)}`);
      assert.equal(result.acked, 0, what);
    }
    // And a well-formed one from a real credential is delivered: the check is not just "refuse all".
    const real = await forward(
      peer,
      encode({ id: "ok-id", recipient: "victim", title: "from a peer" }),
      credential,
    );
    assert.deepEqual([real.code, real.acked], [grpc.status.OK, 1]);

    await send(client, { recipient: "victim", title: "last" });
    await eventually(() => victim.titles.includes("last"), 5_000, "the last notification");
    assert.deepEqual(victim.titles, ["probe", "from a peer", "last"]);
  } finally {
    victim.cancel();
    peer.close();
    client.close();
  }
});

Deno.test("with forwarding off, Forward is not served (UNIMPLEMENTED)", opts, async () => {
  const dir = await Deno.makeTempDir({ prefix: "fwd-off-" });
  await makeCertificates(dir);
  await using etcd = await useEtcd();
  // TLS without a peer CA: the instance cannot dial its peers, so forwarding is off.
  await using svc = await ServiceProcess.start({
    endpoints: etcd.endpoints,
    instanceId: `fwd-off-${crypto.randomUUID()}`,
    serverExtra: `  tls:\n    cert-file: "${dir}/server.pem"\n    key-file: "${dir}/server.key"\n`,
  });
  assert.ok(svc.lines.some((l) => l.includes("Cluster forwarding is off")), svc.lines.join("\n"));
  const { Cluster } = services();
  const creds = grpc.credentials.createSsl(Buffer.from(await Deno.readFile(`${dir}/ca.pem`)));
  const peer = new Cluster(svc.addr, creds, { "grpc.ssl_target_name_override": "localhost" }) as
    & grpc.Client
    & Record<string, CallableFunction>;
  try {
    const result = await forward(peer, encode({ id: "x", recipient: "victim", title: "hi" }));
    assert.equal(result.code, grpc.status.UNIMPLEMENTED, JSON.stringify(result));
  } finally {
    peer.close();
  }
});

Deno.test("the peers' secret rotates by overlap: new and old accepted, then only new", opts, async () => {
  await using etcd = await useEtcd();
  const name = `rot-${crypto.randomUUID().slice(0, 8)}`;
  await using svc = await ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: "r" });
  const { Cluster } = services();
  const peer = new Cluster(svc.addr, grpc.credentials.createInsecure()) as
    & grpc.Client
    & Record<string, CallableFunction>;
  using kv = scopedClient(etcd.endpoints);
  const key = `${PEER_SECRET_PREFIX}/${name}`;
  const old = (await kv.get(key).string())!;
  const fresh = crypto.randomUUID().replaceAll("-", "");
  const bytes = encode({ id: "r1", recipient: "victim", title: "rotation" });
  const code = async (secret: string) =>
    (await forward(peer, bytes, peerCredential(secret, name, Date.now()))).code;
  try {
    assert.equal(await code(fresh), grpc.status.UNAUTHENTICATED, "not yet known");
    await kv.put(key).value(`${fresh} ${old}`);
    await eventually(async () => (await code(fresh)) === grpc.status.OK, 15_000, "the new secret accepted");
    assert.equal(await code(old), grpc.status.OK, "the old one still accepted meanwhile");
    await kv.put(key).value(fresh);
    await eventually(
      async () => (await code(old)) === grpc.status.UNAUTHENTICATED,
      15_000,
      "the old one retired",
    );
    assert.equal(await code(fresh), grpc.status.OK);
  } finally {
    peer.close();
  }
});
