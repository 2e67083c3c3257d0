/**
 * Who may make a call, and how much one caller may take: the JWT checks of `auth` (Send needs the
 * send scope, Subscribe a token whose `sub` is the recipient or whose `recipients` claim grants it;
 * grants.ts) and the per-caller bounds
 * (subscribers per connection and per identity, a Send rate per identity). An identity is the
 * token's `sub`, or the client's address when auth is off. Answers carry status codes (status.ts)
 * and say which rule refused the call; they never echo a token or why its signature failed.
 */
import { type Failure, Status } from "../_util/status.ts";
import type { AuthConfig, CallerLimits } from "../config/mod.ts";
import { IdentityTable } from "./identity_table.ts";
import { type Claims, TokenVerifier } from "./tokens.ts";

/** Why a call was refused (the `reason` label of notification_server_calls_refused_total). */
export type RefusalReason =
  | "unauthenticated"
  | "permission_denied"
  | "subscribers_per_connection"
  | "subscribers_per_identity"
  | "send_rate";

/** A refused call: its status and why. */
export interface Refusal extends Failure {
  reason: RefusalReason;
}

/** An admitted Subscribe: give its places back with `release` once it ends. */
export interface Admitted {
  /** When the token expires (epoch ms): the stream ends then; absent without auth. */
  expiresAtMs?: number;
  release(): void;
}

/** Why each refusal happened, in the WARN line. */
const WHY: Record<RefusalReason, string> = {
  unauthenticated: "unauthenticated",
  permission_denied: "not allowed by their token",
  subscribers_per_connection: "over max-subscribers-per-connection",
  subscribers_per_identity: "over max-subscribers-per-identity",
  send_rate: "over send-rate-per-identity",
};

/** The WARN line for refused calls: counts by reason, with the last caller's address (never a token). */
export function refusalLine(counts: [RefusalReason, { n: number; last?: string }][]): string {
  return `Refused calls: ${
    counts.map(([reason, c]) => `${c.n} ${WHY[reason]} (last from ${c.last})`).join(", ")
  }`;
}

/** Who is calling, as any transport tells it. */
export interface Caller {
  /** The `authorization` header or metadata, as sent. */
  authorization?: string;
  /** The caller's connection, `host:port` (grpc-js's `ipv4:`/`ipv6:` prefix allowed). */
  peer: string;
}

export class CallerPolicy {
  readonly #verifier?: TokenVerifier;
  readonly #sendScope: string;
  readonly #limits: CallerLimits;
  readonly #onRefused: (reason: RefusalReason, peer: string) => void;
  readonly #byConnection = new Map<string, number>();
  /** Per identity, across the instance's threads: subscriptions held and Send buckets. */
  readonly #identities: IdentityTable;

  constructor(options: {
    auth?: AuthConfig;
    limits: CallerLimits;
    /** The instance's table (shared by its workers); this thread's own when absent. */
    identities?: IdentityTable;
    /** Told of each refusal and the caller's address (metrics, the WARN line). */
    onRefused?: (reason: RefusalReason, peer: string) => void;
  }) {
    this.#verifier = options.auth ? new TokenVerifier(options.auth.jwt) : undefined;
    this.#sendScope = options.auth?.sendScope ?? "";
    this.#limits = options.limits;
    this.#identities = options.identities ?? new IdentityTable();
    this.#onRefused = options.onRefused ?? (() => {});
  }

  /** Whether Sends are checked at all (auth or a rate is on): without, the hot path skips the policy. */
  get checksSends(): boolean {
    return this.#verifier !== undefined || this.#limits.sendsPerSecond > 0;
  }

