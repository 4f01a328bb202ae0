/**
 * Keys of the token flow: the private key Berth signs its tokens with, and the public keys
 * tokens are verified with (Berth's own, or an external issuer's PEM or JWKS file, re-read
 * when it changes so the issuer can rotate keys without a restart).
 *
 * The generated key is ES256 (EC P-256): every registry token verifier (distribution, zot,
 * Harbor) and JWT library accepts it, while EdDSA support is still patchy; signing speed does
 * not matter here and verification is cached. Certificates are only carriers of a public key:
 * their validity period is not checked, as distribution does for keys it matches by `kid`;
 * the file itself says which keys are trusted.
 *
 * @module
 */
import { calculateJwkThumbprint, importX509, type JWK } from "jose";
import { join } from "node:path";
import { createHash } from "node:crypto";

/** Algorithms Berth signs with. */
export type SigningAlg = "ES256" | "EdDSA";
/** Algorithms accepted on tokens. */
export type VerifyAlg = "ES256" | "ES384" | "EdDSA" | "RS256";
/** Every algorithm a token may be signed with; anything else (`none`, HS256, PS256) is refused. */
export const VERIFY_ALGS: readonly VerifyAlg[] = ["ES256", "ES384", "EdDSA", "RS256"];

/** Berth's signing key. `kid` is the RFC 7638 SHA-256 thumbprint of `publicJwk`. */
export interface SigningKey {
  alg: SigningAlg;
  kid: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  publicJwk: JWK;
}

/** A public key tokens may be signed with; a token's `kid` header must be one of `kids`. */
export interface VerifyKey {
  alg: VerifyAlg;
  /** The JWKS `kid` (if any), the RFC 7638 thumbprint and the Docker libtrust key ID. */
  kids: readonly string[];
  key: CryptoKey;
}

/** Where verification keys come from; `current()` may re-read a file. */
export interface VerifyKeySource {
  current(): Promise<readonly VerifyKey[]>;
}

/** The default key file inside the data directory. */
export const DEFAULT_KEY_FILE = "token-key.pem";
const MAX_KEY_FILE_BYTES = 1 << 20;
const MAX_VERIFY_KEYS = 64;
const MIN_RSA_BITS = 2048;

const IMPORT: Record<VerifyAlg, AlgorithmIdentifier | EcKeyImportParams | RsaHashedImportParams> = {
  ES256: { name: "ECDSA", namedCurve: "P-256" },
  ES384: { name: "ECDSA", namedCurve: "P-384" },
  EdDSA: { name: "Ed25519" },
  RS256: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
};
const SIGNING_ALGS: readonly SigningAlg[] = ["ES256", "EdDSA"];
const PEM_REGEXP = /-----BEGIN ([A-Z0-9 ]+)-----([A-Za-z0-9+/=\s]*?)-----END \1-----/g;

interface PemBlock {
  label: string;
  text: string;
  der: Uint8Array<ArrayBuffer>;
}

function parsePem(text: string, what: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const match of text.matchAll(PEM_REGEXP)) {
    let der: Uint8Array<ArrayBuffer>;
    try {
      der = Uint8Array.from(atob(match[2]!.replace(/\s+/g, "")), (c) => c.charCodeAt(0));
    } catch {
      throw new Error(`${what} has a PEM block "${match[1]}" that is not valid base64`);
    }
    blocks.push({ label: match[1]!, text: match[0], der });
  }
  if (blocks.length === 0) throw new Error(`${what} holds no PEM block`);
  return blocks;
}

async function statFile(path: string, what: string): Promise<Deno.FileInfo> {
  try {
    return await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Deno.errors.NotFound(`${what} does not exist`);
    }
    throw error;
  }
}

async function readLimited(path: string, what: string): Promise<string> {
  const info = await statFile(path, what);
  if (!info.isFile) throw new Error(`${what} is not a regular file`);
  if (info.size > MAX_KEY_FILE_BYTES) throw new Error(`${what} is larger than 1 MiB`);
  return await Deno.readTextFile(path);
}

/**
 * Loads the key that signs Berth's tokens: the PEM PKCS#8 file `path` (EC P-256 or Ed25519;
 * others are refused), or, when `path` is "", `<dataDir>/token-key.pem`, generated once
 * (ES256, mode 0600). A key file readable by others is refused; the generated file also when
 * it is readable by its group, since Berth made it 0600 and someone has changed that.
 */
