/**
 * JWT bearer tokens (`authorization: Bearer <JWT>` metadata), verified with jose against the keys
 * of `notification-server.auth.jwt`: an HMAC secret (HS256/384/512), a PEM public key (RS*, PS*,
 * ES*, EdDSA) or a JWK Set chosen by `kid` (rotation). `exp` is required; 30 s of clock skew is
 * allowed. A verified token is cached until its `exp` (bounded), so a client sending with one
 * token pays the signature check once, not on every call.
 */
import {
  createLocalJWKSet,
  type CryptoKey,
  importSPKI,
  type JWK,
  type JWTPayload,
  jwtVerify,
  type JWTVerifyGetKey,
  SignJWT,
} from "jose";
import { readFileSync } from "node:fs";
import type { AuthConfig } from "../config/mod.ts";
import { hmacSecret, keyAlgorithms } from "../config/jwt_keys.ts";
import { RecipientGrants } from "./grants.ts";

/** What a verified token says about its bearer. */
export interface Claims {
  /** The identity: the recipient its bearer may read, and what per-identity limits count by. */
  sub: string;
  /** Further recipients its bearer may read (the `recipients` claim). */
  recipients: RecipientGrants;
  /** Space-separated scopes (`notifications:send` lets it Send). */
  scopes: ReadonlySet<string>;
  /** Expiry, epoch ms. */
  expiresAtMs: number;
}

const CLOCK_SKEW_S = 30;
/** Verified tokens kept; past this the oldest is dropped (a flood of new tokens cannot grow it). */
const CACHE_SIZE = 10_000;

/** Verifies tokens against the configured keys; one per serving thread. */
export class TokenVerifier {
  readonly #key: Uint8Array | JWTVerifyGetKey;
  readonly #options: { issuer?: string; audience?: string; algorithms: string[] };
  readonly #cache = new Map<string, Claims>();

  constructor(config: AuthConfig["jwt"]) {
    const [source, path] = config.hmacSecretFile
      ? ["hmac-secret-file", config.hmacSecretFile] as const
      : config.jwksFile
      ? ["jwks-file", config.jwksFile] as const
      : ["public-key-file", config.publicKeyFile!] as const;
    const text = readFileSync(path, "utf8");
    // The algorithms that fit the key, decided at start: jose refuses a token naming another
    // before any key is looked up, so nothing a caller writes in `alg` is imported or kept.
    const algorithms = keyAlgorithms(source, text);
    this.#options = { issuer: config.issuer, audience: config.audience, algorithms };
    if (source === "hmac-secret-file") {
      this.#key = new TextEncoder().encode(hmacSecret(text).secret);
    } else if (source === "jwks-file") {
      this.#key = createLocalJWKSet(JSON.parse(text) as { keys: JWK[] });
    } else {
      const pem = text;
      // One import per allowed algorithm at most (the same key serves RS256 and PS256).
      const byAlg = new Map<string, Promise<CryptoKey>>();
      this.#key = (header) => {
        const alg = header.alg ?? "";
        if (!algorithms.includes(alg)) throw new Error("algorithm not allowed for this key");
        let key = byAlg.get(alg);
        if (!key) byAlg.set(alg, key = importSPKI(pem, alg));
        return key;
      };
      this.#imported = () => byAlg.size;
    }
  }

  #imported = () => 0;

  /** Keys imported so far (a PEM key is imported once per allowed algorithm it is used with). */
  get keysImported(): number {
    return this.#imported();
  }

  /** The token's claims; rejects (message never naming the token) when it is not valid. */
  async verify(token: string): Promise<Claims> {
    const cached = this.#cache.get(token);
    if (cached && cached.expiresAtMs + CLOCK_SKEW_S * 1000 > Date.now()) return cached;
    if (cached) this.#cache.delete(token);
    const options = { ...this.#options, requiredClaims: ["exp", "sub"], clockTolerance: CLOCK_SKEW_S };
    const key = this.#key;
    const { payload } = typeof key === "function"
      ? await jwtVerify(token, key, options)
      : await jwtVerify(token, key, options);
    const claims = toClaims(payload);
    if (this.#cache.size >= CACHE_SIZE) this.#cache.delete(this.#cache.keys().next().value!);
    this.#cache.set(token, claims);
    return claims;
  }
}

/**
 * The claims we rely on, checked past what jose checks: `sub` is a non-empty string (it names a
 * recipient and keys the limits), `exp` a finite time (1e999 parses to Infinity, and a stream
 * under it would never end), `iat`, when present, not in the future beyond the skew, and
 * `recipients`, when present, well-formed (grants.ts): a malformed grant makes the token invalid.
 */
function toClaims(payload: JWTPayload): Claims {
  if (typeof payload.sub !== "string" || payload.sub === "") throw new Error("sub must be a string");
  if (!Number.isFinite(payload.exp)) throw new Error("exp must be a finite time");
  if (payload.iat !== undefined && !(payload.iat <= Date.now() / 1000 + CLOCK_SKEW_S)) {
    throw new Error("iat is in the future");
  }
  const scope = typeof payload.scope === "string" ? payload.scope : "";
  return {
    sub: payload.sub!,
    scopes: new Set(scope.split(" ").filter((s) => s !== "")),
    recipients: RecipientGrants.parse(payload.recipients),
    expiresAtMs: payload.exp! * 1000,
  };
}

/** An HS256 token for development (`main.ts token`): signed with the configured HMAC secret. */
export function makeToken(
  config: AuthConfig,
  claims: { sub: string; scope?: string; recipients?: string[]; ttlSeconds: number },
): Promise<string> {
  if (!config.jwt.hmacSecretFile) {
    throw new Error("token needs notification-server.auth.jwt.hmac-secret-file (it signs with HS256)");
  }
  let jwt = new SignJWT({
    ...(claims.scope ? { scope: claims.scope } : {}),
    ...(claims.recipients?.length ? { recipients: claims.recipients } : {}),
  })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(claims.sub)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + claims.ttlSeconds);
  if (config.jwt.issuer) jwt = jwt.setIssuer(config.jwt.issuer);
  if (config.jwt.audience) jwt = jwt.setAudience(config.jwt.audience);
  return jwt.sign(
    new TextEncoder().encode(hmacSecret(readFileSync(config.jwt.hmacSecretFile, "utf8")).secret),
  );
}
