/**
 * The routing among workers, without threads: a fake `deliverTo` stands for the workers and a fake
 * cluster for the other instances; the worker side (worker_thread_routing.ts) talks to the router through
 * plain function calls in place of messages.
 */
import assert from "node:assert/strict";
import type { PeerRouting, Reach } from "./routing.ts";
import { RecipientFilter } from "./recipient_filter.ts";
import { MainThreadRouter } from "./main_thread_router.ts";
import { WorkerThreadRouting } from "./worker_thread_routing.ts";
import type { MeshAsk } from "./worker_messages.ts";

const BYTES = new Uint8Array([1, 2, 3]);

/** A cluster that records what it was asked and answers 5 for every Send routed to it. */
function fakeCluster() {
  const routed: Reach[] = [];
  const published: string[] = [];
  let onPeerEntry: (recipient: string, present: boolean) => void = () => {};
  const cluster: PeerRouting = {
    route: (_recipient, _bytes, reach) => {
      routed.push(reach);
      return Promise.resolve(reach === "cluster" ? 5 : 0);
    },
    subscribed: (recipient) => {
      published.push(`+${recipient}`);
      return Promise.resolve();
    },
    unsubscribed: (recipient) => void published.push(`-${recipient}`),
    reached: () => Promise.resolve(true),
    followPeers: (onEntry) => void (onPeerEntry = onEntry),
  };
  return { cluster, routed, published, peerEntry: (r: string, present: boolean) => onPeerEntry(r, present) };
}

/** A router, and per worker the routing it would use, wired by direct calls. */
function workers(count: number) {
  const delivered: [number, string][] = [];
  const router = new MainThreadRouter((index, recipient) => {
    delivered.push([index, recipient]);
    return Promise.resolve(1);
  });
  const sides = Array.from({ length: count }, (_, index) => {
    const asked: MeshAsk["call"][] = [];
    // Each worker reads the same shared buffer through its own view, as a real worker does.
    const filter = new RecipientFilter(router.filter.buffer);
    const ask = <T extends number | boolean>(body: MeshAsk): Promise<T> => {
      asked.push(body.call);
      if (body.call === "route") {
        return router.route(index, body.recipient, body.bytes, body.reach) as Promise<T>;
      }
      if (body.call === "subscribed") return router.hold(index, body.recipient).then(() => 0 as T);
      if (body.call === "reached") return router.reached(body.revision) as Promise<T>;
      throw new Error(`the router is not asked ${body.call}`);
    };
    const routing = new WorkerThreadRouting(filter, ask, (recipient) => router.release(index, recipient));
    return { routing, asked };
  });
  return { router, sides, delivered };
}

Deno.test("a Send whose recipient only the sender's worker holds never leaves that worker", async () => {
  const { sides, delivered } = workers(2);
  await sides[0].routing.subscribed("alice");
  sides[0].asked.length = 0;
  assert.equal(await sides[0].routing.route("alice", BYTES, "cluster"), 0);
  assert.deepEqual(sides[0].asked, [], "no message to the main thread");
  assert.deepEqual(delivered, []);
  // From the other worker it does go there, and reaches worker 0.
  assert.equal(await sides[1].routing.route("alice", BYTES, "cluster"), 1);
  assert.deepEqual(delivered, [[0, "alice"]]);
});

Deno.test("once another worker holds the recipient too, the sender's worker routes again", async () => {
  const { sides, delivered } = workers(2);
  await sides[0].routing.subscribed("bob");
  await sides[1].routing.subscribed("bob");
  assert.equal(await sides[0].routing.route("bob", BYTES, "cluster"), 1);
  assert.deepEqual(delivered, [[1, "bob"]]);
  sides[1].routing.unsubscribed("bob");
  delivered.length = 0;
  assert.equal(await sides[0].routing.route("bob", BYTES, "cluster"), 0);
  assert.deepEqual(delivered, [], "only the sender's worker holds it again");
});

