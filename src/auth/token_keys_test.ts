import assert from "node:assert/strict";
import { join } from "node:path";
import { calculateJwkThumbprint, exportJWK, exportPKCS8, exportSPKI, generateKeyPair } from "jose";
import {
  DEFAULT_KEY_FILE,
  loadSigningKey,
  loadVerifyKeys,
  signingKeyFromSeed,
  type VerifyKey,
  verifyKeyFor,
} from "./token_keys.ts";

async function writePrivate(dir: string, name: string, text: string, mode = 0o600) {
  const path = join(dir, name);
  await Deno.writeTextFile(path, text, { mode });
  await Deno.chmod(path, mode);
  return path;
}

async function pkcs8(alg: string, options: Record<string, unknown> = {}): Promise<string> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true, ...options });
  return await exportPKCS8(privateKey);
}

async function spki(alg: string, options: Record<string, unknown> = {}) {
  const pair = await generateKeyPair(alg, { extractable: true, ...options });
  return { pem: await exportSPKI(pair.publicKey), publicKey: pair.publicKey };
}

async function run(command: string, args: string[], stdin?: Uint8Array): Promise<Uint8Array> {
  const child = new Deno.Command(command, {
    args,
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin) {
    const writer = child.stdin.getWriter();
    await writer.write(stdin);
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  return stdout;
}

Deno.test("loadSigningKey() generates a 0600 ES256 key file once and reuses it", async () => {
  const dataDir = await Deno.makeTempDir();
  const first = await loadSigningKey({ path: "", dataDir });
  const info = await Deno.stat(join(dataDir, DEFAULT_KEY_FILE));
  assert.equal(info.mode! & 0o777, 0o600);
  assert.equal(first.alg, "ES256");
  const second = await loadSigningKey({ path: "", dataDir });
  assert.equal(second.kid, first.kid);
  assert.deepEqual(second.publicJwk, first.publicJwk);
  assert.deepEqual([...Deno.readDirSync(dataDir)].map((e) => e.name), [DEFAULT_KEY_FILE]);
});

Deno.test("loadSigningKey() kid is the RFC 7638 thumbprint and the public JWK has no secret", async () => {
  const key = await loadSigningKey({ path: "", dataDir: await Deno.makeTempDir() });
  const jwk = await exportJWK(key.publicKey);
  assert.equal(key.kid, await calculateJwkThumbprint(jwk, "sha256"));
  assert.equal(key.publicJwk.d, undefined);
  assert.equal(key.publicJwk.kid, key.kid);
  assert.deepEqual(verifyKeyFor(key).kids, [key.kid]);
});

Deno.test("loadSigningKey() started many times at once ends with one key", async () => {
  const dataDir = await Deno.makeTempDir();
  const keys = await Promise.all(
    Array.from({ length: 8 }, () => loadSigningKey({ path: "", dataDir })),
  );
  assert.equal(new Set(keys.map((k) => k.kid)).size, 1);
  const again = await loadSigningKey({ path: "", dataDir });
  assert.equal(again.kid, keys[0]!.kid);
  assert.deepEqual([...Deno.readDirSync(dataDir)].map((e) => e.name), [DEFAULT_KEY_FILE]);
});

Deno.test("loadSigningKey() in processes started together ends with one key", async () => {
  const dataDir = await Deno.makeTempDir();
  const module = new URL("./token_keys.ts", import.meta.url).href;
  const config = new URL("../../deno.json", import.meta.url).pathname;
  const code = `const { loadSigningKey } = await import(${JSON.stringify(module)});
    console.log((await loadSigningKey({ path: "", dataDir: ${JSON.stringify(dataDir)} })).kid);`;
  const outputs = await Promise.all(
    Array.from({ length: 4 }, () => run(Deno.execPath(), ["eval", "--config", config, code])),
  );
  const kids = outputs.map((o) => new TextDecoder().decode(o).trim());
  assert.equal(new Set(kids).size, 1, kids.join(" "));
  assert.equal((await loadSigningKey({ path: "", dataDir })).kid, kids[0]);
});

Deno.test("loadSigningKey() refuses a generated key file readable by its group", async () => {
  const dataDir = await Deno.makeTempDir();
  await loadSigningKey({ path: "", dataDir });
  await Deno.chmod(join(dataDir, DEFAULT_KEY_FILE), 0o640);
  await assert.rejects(
    loadSigningKey({ path: "", dataDir }),
    /token-key\.pem" is readable by its group or others \(mode 0640\): run chmod 600/,
  );
});

Deno.test("loadSigningKey() reads an EC P-256 PKCS#8 key as ES256", async () => {
  const dir = await Deno.makeTempDir();
  const path = await writePrivate(dir, "ec.pem", await pkcs8("ES256"));
  const key = await loadSigningKey({ path, dataDir: dir });
  assert.equal(key.alg, "ES256");
  assert.equal(key.publicJwk.crv, "P-256");
  assert.ok(![...Deno.readDirSync(dir)].some((e) => e.name === DEFAULT_KEY_FILE));
});

Deno.test("loadSigningKey() reads an Ed25519 PKCS#8 key as EdDSA", async () => {
  const dir = await Deno.makeTempDir();
  const path = await writePrivate(dir, "ed.pem", await pkcs8("EdDSA", { crv: "Ed25519" }));
  const key = await loadSigningKey({ path, dataDir: dir });
  assert.equal(key.alg, "EdDSA");
  assert.equal(key.publicJwk.crv, "Ed25519");
});

Deno.test("loadSigningKey() allows a group-readable --token-key but not a world-readable one", async () => {
  const dir = await Deno.makeTempDir();
  const pem = await pkcs8("ES256");
  const group = await writePrivate(dir, "group.pem", pem, 0o640);
  assert.equal((await loadSigningKey({ path: group, dataDir: dir })).alg, "ES256");
  const world = await writePrivate(dir, "world.pem", pem, 0o644);
  await assert.rejects(
    loadSigningKey({ path: world, dataDir: dir }),
    /world\.pem" is readable by others \(mode 0644\)/,
  );
});

Deno.test("loadSigningKey() refuses RSA, P-384, SEC1, garbage and missing key files", async () => {
  const dir = await Deno.makeTempDir();
  const cases: [string, string, RegExp][] = [
    ["rsa.pem", await pkcs8("RS256", { modulusLength: 2048 }), /rsa\.pem" is not an allowed/],
    ["p384.pem", await pkcs8("ES384"), /p384\.pem" is not an allowed .*EC P-256 and Ed25519/],
    ["garbage.pem", "not a key at all\n", /garbage\.pem" holds no PEM block/],
    ["public.pem", (await spki("ES256")).pem, /public\.pem" holds no PEM "PRIVATE KEY"/],
  ];
  const sec1 = await run("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout"]);
  cases.push(["sec1.pem", new TextDecoder().decode(sec1), /openssl pkcs8 -topk8 -nocrypt/]);
  for (const [name, text, error] of cases) {
    const path = await writePrivate(dir, name, text);
    await assert.rejects(loadSigningKey({ path, dataDir: dir }), error, name);
  }
  await assert.rejects(
    loadSigningKey({ path: join(dir, "missing.pem"), dataDir: dir }),
    /missing\.pem" does not exist/,
  );
});

Deno.test("loadVerifyKeys() reads several PEM public keys with their algorithms", async () => {
  const dir = await Deno.makeTempDir();
  const keys = [
    await spki("ES256"),
    await spki("ES384"),
    await spki("EdDSA", { crv: "Ed25519" }),
    await spki("RS256", { modulusLength: 2048 }),
  ];
  const path = await writePrivate(dir, "keys.pem", keys.map((k) => k.pem).join("\n"), 0o644);
  const file = await loadVerifyKeys(path);
  const loaded = await file.current();
  assert.deepEqual(loaded.map((k) => k.alg), ["ES256", "ES384", "EdDSA", "RS256"]);
  for (const [i, key] of loaded.entries()) {
    const thumbprint = await calculateJwkThumbprint(await exportJWK(keys[i]!.publicKey));
    assert.equal(key.kids[0], thumbprint);
  }
});

Deno.test("loadVerifyKeys() gives each PEM key its Docker libtrust key ID", async () => {
  const dir = await Deno.makeTempDir();
  const { pem } = await spki("ES256");
  const path = await writePrivate(dir, "key.pem", pem, 0o644);
  const der = await run("openssl", ["pkey", "-pubin", "-in", path, "-outform", "DER"]);
  const digest = await run("openssl", ["dgst", "-sha256", "-binary"], der);
  const base32 = await run("base32", ["-w", "0"], digest.subarray(0, 30));
  const expected = new TextDecoder().decode(base32).replace(/=+$/, "").match(/.{4}/g)!.join(":");
  const [key] = await (await loadVerifyKeys(path)).current();
  assert.equal(key!.kids[1], expected);
  assert.match(expected, /^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/);
});

Deno.test("loadVerifyKeys() takes the public key of an X.509 certificate", async () => {
  const dir = await Deno.makeTempDir();
  const keyPath = await writePrivate(dir, "issuer.key", await pkcs8("ES256"));
  const certPath = join(dir, "issuer.crt");
  await run("openssl", [
    ...["req", "-x509", "-key", keyPath, "-out", certPath, "-days", "1"],
    ...["-subj", "/CN=issuer"],
  ]);
  const signing = await loadSigningKey({ path: keyPath, dataDir: dir });
  const [key] = await (await loadVerifyKeys(certPath)).current();
  assert.equal(key!.alg, "ES256");
  assert.equal(key!.kids[0], signing.kid);
});

Deno.test("loadVerifyKeys() reads a JWKS, keeping kids and skipping encryption keys", async () => {
  const dir = await Deno.makeTempDir();
  const ec = await exportJWK((await spki("ES256")).publicKey);
  const ed = await exportJWK((await spki("EdDSA", { crv: "Ed25519" })).publicKey);
  const enc = await exportJWK((await spki("RS256", { modulusLength: 2048 })).publicKey);
  const jwks = {
    keys: [
      { ...ec, kid: "issuer-2024", alg: "ES256", use: "sig" },
      ed,
      { ...enc, use: "enc", alg: "RSA-OAEP" },
    ],
  };
  const path = await writePrivate(dir, "jwks.json", JSON.stringify(jwks), 0o644);
  const keys = await (await loadVerifyKeys(path)).current();
  assert.deepEqual(keys.map((k) => k.alg), ["ES256", "EdDSA"]);
  assert.equal(keys[0]!.kids[0], "issuer-2024");
  assert.equal(keys[1]!.kids[0], await calculateJwkThumbprint(ed));
});

Deno.test("loadVerifyKeys() refuses unusable files on the first load", async () => {
  const dir = await Deno.makeTempDir();
  const rsa1024 = await run("openssl", [
    ...["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
  ]);
  const rsa1024Path = await writePrivate(dir, "rsa1024.key", new TextDecoder().decode(rsa1024));
  const weak = new TextDecoder().decode(
    await run("openssl", ["pkey", "-in", rsa1024Path, "-pubout"]),
  );
  const ec = await exportJWK((await spki("ES256")).publicKey);
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  const cases: [string, string, RegExp][] = [
    ["garbage.pem", "hello", /holds no PEM block/],
    ["weak.pem", weak, /RSA key of 1024 bits \(at least 2048 needed\)/],
    ["private.pem", await exportPKCS8(privateKey), /PEM "PRIVATE KEY" \(allowed: PUBLIC KEY/],
    ["empty.json", `{"keys":[]}`, /holds no signing key/],
    ["nokeys.json", `{"foo":1}`, /without a "keys" array/],
    ["secret.json", JSON.stringify({ keys: [await exportJWK(privateKey)] }), /private or secret/],
    ["ps256.json", JSON.stringify({ keys: [{ ...ec, alg: "PS256" }] }), /alg "PS256" is not/],
    ["hmac.json", JSON.stringify({ keys: [{ kty: "oct", k: "AAAA" }] }), /private or secret/],
    ["broken.json", `{"keys": [`, /is not a usable JWKS/],
  ];
  for (const [name, text, error] of cases) {
    const path = await writePrivate(dir, name, text, 0o644);
    await assert.rejects(loadVerifyKeys(path), error, name);
  }
  await assert.rejects(loadVerifyKeys(join(dir, "missing.pem")), /does not exist/);
});

Deno.test("loadVerifyKeys() re-reads a changed file and keeps the old keys when it breaks", async () => {
  const dir = await Deno.makeTempDir();
  const [a, b] = [await spki("ES256"), await spki("ES256")];
  const path = await writePrivate(dir, "keys.pem", a.pem, 0o644);
  const errors: Error[] = [];
  let now = 0;
  const file = await loadVerifyKeys(path, { onError: (e) => errors.push(e), clock: () => now });
  const kidsOf = (keys: readonly VerifyKey[]) => keys.map((k) => k.kids[0]);
  const aKid = await calculateJwkThumbprint(await exportJWK(a.publicKey));
  const bKid = await calculateJwkThumbprint(await exportJWK(b.publicKey));
  assert.deepEqual(kidsOf(await file.current()), [aKid]);

  await Deno.writeTextFile(`${path}.new`, `${a.pem}\n${b.pem}`);
  await Deno.rename(`${path}.new`, path);
  now = 500;
  assert.deepEqual(kidsOf(await file.current()), [aKid], "stat at most once a second");
  now = 1000;
  assert.deepEqual(kidsOf(await file.current()), [aKid, bKid]);

  await Deno.writeTextFile(`${path}.new`, "-----BEGIN PUBLIC KEY-----\n@@\n");
  await Deno.rename(`${path}.new`, path);
  now = 2000;
  assert.deepEqual(kidsOf(await file.current()), [aKid, bKid]);
  assert.equal(errors.length, 1);
  assert.match(errors[0]!.message, /keys\.pem" holds no PEM block; keeping the previous keys/);
  now = 3000;
  await file.current();
  assert.equal(errors.length, 1, "a broken file is reported once, not every second");

  await Deno.writeTextFile(`${path}.new`, b.pem);
  await Deno.rename(`${path}.new`, path);
  now = 4000;
  assert.deepEqual(kidsOf(await file.current()), [bKid]);
});

Deno.test("signingKeyFromSeed() derives one Ed25519 key from a seed, whose tokens verify", async () => {
  const { issueAccessToken, verifyAccessToken } = await import("./tokens.ts");
  const seed = crypto.getRandomValues(new Uint8Array(32));
  const key = await signingKeyFromSeed(seed);
  const again = await signingKeyFromSeed(seed.slice());
  assert.equal(key.alg, "EdDSA");
  assert.equal(again.kid, key.kid);
  assert.notEqual((await signingKeyFromSeed(new Uint8Array(32))).kid, key.kid);
  const issued = await issueAccessToken(again, {
    issuer: "berth",
    service: "berth",
    subject: "alice",
    access: [],
    ttlMs: 60_000,
  });
  const verified = await verifyAccessToken(issued.token, {
    issuer: "berth",
    audience: "berth",
    keys: [verifyKeyFor(key)],
  });
  assert.equal(verified.subject, "alice");
  await assert.rejects(signingKeyFromSeed(new Uint8Array(31)), /32 bytes/);
});