export async function loadSigningKey(
  options: { path: string; dataDir: string },
): Promise<SigningKey> {
  if (options.path !== "") return await readSigningKey(options.path, 0o007);
  const path = join(options.dataDir, DEFAULT_KEY_FILE);
  try {
    return await readSigningKey(path, 0o077);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  await createKeyFile(options.dataDir, path);
  return await readSigningKey(path, 0o077);
}

/**
 * Writes a fresh ES256 key to `path` without ever replacing one: the key goes to a private
 * temporary file, is synced, then hard-linked into place. Of two processes starting together
 * one link wins; the other fails with AlreadyExists and both then read the winner's key.
 */
async function createKeyFile(dataDir: string, path: string): Promise<void> {
  await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const pair = await crypto.subtle.generateKey(IMPORT.ES256, true, ["sign", "verify"]);
  const { privateKey } = pair as CryptoKeyPair;
  const der = new Uint8Array(await crypto.subtle.exportKey("pkcs8", privateKey));
  const lines = btoa(String.fromCharCode(...der)).match(/.{1,64}/g)!.join("\n");
  const pem = `-----BEGIN PRIVATE KEY-----\n${lines}\n-----END PRIVATE KEY-----\n`;
  const temp = `${path}.${crypto.randomUUID()}.tmp`;
  const file = await Deno.open(temp, { write: true, createNew: true, mode: 0o600 });
  try {
    await file.write(new TextEncoder().encode(pem));
    await file.sync();
  } finally {
    file.close();
  }
  try {
    await Deno.link(temp, path);
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
  } finally {
    await Deno.remove(temp);
  }
  const dir = await Deno.open(dataDir, { read: true });
  try {
    await dir.sync();
  } finally {
    dir.close();
  }
}

/** The public members of a JWK (RFC 7638 set), which is all a verifier may see. */
function publicMembers(jwk: object): JWK & JsonWebKey {
  const out: Record<string, string> = {};
  for (const name of ["kty", "crv", "x", "y", "n", "e"]) {
    const value = (jwk as Record<string, unknown>)[name];
    if (typeof value === "string") out[name] = value;
  }
  return out as JWK & JsonWebKey;
}

async function readSigningKey(path: string, forbiddenMode: number): Promise<SigningKey> {
  const what = `Token key file "${path}"`;
  const info = await statFile(path, what);
  if (info.mode !== null && (info.mode & forbiddenMode) !== 0) {
    const who = forbiddenMode & 0o070 ? "its group or others" : "others";
    const mode = (info.mode & 0o777).toString(8).padStart(3, "0");
    throw new Error(`${what} is readable by ${who} (mode 0${mode}): run chmod 600 on it`);
  }
  const blocks = parsePem(await readLimited(path, what), what);
  const block = blocks.find((b) => b.label === "PRIVATE KEY");
  if (!block) {
    const hint = blocks.some((b) => b.label === "EC PRIVATE KEY")
      ? ": convert it with openssl pkcs8 -topk8 -nocrypt"
      : "";
    throw new Error(`${what} holds no PEM "PRIVATE KEY" (PKCS#8, unencrypted)${hint}`);
  }
  for (const alg of SIGNING_ALGS) {
    let privateKey: CryptoKey;
    try {
      privateKey = await crypto.subtle.importKey("pkcs8", block.der, IMPORT[alg], true, ["sign"]);
    } catch {
      continue;
    }
    return await signingKeyOf(privateKey, alg);
  }
  throw new Error(`${what} is not an allowed private key: allowed are EC P-256 and Ed25519`);
}

async function signingKeyOf(privateKey: CryptoKey, alg: SigningAlg): Promise<SigningKey> {
  const jwk = publicMembers(await crypto.subtle.exportKey("jwk", privateKey));
  const publicKey = await crypto.subtle.importKey("jwk", jwk, IMPORT[alg], true, ["verify"]);
  const kid = await calculateJwkThumbprint(jwk, "sha256");
  return { alg, kid, privateKey, publicKey, publicJwk: { ...jwk, kid, alg, use: "sig" } };
}

/** The PKCS#8 prefix of an Ed25519 private key; its 32-byte seed follows (RFC 8410). */
const ED25519_PKCS8_PREFIX = [
  0x30,
  0x2e,
  0x02,
  0x01,
  0x00,
  0x30,
  0x05,
  0x06,
  0x03,
  0x2b,
  0x65,
  0x70,
  0x04,
  0x22,
  0x04,
  0x20,
];

/**
 * The signing key whose Ed25519 seed is `seed` (32 bytes): in deploy mode Berth keeps no key
 * file, and every instance derives the same key from a secret kept in KV. Only Berth verifies
 * the tokens it issues, so EdDSA's patchy support among other verifiers does not matter.
 */
export async function signingKeyFromSeed(seed: Uint8Array): Promise<SigningKey> {
  if (seed.length !== 32) throw new Error("A token key seed is 32 bytes");
  const der = new Uint8Array([...ED25519_PKCS8_PREFIX, ...seed]);
  const privateKey = await crypto.subtle.importKey("pkcs8", der, IMPORT.EdDSA, true, ["sign"]);
  return await signingKeyOf(privateKey, "EdDSA");
}

/** The verification key of Berth's own signing key. */
export function verifyKeyFor(key: SigningKey): VerifyKey {
  return { alg: key.alg, kids: [key.kid], key: key.publicKey };
}

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/** Docker libtrust key ID: base32 of the first 240 bits of SHA-256(SPKI), in groups of 4. */
function libtrustKid(spki: Uint8Array): string {
  const bytes = createHash("sha256").update(spki).digest().subarray(0, 30);
  let bits = 0;
  let value = 0;
  let out = "";
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out.match(/.{4}/g)!.join(":");
}

async function describeKey(key: CryptoKey, alg: VerifyAlg, kid: string | null): Promise<VerifyKey> {
  if (alg === "RS256") {
    const bits = (key.algorithm as RsaHashedKeyAlgorithm).modulusLength;
    if (bits < MIN_RSA_BITS) throw new Error(`an RSA key of ${bits} bits (at least 2048 needed)`);
  }
  const jwk = await crypto.subtle.exportKey("jwk", key) as JWK;
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", key));
  const kids = [await calculateJwkThumbprint(jwk, "sha256"), libtrustKid(spki)];
  return { alg, kids: kid === null ? kids : [kid, ...kids], key };
}

async function pemKey(block: PemBlock): Promise<VerifyKey> {
  if (block.label !== "PUBLIC KEY" && block.label !== "CERTIFICATE") {
    throw new Error(`a PEM "${block.label}" (allowed: PUBLIC KEY, CERTIFICATE)`);
  }
  for (const alg of VERIFY_ALGS) {
    let key: CryptoKey;
    try {
      key = block.label === "CERTIFICATE"
        ? await importX509(block.text, alg, { extractable: true })
        : await crypto.subtle.importKey("spki", block.der, IMPORT[alg], true, ["verify"]);
    } catch {
      continue;
    }
    return await describeKey(key, alg, null);
  }
  throw new Error(`a PEM "${block.label}" whose key is not EC P-256/P-384, Ed25519 or RSA`);
}

function jwkAlg(jwk: Record<string, unknown>): VerifyAlg {
  const inferred = jwk.kty === "RSA"
    ? "RS256"
    : jwk.kty === "EC" && jwk.crv === "P-256"
    ? "ES256"
    : jwk.kty === "EC" && jwk.crv === "P-384"
    ? "ES384"
    : jwk.kty === "OKP" && jwk.crv === "Ed25519"
    ? "EdDSA"
    : null;
  if (inferred === null) throw new Error(`kty "${jwk.kty}" crv "${jwk.crv}" is not allowed`);
  if (jwk.alg !== undefined && jwk.alg !== inferred) {
    throw new Error(`alg "${jwk.alg}" is not allowed for it (allowed: ${inferred})`);
  }
  return inferred;
}

async function jwksKeys(text: string): Promise<VerifyKey[]> {
  const jwks: unknown = JSON.parse(text);
  const list = (jwks as { keys?: unknown })?.keys;
  if (!Array.isArray(list)) throw new Error(`a JSON document without a "keys" array`);
  const keys: VerifyKey[] = [];
  for (const [index, item] of list.entries()) {
    const jwk = item as Record<string, unknown>;
    if (typeof jwk !== "object" || jwk === null) throw new Error(`key ${index} is not an object`);
    if (jwk.use === "enc") continue;
    try {
      if ("d" in jwk || "p" in jwk || "k" in jwk) throw new Error("it is a private or secret key");
      const alg = jwkAlg(jwk);
      const pub = publicMembers(jwk);
      const key = await crypto.subtle.importKey("jwk", pub, IMPORT[alg], true, ["verify"]);
      const kid = typeof jwk.kid === "string" && jwk.kid !== "" ? jwk.kid : null;
      keys.push(await describeKey(key, alg, kid));
    } catch (error) {
      throw new Error(`key ${index}: ${(error as Error).message}`);
    }
  }
  return keys;
}

async function parseVerifyKeys(text: string, what: string): Promise<VerifyKey[]> {
  let keys: VerifyKey[];
  if (text.trimStart().startsWith("{")) {
    try {
      keys = await jwksKeys(text);
    } catch (error) {
      throw new Error(`${what} is not a usable JWKS: ${(error as Error).message}`);
    }
  } else {
    keys = [];
    for (const [index, block] of parsePem(text, what).entries()) {
      try {
        keys.push(await pemKey(block));
      } catch (error) {
        throw new Error(`${what}: PEM block ${index} is ${(error as Error).message}`);
      }
    }
  }
  if (keys.length === 0) throw new Error(`${what} holds no signing key`);
  if (keys.length > MAX_VERIFY_KEYS) throw new Error(`${what} holds more than 64 keys`);
  return keys;
}

function stampOf(info: Deno.FileInfo): string {
  return [info.ino, info.size, info.mtime?.getTime(), info.ctime?.getTime()].join(":");
}

/** Options of {@linkcode loadVerifyKeys}. */
export interface VerifyKeyFileOptions {
  /** Called when a changed file cannot be used; the previous keys stay in force. */
  onError?: (error: Error) => void;
  /** How often `current()` may stat the file (default 1000 ms). */
  checkIntervalMs?: number;
  /** The clock, in ms since the epoch (tests). */
  clock?: () => number;
}

/** The keys of an external issuer's file, re-read when the file changes. */
export class VerifyKeyFile implements VerifyKeySource {
  readonly path: string;
  #keys: readonly VerifyKey[];
  #stamp: string;
  #checkedAt: number;
  #checking: Promise<void> | null = null;
  #options: VerifyKeyFileOptions;

  constructor(
    path: string,
    keys: readonly VerifyKey[],
    stamp: string,
    options: VerifyKeyFileOptions,
  ) {
    this.path = path;
    this.#keys = keys;
    this.#stamp = stamp;
    this.#options = options;
    this.#checkedAt = this.#now();
  }

  #now(): number {
    return (this.#options.clock ?? Date.now)();
  }

  /** The keys in force, after re-reading the file if it changed (stat at most once a period). */
  async current(): Promise<readonly VerifyKey[]> {
    const now = this.#now();
    if (
      this.#checking === null && now - this.#checkedAt >= (this.#options.checkIntervalMs ?? 1000)
    ) {
      this.#checkedAt = now;
      this.#checking = this.#check().finally(() => this.#checking = null);
    }
    if (this.#checking !== null) await this.#checking;
    return this.#keys;
  }

  async #check(): Promise<void> {
    const what = `Token public key file "${this.path}"`;
    try {
      const stamp = stampOf(await Deno.stat(this.path));
      if (stamp === this.#stamp) return;
      this.#stamp = stamp;
      this.#keys = await parseVerifyKeys(await readLimited(this.path, what), what);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      const reported = message.startsWith(what) ? message : `${what}: ${message}`;
      this.#options.onError?.(new Error(`${reported}; keeping the previous keys`));
    }
  }
}

/**
 * Loads an external issuer's public keys: PEM public keys (SPKI) and/or X.509 certificates,
 * or a JWKS document. Several keys are accepted at once (rotation). Throws if the file cannot
 * be used; later changes that cannot be used are reported to `onError` and ignored.
 */
export async function loadVerifyKeys(
  path: string,
  options: VerifyKeyFileOptions = {},
): Promise<VerifyKeyFile> {
  const what = `Token public key file "${path}"`;
  const stamp = stampOf(await statFile(path, what));
  const keys = await parseVerifyKeys(await readLimited(path, what), what);
  return new VerifyKeyFile(path, keys, stamp, options);
}
