import assert from "node:assert/strict";
import { type CryptoKey, exportJWK, exportSPKI, generateKeyPair, SignJWT } from "jose";
import { Buffer } from "node:buffer";
import { createHmac } from "node:crypto";
import { makeToken, TokenVerifier } from "./tokens.ts";

const now = () => Math.floor(Date.now() / 1000);

async function tempFile(text: string): Promise<string> {
  const path = await Deno.makeTempFile();
  await Deno.writeTextFile(path, text);
  return path;
}

Deno.test("HMAC tokens: issuer and audience are checked when configured; exp and sub are required", async () => {
  const secret = await tempFile("s3cret-for-tests-s3cret-for-tests\n");
  const auth = {
    jwt: { hmacSecretFile: secret, issuer: "backend", audience: "notifications" },
    sendScope: "x",
  };
  const verifier = new TokenVerifier(auth.jwt);
  const good = await makeToken(auth, { sub: "alice", scope: "x y", ttlSeconds: 60 });
  const claims = await verifier.verify(good);
  assert.equal(claims.sub, "alice");
  assert.deepEqual([...claims.scopes], ["x", "y"]);
  const key = new TextEncoder().encode("s3cret-for-tests-s3cret-for-tests");
  const sign = (jwt: SignJWT) => jwt.setProtectedHeader({ alg: "HS256" }).sign(key);
  const base = () => new SignJWT({}).setSubject("alice").setExpirationTime(now() + 60);
  for (
    const [what, token] of [
      ["another issuer", await sign(base().setIssuer("evil").setAudience("notifications"))],
      ["another audience", await sign(base().setIssuer("backend").setAudience("elsewhere"))],
      [
        "no exp",
        await sign(new SignJWT({}).setSubject("a").setIssuer("backend").setAudience("notifications")),
      ],
      [
        "no sub",
        await sign(
          new SignJWT({}).setExpirationTime(now() + 60).setIssuer("backend").setAudience("notifications"),
        ),
      ],
    ] as const
  ) {
    await assert.rejects(verifier.verify(token), Error, what);
  }
});

Deno.test("a PEM public key verifies ES256 tokens; a JWK Set picks the key by kid (rotation)", async () => {
  const es = await generateKeyPair("ES256", { extractable: true });
  const pem = await tempFile(await exportSPKI(es.publicKey));
  const token = await new SignJWT({ scope: "s" }).setProtectedHeader({ alg: "ES256" }).setSubject("bob")
    .setExpirationTime(now() + 60).sign(es.privateKey);
  assert.equal((await new TokenVerifier({ publicKeyFile: pem }).verify(token)).sub, "bob");

  const old = await generateKeyPair("RS256", { extractable: true });
  const next = await generateKeyPair("EdDSA", { extractable: true });
  const jwks = await tempFile(JSON.stringify({
    keys: [
      { ...await exportJWK(old.publicKey), kid: "old", alg: "RS256" },
      { ...await exportJWK(next.publicKey), kid: "next", alg: "EdDSA" },
    ],
  }));
  const verifier = new TokenVerifier({ jwksFile: jwks });
  const signed = (kid: string, alg: string, key: CryptoKey) =>
    new SignJWT({}).setProtectedHeader({ alg, kid }).setSubject(kid).setExpirationTime(now() + 60).sign(key);
  assert.equal((await verifier.verify(await signed("old", "RS256", old.privateKey))).sub, "old");
  assert.equal((await verifier.verify(await signed("next", "EdDSA", next.privateKey))).sub, "next");
  await assert.rejects(
    verifier.verify(await signed("old", "EdDSA", next.privateKey)),
    Error,
    "wrong key for kid",
  );
  await assert.rejects(verifier.verify(token), Error, "an ES256 token with no kid in the set");
});

Deno.test("a token's alg chooses nothing: made-up and misfitting algorithms import no key", async () => {
  const es = await generateKeyPair("ES256", { extractable: true });
  const verifier = new TokenVerifier({ publicKeyFile: await tempFile(await exportSPKI(es.publicKey)) });
  const b64 = (o: object) =>
    btoa(JSON.stringify(o)).replaceAll("=", "").replaceAll("+", "-").replaceAll("/", "_");
  const claims = b64({ sub: "x", exp: now() + 60 });
  // 3 000 unsigned tokens, each naming a new 10 KB algorithm (the probe's flood), then the
  // algorithms jose knows that do not fit an ES256 key.
  for (let i = 0; i < 3_000; i++) {
    const token = `${b64({ alg: `X${i}${"a".repeat(10_000)}` })}.${claims}.c2ln`;
    await assert.rejects(verifier.verify(token));
  }
  for (const alg of ["RS256", "PS256", "HS256", "ES384", "EdDSA", "none"]) {
    await assert.rejects(verifier.verify(`${b64({ alg })}.${claims}.c2ln`), Error, alg);
  }
  assert.equal(verifier.keysImported, 0, "no key imported for any of them");
  const token = await new SignJWT({}).setProtectedHeader({ alg: "ES256" }).setSubject("ok")
    .setExpirationTime(now() + 60).sign(es.privateKey);
  assert.equal((await verifier.verify(token)).sub, "ok");
  assert.equal(verifier.keysImported, 1, "one import for the key's own algorithm");
});

Deno.test("claims we rely on are checked: sub a string, exp finite, iat not in the future", async () => {
  const secret = "s3cret-for-tests-s3cret-for-tests";
  const verifier = new TokenVerifier({ hmacSecretFile: await tempFile(secret) });
  const b64 = (text: string) => Buffer.from(text).toString("base64url");
  /** An HS256 token over the claims written as JSON text, as any issuer could. */
  const token = (claims: string) => {
    const signing = `${b64('{"alg":"HS256"}')}.${b64(claims)}`;
    return `${signing}.${createHmac("sha256", secret).update(signing).digest("base64url")}`;
  };
  const exp = now() + 60;
  assert.equal((await verifier.verify(token(`{"sub":"a","exp":${exp},"iat":${now()}}`))).sub, "a");
  for (
    const [what, claims] of [
      ["a numeric sub", `{"sub":42,"exp":${exp}}`],
      ["an object sub", `{"sub":{"id":"a"},"exp":${exp}}`],
      ["an empty sub", `{"sub":"","exp":${exp}}`],
      ["exp 1e999 (Infinity)", `{"sub":"a","exp":1e999}`],
      ["iat an hour ahead", `{"sub":"a","exp":${exp},"iat":${now() + 3_600}}`],
    ]
  ) {
    await assert.rejects(verifier.verify(token(claims)), Error, what);
  }
});
