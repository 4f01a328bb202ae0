/**
 * Docker registry tokens: issuing and verifying access tokens (JWTs with an `access` claim)
 * and refresh tokens, plus a verifier that caches what it has verified.
 *
 * Verification refuses anything it has not checked: the size, the shape, the algorithm
 * (never `none` or one the key is not for), the `kid`, the signature, `iss`, `aud`, `exp`,
 * `nbf`, `iat`, the lifetime and the `access` claim. A refresh token has header
 * `typ: "berth-refresh+jwt"` and claim `token_use: "refresh"`; an access token carrying
 * either is refused, and a refresh token must carry both, so neither passes as the other.
 * Error messages never contain the token.
 *
 * @module
 */
import { base64url, compactVerify, errors, SignJWT } from "jose";
import { createHash } from "node:crypto";
import { type Action, ACTIONS } from "./scope.ts";
import {
  type SigningKey,
  VERIFY_ALGS,
  type VerifyAlg,
  type VerifyKey,
  type VerifyKeySource,
} from "./token_keys.ts";

/** An action of the `access` claim; `*` means every action. */
export type AccessAction = Action | "*";
/** Docker's `access` claim. */
export type Access = {
  type: "repository" | "registry";
  name: string;
  actions: AccessAction[];
}[];

/** What a verified access token says; `subject` is null for an anonymous token (`sub: ""`). */
export interface VerifiedAccess {
  subject: string | null;
  access: Access;
  /** `exp`, in ms since the epoch. */
  expiresAt: number;
}

/** What a verified refresh token says. */
export interface VerifiedRefresh {
  subject: string;
  fingerprint: string;
  expiresAt: number;
}

/** A signed token, with the fields of the Docker token response. */
export interface IssuedToken {
  token: string;
  /** Seconds until expiry (`expires_in`). */
  expiresIn: number;
  /** RFC 3339 time of issue (`issued_at`). */
  issuedAt: string;
}

/** Why a token was refused. */
export type TokenErrorReason =
  | "too_large"
  | "malformed"
  | "algorithm"
  | "unknown_kid"
  | "signature"
  | "wrong_type"
  | "issuer"
  | "audience"
  | "expired"
  | "not_yet_valid"
  | "issued_in_future"
  | "lifetime"
  | "claims";

/** A token was refused. The message says why and never contains the token. */
export class TokenError extends Error {
  readonly reason: TokenErrorReason;
  constructor(reason: TokenErrorReason, message: string) {
    super(message);
    this.name = "TokenError";
    this.reason = reason;
  }
}

/** Longest token accepted, in bytes. */
export const MAX_TOKEN_BYTES = 8192;
/** Longest lifetime (exp − iat, exp − nbf, exp − now) of an access token. */
export const MAX_ACCESS_LIFETIME_MS = 24 * 3600_000;
/** Longest lifetime of a refresh token. */
export const MAX_REFRESH_LIFETIME_MS = 30 * 24 * 3600_000;
/** Clock skew allowed by default, in seconds. */
export const DEFAULT_CLOCK_SKEW_S = 30;
/** The `typ` header of refresh tokens. */
export const REFRESH_TYP = "berth-refresh+jwt";
const MAX_ACCESS_ENTRIES = 64;
const MAX_NAME_LENGTH = 256;
const MAX_ACTIONS = 16;
const MAX_SUBJECT_LENGTH = 256;
const MAX_FINGERPRINT_LENGTH = 512;
const ACCESS_ACTIONS: readonly string[] = [...ACTIONS, "*"];
const PART_REGEXP = /^[A-Za-z0-9_-]*$/;

/** The actions `access` grants on `type`/`name`; `*` grants pull, push and delete too. */
export function grants(
  access: Access,
  type: "repository" | "registry",
  name: string,
): Set<AccessAction> {
  const granted = new Set<AccessAction>();
  for (const entry of access) {
    if (entry.type !== type || entry.name !== name) continue;
    for (const action of entry.actions) {
      granted.add(action);
      if (action === "*") ACTIONS.forEach((a) => granted.add(a));
    }
  }
  return granted;
}

