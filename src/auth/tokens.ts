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

/** What a verified token says about its bearer. */
export interface Claims {
  /** The identity: a subscriber may read this recipient only. */
  sub: string;
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
  readonly #options: { issuer?: string; audience?: string };
  readonly #cache = new Map<string, Claims>();

  constructor(config: AuthConfig["jwt"]) {
    this.#options = { issuer: config.issuer, audience: config.audience };
    if (config.hmacSecretFile) {
      this.#key = new TextEncoder().encode(readSecret(config.hmacSecretFile));
    } else if (config.jwksFile) {
      this.#key = createLocalJWKSet(JSON.parse(readFileSync(config.jwksFile, "utf8")) as { keys: JWK[] });
    } else {
      const pem = readFileSync(config.publicKeyFile!, "utf8");
      const byAlg = new Map<string, Promise<CryptoKey>>();
      this.#key = (header) => {
        const alg = header.alg ?? "";
        let key = byAlg.get(alg);
        if (!key) byAlg.set(alg, key = importSPKI(pem, alg));
        return key;
      };
    }
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

function toClaims(payload: JWTPayload): Claims {
  const scope = typeof payload.scope === "string" ? payload.scope : "";
  return {
    sub: payload.sub!,
    scopes: new Set(scope.split(" ").filter((s) => s !== "")),
    expiresAtMs: payload.exp! * 1000,
  };
}

/** The secret in `file`, without the trailing newline editors add. */
function readSecret(file: string): string {
  return readFileSync(file, "utf8").replace(/\r?\n$/, "");
}

/** An HS256 token for development (`main.ts token`): signed with the configured HMAC secret. */
export function makeToken(
  config: AuthConfig,
  claims: { sub: string; scope?: string; ttlSeconds: number },
): Promise<string> {
  if (!config.jwt.hmacSecretFile) {
    throw new Error("token needs notification-server.auth.jwt.hmac-secret-file (it signs with HS256)");
  }
  let jwt = new SignJWT(claims.scope ? { scope: claims.scope } : {})
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(claims.sub)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + claims.ttlSeconds);
  if (config.jwt.issuer) jwt = jwt.setIssuer(config.jwt.issuer);
  if (config.jwt.audience) jwt = jwt.setAudience(config.jwt.audience);
  return jwt.sign(new TextEncoder().encode(readSecret(config.jwt.hmacSecretFile)));
}
