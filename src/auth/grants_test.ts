import assert from "node:assert/strict";
import { SignJWT } from "jose";
import { MAX_GRANTS, RecipientGrants } from "./grants.ts";
import { makeToken, TokenVerifier } from "./tokens.ts";

Deno.test("grants: exact names, prefixes ending in *, a lone * for all; nothing else", () => {
  const grants = RecipientGrants.parse(["team-42", "news-*"]);
  assert.ok(grants.allows("team-42"));
  assert.ok(!grants.allows("team-43"), "an exact name grants only itself");
  assert.ok(!grants.allows("team-4"));
  assert.ok(grants.allows("news-eu") && grants.allows("news-"), "a prefix grants what starts with it");
  assert.ok(!grants.allows("news"), "the prefix is news-, not news");
  assert.ok(!RecipientGrants.parse(undefined).allows("team-42"), "no claim: no grants");
  assert.ok(!RecipientGrants.parse([]).allows(""));
  assert.ok(RecipientGrants.parse(["*"]).allows("anyone"));
});

Deno.test("grants: a malformed recipients claim is refused, saying why", () => {
  const cases: [unknown, RegExp][] = [
    ["team-42", /an array of strings/],
    [[42], /non-empty strings/],
    [[""], /non-empty strings/],
    [["te*am"], /not its last character/],
    [["**"], /not its last character/],
    [Array.from({ length: MAX_GRANTS + 1 }, (_, i) => `r${i}`), /at most 100/],
  ];
  for (const [claim, why] of cases) {
    assert.throws(() => RecipientGrants.parse(claim), why, JSON.stringify(claim));
  }
});

Deno.test("a token's recipients claim reaches its claims, and a malformed one makes the token invalid", async () => {
  const secretFile = await Deno.makeTempFile();
  await Deno.writeTextFile(secretFile, "s3cret-for-tests-s3cret-for-tests\n");
  const auth = { jwt: { hmacSecretFile: secretFile }, sendScope: "x" };
  const verifier = new TokenVerifier(auth.jwt);
  const granted = await verifier.verify(
    await makeToken(auth, { sub: "carol", recipients: ["team-*"], ttlSeconds: 60 }),
  );
  assert.ok(granted.recipients.allows("team-7"));
  assert.ok(!granted.recipients.allows("other"));
  const plain = await verifier.verify(await makeToken(auth, { sub: "carol", ttlSeconds: 60 }));
  assert.ok(!plain.recipients.allows("team-7"));
  const key = new TextEncoder().encode("s3cret-for-tests-s3cret-for-tests");
  const malformed = await new SignJWT({ recipients: ["te*am"] }).setProtectedHeader({ alg: "HS256" })
    .setSubject("carol").setExpirationTime(Math.floor(Date.now() / 1000) + 60).sign(key);
  await assert.rejects(verifier.verify(malformed), /not its last character/);
});
