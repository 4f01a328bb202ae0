import assert from "node:assert/strict";
import { join } from "node:path";
import { base64url, exportPKCS8, exportSPKI, generateKeyPair, SignJWT } from "jose";
import {
  loadSigningKey,
  loadVerifyKeys,
  type SigningKey,
  type VerifyKey,
  verifyKeyFor,
} from "./token_keys.ts";
import {
  type Access,
  grants,
  issueAccessToken,
  issueRefreshToken,
  MAX_TOKEN_BYTES,
  TokenError,
  type TokenErrorReason,
  TokenVerifier,
  verifyAccessToken,
  verifyRefreshToken,
} from "./tokens.ts";

const ISSUER = "berth";
const SERVICE = "registry.test";
const NOW = Date.UTC(2030, 0, 1);
const ACCESS: Access = [{ type: "repository", name: "team-a/app", actions: ["pull", "push"] }];

async function signingKey(alg: "ES256" | "EdDSA" = "ES256"): Promise<SigningKey> {
  const dir = await Deno.makeTempDir();
  const options = alg === "EdDSA" ? { crv: "Ed25519" } : {};
  const { privateKey } = await generateKeyPair(alg, { extractable: true, ...options });
  const path = join(dir, "key.pem");
  await Deno.writeTextFile(path, await exportPKCS8(privateKey), { mode: 0o600 });
  return await loadSigningKey({ path, dataDir: dir });
}

const KEY = await signingKey();
const OTHER = await signingKey();
const KEYS: readonly VerifyKey[] = [verifyKeyFor(KEY)];

function access(subject = "alice", extra: { ttlMs?: number; now?: number } = {}) {
  return issueAccessToken(KEY, {
    issuer: ISSUER,
    service: SERVICE,
    subject,
    access: ACCESS,
    ttlMs: extra.ttlMs ?? 300_000,
    now: extra.now ?? NOW,
  });
}

function verify(token: string, options: { now?: number; keys?: readonly VerifyKey[] } = {}) {
  return verifyAccessToken(token, {
    issuer: ISSUER,
    audience: SERVICE,
    keys: options.keys ?? KEYS,
    now: options.now ?? NOW,
  });
}

/** Signs any header and claims with `key`, as a forger holding that key would. */
async function signRaw(
  key: SigningKey,
  header: Record<string, unknown>,
  claims: Record<string, unknown>,
): Promise<string> {
  return await new SignJWT(claims)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: "JWT", ...header })
    .sign(key.privateKey);
}

/** Signs raw header and payload text with an ES256 key, without jose's checks. */
async function signByHand(key: SigningKey, header: unknown, payload: string): Promise<string> {
  const input = `${encode(header)}.${base64url.encode(payload)}`;
  const algorithm = { name: "ECDSA", hash: "SHA-256" };
  const data = new TextEncoder().encode(input);
  const signature = await crypto.subtle.sign(algorithm, key.privateKey, data);
  return `${input}.${base64url.encode(new Uint8Array(signature))}`;
}

function claims(extra: Record<string, unknown> = {}): Record<string, unknown> {
  const iat = NOW / 1000;
  return { iss: ISSUER, aud: SERVICE, sub: "alice", iat, nbf: iat, exp: iat + 300, ...extra };
}

function encode(value: unknown): string {
  return base64url.encode(JSON.stringify(value));
}

async function refused(token: Promise<unknown>, reason: TokenErrorReason) {
  await assert.rejects(token, (error: unknown) => {
    assert.ok(error instanceof TokenError, String(error));
    assert.equal(error.reason, reason, error.message);
    return true;
  });
}

for (const alg of ["ES256", "EdDSA"] as const) {
  Deno.test(`issueAccessToken() with ${alg} round-trips through verifyAccessToken()`, async () => {
    const key = alg === "ES256" ? KEY : await signingKey("EdDSA");
    const issued = await issueAccessToken(key, {
      issuer: ISSUER,
      service: SERVICE,
      subject: "alice",
      access: ACCESS,
      ttlMs: 300_000,
      now: NOW,
    });
    assert.equal(issued.expiresIn, 300);
    assert.equal(issued.issuedAt, new Date(NOW).toISOString());
    const [header, payload] = issued.token.split(".").slice(0, 2).map((p) =>
      JSON.parse(new TextDecoder().decode(base64url.decode(p)))
    );
    assert.deepEqual(header, { alg, kid: key.kid, typ: "JWT" });
    assert.deepEqual(Object.keys(payload).sort(), [
      ..."access aud exp iat iss jti nbf sub".split(" "),
    ]);
    const verified = await verifyAccessToken(issued.token, {
      issuer: ISSUER,
      audience: SERVICE,
      keys: [verifyKeyFor(key)],
      now: NOW,
    });
    assert.deepEqual(verified, { subject: "alice", access: ACCESS, expiresAt: NOW + 300_000 });
  });
}