  /** Whether a Send may go ahead: undefined, or why not. */
  async send(caller: Caller): Promise<Refusal | undefined> {
    const who = await this.#identify(caller);
    if ("code" in who) return this.#refuse(caller, who);
    if (this.#verifier && !who.claims!.scopes.has(this.#sendScope)) {
      return this.#refuse(caller, {
        code: Status.PERMISSION_DENIED,
        details: `the token does not allow Send: its scope lacks ${JSON.stringify(this.#sendScope)}`,
        reason: "permission_denied",
      });
    }
    if (
      this.#limits.sendsPerSecond > 0 && !this.#identities.take(who.identity, this.#limits.sendsPerSecond)
    ) {
      return this.#refuse(caller, {
        code: Status.RESOURCE_EXHAUSTED,
        details: `too many Sends: send-rate-per-identity is ${this.#limits.sendsPerSecond} per second`,
        reason: "send_rate",
      });
    }
    return undefined;
  }

  /** Whether a Subscribe to `recipient` may go ahead: its places (release them when it ends), or why not. */
  async subscribe(caller: Caller, recipient: string): Promise<Admitted | Refusal> {
    const who = await this.#identify(caller);
    if ("code" in who) return this.#refuse(caller, who);
    if (this.#verifier && who.identity !== recipient && !who.claims!.recipients.allows(recipient)) {
      return this.#refuse(caller, {
        code: Status.PERMISSION_DENIED,
        details:
          "a token may subscribe to its own recipient (its sub) and those its recipients claim grants only",
        reason: "permission_denied",
      });
    }
    const connection = caller.peer;
    if ((this.#byConnection.get(connection) ?? 0) >= this.#limits.subscribersPerConnection) {
      return this.#refuse(caller, {
        code: Status.RESOURCE_EXHAUSTED,
        details:
          `this connection already holds ${this.#limits.subscribersPerConnection} subscriptions (max-subscribers-per-connection)`,
        reason: "subscribers_per_connection",
      });
    }
    const perIdentity = this.#verifier !== undefined;
    if (perIdentity && !this.#identities.tryAcquire(who.identity, this.#limits.subscribersPerIdentity)) {
      return this.#refuse(caller, {
        code: Status.RESOURCE_EXHAUSTED,
        details:
          `this caller already holds ${this.#limits.subscribersPerIdentity} subscriptions (max-subscribers-per-identity)`,
        reason: "subscribers_per_identity",
      });
    }
    increment(this.#byConnection, connection, 1);
    let released = false;
    return {
      expiresAtMs: who.claims?.expiresAtMs,
      release: () => {
        if (released) return;
        released = true;
        increment(this.#byConnection, connection, -1);
        if (perIdentity) this.#identities.release(who.identity);
      },
    };
  }

  async #identify(caller: Caller): Promise<{ identity: string; claims?: Claims } | Refusal> {
    if (!this.#verifier) return { identity: addressOf(caller.peer) };
    const header = caller.authorization;
    const token = header ? /^Bearer\s+(\S+)$/i.exec(header)?.[1] : undefined;
    if (!token) {
      return {
        code: Status.UNAUTHENTICATED,
        details: "missing token: send `authorization: Bearer <JWT>` metadata",
        reason: "unauthenticated",
      };
    }
    try {
      const claims = await this.#verifier.verify(token);
      return { identity: claims.sub, claims };
    } catch {
      return {
        code: Status.UNAUTHENTICATED,
        details: "invalid or expired token",
        reason: "unauthenticated",
      };
    }
  }

  #refuse(caller: Caller, refusal: Refusal): Refusal {
    this.#onRefused(refusal.reason, addressOf(caller.peer));
    return refusal;
  }
}

function increment(counts: Map<string, number>, key: string, by: number): void {
  const next = (counts.get(key) ?? 0) + by;
  if (next <= 0) counts.delete(key);
  else counts.set(key, next);
}

/** The host of a grpc-js peer string (`ipv4:1.2.3.4:5`, `[::1]:5`, `1.2.3.4:5`). */
function addressOf(peer: string): string {
  const bare = peer.replace(/^ipv[46]:/, "");
  return bare.startsWith("[") ? bare.slice(0, bare.indexOf("]") + 1) : bare.slice(0, bare.lastIndexOf(":"));
}
