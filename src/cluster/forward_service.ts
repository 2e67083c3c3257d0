/**
 * The receiving side of the cluster: the `Cluster/Forward` service. Only instances of the same
 * service may call it (a credential from peer_secret.ts); each item is checked as a Send would be,
 * delivered in the order it arrived, and answered with its count (one acks message per batch).
 */
import * as grpc from "@grpc/grpc-js";
import { sleep } from "../../packages/registry/src/backoff.ts";
import { forwardedProblem } from "../notification/validate.ts";
import type { StreamTracker } from "../transport/streams.ts";
import { PEER_HEADER, verifyPeer } from "./peer_secret.ts";
import { type Ack, fromWire, type WireItem } from "./peer_wire.ts";

/** Who may call Forward here: instances of `name`, proven with one of `secrets()` (undefined: forwarding is off). */
export interface PeerAuth {
  name: string;
  secrets(): readonly string[] | undefined;
}

/** How long a peer's barrier may wait for this instance's directory view. */
const BARRIER_WAIT_MS = 5_000;

/** `Cluster/Forward` handlers that hand each item to `deliver` (or `reached`, for a barrier). */
export function forwardHandlers(
  deliver: (recipient: string, notification: Uint8Array) => Promise<number>,
  reached: (revision: bigint) => Promise<unknown>,
  streams: StreamTracker,
  peers: PeerAuth,
): grpc.UntypedServiceImplementation {
  return {
    forward: (call: grpc.ServerDuplexStream<{ items: WireItem[] }, { acks: Ack[] }>) => {
      const secrets = peers.secrets();
      if (!secrets) {
        call.emit("error", {
          code: grpc.status.UNIMPLEMENTED,
          details: "Cluster forwarding is off on this instance",
        });
        return;
      }
      if (!verifyPeer(call.metadata.get(PEER_HEADER)[0], peers.name, secrets)) {
        call.emit("error", {
          code: grpc.status.UNAUTHENTICATED,
          details: `only instances of ${JSON.stringify(peers.name)} may forward`,
        });
        return;
      }
      if (!streams.add(call as never, () => {})) {
        call.emit("error", { code: grpc.status.UNAVAILABLE, details: "Server is shutting down" });
        return;
      }
      let chain = Promise.resolve();
      let refused = false;
      call.on("data", ({ items: wire }: { items: WireItem[] }) => {
        chain = chain.then(async () => {
          if (refused) return;
          const items = wire.map((w) => ({ seq: Number(w.seq), item: fromWire(w) }));
          // Checked as a Send would be, before any of the batch reaches a subscriber.
          for (const { seq, item } of items) {
            const problem = item.kind === "notification"
              ? forwardedProblem(item.recipient, item.notification)
              : undefined;
            if (problem) {
              refused = true;
              call.emit("error", {
                code: grpc.status.INVALID_ARGUMENT,
                details: `Forwarded notification ${seq} refused: ${problem}`,
              });
              return;
            }
          }
          const acks: Ack[] = [];
          for (const { seq, item } of items) {
            if (item.kind === "barrier") {
              // Bounded: the sender counts the barrier as failed after its timeout anyway, and a
              // wait here holds every item behind it.
              const waited = new AbortController();
              await Promise.race([reached(item.revision), sleep(BARRIER_WAIT_MS, waited.signal)]);
              waited.abort();
              acks.push({ seq, delivered: 0 });
            } else {
              acks.push({ seq, delivered: await deliver(item.recipient, item.notification) });
            }
          }
          if (!call.cancelled && !call.destroyed) call.write({ acks });
        });
      });
      call.on("end", () => void chain.then(() => !refused && call.end()));
    },
  };
}
