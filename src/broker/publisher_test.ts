import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { NETWORK_TEST } from "@notification-server/registry/testing";
import { startNats } from "../../tests/helpers/nats.ts";
import { Publisher, PublishError } from "./publisher.ts";

Deno.test(
  "publishes are acknowledged with their positions, a repeated id once, and what no stream takes or answers is refused",
  NETWORK_TEST,
  async () => {
    await using nats = await startNats();
    const nc = await connect({ servers: nats.servers, noAsyncTraces: true });
    try {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: "P", subjects: ["p.>"], duplicate_window: 60_000_000_000 });
      const publisher = new Publisher(nc, 500);
      const body = new Uint8Array([1, 2, 3]);
      // Many in one turn: each its own acknowledgement, in order.
      const acks = await Promise.all(
        Array.from({ length: 100 }, (_, i) => publisher.publish(`p.${i % 3}`, body)),
      );
      assert.deepEqual(acks.map((a) => a.seq), Array.from({ length: 100 }, (_, i) => i + 1));
      assert.ok(acks.every((a) => a.stream === "P" && !a.duplicate));
      const first = await publisher.publish("p.k", body, "key-1");
      const again = await publisher.publish("p.k", body, "key-1");
      assert.deepEqual([again.seq, again.duplicate], [first.seq, true]);
      assert.equal((await jsm.streams.info("P")).state.messages, 101);
      // No stream takes the subject: NATS answers at once that nobody listens.
      await assert.rejects(publisher.publish("elsewhere.x", body), (e: Error) => {
        assert.ok(e instanceof PublishError && /no responders/.test(e.message), e.message);
        return true;
      });
      // Someone listens but never acknowledges: refused after the timeout.
      nc.subscribe("silent.x", { callback: () => {} });
      await nc.flush();
      const started = performance.now();
      await assert.rejects(publisher.publish("silent.x", body), /no acknowledgement within 500 ms/);
      assert.ok(performance.now() - started >= 450);
      // Abandoned ones are answered at once; the publisher goes on.
      const pending = publisher.publish("silent.x", body);
      publisher.abandon("the connection was lost");
      await assert.rejects(pending, /the connection was lost/);
      assert.equal((await publisher.publish("p.0", body)).seq, 102);
    } finally {
      await nc.close();
    }
  },
);
