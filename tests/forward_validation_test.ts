/**
 * Cluster/Forward on the public port: a client posing as a peer got a forged notification, and then
 * raw bytes (`\xff\xff\xff garbage`), delivered to a subscriber of `victim`, acked as delivered.
 * Now a caller must prove it is an instance (a challenge answered with a secret only etcd's users
 * can read, src/mesh/peer_secret.ts), and even an instance's payloads are checked like a Send.
 * A proof seen on the wire opens nothing, and a retired secret's streams are closed.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { CHALLENGE_HEADER, peerProof, peerSecretKey, REVOKE_GRACE_MS } from "../src/mesh/peer_secret.ts";
import { services } from "../src/transport/protos.ts";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { eventually, notificationClient, send, subscriber } from "./helpers/grpc.ts";
import { scopedClient } from "./helpers/kv.ts";
import { ServiceProcess } from "./helpers/service.ts";
import { makeCertificates } from "./helpers/certs.ts";

const encode = (n: object) => services().Notification.service.Subscribe.responseSerialize(n);

/** How a test stream answers the challenge: with the proof for `secret` (made by `prove`), or none. */
type Prove = (nonce: string) => string | undefined;

/** An instance's proof for a stream to `target`, as peer links make it. */
const proofBy = (secret: string, name: string, target: string): Prove => (nonce) =>
  peerProof(secret, name, target, nonce);

/**
 * One Forward stream carrying `bytes` for `recipient`, proven with `prove(nonce)`: how it ended,
 * how many it says it delivered, and the nonce it was challenged with.
 */
async function forward(
  peer: grpc.Client & Record<string, CallableFunction>,
  bytes: Uint8Array,
  prove: Prove = () => undefined,
): Promise<{ code: number; details: string; acked: number; nonce: string }> {
  const call = peer.forward(new grpc.Metadata()) as grpc.ClientDuplexStream<
    unknown,
    { acks: { delivered: number }[] }
  >;
  let acked = 0;
  call.on(
    "data",
    (m: { acks: { delivered: number }[] }) => (acked += m.acks.reduce((n, a) => n + a.delivered, 0)),
  );
  const ended = new Promise<{ code: number; details: string }>((resolve) => {
    call.on("error", (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details }));
    call.on("end", () => resolve({ code: grpc.status.OK, details: "" }));
  });
  const nonce = await Promise.race([
    new Promise<string>((resolve) =>
      call.on("metadata", (md: grpc.Metadata) => resolve(String(md.get(CHALLENGE_HEADER)[0] ?? "")))
    ),
    ended.then(() => ""),
  ]);
  call.write({ items: [{ seq: 1, recipient: "victim", notification: bytes }], proof: prove(nonce) ?? "" });
  call.end();
  return { ...await ended, acked, nonce };
}

Deno.test(
  "only instances may Forward, and what they forward is checked like a Send",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const self = `fwd-${crypto.randomUUID()}`;
    await using svc = await ServiceProcess.start({ endpoints: etcd.endpoints, instanceId: self });
    // No auth section: open, as in the original design, and said once at start with the address.
    await svc.waitForLine(
      new RegExp(
        `WARN No auth configured: anyone who can reach 127\\.0\\.0\\.1:${svc.port} can send to and subscribe on any recipient`,
      ),
      5_000,
    );
    const client = notificationClient(svc.addr);
    const { ClusterService } = services();
    const peer = new ClusterService(svc.addr, grpc.credentials.createInsecure()) as
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

      // Not an instance: no proof, another secret's, another service's, one made for another
      // instance, and one seen on an earlier stream (replayed: that stream's nonce, not this one's).
      using kv = scopedClient(etcd.endpoints);
      const secret = (await kv.get(peerSecretKey("notification-server")).string())!.split(" ")[0];
      assert.ok(secret, "the service created its peer secret in etcd");
      const real = proofBy(secret, "notification-server", self);
      const earlier = await forward(peer, encode({ id: "e", recipient: "victim", title: "earlier" }), real);
      assert.deepEqual([earlier.code, earlier.acked], [grpc.status.OK, 1], JSON.stringify(earlier));
      const seen = real(earlier.nonce)!;
      for (
        const [what, prove] of [
          ["no proof", () => undefined],
          ["another secret", proofBy("not-the-secret", "notification-server", self)],
          ["another service's", proofBy(secret, "other-service", self)],
          ["made for another instance", proofBy(secret, "notification-server", "another-instance")],
          ["replayed from an earlier stream", () => seen],
        ] as [string, Prove][]
      ) {
        const result = await forward(peer, phishing, prove);
        assert.equal(result.code, grpc.status.UNAUTHENTICATED, `${what}: ${JSON.stringify(result)}`);
        assert.equal(result.acked, 0, what);
      }

      // An instance's proof, payloads no Send could produce.
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
        const result = await forward(peer, bytes, real);
        assert.equal(result.code, grpc.status.INVALID_ARGUMENT, `${what}: ${JSON.stringify(result)}`);
        assert.equal(result.acked, 0, what);
      }
      // And a well-formed one from a real proof is delivered: the check is not just "refuse all".
      const ok = await forward(
        peer,
        encode({ id: "ok-id", recipient: "victim", title: "from a peer" }),
        real,
      );
      assert.deepEqual([ok.code, ok.acked], [grpc.status.OK, 1]);

      await send(client, { recipient: "victim", title: "last" });
      await eventually(() => victim.titles.includes("last"), 5_000, "the last notification");
      assert.deepEqual(victim.titles, ["probe", "earlier", "from a peer", "last"]);
    } finally {
      victim.cancel();
      peer.close();
      client.close();
    }
  },
);

