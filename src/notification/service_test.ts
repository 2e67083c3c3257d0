/**
 * The core without any transport and without a mode: Send and Subscribe of a caller and a request,
 * over an in-memory delivery, written to an in-memory output. What a second transport (the HTTP edge)
 * relies on.
 */
import assert from "node:assert/strict";
import { LocalLimit } from "../_util/limits.ts";
import { Status } from "../_util/status.ts";
import { decodeNotification } from "./codec.ts";
import type { Delivery, Sink } from "./delivery.ts";
import { type Failure, NotificationCore, type Receipt, type SubscriberOutput } from "./service.ts";

const CALLER = { peer: "127.0.0.1:5000" };

/** Live delivery within this process: each Send written to the recipient's open sinks. */
function memoryDelivery(): Delivery {
  const sinks = new Map<string, Set<Sink>>();
  return {
    positions: false,
    send(recipient, bytes) {
      let delivered = 0;
      for (const sink of sinks.get(recipient) ?? []) if (sink.write(bytes)) delivered++;
      return Promise.resolve({ delivered, position: 0, epoch: "", stored: false });
    },
    open(recipient, sink) {
      if (!sinks.has(recipient)) sinks.set(recipient, new Set());
      sinks.get(recipient)!.add(sink);
      sink.ready({});
      return () => void sinks.get(recipient)?.delete(sink);
    },
  };
}

/** An output that keeps what it is given; `reads` says whether the client takes what is written. */
function memoryOutput(reads = true) {
  const written: Uint8Array[] = [];
  const ends: (() => void)[] = [];
  const state = {
    headers: undefined as Record<string, string> | undefined,
    failure: undefined as Failure | undefined,
    ended: false,
    reset: false,
  };
  const finish = () => {
    for (const end of ends.splice(0)) end();
  };
  const output: SubscriberOutput = {
    get gone() {
      return state.ended || state.failure !== undefined;
    },
    onEnd: (listener) => void ends.push(listener),
    start: (headers) => void (state.headers = headers),
    write(bytes, taken) {
      written.push(bytes);
      if (reads) taken();
    },
    fail(failure) {
      state.failure = failure;
      finish();
    },
    end() {
      state.ended = true;
      finish();
    },
    reset: () => void (state.reset = true),
  };
  return { output, written, state };
}

function core(options: { queue?: { messages: number; bytes: number } } = {}) {
  return new NotificationCore({
    delivery: memoryDelivery(),
    instanceId: () => "test",
    subscribers: new LocalLimit(2),
    subscriberQueue: options.queue,
  });
}

const isFailure = (answer: Receipt | Failure): answer is Failure => "code" in answer;

Deno.test("the core answers a Send with a receipt, or a failure naming the problem", async () => {
  const notifications = core();
  const bad = await notifications.send(CALLER, { recipient: "", title: "t", body: "", data: {} });
  assert.ok(isFailure(bad));
  assert.deepEqual(bad, { code: Status.INVALID_ARGUMENT, details: "recipient is required" });
  const alice = memoryOutput();
  await notifications.subscribe(CALLER, { recipient: "alice" }, alice.output);
  const sent = await notifications.send(CALLER, { recipient: "alice", title: "hi", body: "", data: {} });
  assert.ok(!isFailure(sent));
  assert.equal(sent.delivered, 1);
  assert.equal(sent.instanceId, "test");
  assert.deepEqual(alice.state.headers, {}, "the headers go before the first notification");
  const received = decodeNotification(alice.written[0]);
  assert.ok(typeof received !== "string");
  assert.equal(received.id, sent.id);
  assert.equal(received.title, "hi");
});

Deno.test("the core's Subscribe refuses in its order, and counts its streams", async () => {
  const notifications = core();
  const invalid = memoryOutput();
  await notifications.subscribe(CALLER, { recipient: "a\u0000b" }, invalid.output);
  assert.equal(invalid.state.failure?.code, Status.INVALID_ARGUMENT);
  const recovering = memoryOutput();
  await notifications.subscribe(CALLER, { recipient: "a", recover: true }, recovering.output);
  assert.equal(recovering.state.failure?.code, Status.FAILED_PRECONDITION, "the mesh keeps no positions");
  const [one, two, three] = [memoryOutput(), memoryOutput(), memoryOutput()];
  await notifications.subscribe(CALLER, { recipient: "a" }, one.output);
  await notifications.subscribe(CALLER, { recipient: "b" }, two.output);
  await notifications.subscribe(CALLER, { recipient: "c" }, three.output);
  assert.equal(three.state.failure?.code, Status.RESOURCE_EXHAUSTED, "max-subscribers is 2 here");
  assert.equal(notifications.subscribers, 2);
  notifications.endSubscriptions();
  assert.ok(one.state.ended && two.state.ended, "draining ends every stream with OK");
  const draining = core();
  draining.endSubscriptions();
  const late = memoryOutput();
  await draining.subscribe(CALLER, { recipient: "d" }, late.output);
  assert.deepEqual(late.state.failure, { code: Status.UNAVAILABLE, details: "Server is shutting down" });
});

