/**
 * The peer links against fake peers: real grpc-js servers on loopback serving the real Forward
 * service (forward_service.ts) with scripted `deliver` and `reached`, so batching, acks, barriers,
 * timeouts and credentials are seen from both ends without a cluster or etcd.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { encodeNotification } from "../notification/codec.ts";
import { services } from "../transport/protos.ts";
import { StreamTracker } from "../transport/streams.ts";
import { forwardService } from "./forward_service.ts";
import { PeerLinks } from "./peer_links.ts";
import { CHALLENGE_HEADER, peerProof, type PeerProver } from "./peer_secret.ts";
import { NETWORK_TEST } from "@notification-server/registry/testing";

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
  /** Proofs as they arrived, and Forward streams opened. */
  proofs: string[];
  streams: number;
  /** Re-checks open streams against the accepted secrets (as a rotation does). */
  recheck(): void;
}

type ForwardCall = grpc.ServerDuplexStream<{ items: unknown[]; proof?: string }, unknown>;

/**
 * Peer `id`, accepting `secrets()`, whose `deliver` answers `count(recipient)` after `delayMs`,
 * and whose view reaches any revision.
 */
async function fakePeer(options: {
  id?: string;
  secrets?: () => string[];
  count?: (recipient: string) => number;
  delayMs?: number;
  reached?: (revision: bigint) => Promise<boolean>;
} = {}): Promise<FakePeer> {
  const delivered: string[] = [];
  const batches: number[] = [];
  const proofs: string[] = [];
  let streams = 0;
  const service = forwardService({
    deliver: async (recipient) => {
      delivered.push(recipient);
      if (options.delayMs) await new Promise((r) => setTimeout(r, options.delayMs));
      return options.count?.(recipient) ?? 1;
    },
    reached: options.reached ?? (() => Promise.resolve(true)),
    streams: new StreamTracker(),
    peers: { name: NAME, self: () => options.id ?? "a", secrets: options.secrets ?? (() => [SECRET]) },
  });
  const forward = service.handlers.forward as (call: ForwardCall) => void;
  const server = new grpc.Server();
  server.addService(services().ClusterService.service, {
    forward: (call: ForwardCall) => {
      streams++;
      call.on("data", ({ items, proof }: { items: unknown[]; proof?: string }) => {
        batches.push(items.length);
        if (proof) proofs.push(proof);
      });
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
    proofs,
    get streams() {
      return streams;
    },
    recheck: () => service.recheck(),
    [Symbol.asyncDispose]: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}

/** A prover signing with `secret()`. */
function prover(secret: () => string): PeerProver {
  return { signing: secret, proof: (s, target, nonce) => peerProof(s, NAME, target, nonce) };
}

function links(timeoutMs = 2_000, secret = SECRET): PeerLinks {
  return new PeerLinks({
    credentials: grpc.credentials.createInsecure(),
    timeoutMs,
    prover: prover(() => secret),
  });
}

/** A Forward stream of our own to `addr`: its challenge, and how it ends after sending `proof`. */
async function rawForward(addr: string, proof: string, recipient = "r") {
  const { ClusterService } = services();
  const client = new ClusterService(addr, grpc.credentials.createInsecure()) as
    & grpc.Client
    & Record<string, CallableFunction>;
  const call = client.forward(new grpc.Metadata()) as grpc.ClientDuplexStream<unknown, { acks: unknown[] }>;
  const nonce = await new Promise<string>((resolve) =>
    call.on("metadata", (md: grpc.Metadata) => resolve(String(md.get(CHALLENGE_HEADER)[0])))
  );
  const ended = new Promise<number>((resolve) => {
    call.on("data", () => {});
    call.on("error", (e: grpc.ServiceError) => resolve(e.code));
    call.on("end", () => resolve(grpc.status.OK));
  });
  call.write({ items: [{ seq: 1, recipient, notification: note(recipient) }], proof });
  return { nonce, ended, close: () => client.close() };
}

Deno.test("forwards in one batch per microtask flush, and sums each peer's count", NETWORK_TEST, async () => {
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
  NETWORK_TEST,
  async () => {
    await using slow = await fakePeer({ id: "slow", delayMs: 600 });
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

Deno.test(
  "a peer that refuses connections counts 0 without waiting out the timeout",
  NETWORK_TEST,
  async () => {
    const closed = await fakePeer();
    const addr = closed.addr;
    await closed[Symbol.asyncDispose]();
    const peers = links(5_000);
    try {
      peers.setMembers(new Map([["gone", addr]]));
      const started = Date.now();
      for (let i = 0; i < 3; i++) await peers.forward("gone", "r", note("r"));
      assert.equal(await peers.forward("gone", "r", note("r")), 0);
      assert.ok(
        Date.now() - started < 5_000,
        `answered in ${Date.now() - started} ms, not after the timeout`,
      );
    } finally {
      peers.close();
    }
  },
);

Deno.test(
  "a barrier resolves once the peer's view has reached the revision, and carries no notification",
  NETWORK_TEST,
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

Deno.test("a link without the service's secret is refused and counts 0", NETWORK_TEST, async () => {
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

Deno.test(
  "a proof made for another instance is refused: it cannot be relayed to a second peer",
  NETWORK_TEST,
  async () => {
    await using b = await fakePeer({ id: "b" });
    const peers = links();
    try {
      peers.setMembers(new Map([["a", b.addr]])); // the link proves for "a"; the peer is "b"
      assert.equal(await peers.forward("a", "r", note("r")), 0);
      assert.deepEqual(b.delivered, []);
    } finally {
      peers.close();
    }
  },
);

Deno.test(
  "a proof seen on the wire opens nothing: each stream has its own challenge",
  NETWORK_TEST,
  async () => {
    await using a = await fakePeer();
    const peers = links();
    try {
      peers.setMembers(new Map([["a", a.addr]]));
      assert.equal(await peers.forward("a", "r", note("r")), 1);
      const [seen] = a.proofs;
      assert.ok(seen, "the link sent a proof");
      // Replayed on a new stream (a new connection), it answers another nonce: refused.
      const replay = await rawForward(a.addr, seen);
      try {
        assert.equal(await replay.ended, grpc.status.UNAUTHENTICATED);
        // And without any proof at all.
        const none = await rawForward(a.addr, "");
        assert.equal(await none.ended, grpc.status.UNAUTHENTICATED);
        none.close();
      } finally {
        replay.close();
      }
      assert.deepEqual(a.delivered, ["r"], "only the link's own notification");
    } finally {
      peers.close();
    }
  },
);

Deno.test(
  "after a rotation the link proves again on its open stream; streams proven with a retired secret are closed",
  NETWORK_TEST,
  async () => {
    let accepted = [SECRET];
    let signing = SECRET;
    await using a = await fakePeer({ secrets: () => accepted });
    const peers = new PeerLinks({
      credentials: grpc.credentials.createInsecure(),
      timeoutMs: 2_000,
      prover: prover(() => signing),
    });
    try {
      peers.setMembers(new Map([["a", a.addr]]));
      assert.equal(await peers.forward("a", "r1", note("r1")), 1);
      // One-step rotation, as every instance sees it: the new secret signs, the old one retires.
      accepted = ["next", SECRET];
      signing = "next";
      a.recheck();
      peers.reprove();
      while (a.proofs.length < 2) await new Promise((r) => setTimeout(r, 5));
      // The grace is over: only "next" is accepted.
      accepted = ["next"];
      a.recheck();
      assert.equal(await peers.forward("a", "r2", note("r2")), 1, "the link's stream was proven again");
      assert.equal(a.streams, 1, "the link kept its stream");
      assert.equal(a.proofs.length, 2, "its first proof and the one after the rotation");
      assert.deepEqual(a.delivered, ["r1", "r2"]);
    } finally {
      peers.close();
    }
  },
);

Deno.test("a stream proven with a secret that is then retired is closed", NETWORK_TEST, async () => {
  let accepted = [SECRET];
  await using a = await fakePeer({ secrets: () => accepted });
  const { ClusterService } = services();
  const client = new ClusterService(a.addr, grpc.credentials.createInsecure()) as
    & grpc.Client
    & Record<string, CallableFunction>;
  const call = client.forward(new grpc.Metadata()) as grpc.ClientDuplexStream<unknown, { acks: unknown[] }>;
  try {
    const nonce = await new Promise<string>((resolve) =>
      call.on("metadata", (md: grpc.Metadata) => resolve(String(md.get(CHALLENGE_HEADER)[0])))
    );
    const acked = new Promise<void>((resolve) => call.once("data", () => resolve()));
    const ended = new Promise<number>((resolve) =>
      call.on("error", (e: grpc.ServiceError) => resolve(e.code))
    );
    call.write({
      items: [{ seq: 1, recipient: "r", notification: note("r") }],
      proof: peerProof(SECRET, NAME, "a", nonce),
    });
    await acked;
    accepted = ["next"];
    a.recheck();
    assert.equal(await ended, grpc.status.UNAUTHENTICATED, "closed once its secret is retired");
  } finally {
    client.close();
  }
});

Deno.test(
  "a member whose address changes gets a new link; one that leaves is dropped",
  NETWORK_TEST,
  async () => {
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
  },
);

Deno.test(
  "a member that deregisters while holding recipients stays reachable until it holds none",
  NETWORK_TEST,
  async () => {
    await using a = await fakePeer();
    await using b = await fakePeer({ count: () => 2 });
    const peers = links();
    const holding = new Set(["a"]);
    try {
      peers.setMembers(new Map([["a", a.addr], ["b", b.addr]]), (id) => holding.has(id));
      assert.equal(await peers.forward("a", "r", note("r")), 1);
      // a deregistered (its key is gone) but still holds recipients: its subscribers are moving away.
      peers.setMembers(new Map([["b", b.addr]]), (id) => holding.has(id));
      assert.equal(await peers.forward("a", "r", note("r")), 1, "still reached while it holds some");
      assert.deepEqual(peers.members().sort(), ["a", "b"], "a leaving instance's broadcast includes it");
      // b leaves holding nothing: dropped at once.
      peers.setMembers(new Map(), (id) => holding.has(id));
      assert.equal(await peers.forward("b", "r", note("r")), 0, "b held nothing");
      assert.equal(await peers.forward("a", "r", note("r")), 1, "a is still departing");
      peers.forget("a");
      assert.equal(await peers.forward("a", "r", note("r")), 0, "a holds nothing any more");
      assert.deepEqual(peers.members(), []);
      assert.equal(a.delivered.length, 3);
    } finally {
      peers.close();
    }
  },
);
