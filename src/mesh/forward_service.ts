/**
 * The receiving side of the cluster: the `Cluster/Forward` service. Only instances of the same
 * service may call it: each stream opens with a fresh nonce and must be answered with a proof made
 * with the peers' secret (peer_secret.ts) before anything is taken. Each item is checked as a Send
 * would be, delivered in the order it arrived, and answered with its count (one acks message per
 * batch). A stream whose proof was made with a secret that has since been retired is closed.
 */
import * as grpc from "@grpc/grpc-js";
import { sleep } from "@notification-server/timing";
import { forwardedProblem } from "../notification/validate.ts";
import type { StreamTracker } from "../transport/streams.ts";
import { CHALLENGE_HEADER, peerNonce, verifyProof } from "./peer_secret.ts";
import { type Ack, fromWire, type PeerItem, type WireItem } from "./peer_wire.ts";

/** Who may call Forward here: instances of `name`, proven with one of `secrets()` (undefined: forwarding is off). */
export interface PeerAuth {
  name: string;
  /** This instance's id: proofs are made for it, so one made for another instance fails here. */
  self(): string;
  secrets(): readonly string[] | undefined;
}

/** How long a peer's barrier may wait for this instance's directory view. */
const BARRIER_WAIT_MS = 5_000;
/** How long a Forward stream may stay open without proving membership. */
const PROOF_TIMEOUT_MS = 5_000;

/** A message of a Forward stream: a batch, and the sender's proof (first, and after a rotation). */
interface ForwardBatch {
  items: WireItem[];
  proof?: string;
}

/** The Forward service, and the re-check of its open streams when the accepted secrets change. */
export interface ForwardService {
  handlers: grpc.UntypedServiceImplementation;
  /** Closes the streams proven with a secret no longer accepted. */
  recheck(): void;
}

/** `Cluster/Forward` handlers that hand each item to `deliver` (or `reached`, for a barrier). */
export function forwardService(options: {
  deliver: (recipient: string, notification: Uint8Array) => Promise<number>;
  reached: (revision: bigint) => Promise<unknown>;
  streams: StreamTracker;
  peers: PeerAuth;
}): ForwardService {
  const { deliver, reached, streams, peers } = options;
  const open = new Set<() => void>();
  const forward = (call: grpc.ServerDuplexStream<ForwardBatch, { acks: Ack[] }>) => {
    if (!peers.secrets()) {
      call.emit("error", {
        code: grpc.status.UNIMPLEMENTED,
        details: "Cluster forwarding is off on this instance",
      });
      return;
    }
    let refused = false;
    let provenWith: string | undefined;
    const check = () => {
      if (provenWith && !peers.secrets()?.includes(provenWith)) {
        refuse("the secret this stream proved membership with was retired: open a new stream");
      }
    };
    const refuse = (details: string, code = grpc.status.UNAUTHENTICATED) => {
      refused = true;
      open.delete(check);
      clearTimeout(deadline);
      call.emit("error", { code, details });
    };
    const deadline = setTimeout(
      () => provenWith || refused || refuse(`no proof of membership within ${PROOF_TIMEOUT_MS} ms`),
      PROOF_TIMEOUT_MS,
    );
    if (!streams.add(call as never, () => (open.delete(check), clearTimeout(deadline)))) {
      refuse("Server is shutting down", grpc.status.UNAVAILABLE);
      return;
    }
    open.add(check);
    const stream = { name: peers.name, target: peers.self(), nonce: peerNonce() };
    const challenge = new grpc.Metadata();
    challenge.set(CHALLENGE_HEADER, stream.nonce);
    call.sendMetadata(challenge);
    let chain = Promise.resolve();
    call.on("data", ({ items: wire, proof }: ForwardBatch) => {
      if (refused) return;
      if (proof) {
        provenWith = verifyProof(proof, stream, peers.secrets() ?? []);
        if (!provenWith) return refuse(`only instances of ${JSON.stringify(peers.name)} may forward`);
        clearTimeout(deadline);
      } else if (!provenWith) {
        return refuse(
          `only instances of ${JSON.stringify(peers.name)} may forward: answer ${CHALLENGE_HEADER} first`,
        );
      }
      chain = chain.then(async () => {
        if (refused) return;
        const items = wire.map((w) => ({ seq: Number(w.seq), item: fromWire(w) }));
        const problem = batchProblem(items);
        if (problem) return refuse(problem, grpc.status.INVALID_ARGUMENT);
        const acks = await deliverBatch(items, deliver, reached);
        if (!call.cancelled && !call.destroyed) call.write({ acks });
      });
    });
    call.on("end", () => void chain.then(() => !refused && call.end()));
  };
  return {
    handlers: { forward },
    recheck: () => {
      for (const check of [...open]) check();
    },
  };
}

/** Checked as a Send would be, before any of the batch reaches a subscriber: the first problem, or undefined. */
function batchProblem(items: { seq: number; item: PeerItem }[]): string | undefined {
  for (const { seq, item } of items) {
    if (item.kind !== "notification") continue;
    const problem = forwardedProblem(item.recipient, item.notification);
    if (problem) return `Forwarded notification ${seq} refused: ${problem}`;
  }
  return undefined;
}

/** Delivers a batch in order; one ack per item (a barrier's once the view reached its revision). */
async function deliverBatch(
  items: { seq: number; item: PeerItem }[],
  deliver: (recipient: string, notification: Uint8Array) => Promise<number>,
  reached: (revision: bigint) => Promise<unknown>,
): Promise<Ack[]> {
  const acks: Ack[] = [];
  for (const { seq, item } of items) {
    if (item.kind === "barrier") {
      // Bounded: the sender counts the barrier as failed after its timeout anyway, and a wait
      // here holds every item behind it.
      const waited = new AbortController();
      await Promise.race([reached(item.revision), sleep(BARRIER_WAIT_MS, waited.signal)]);
      waited.abort();
      acks.push({ seq, delivered: 0 });
    } else {
      acks.push({ seq, delivered: await deliver(item.recipient, item.notification) });
    }
  }
  return acks;
}
