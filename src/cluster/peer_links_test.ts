/**
 * The peer links against fake peers: real grpc-js servers on loopback serving the real Forward
 * service (forward_service.ts) with scripted `deliver` and `reached`, so batching, acks, barriers,
 * timeouts and credentials are seen from both ends without a cluster or etcd.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { encodeNotification, services } from "../transport/protos.ts";
import { StreamTracker } from "../transport/streams.ts";
import { forwardHandlers } from "./forward_service.ts";
import { PeerLinks } from "./peer_links.ts";
import { peerCredential } from "./peer_secret.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const NAME = "svc";
const SECRET = "s3cret";
/** A valid encoded notification for `recipient` (the Forward service checks it as a Send). */
const note = (recipient: string) =>
  encodeNotification({ id: "n-1", recipient, title: "t", body: "", data: {}, createdAtMs: 1 });

interface FakePeer extends AsyncDisposable {
  addr: string;
  /** What `deliver` was called with, in order. */
  delivered: string[];
  /** Batches as they arrived (item counts). */
  batches: number[];
}

/** A peer whose `deliver` answers `count(recipient)` after `delayMs`, and whose view reaches any revision. */
async function fakePeer(options: {
  count?: (recipient: string) => number;
  delayMs?: number;
  reached?: (revision: bigint) => Promise<boolean>;
} = {}): Promise<FakePeer> {
  const delivered: string[] = [];
  const batches: number[] = [];
  const handlers = forwardHandlers(
    async (recipient) => {
      delivered.push(recipient);
      if (options.delayMs) await new Promise((r) => setTimeout(r, options.delayMs));
      return options.count?.(recipient) ?? 1;
    },
    options.reached ?? (() => Promise.resolve(true)),
    new StreamTracker(),
    { name: NAME, secrets: () => [SECRET] },
  );
  const forward = handlers.forward as (call: grpc.ServerDuplexStream<{ items: unknown[] }, unknown>) => void;
  const server = new grpc.Server();
  server.addService(services().Cluster.service, {
    forward: (call: grpc.ServerDuplexStream<{ items: unknown[] }, unknown>) => {
      call.on("data", ({ items }: { items: unknown[] }) => batches.push(items.length));
      forward(call);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createInsecure(),
      (e, p) => e ? reject(e) : resolve(p),
    )
  );
  return {
    addr: `127.0.0.1:${port}`,
    delivered,
    batches,
    [Symbol.asyncDispose]: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}

function links(timeoutMs = 2_000, secret = SECRET): PeerLinks {
  return new PeerLinks({
    credentials: grpc.credentials.createInsecure(),
    timeoutMs,
    credential: () => peerCredential(secret, NAME, Date.now()),
  });
}

Deno.test("forwards in one batch per microtask flush, and sums each peer's count", opts, async () => {
  await using a = await fakePeer({ count: (r) => (r === "two" ? 2 : 1) });
  const peers = links();
  try {
    peers.setMembers(new Map([["a", a.addr]]));
    const counts = await Promise.all(["one", "two", "three"].map((r) => peers.forward("a", r, note(r))));
    assert.deepEqual(counts, [1, 2, 1]);
    assert.deepEqual(a.delivered, ["one", "two", "three"], "in order");
    assert.deepEqual(a.batches, [3], "one message for the three");
  } finally {
    peers.close();
  }
});

Deno.test(
  "a peer that does not answer in time counts 0; one that is not a member counts 0 at once",
  opts,
  async () => {
    await using slow = await fakePeer({ delayMs: 600 });
    const peers = links(200);
    try {
      peers.setMembers(new Map([["slow", slow.addr]]));
      assert.equal(await peers.forward("slow", "r", note("r")), 0, "timed out");
      assert.equal(await peers.forward("nobody", "r", note("r")), 0);
    } finally {
      peers.close();
    }
  },
);

Deno.test("a peer that refuses connections counts 0 without waiting out the timeout", opts, async () => {
  const closed = await fakePeer();
  const addr = closed.addr;
  await closed[Symbol.asyncDispose]();
  const peers = links(5_000);
  try {
    peers.setMembers(new Map([["gone", addr]]));
    const started = Date.now();
    for (let i = 0; i < 3; i++) await peers.forward("gone", "r", note("r"));
    assert.equal(await peers.forward("gone", "r", note("r")), 0);
    assert.ok(Date.now() - started < 5_000, `answered in ${Date.now() - started} ms, not after the timeout`);
  } finally {
    peers.close();
  }
});

Deno.test(
  "a barrier resolves once the peer's view has reached the revision, and carries no notification",
  opts,
  async () => {
    let release!: () => void;
    const asked: bigint[] = [];
    await using a = await fakePeer({
      reached: (revision) => {
        asked.push(revision);
        return new Promise((resolve) => (release = () => resolve(true)));
      },
    });
    const peers = links();
    try {
      let done = false;
      const barrier = peers.barrier(42n, new Map([["a", a.addr]])).then(() => (done = true));
      while (asked.length === 0) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(asked, [42n]);
      assert.equal(done, false, "waits for the peer's view");
      release();
      await barrier;
      assert.deepEqual(a.delivered, [], "a barrier is not delivered");
    } finally {
      peers.close();
    }
  },
);

Deno.test("a link without the service's secret is refused and counts 0", opts, async () => {
  await using a = await fakePeer();
  const peers = links(2_000, "wrong");
  try {
    peers.setMembers(new Map([["a", a.addr]]));
    assert.equal(await peers.forward("a", "r", note("r")), 0);
    assert.deepEqual(a.delivered, []);
  } finally {
    peers.close();
  }
});

Deno.test("a member whose address changes gets a new link; one that leaves is dropped", opts, async () => {
  await using first = await fakePeer();
  await using second = await fakePeer({ count: () => 7 });
  const peers = links();
  try {
    peers.setMembers(new Map([["a", first.addr]]));
    assert.equal(await peers.forward("a", "r", note("r")), 1);
    peers.setMembers(new Map([["a", second.addr]]));
    assert.equal(await peers.forward("a", "r", note("r")), 7, "the new address");
    peers.setMembers(new Map());
    assert.equal(await peers.forward("a", "r", note("r")), 0, "gone");
  } finally {
    peers.close();
  }
});
