/**
 * A forwarded notification is checked like a Send before it reaches a subscriber: a client posing
 * as a peer on the public port got raw bytes (`\xff\xff\xff garbage`) delivered to a subscriber of
 * `victim`, acked as delivered. (Who may call Forward at all is the authentication issue; this
 * test pins only that no Send could have produced what subscribers receive.)
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { services } from "../src/protos.ts";
import { useEtcd } from "./helpers/etcd.ts";
import { eventually, notificationClient, send, subscriber } from "./helpers/grpc.ts";
import { ServiceProcess } from "./helpers/service.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test(
  "forged Forward payloads that no Send could produce are refused and never delivered",
  opts,
  async () => {
    await using etcd = await useEtcd();
    await using svc = await ServiceProcess.start({
      endpoints: etcd.endpoints,
      instanceId: `fwd-${crypto.randomUUID()}`,
    });
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
      const encode = (n: object) => services().Notification.service.Subscribe.responseSerialize(n);
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
        const call = peer.forward() as grpc.ClientDuplexStream<unknown, { acks: { delivered: number }[] }>;
        const outcome = new Promise<{ code: number; details: string; acked: number }>((resolve) => {
          let acked = 0;
          call.on(
            "data",
            (m: { acks: { delivered: number }[] }) => (acked += m.acks.reduce((n, a) => n + a.delivered, 0)),
          );
          call.on("error", (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details, acked }));
          call.on("end", () => resolve({ code: grpc.status.OK, details: "", acked }));
        });
        call.write({ items: [{ seq: 1, recipient: "victim", notification: bytes }] });
        call.end();
        const result = await outcome;
        assert.equal(result.code, grpc.status.INVALID_ARGUMENT, `${what}: ${JSON.stringify(result)}`);
        assert.equal(result.acked, 0, what);
      }
      // Only the probe reached the subscriber.
      await send(client, { recipient: "victim", title: "last" });
      await eventually(() => victim.titles.includes("last"), 5_000, "the last notification");
      assert.deepEqual(victim.titles, ["probe", "last"]);
    } finally {
      victim.cancel();
      peer.close();
      client.close();
    }
  },
);