Deno.test("issueAccessToken() gives each token its own jti and an anonymous one a null subject", async () => {
  const [a, b] = [await access(""), await access("")];
  assert.notEqual(a.token, b.token);
  assert.equal((await verify(a.token)).subject, null);
});

Deno.test("issueAccessToken() refuses lifetimes over 24 h and malformed access", async () => {
  await assert.rejects(access("alice", { ttlMs: 24 * 3600_000 + 1000 }), RangeError);
  await assert.rejects(access("alice", { ttlMs: 500 }), RangeError);
  await assert.rejects(
    issueAccessToken(KEY, {
      issuer: ISSUER,
      service: SERVICE,
      subject: "alice",
      access: [{ type: "repository", name: "x", actions: ["admin" as "pull"] }],
      ttlMs: 60_000,
    }),
    TypeError,
  );
});

Deno.test("verifyAccessToken() refuses alg none built by hand", async () => {
  const header = encode({ alg: "none", typ: "JWT" });
  await refused(verify(`${header}.${encode(claims())}.`), "algorithm");
  const real = (await access()).token.split(".")[2];
  await refused(verify(`${header}.${encode(claims())}.${real}`), "algorithm");
  const noneKid = encode({ alg: "none", kid: KEY.kid });
  await refused(verify(`${noneKid}.${encode(claims())}.`), "algorithm");
});

Deno.test("verifyAccessToken() refuses an HMAC token signed with the public key", async () => {
  const secret = new TextEncoder().encode(JSON.stringify(KEY.publicJwk));
  const token = await new SignJWT(claims())
    .setProtectedHeader({ alg: "HS256", kid: KEY.kid })
    .sign(secret);
  await refused(verify(token), "algorithm");
});

Deno.test("verifyAccessToken() refuses an allowed algorithm the key is not for", async () => {
  const [, payload, signature] = (await access()).token.split(".");
  const es384 = encode({ alg: "ES384", kid: KEY.kid, typ: "JWT" });
  await refused(verify(`${es384}.${payload}.${signature}`), "algorithm");
});

Deno.test("verifyAccessToken() refuses a payload tampered by re-encoding", async () => {
  const [header, payload, signature] = (await access()).token.split(".");
  const decoded = JSON.parse(new TextDecoder().decode(base64url.decode(payload!)));
  decoded.access[0].actions.push("delete");
  await refused(verify(`${header}.${encode(decoded)}.${signature}`), "signature");
  // The same claims, only encoded differently, are not the signed bytes either.
  const reordered = JSON.stringify(Object.fromEntries(Object.entries(decoded).reverse()));
  await refused(verify(`${header}.${base64url.encode(reordered)}.${signature}`), "signature");
});

Deno.test("verifyAccessToken() refuses a header whose kid is swapped", async () => {
  const [, payload, signature] = (await access()).token.split(".");
  const swapped = encode({ alg: "ES256", kid: OTHER.kid, typ: "JWT" });
  const both = [...KEYS, verifyKeyFor(OTHER)];
  await refused(verify(`${swapped}.${payload}.${signature}`, { keys: both }), "signature");
  const unknown = encode({ alg: "ES256", kid: "no-such-key", typ: "JWT" });
  await refused(verify(`${unknown}.${payload}.${signature}`), "unknown_kid");
});

Deno.test("verifyAccessToken() refuses a token signed by another key", async () => {
  await refused(verify(await signRaw(OTHER, {}, claims())), "unknown_kid");
  await refused(verify(await signRaw(OTHER, { kid: KEY.kid }, claims())), "signature");
  const noKid = await new SignJWT(claims()).setProtectedHeader({ alg: "ES256" })
    .sign(OTHER.privateKey);
  await refused(verify(noKid), "signature");
});

