/**
 * What a configured JWT key is, read once at start: which algorithms fit it (the allow-list the
 * verifier passes to jose, so a token's `alg` never chooses what is imported) and, for an HMAC
 * secret, that it is long enough. A key file that is empty, unreadable as a key or too weak is a
 * config error, not a server that refuses every token without a word.
 */
import { createPublicKey } from "node:crypto";

/** RFC 7518 §3.2: an HS256 key must be at least as long as the hash (256 bits). */
export const MIN_HMAC_SECRET_BYTES = 32;

const RSA = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];
const BY_CURVE: Record<string, string> = {
  prime256v1: "ES256",
  "P-256": "ES256",
  secp384r1: "ES384",
  "P-384": "ES384",
  secp521r1: "ES512",
  "P-521": "ES512",
};

/** The HMAC secret in a file's text (a trailing newline dropped); throws why it cannot be one. */
export function hmacSecret(text: string): { secret: string; algorithms: string[] } {
  const secret = text.replace(/\r?\n$/, "");
  const bytes = new TextEncoder().encode(secret).length;
  if (bytes === 0) throw new Error("is empty");
  if (bytes < MIN_HMAC_SECRET_BYTES) {
    throw new Error(
      `holds ${bytes} bytes; an HMAC secret needs at least ${MIN_HMAC_SECRET_BYTES} (RFC 7518 §3.2)`,
    );
  }
  return { secret, algorithms: ["HS256", "HS384", "HS512"] };
}

/** The algorithms a PEM public key (SPKI) verifies; throws why the text is not such a key. */
export function publicKeyAlgorithms(pem: string): string[] {
  if (pem.trim() === "") throw new Error("is empty");
  let key;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new Error("is not a PEM public key (expected -----BEGIN PUBLIC KEY-----)");
  }
  const type = key.asymmetricKeyType;
  if (type === "rsa") return RSA;
  if (type === "rsa-pss") return RSA.filter((a) => a.startsWith("PS"));
  if (type === "ed25519") return ["EdDSA"];
  const curve = key.asymmetricKeyDetails?.namedCurve ?? "";
  if (type === "ec" && BY_CURVE[curve]) return [BY_CURVE[curve]];
  throw new Error(
    `holds a ${type} ${curve} key; expected RSA, EC P-256/384/521 or Ed25519`.replace(/ +/g, " "),
  );
}

/** The algorithms the keys of a JWK Set's text verify; throws why it is not a usable set. */
export function jwksAlgorithms(text: string): string[] {
  if (text.trim() === "") throw new Error("is empty");
  let set: unknown;
  try {
    set = JSON.parse(text);
  } catch {
    throw new Error('is not JSON (expected a JWK Set: {"keys": [...]})');
  }
  const keys = (set as { keys?: unknown })?.keys;
  if (!Array.isArray(keys) || keys.length === 0) throw new Error('holds no keys (expected {"keys": [...]})');
  const algorithms = new Set<string>();
  for (const key of keys as Record<string, unknown>[]) {
    if (typeof key?.alg === "string") algorithms.add(key.alg);
    else if (key?.kty === "RSA") RSA.forEach((a) => algorithms.add(a));
    else if (key?.kty === "EC" && BY_CURVE[String(key.crv)]) algorithms.add(BY_CURVE[String(key.crv)]);
    else if (key?.kty === "OKP" && key.crv === "Ed25519") algorithms.add("EdDSA");
    else throw new Error(`holds a key jose cannot use here (kty ${JSON.stringify(key?.kty)})`);
  }
  return [...algorithms];
}

/** The configured key source. */
export type KeySource = "hmac-secret-file" | "public-key-file" | "jwks-file";

/** The algorithms the key in `text` (from `source`) verifies; throws why it is not a usable key. */
export function keyAlgorithms(source: KeySource, text: string): string[] {
  if (source === "hmac-secret-file") return hmacSecret(text).algorithms;
  if (source === "public-key-file") return publicKeyAlgorithms(text);
  return jwksAlgorithms(text);
}