Deno.test("a client that does not read is cut off at its queue's bound, then reset", async () => {
  const notifications = core({ queue: { messages: 3, bytes: 1 << 20 } });
  const stalled = memoryOutput(false);
  await notifications.subscribe(CALLER, { recipient: "slow" }, stalled.output);
  for (let i = 0; i < 4; i++) {
    await notifications.send(CALLER, { recipient: "slow", title: `n${i}`, body: "", data: {} });
  }
  assert.equal(stalled.written.length, 3, "the fourth is not written");
  assert.equal(stalled.state.failure?.code, Status.RESOURCE_EXHAUSTED);
  assert.match(stalled.state.failure!.details, /subscriber too slow: 3 notifications/);
  assert.equal(notifications.subscribers, 0, "its place is given back at once");
  await new Promise((resolve) => setTimeout(resolve, 1_100));
  assert.ok(stalled.state.reset, "a client that still does not read gets its stream reset");
});

Deno.test("SendMany: a result per entry in order, a repeated recipient once, an invalid one fails alone", async () => {
  const core = new NotificationCore({
    delivery: memoryDelivery(),
    instanceId: () => "i-1",
    maxRecipientsPerSend: 4,
  });
  const outputs = [memoryOutput(), memoryOutput()];
  await core.subscribe(CALLER, { recipient: "a" }, outputs[0].output);
  await core.subscribe(CALLER, { recipient: "b" }, outputs[1].output);
  const results = await core.sendMany(CALLER, {
    recipients: ["a", "b\u0001", "b", "a"],
    title: "t",
    body: "",
    data: {},
  });
  assert.ok(Array.isArray(results), JSON.stringify(results));
  assert.equal(results.length, 4);
  const [a, bad, b, again] = results as Receipt[];
  assert.equal(a.delivered, 1);
  assert.equal(b.delivered, 1);
  assert.deepEqual(again, a, "a repeated recipient's entries carry the one result");
  assert.deepEqual(bad, {
    code: Status.INVALID_ARGUMENT,
    details: "recipient must not contain control characters",
  });
  assert.deepEqual(outputs.map((o) => o.written.length), [1, 1], "each sent once");
  const over = await core.sendMany(CALLER, {
    recipients: ["1", "2", "3", "4", "5"],
    title: "t",
    body: "",
    data: {},
  });
  assert.deepEqual(over, {
    code: Status.INVALID_ARGUMENT,
    details: "5 recipients; the limit is 4 (max-recipients-per-send)",
  });
  const none = await core.sendMany(CALLER, { recipients: [], title: "t", body: "", data: {} });
  assert.deepEqual(none, { code: Status.INVALID_ARGUMENT, details: "recipients is required" });
  const key = await core.sendMany(CALLER, {
    recipients: ["a"],
    title: "t",
    body: "",
    data: {},
    idempotencyKey: "x\n",
  });
  assert.deepEqual(key, {
    code: Status.INVALID_ARGUMENT,
    details: "idempotency_key must not contain control characters",
  });
});

Deno.test("a keyed Send hands its delivery the key with the recipient, and answers the first one's id", async () => {
  const keys: (string | undefined)[] = [];
  const delivery = memoryDelivery();
  const first = { id: "first-id", createdAtMs: 1234 };
  const remembering: Delivery = {
    ...delivery,
    send(_recipient, _bytes, once) {
      keys.push(once?.key);
      return Promise.resolve({ delivered: 0, position: 7, epoch: "e", stored: true, first });
    },
  };
  const core = new NotificationCore({ delivery: remembering, instanceId: () => "i-1" });
  const answer = await core.send(CALLER, {
    recipient: "a",
    title: "t",
    body: "",
    data: {},
    idempotencyKey: "k",
  });
  assert.ok(!("code" in answer));
  assert.equal(answer.id, "first-id");
  assert.equal(answer.createdAtMs, 1234);
  assert.equal(answer.position, 7);
  await core.sendMany(CALLER, {
    recipients: ["a", "b"],
    title: "t",
    body: "",
    data: {},
    idempotencyKey: "k",
  });
  await core.send(CALLER, { recipient: "a", title: "t", body: "", data: {} });
  assert.equal(keys[0], keys[1], "the same key and recipient, the same once-key");
  assert.notEqual(keys[1], keys[2], "another recipient, another");
  assert.equal(keys[3], undefined, "no key, none");
});
