/**
 * Proof that a caller of `Cluster/Forward` is an instance of this service, with nothing to
 * configure: a secret that only etcd's users can read, created once with a create-only
 * transaction under `/notification-peer-secrets/<name>` (outside the prefixes that discovery and
 * Go naming clients list).
 *
 * Challenge and response, so that nothing seen on the wire can be used again: the receiver opens
 * each Forward stream with a fresh random nonce in its response headers (`x-notification-peer-challenge`),
 * and the sender's first batch carries `proof`, the HMAC-SHA256 under the secret of
 * `<name>|<target instance id>|<nonce>`. A proof captured on one stream proves nothing on another
 * stream, nor to another instance. (An attacker who can rewrite the connection itself, not just
 * read it, needs TLS between peers to be kept out: `tls.peer-ca-file`.)
 *
 * The key is followed with the same watch as discovery and the directory (range_watch.ts), so a
 * change is seen at once and nothing polls etcd:
 * - The stored value is space-separated secrets, the first one signing and all of them accepted.
 *   A secret that leaves the value stays accepted for {@link REVOKE_GRACE_MS} more (every instance
 *   follows the key, so by then each has seen the change and signs with the new one), then no
 *   longer: streams still proven with it are closed. Senders prove again with the new secret as
 *   soon as they see it, so neither a one-step rotation ("new") nor an overlap ("new old", then
 *   "new") drops a notification.
 * - Deleted, or an etcd wipe (the watch's resync reads the key gone): every instance writes back
 *   what it holds (create-only), so links keep working; a secret another instance wrote meanwhile
 *   is adopted, ours retired like any other.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { Etcd3 } from "etcd3";
import { Buffer } from "node:buffer";
import { watchRanges } from "@notification-server/registry";
import { Backoff, sleep } from "@notification-server/timing";

/** Where the secrets live: apart from `/services` and the directory, so no lister ever sees them. */
const PEER_SECRET_PREFIX = "/notification-peer-secrets";

/** The etcd key of service `name`'s peer secrets. */
export function peerSecretKey(name: string): string {
  return `${PEER_SECRET_PREFIX}/${name}`;
}
/** The response header carrying a Forward stream's nonce. */
export const CHALLENGE_HEADER = "x-notification-peer-challenge";
/**
 * How long a secret that left etcd stays accepted: the default lease TTL, so an instance that has
 * not seen the change by then has lost its registration too.
 */
export const REVOKE_GRACE_MS = 10_000;

/** What a peer link proves membership with (a {@link PeerSecret}, or a fixed secret in tests). */
export interface PeerProver {
  /** The secret to prove with now. */
  signing(): string;
  /** The proof for a stream to instance `target` that opened with `nonce`, under `secret`. */
  proof(secret: string, target: string, nonce: string): string;
}

/** The secrets of one service's instances, kept in step with etcd. */
export class PeerSecret implements PeerProver {
  /** As stored in etcd, the first signing. */
  #stored: string[];
  /** Secrets that left etcd, accepted until their timer retires them. */
  readonly #retiring = new Map<string, ReturnType<typeof setTimeout>>();
  readonly #key: string;
  readonly #name: string;
  readonly #etcd: Etcd3;
  readonly #stop = new AbortController();
  readonly #onChange: (secrets: string[]) => void;
  readonly #graceMs: number;

  private constructor(
    etcd: Etcd3,
    name: string,
    secrets: string[],
    onChange: (secrets: string[]) => void,
    graceMs: number,
  ) {
    this.#etcd = etcd;
    this.#name = name;
    this.#key = peerSecretKey(name);
    this.#stored = secrets;
    this.#onChange = onChange;
    this.#graceMs = graceMs;
    void this.#follow();
  }

  /**
   * Reads the service's secret from etcd, creating it if there is none yet; then follows it.
   * `onChange` is told the accepted secrets now and on every change.
   */
  static async load(
    etcd: Etcd3,
    name: string,
    onChange: (secrets: string[]) => void,
    options: { graceMs?: number } = {},
  ): Promise<PeerSecret> {
    const key = peerSecretKey(name);
    await createIfAbsent(etcd, key, [randomBytes(32).toString("hex")]);
    const secrets = parse(await etcd.get(key).string());
    if (!secrets) throw new Error(`${key} is empty`);
    onChange(secrets);
    return new PeerSecret(etcd, name, secrets, onChange, options.graceMs ?? REVOKE_GRACE_MS);
  }