Deno.test("verifyAccessToken() without a kid tries each key", async () => {
  const token = await new SignJWT(claims({ access: ACCESS }))
    .setProtectedHeader({ alg: "ES256" })
    .sign(KEY.privateKey);
  const keys = [verifyKeyFor(OTHER), verifyKeyFor(KEY)];
  assert.equal((await verify(token, { keys })).subject, "alice");
});

Deno.test("verifyAccessToken() refuses another issuer", async () => {
  await refused(verify(await signRaw(KEY, {}, claims({ iss: "evil" }))), "issuer");
  await refused(verify(await signRaw(KEY, {}, claims({ iss: undefined }))), "issuer");
});

Deno.test("verifyAccessToken() refuses another audience, as a string or an array", async () => {
  await refused(verify(await signRaw(KEY, {}, claims({ aud: "other" }))), "audience");
  await refused(verify(await signRaw(KEY, {}, claims({ aud: ["a", "b"] }))), "audience");
  await refused(verify(await signRaw(KEY, {}, claims({ aud: undefined }))), "audience");
  const listed = await signRaw(KEY, {}, claims({ aud: ["other", SERVICE] }));
  assert.equal((await verify(listed)).subject, "alice");
});

Deno.test("verifyAccessToken() refuses an expired token beyond the clock skew", async () => {
  const { token } = await access();
  const exp = NOW + 300_000;
  assert.equal((await verify(token, { now: exp + 29_000 })).subject, "alice");
  await refused(verify(token, { now: exp + 31_000 }), "expired");
  await refused(verify(await signRaw(KEY, {}, claims({ exp: undefined }))), "claims");
  await refused(verify(await signRaw(KEY, {}, claims({ exp: "soon" }))), "claims");
});

Deno.test("verifyAccessToken() refuses nbf and iat in the future", async () => {
  const soon = NOW / 1000 + 60;
  const nbf = await signRaw(KEY, {}, claims({ nbf: soon, iat: NOW / 1000 }));
  await refused(verify(nbf), "not_yet_valid");
  assert.equal((await verify(nbf, { now: NOW + 31_000 })).subject, "alice");
  const iat = await signRaw(KEY, {}, claims({ iat: soon, nbf: undefined, exp: soon + 60 }));
  await refused(verify(iat), "issued_in_future");
});

Deno.test("verifyAccessToken() refuses lifetimes over 24 h", async () => {
  const iat = NOW / 1000;
  const long = claims({ exp: iat + 86_401 });
  await refused(verify(await signRaw(KEY, {}, long)), "lifetime");
  const noStart = claims({ exp: iat + 86_401, iat: undefined, nbf: undefined });
  await refused(verify(await signRaw(KEY, {}, noStart)), "lifetime");
  const oldIat = claims({ iat: iat - 86_400, nbf: undefined, exp: iat + 60 });
  await refused(verify(await signRaw(KEY, {}, oldIat)), "lifetime");
});

Deno.test("verifyAccessToken() refuses tokens over 8 KiB before any work", async () => {
  const big = await signRaw(KEY, {}, claims({ pad: "x".repeat(MAX_TOKEN_BYTES) }));
  await refused(verify(big), "too_large");
});

Deno.test("verifyAccessToken() refuses malformed tokens", async () => {
  const [header, payload, signature] = (await access()).token.split(".");
  for (
    const token of [
      "",
      "abc",
      `${header}.${payload}`,
      `${header}.${payload}.${signature}.x`,
      `${header}.${payload}!.${signature}`,
      `${header}.${payload}.${signature}=`,
      `.${payload}.${signature}`,
      `${encode("string")}.${payload}.${signature}`,
      `${base64url.encode("{not json")}.${payload}.${signature}`,
      `${encode({ alg: "ES256", kid: 7 })}.${payload}.${signature}`,
    ]
  ) await refused(verify(token), "malformed");
  const jwtHeader = { alg: "ES256", kid: KEY.kid, typ: "JWT" };
  const crit = { ...jwtHeader, crit: ["exp"], exp: 1 };
  await refused(verify(await signByHand(KEY, crit, JSON.stringify(claims()))), "malformed");
  await refused(verify(await signByHand(KEY, jwtHeader, "[1]")), "malformed");
  await refused(verify(await signByHand(KEY, jwtHeader, "{not json")), "malformed");
  const good = await signByHand(KEY, jwtHeader, JSON.stringify(claims()));
  assert.equal((await verify(good)).subject, "alice", "the hand signer signs correctly");
});