Deno.test("a worker counts its hold as its own only once the main thread has answered", async () => {
  const { router, sides } = workers(2);
  await sides[1].routing.subscribed("carol");
  // Worker 0's "subscribed" message has not reached the main thread yet: its Sends must still reach
  // worker 1, whose hold the filter counts (counting its own hold now would cancel worker 1's out).
  let arrive!: () => void;
  const inFlight = new Promise<void>((resolve) => (arrive = resolve));
  const filter = new RecipientFilter(router.filter.buffer);
  const slow = new WorkerThreadRouting(filter, async <T>(body: MeshAsk): Promise<T> => {
    if (body.call === "subscribed") {
      await inFlight;
      await router.hold(0, body.recipient);
      return 0 as T;
    }
    return router.route(0, (body as { recipient: string }).recipient, BYTES, "cluster") as Promise<T>;
  }, (recipient) => router.release(0, recipient));
  const subscribing = slow.subscribed("carol");
  assert.equal(await slow.route("carol", BYTES, "cluster"), 1, "worker 1 still reached");
  arrive();
  await subscribing;
  assert.equal(await slow.route("carol", BYTES, "cluster"), 1, "and after the answer");
});

Deno.test("an answer to an earlier hold does not count a later one as the worker's own", async () => {
  const { router } = workers(2);
  const filter = new RecipientFilter(router.filter.buffer);
  const answers: (() => void)[] = [];
  const routing = new WorkerThreadRouting(filter, <T>(body: MeshAsk): Promise<T> => {
    if (body.call !== "subscribed") return Promise.resolve(0 as T);
    return new Promise<T>((resolve) => answers.push(() => resolve(0 as T)));
  }, () => {});
  const first = routing.subscribed("dave");
  routing.unsubscribed("dave");
  const second = routing.subscribed("dave");
  router.filter.add("dave"); // what the main thread counts for the second hold (the first was released)
  answers[0]();
  await first;
  assert.ok(filter.heldElsewhere("dave"), "the first answer is stale: not counted as own");
  answers[1]();
  await second;
  assert.equal(filter.heldElsewhere("dave"), false);
});

Deno.test("the router sends to other instances only when the reach is the cluster", async () => {
  const { router, sides } = workers(2);
  const peers = fakeCluster();
  router.cluster = peers.cluster;
  await sides[1].routing.subscribed("erin");
  assert.equal(await router.route(0, "erin", BYTES, "cluster"), 1 + 5);
  assert.equal(await router.route(0, "erin", BYTES, "instance"), 1, "a peer's Forward goes no further");
  assert.deepEqual(peers.routed, ["cluster", "instance"]);
});

Deno.test("the router publishes a recipient once, on its first holder, and removes it with its last", async () => {
  const { router, sides } = workers(3);
  const peers = fakeCluster();
  await sides[0].routing.subscribed("frank"); // before the cluster: published when it comes
  router.cluster = peers.cluster;
  assert.deepEqual(peers.published, ["+frank"]);
  await sides[1].routing.subscribed("frank");
  sides[0].routing.unsubscribed("frank");
  assert.deepEqual(peers.published, ["+frank"]);
  sides[1].routing.unsubscribed("frank");
  assert.deepEqual(peers.published, ["+frank", "-frank"]);
});

Deno.test("another instance's subscriber makes a worker route; a dead worker's recipients are released", async () => {
  const { router, sides } = workers(2);
  const peers = fakeCluster();
  router.cluster = peers.cluster;
  await sides[0].routing.subscribed("gina");
  assert.equal(await sides[0].routing.route("gina", BYTES, "cluster"), 0);
  peers.peerEntry("gina", true);
  assert.equal(await sides[0].routing.route("gina", BYTES, "cluster"), 5, "to the other instance");
  peers.peerEntry("gina", false);
  await sides[1].routing.subscribed("hal");
  router.releaseWorker(1);
  assert.deepEqual(peers.published, ["+gina", "+hal", "-hal"]);
  assert.equal(router.filter.heldElsewhere("hal"), false);
});