Deno.test("with forwarding off, Forward is not served (UNIMPLEMENTED)", NETWORK_TEST, async () => {
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
  const { ClusterService } = services();
  const creds = grpc.credentials.createSsl(Buffer.from(await Deno.readFile(`${dir}/ca.pem`)));
  const peer = new ClusterService(svc.addr, creds, { "grpc.ssl_target_name_override": "localhost" }) as
    & grpc.Client
    & Record<string, CallableFunction>;
  try {
    const result = await forward(peer, encode({ id: "x", recipient: "victim", title: "hi" }));
    assert.equal(result.code, grpc.status.UNIMPLEMENTED, JSON.stringify(result));
  } finally {
    peer.close();
  }
});

Deno.test(
  "the peers' secret rotates: by overlap, or in one step where the old one is refused after the grace",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const name = `rot-${crypto.randomUUID().slice(0, 8)}`;
    await using svc = await ServiceProcess.start({ endpoints: etcd.endpoints, name, instanceId: "r" });
    const { ClusterService } = services();
    const peer = new ClusterService(svc.addr, grpc.credentials.createInsecure()) as
      & grpc.Client
      & Record<string, CallableFunction>;
    using kv = scopedClient(etcd.endpoints);
    const key = peerSecretKey(name);
    const old = (await kv.get(key).string())!;
    const fresh = crypto.randomUUID().replaceAll("-", "");
    const third = crypto.randomUUID().replaceAll("-", "");
    const bytes = encode({ id: "r1", recipient: "victim", title: "rotation" });
    const code = async (secret: string) => (await forward(peer, bytes, proofBy(secret, name, "r"))).code;
    try {
      assert.equal(await code(fresh), grpc.status.UNAUTHENTICATED, "not yet known");
      // Overlap: "new old", then "new".
      await kv.put(key).value(`${fresh} ${old}`);
      await eventually(async () => (await code(fresh)) === grpc.status.OK, 15_000, "the new secret accepted");
      assert.equal(await code(old), grpc.status.OK, "the old one still accepted meanwhile");
      // A stream proven with the old secret, held open across the rotation.
      const held = peer.forward(new grpc.Metadata()) as grpc.ClientDuplexStream<unknown, unknown>;
      const heldEnd = new Promise<number>((resolve) => {
        held.on("data", () => {});
        held.on("error", (e: grpc.ServiceError) => resolve(e.code));
        held.on("end", () => resolve(grpc.status.OK));
      });
      const nonce = await new Promise<string>((resolve) =>
        held.on("metadata", (md: grpc.Metadata) => resolve(String(md.get(CHALLENGE_HEADER)[0])))
      );
      held.write({ items: [], proof: peerProof(old, name, "r", nonce) });
      // One step: "third" alone. "fresh" (and "old") are accepted for the grace, then refused.
      const rotated = Date.now();
      await kv.put(key).value(third);
      await eventually(
        async () => (await code(third)) === grpc.status.OK,
        15_000,
        "the third secret accepted",
      );
      assert.equal(await code(fresh), grpc.status.OK, "the retired one within its grace");
      assert.equal(
        await heldEnd,
        grpc.status.UNAUTHENTICATED,
        "the held stream is closed when its secret retires",
      );
      const closedAfter = Date.now() - rotated;
      assert.equal(await code(fresh), grpc.status.UNAUTHENTICATED, "retired after the grace");
      assert.equal(await code(old), grpc.status.UNAUTHENTICATED);
      assert.ok(closedAfter >= REVOKE_GRACE_MS - 1_000, `closed ${closedAfter} ms after the rotation`);
      console.log(`one-step rotation: the old secret refused and its stream closed ${closedAfter} ms after`);
    } finally {
      peer.close();
    }
  },
);