Deno.test("verifyAccessToken() refuses access claims of the wrong shape", async () => {
  const entry = { type: "repository", name: "a", actions: ["pull"] };
  const bad: unknown[] = [
    "repository:a:pull",
    [{ ...entry, type: "plugin" }],
    [{ ...entry, name: "" }],
    [{ ...entry, name: "n".repeat(257) }],
    [{ ...entry, actions: ["admin"] }],
    [{ ...entry, actions: "pull" }],
    [null],
    Array.from({ length: 65 }, () => entry),
  ];
  for (const value of bad) {
    await refused(verify(await signRaw(KEY, {}, claims({ access: value }))), "claims");
  }
  await refused(verify(await signRaw(KEY, {}, claims({ sub: 42 }))), "claims");
  const most = Array.from({ length: 64 }, (_, i) => ({ ...entry, name: `r${i}` }));
  assert.equal((await verify(await signRaw(KEY, {}, claims({ access: most })))).access.length, 64);
  assert.deepEqual((await verify(await signRaw(KEY, {}, claims()))).access, []);
});

Deno.test("verifyAccessToken() refuses a refresh token", async () => {
  const refresh = await issueRefreshToken(KEY, {
    issuer: ISSUER,
    service: SERVICE,
    subject: "alice",
    fingerprint: "fp1",
    ttlMs: 3600_000,
    now: NOW,
  });
  await refused(verify(refresh.token), "wrong_type");
  const typOnly = await signRaw(KEY, { typ: "berth-refresh+jwt" }, claims());
  await refused(verify(typOnly), "wrong_type");
  const claimOnly = await signRaw(KEY, {}, claims({ token_use: "refresh" }));
  await refused(verify(claimOnly), "wrong_type");
});

function verifyRefresh(token: string, now = NOW) {
  return verifyRefreshToken(token, { issuer: ISSUER, audience: SERVICE, keys: KEYS, now });
}

Deno.test("issueRefreshToken() round-trips the subject and fingerprint", async () => {
  const issued = await issueRefreshToken(KEY, {
    issuer: ISSUER,
    service: SERVICE,
    subject: "alice",
    fingerprint: "fp1",
    ttlMs: 7 * 24 * 3600_000,
    now: NOW,
  });
  assert.deepEqual(await verifyRefresh(issued.token), {
    subject: "alice",
    fingerprint: "fp1",
    expiresAt: NOW + 7 * 24 * 3600_000,
  });
  await refused(verifyRefresh(issued.token, NOW + 8 * 24 * 3600_000), "expired");
});

Deno.test("issueRefreshToken() refuses anonymous subjects and lifetimes over 30 days", async () => {
  const options = { issuer: ISSUER, service: SERVICE, fingerprint: "f", now: NOW };
  await assert.rejects(issueRefreshToken(KEY, { ...options, subject: "", ttlMs: 60_000 }));
  await assert.rejects(
    issueRefreshToken(KEY, { ...options, subject: "a", ttlMs: 31 * 24 * 3600_000 }),
    RangeError,
  );
});

Deno.test("verifyRefreshToken() refuses an access token and forged refresh tokens", async () => {
  await refused(verifyRefresh((await access()).token), "wrong_type");
  const refreshClaims = claims({ token_use: "refresh", fpr: "f" });
  const noTyp = await signRaw(KEY, {}, refreshClaims);
  await refused(verifyRefresh(noTyp), "wrong_type");
  const noUse = await signRaw(KEY, { typ: "berth-refresh+jwt" }, claims({ fpr: "f" }));
  await refused(verifyRefresh(noUse), "wrong_type");
  const other = await signRaw(OTHER, { typ: "berth-refresh+jwt", kid: KEY.kid }, refreshClaims);
  await refused(verifyRefresh(other), "signature");
  const anonymous = await signRaw(KEY, { typ: "berth-refresh+jwt" }, { ...refreshClaims, sub: "" });
  await refused(verifyRefresh(anonymous), "claims");
  const noFpr = await signRaw(KEY, { typ: "berth-refresh+jwt" }, claims({ token_use: "refresh" }));
  await refused(verifyRefresh(noFpr), "claims");
});

