/**
 * Proof that a caller of `Cluster/Forward` is an instance of this service, with nothing to
 * configure: a secret that only etcd's users can read, created once with a create-only
 * transaction under `/notification-peer-secrets/<name>` (outside the prefixes that discovery and
 * Go naming clients list). A peer link opens its stream with `x-notification-peer: <ts>.<mac>`,
 * the HMAC-SHA256 of `<name>|<ts>` under the secret; the receiver accepts a time within 5 minutes
 * and a MAC under any secret it accepts.
 *
 * The key is followed with the same watch as discovery and the directory (range_watch.ts), so a
 * change is seen at once and nothing polls etcd:
 * - Rotation by overlap: the stored value is space-separated secrets, the first one signing and
 *   all of them accepted. Write "new old", wait for every instance to pick it up, then "new".
 * - Deleted, or an etcd wipe (the watch's resync reads the key gone): every instance writes back
 *   what it holds (create-only), so links keep working; a secret another instance wrote meanwhile
 *   is adopted, ours still accepted until the next change.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { Etcd3 } from "etcd3";
import { Buffer } from "node:buffer";
import { watchRanges } from "../../packages/registry/src/range_watch.ts";

/** Where the secrets live: apart from `/services` and the directory, so no lister ever sees them. */
export const PEER_SECRET_PREFIX = "/notification-peer-secrets";
/** The metadata key of a peer's credential. */
export const PEER_HEADER = "x-notification-peer";
/** How far a credential's time may be from ours. */
const MAX_SKEW_MS = 5 * 60_000;

/** The secrets of one service's instances, kept in step with etcd. */
export class PeerSecret {
  #secrets: string[];
  readonly #key: string;
  readonly #name: string;
  readonly #etcd: Etcd3;
  readonly #stop = new AbortController();
  readonly #onChange: (secrets: string[]) => void;

  private constructor(etcd: Etcd3, name: string, secrets: string[], onChange: (secrets: string[]) => void) {
    this.#etcd = etcd;
    this.#name = name;
    this.#key = `${PEER_SECRET_PREFIX}/${name}`;
    this.#secrets = secrets;
    this.#onChange = onChange;
    void this.#follow();
  }

  /** Reads the service's secret from etcd, creating it if there is none yet; then follows it. */
  static async load(etcd: Etcd3, name: string, onChange: (secrets: string[]) => void): Promise<PeerSecret> {
    const key = `${PEER_SECRET_PREFIX}/${name}`;
    await createIfAbsent(etcd, key, [randomBytes(32).toString("hex")]);
    const secrets = parse(await etcd.get(key).string());
    if (!secrets) throw new Error(`${key} is empty`);
    onChange(secrets);
    return new PeerSecret(etcd, name, secrets, onChange);
  }

  /** The secrets accepted now (the first signs). */
  get secrets(): readonly string[] {
    return this.#secrets;
  }

  /** The credential a peer link opens its stream with. */
  credential(now = Date.now()): string {
    return peerCredential(this.#secrets[0], this.#name, now);
  }

  close(): void {
    this.#stop.abort();
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
        if (!stored) await createIfAbsent(this.#etcd, this.#key, this.#secrets).catch(() => {});
        else this.#adopt(stored);
      }
    } catch {
      // etcd faults are retried by the watch until stopped: nothing else here throws.
    }
  }

  #adopt(stored: string[]): void {
    if (stored.join(" ") === this.#secrets.join(" ")) return;
    // Had we been signing with a secret etcd no longer lists (another instance wrote a new one
    // after a wipe), it stays accepted until the next change, for links opened with it.
    const signing = this.#secrets[0];
    this.#secrets = stored.includes(signing) ? stored : [...stored, signing];
    this.#onChange(this.#secrets);
  }
}

/** Whether `credential` proves membership of service `name` under one of `secrets`. */
export function verifyPeer(
  credential: unknown,
  name: string,
  secrets: readonly string[],
  now = Date.now(),
): boolean {
  if (typeof credential !== "string") return false;
  const ts = Number(credential.slice(0, credential.indexOf(".")));
  if (!Number.isSafeInteger(ts) || Math.abs(now - ts) > MAX_SKEW_MS) return false;
  const given = Buffer.from(credential);
  return secrets.some((secret) => {
    const expected = Buffer.from(peerCredential(secret, name, ts));
    return expected.length === given.length && timingSafeEqual(expected, given);
  });
}

/** The credential of an instance of `name` holding `secret`, at time `ts` (epoch ms). */
export function peerCredential(secret: string, name: string, ts: number): string {
  return `${ts}.${createHmac("sha256", secret).update(`${name}|${ts}`).digest("hex")}`;
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