/** Checks and copies an `access` claim; returns null if it has not the expected shape. */
function parseAccess(value: unknown): Access | null {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > MAX_ACCESS_ENTRIES) return null;
  const access: Access = [];
  for (const item of value) {
    const { type, name, actions } = (item ?? {}) as Record<string, unknown>;
    if (type !== "repository" && type !== "registry") return null;
    if (typeof name !== "string" || name === "" || name.length > MAX_NAME_LENGTH) return null;
    if (!Array.isArray(actions) || actions.length > MAX_ACTIONS) return null;
    if (!actions.every((a) => ACCESS_ACTIONS.includes(a))) return null;
    access.push(Object.freeze({ type, name, actions: Object.freeze([...actions]) }) as never);
  }
  return Object.freeze(access) as Access;
}

function checkTtl(ttlMs: number, max: number): number {
  const seconds = Math.floor(ttlMs / 1000);
  if (!Number.isFinite(ttlMs) || seconds < 1 || ttlMs > max) {
    throw new RangeError(`Cannot issue a token living ${ttlMs} ms: allowed 1 s to ${max} ms`);
  }
  return seconds;
}

async function sign(
  key: SigningKey,
  typ: string,
  claims: Record<string, unknown>,
  options: { ttlMs: number; maxMs: number; now: number | undefined },
): Promise<IssuedToken> {
  const expiresIn = checkTtl(options.ttlMs, options.maxMs);
  const now = options.now ?? Date.now();
  const iat = Math.floor(now / 1000);
  const jti = base64url.encode(crypto.getRandomValues(new Uint8Array(16)));
  const token = await new SignJWT({ ...claims, exp: iat + expiresIn, nbf: iat, iat, jti })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ })
    .sign(key.privateKey);
  if (token.length > MAX_TOKEN_BYTES) {
    throw new RangeError(`Cannot issue a token of ${token.length} bytes: at most 8 KiB`);
  }
  return { token, expiresIn, issuedAt: new Date(iat * 1000).toISOString() };
}

/** Common options of token issuing. */
export interface IssueOptions {
  issuer: string;
  /** The `service` of the token request; becomes `aud`. */
  service: string;
  /** The user name, or "" for anonymous. */
  subject: string;
  ttlMs: number;
  /** Time of issue, ms since the epoch (default now). */
  now?: number;
}

/** Signs an access token granting `access` (ttlMs at most 24 h). */
export async function issueAccessToken(
  key: SigningKey,
  options: IssueOptions & { access: Access },
): Promise<IssuedToken> {
  const access = parseAccess(options.access);
  if (access === null) {
    throw new TypeError("Cannot issue a token: access has not the claim's shape");
  }
  const { issuer: iss, service: aud, subject: sub } = options;
  return await sign(key, "JWT", { iss, sub, aud, access }, {
    ttlMs: options.ttlMs,
    maxMs: MAX_ACCESS_LIFETIME_MS,
    now: options.now,
  });
}

/**
 * Signs a refresh token for `subject` (a user) carrying `fingerprint`, an opaque string the
 * caller derives from the user's htpasswd entry to refuse the token after a password change.
 * The token is signed, not encrypted: the fingerprint must not reveal the entry.
 */
export async function issueRefreshToken(
  key: SigningKey,
  options: IssueOptions & { fingerprint: string },
): Promise<IssuedToken> {
  const { issuer: iss, service: aud, subject: sub, fingerprint: fpr } = options;
  if (sub === "") throw new TypeError("Cannot issue a refresh token to anonymous");
  if (fpr.length > MAX_FINGERPRINT_LENGTH) throw new RangeError("Fingerprint too long");
  return await sign(key, REFRESH_TYP, { iss, sub, aud, token_use: "refresh", fpr }, {
    ttlMs: options.ttlMs,
    maxMs: MAX_REFRESH_LIFETIME_MS,
    now: options.now,
  });
}

/** Options of token verification. */
export interface VerifyOptions {
  issuer: string;
  /** Berth's `service`; must be `aud` or one of its entries. */
  audience: string;
  keys: readonly VerifyKey[];
  /** Current time, ms since the epoch (default now). */
  now?: number;
  /** Clock skew allowed on exp, nbf and iat, in seconds (default 30). */
  clockSkewS?: number;
}