Deno.test("grants() collects actions for one name and expands *", () => {
  const list: Access = [
    { type: "repository", name: "a", actions: ["pull"] },
    { type: "repository", name: "a", actions: ["push"] },
    { type: "repository", name: "b", actions: ["*"] },
    { type: "registry", name: "catalog", actions: ["*"] },
  ];
  assert.deepEqual([...grants(list, "repository", "a")].sort(), ["pull", "push"]);
  assert.deepEqual([...grants(list, "repository", "b")].sort(), ["*", "delete", "pull", "push"]);
  assert.deepEqual([...grants(list, "repository", "c")], []);
  assert.deepEqual([...grants(list, "repository", "catalog")], []);
  assert.ok(grants(list, "registry", "catalog").has("*"));
});

/** Counts signature checks made through WebCrypto while `body` runs. */
async function countVerifies(body: () => Promise<void>): Promise<number> {
  const original = crypto.subtle.verify;
  let calls = 0;
  crypto.subtle.verify = function (...args: Parameters<SubtleCrypto["verify"]>) {
    calls++;
    return original.apply(this, args);
  };
  try {
    await body();
  } finally {
    crypto.subtle.verify = original;
  }
  return calls;
}

Deno.test("TokenVerifier checks a token's signature once and then remembers it until exp", async () => {
  let now = NOW;
  const verifier = new TokenVerifier({
    issuer: ISSUER,
    audience: SERVICE,
    keys: KEYS,
    clock: () => now,
  });
  const { token } = await access();
  const calls = await countVerifies(async () => {
    for (let i = 0; i < 5; i++) assert.equal((await verifier.verify(token)).subject, "alice");
  });
  assert.equal(calls, 1);
  now = NOW + 300_000;
  const late = await countVerifies(async () => {
    assert.equal((await verifier.verify(token)).subject, "alice", "within the clock skew");
  });
  assert.equal(late, 1, "a cache entry does not outlive exp");
  now = NOW + 331_000;
  await refused(verifier.verify(token), "expired");
});

Deno.test("TokenVerifier refuses forged tokens and keeps its cache bounded", async () => {
  const verifier = new TokenVerifier({
    issuer: ISSUER,
    audience: SERVICE,
    keys: KEYS,
    cacheSize: 2,
    clock: () => NOW,
  });
  const [header, , signature] = (await access()).token.split(".");
  await refused(verifier.verify(`${header}.${encode(claims())}.${signature}`), "signature");
  await refused(verifier.verify("x".repeat(MAX_TOKEN_BYTES + 1)), "too_large");
  for (let i = 0; i < 3; i++) await verifier.verify((await access()).token);
  assert.equal(verifier.cacheSize, 2);
});

Deno.test("TokenVerifier follows key rotation in an external issuer's key file", async () => {
  const dir = await Deno.makeTempDir();
  const next = await signingKey("EdDSA");
  const pem = async (key: SigningKey) => await exportSPKI(key.publicKey);
  const path = join(dir, "issuer.pem");
  await Deno.writeTextFile(path, `${await pem(KEY)}\n${await pem(next)}`);
  const file = await loadVerifyKeys(path, { checkIntervalMs: 0 });
  const verifier = new TokenVerifier({ issuer: ISSUER, audience: SERVICE, keys: file });
  const issue = (key: SigningKey) =>
    issueAccessToken(key, {
      issuer: ISSUER,
      service: SERVICE,
      subject: "alice",
      access: ACCESS,
      ttlMs: 300_000,
    });
  const old = (await issue(KEY)).token;
  const fresh = (await issue(next)).token;
  assert.equal((await verifier.verify(old)).subject, "alice");
  assert.equal((await verifier.verify(fresh)).subject, "alice");

  await Deno.writeTextFile(`${path}.new`, await pem(next));
  await Deno.rename(`${path}.new`, path);
  await refused(verifier.verify(old), "unknown_kid");
  assert.equal((await verifier.verify(fresh)).subject, "alice");
});