  /** The secrets accepted now: those in etcd (the first signs), then those retiring. */
  get secrets(): readonly string[] {
    return [...this.#stored, ...this.#retiring.keys()];
  }

  signing(): string {
    return this.#stored[0];
  }

  proof(secret: string, target: string, nonce: string): string {
    return peerProof(secret, this.#name, target, nonce);
  }

  close(): void {
    this.#stop.abort();
    for (const timer of this.#retiring.values()) clearTimeout(timer);
    this.#retiring.clear();
  }

  async #follow(): Promise<void> {
    try {
      for await (
        const update of watchRanges(this.#etcd, [{ key: this.#key }], {
          signal: this.#stop.signal,
          retryFirstRead: true,
        })
      ) {
        const value = update.kind === "reset"
          ? update.entries.get(this.#key)
          : update.changes.findLast((c) => c.key === this.#key)?.value;
        const stored = parse(value);
        // Gone (deleted, or etcd came back empty): write back ours; the watch then brings it.
        if (!stored) await this.#writeBack();
        else this.#adopt(stored);
      }
    } catch {
      // etcd faults are retried by the watch until stopped: nothing else here throws.
    }
  }

  /** Writes ours where none is, trying until it is written (nothing else would try again). */
  async #writeBack(): Promise<void> {
    const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 });
    while (!this.#stop.signal.aborted) {
      try {
        return await createIfAbsent(this.#etcd, this.#key, this.#stored);
      } catch {
        await sleep(backoff.next(), this.#stop.signal);
      }
    }
  }

  #adopt(stored: string[]): void {
    if (stored.join(" ") === this.#stored.join(" ")) return;
    for (const secret of this.#stored) {
      if (stored.includes(secret) || this.#retiring.has(secret)) continue;
      const timer = setTimeout(() => {
        this.#retiring.delete(secret);
        this.#onChange([...this.secrets]);
      }, this.#graceMs);
      this.#retiring.set(secret, timer);
    }
    for (const secret of stored) {
      clearTimeout(this.#retiring.get(secret));
      this.#retiring.delete(secret);
    }
    this.#stored = stored;
    this.#onChange([...this.secrets]);
  }
}

/**
 * Which of `secrets` `proof` was made with, for a stream to instance `target` of service `name`
 * that opened with `nonce`; undefined when none.
 */
export function verifyProof(
  proof: unknown,
  stream: { name: string; target: string; nonce: string },
  secrets: readonly string[],
): string | undefined {
  if (typeof proof !== "string" || proof === "") return undefined;
  const given = Buffer.from(proof);
  return secrets.find((secret) => {
    const expected = Buffer.from(peerProof(secret, stream.name, stream.target, stream.nonce));
    return expected.length === given.length && timingSafeEqual(expected, given);
  });
}

/** The proof of an instance of `name` holding `secret`, for a stream to `target` opened with `nonce`. */
export function peerProof(secret: string, name: string, target: string, nonce: string): string {
  return createHmac("sha256", secret).update(`${name}|${target}|${nonce}`).digest("hex");
}

/** A fresh nonce for a Forward stream. */
export function peerNonce(): string {
  return randomBytes(16).toString("hex");
}

/** The secrets in a stored value; undefined when there are none. */
function parse(value: string | null | undefined): string[] | undefined {
  const secrets = (value ?? "").split(" ").filter((s) => s !== "");
  return secrets.length > 0 ? secrets : undefined;
}

/** Writes `secrets` at `key` unless the key exists (one create-only transaction). */
async function createIfAbsent(etcd: Etcd3, key: string, secrets: string[]): Promise<void> {
  await etcd.if(key, "Create", "==", 0).then(etcd.put(key).value(secrets.join(" "))).commit();
}