function decodeJson(part: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(base64url.decode(part)));
  } catch {
    throw new TokenError("malformed", `Token ${what} is not base64url JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TokenError("malformed", `Token ${what} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

/** Checks size, shape, algorithm, kid and signature; returns the header and the claims. */
async function verifySignature(
  token: string,
  keys: readonly VerifyKey[],
): Promise<{ header: Record<string, unknown>; claims: Record<string, unknown> }> {
  if (token.length > MAX_TOKEN_BYTES) throw new TokenError("too_large", "Token larger than 8 KiB");
  const parts = token.split(".");
  if (parts.length !== 3 || !parts.every((p) => PART_REGEXP.test(p)) || parts[0] === "") {
    throw new TokenError("malformed", "Token is not three base64url parts");
  }
  const header = decodeJson(parts[0]!, "header");
  const alg = header.alg;
  if (typeof alg !== "string" || !VERIFY_ALGS.includes(alg as VerifyAlg)) {
    throw new TokenError("algorithm", "Token algorithm is not allowed");
  }
  const kid = header.kid;
  if (kid !== undefined && typeof kid !== "string") {
    throw new TokenError("malformed", "Token kid is not a string");
  }
  const known = kid === undefined ? keys : keys.filter((k) => k.kids.includes(kid));
  if (known.length === 0) throw new TokenError("unknown_kid", "Token kid names no known key");
  const candidates = known.filter((k) => k.alg === alg);
  if (candidates.length === 0) {
    throw new TokenError("algorithm", "Token algorithm is not the one of its key");
  }
  for (const candidate of candidates) {
    try {
      await compactVerify(token, candidate.key, { algorithms: [candidate.alg] });
      return { header, claims: decodeJson(parts[1]!, "payload") };
    } catch (error) {
      if (error instanceof TokenError) throw error;
      if (!(error instanceof errors.JWSSignatureVerificationFailed)) {
        throw new TokenError("malformed", `Token refused: ${(error as Error).message}`);
      }
    }
  }
  throw new TokenError("signature", "Token signature does not verify");
}

function isRefreshTyp(typ: unknown): boolean {
  return typeof typ === "string" && typ.toLowerCase().replace(/^application\//, "") === REFRESH_TYP;
}

function optionalTime(claims: Record<string, unknown>, name: string): number | undefined {
  const value = claims[name];
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new TokenError("claims", `Token ${name} is not a number`);
  }
  return value;
}

/** Checks iss, aud, exp, nbf, iat and the lifetime; returns exp in ms. */
function checkClaims(
  claims: Record<string, unknown>,
  options: VerifyOptions,
  maxLifetimeMs: number,
): number {
  if (claims.iss !== options.issuer) throw new TokenError("issuer", "Token issuer is not trusted");
  const aud = claims.aud;
  const audiences = Array.isArray(aud) ? aud : [aud];
  if (!audiences.includes(options.audience)) {
    throw new TokenError("audience", "Token is not for this service");
  }
  const now = (options.now ?? Date.now()) / 1000;
  const skew = options.clockSkewS ?? DEFAULT_CLOCK_SKEW_S;
  const exp = optionalTime(claims, "exp");
  if (exp === undefined) throw new TokenError("claims", "Token has no exp");
  if (now > exp + skew) throw new TokenError("expired", "Token has expired");
  const nbf = optionalTime(claims, "nbf");
  if (nbf !== undefined && nbf > now + skew) {
    throw new TokenError("not_yet_valid", "Token is not valid yet");
  }
  const iat = optionalTime(claims, "iat");
  if (iat !== undefined && iat > now + skew) {
    throw new TokenError("issued_in_future", "Token was issued in the future");
  }
  for (const start of [iat, nbf, now]) {
    if (start !== undefined && (exp - start) * 1000 > maxLifetimeMs) {
      throw new TokenError("lifetime", "Token lives longer than allowed");
    }
  }
  return exp * 1000;
}

/** Verifies an access token; throws {@linkcode TokenError} if anything is wrong with it. */
export async function verifyAccessToken(
  token: string,
  options: VerifyOptions,
): Promise<VerifiedAccess> {
  const { header, claims } = await verifySignature(token, options.keys);
  if (isRefreshTyp(header.typ) || claims.token_use !== undefined) {
    throw new TokenError("wrong_type", "Token is not an access token");
  }
  const expiresAt = checkClaims(claims, options, MAX_ACCESS_LIFETIME_MS);
  const sub = claims.sub ?? "";
  if (typeof sub !== "string" || sub.length > MAX_SUBJECT_LENGTH) {
    throw new TokenError("claims", "Token sub is not a user name");
  }
  const access = parseAccess(claims.access);
  if (access === null) {
    throw new TokenError("claims", "Token access claim has not the expected shape");
  }
  return Object.freeze({ subject: sub === "" ? null : sub, access, expiresAt });
}

/** Verifies a refresh token; the caller then compares `fingerprint` with the user's current one. */
export async function verifyRefreshToken(
  token: string,
  options: VerifyOptions,
): Promise<VerifiedRefresh> {
  const { header, claims } = await verifySignature(token, options.keys);
  if (!isRefreshTyp(header.typ) || claims.token_use !== "refresh") {
    throw new TokenError("wrong_type", "Token is not a refresh token");
  }
  const expiresAt = checkClaims(claims, options, MAX_REFRESH_LIFETIME_MS);
  const { sub, fpr } = claims;
  if (typeof sub !== "string" || sub === "" || sub.length > MAX_SUBJECT_LENGTH) {
    throw new TokenError("claims", "Token sub is not a user name");
  }
  if (typeof fpr !== "string" || fpr.length > MAX_FINGERPRINT_LENGTH) {
    throw new TokenError("claims", "Token has no fingerprint");
  }
  return { subject: sub, fingerprint: fpr, expiresAt };
}

/** Options of {@linkcode TokenVerifier}. */
export interface TokenVerifierOptions {
  issuer: string;
  audience: string;
  /** Fixed keys, or a source such as a key file that may change. */
  keys: readonly VerifyKey[] | VerifyKeySource;
  clockSkewS?: number;
  /** Most verified tokens remembered (default 1024). */
  cacheSize?: number;
  /** The clock, ms since the epoch (tests). */
  clock?: () => number;
}

interface CacheEntry {
  result: VerifiedAccess;
  keys: readonly VerifyKey[];
}

/**
 * Verifies access tokens, remembering recent successes by the token's SHA-256 so the
 * signature is checked once per token rather than once per request. An entry is used only
 * before the token's `exp` and while the keys are the ones it was verified with, so a key
 * removed from the key file stops its tokens at once. Failures are not remembered.
 */
export class TokenVerifier {
  #options: TokenVerifierOptions;
  #cache = new Map<string, CacheEntry>();

  constructor(options: TokenVerifierOptions) {
    this.#options = options;
  }

  /** Verifies `token` as {@linkcode verifyAccessToken} does. */
  async verify(token: string): Promise<VerifiedAccess> {
    if (token.length > MAX_TOKEN_BYTES) {
      throw new TokenError("too_large", "Token larger than 8 KiB");
    }
    const source = this.#options.keys;
    const keys = "current" in source ? await source.current() : source;
    const now = (this.#options.clock ?? Date.now)();
    // The map is keyed by a hash: timing reveals nothing usable about unknown tokens.
    const id = createHash("sha256").update(token).digest("base64url");
    const hit = this.#cache.get(id);
    if (hit !== undefined) {
      this.#cache.delete(id);
      if (hit.keys === keys && now < hit.result.expiresAt) {
        this.#cache.set(id, hit);
        return hit.result;
      }
    }
    const result = await verifyAccessToken(token, {
      issuer: this.#options.issuer,
      audience: this.#options.audience,
      keys,
      now,
      clockSkewS: this.#options.clockSkewS ?? DEFAULT_CLOCK_SKEW_S,
    });
    if (now < result.expiresAt) {
      this.#cache.set(id, { result, keys });
      const max = this.#options.cacheSize ?? 1024;
      for (const oldest of this.#cache.keys()) {
        if (this.#cache.size <= max) break;
        this.#cache.delete(oldest);
      }
    }
    return result;
  }

  /** Number of remembered tokens (tests, metrics). */
  get cacheSize(): number {
    return this.#cache.size;
  }
}
