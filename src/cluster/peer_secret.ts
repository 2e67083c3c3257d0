/**
 * Proof that a caller of `Cluster/Forward` is an instance of this service, with nothing to
 * configure: a secret that only etcd's users can read, created once with a create-only
 * transaction under `/notification-peer-secrets/<name>` (outside the prefixes that discovery and
 * Go naming clients list). A peer link opens its stream with `x-notification-peer: <ts>.<mac>`,
 * the HMAC-SHA256 of `<name>|<ts>` under the secret; the receiver accepts a time within 5 minutes
 * and a MAC under any secret it accepts.
 *
 * - Rotation by overlap: the stored value is space-separated secrets, the first one signing and
 *   all of them accepted. Write "new old", wait for every instance to pick it up (5 s), then "new".
 * - An etcd wipe: every instance keeps what it had and writes it back (create-only) on its next
 *   look, so links keep working; a secret another instance wrote meanwhile is adopted, ours still
 *   accepted until the next change.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { Etcd3 } from "etcd3";
import { Buffer } from "node:buffer";
import { setInterval } from "node:timers";

/** Where the secrets live: apart from `/services` and the directory, so no lister ever sees them. */
export const PEER_SECRET_PREFIX = "/notification-peer-secrets";
/** The metadata key of a peer's credential. */
export const PEER_HEADER = "x-notification-peer";
/** How far a credential's time may be from ours. */
const MAX_SKEW_MS = 5 * 60_000;
/** How often the stored secret is looked at (rotation, wipe). */
const LOOK_EVERY_MS = 5_000;

/** The secrets of one service's instances, kept in step with etcd. */
export class PeerSecret {
  #secrets: string[];
  readonly #key: string;
  readonly #name: string;
  readonly #etcd: Etcd3;
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #onChange: (secrets: string[]) => void;

  private constructor(etcd: Etcd3, name: string, secrets: string[], onChange: (secrets: string[]) => void) {
    this.#etcd = etcd;
    this.#name = name;
    this.#key = `${PEER_SECRET_PREFIX}/${name}`;
    this.#secrets = secrets;
    this.#onChange = onChange;
    this.#timer = setInterval(() => void this.look().catch(() => {}), LOOK_EVERY_MS).unref();
  }

  /** Reads the service's secret from etcd, creating it if there is none yet. */
  static async load(etcd: Etcd3, name: string, onChange: (secrets: string[]) => void): Promise<PeerSecret> {
    const secrets = await readOrCreate(etcd, `${PEER_SECRET_PREFIX}/${name}`, [
      randomBytes(32).toString("hex"),
    ]);
    const secret = new PeerSecret(etcd, name, secrets, onChange);
    onChange(secrets);
    return secret;
  }

  /** The secrets accepted now (the first signs). */
  get secrets(): readonly string[] {
    return this.#secrets;
  }

  /** One look at etcd: adopt a rotated secret, or write ours back after a wipe. */
  async look(): Promise<void> {
    const stored = await readOrCreate(this.#etcd, this.#key, this.#secrets);
    if (stored.join(" ") === this.#secrets.join(" ")) return;
    // Adopted. Had we been signing with a secret etcd no longer lists (another instance wrote a new
    // one after a wipe), it stays accepted until the next change, for links opened with it.
    const signing = this.#secrets[0];
    this.#secrets = stored.includes(signing) ? stored : [...stored, signing];
    this.#onChange(this.#secrets);
  }

  /** The credential a peer link opens its stream with. */
  credential(now = Date.now()): string {
    return peerCredential(this.#secrets[0], this.#name, now);
  }

  close(): void {
    clearInterval(this.#timer);
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

/** The stored secrets, after writing `fallback` if the key does not exist (create-only). */
async function readOrCreate(etcd: Etcd3, key: string, fallback: string[]): Promise<string[]> {
  await etcd.if(key, "Create", "==", 0).then(etcd.put(key).value(fallback.join(" "))).commit();
  const value = await etcd.get(key).string();
  const secrets = (value ?? "").split(" ").filter((s) => s !== "");
  return secrets.length > 0 ? secrets : fallback;
}
