/**
 * Users and their bcrypt password hashes, from an Apache htpasswd file
 * (`user:hash` lines; blank lines and `#` comments are ignored).
 *
 * Only bcrypt (`$2y$`, `$2a$`, `$2b$`) is accepted: MD5 (`$apr1$`), SHA-1
 * (`{SHA}`), crypt and plain text are refused at start-up with the file and
 * line, and so are malformed lines and users listed twice. Edits apply
 * without a restart (see {@link ./file_watch.ts}); a bad edit keeps the
 * previous version.
 *
 * Verification ({@linkcode Htpasswd.verify}):
 * - bcrypt runs in `npm:bcryptjs` (pure JavaScript, yields to the event loop
 *   every 100 ms; `bench/bcrypt.ts` compares it with `npm:hash-wasm`).
 * - bcrypt reads only the first 72 bytes of a password, so a longer candidate
 *   never matches (`berth user add` refuses to set one); user names over
 *   256 bytes and passwords over 1024 bytes are refused before any work.
 * - An unknown user costs one bcrypt against a hash of the file's most common
 *   cost (its result ignored), so response times do not tell which users exist.
 * - Successes are remembered for 60 s (at most 1000), keyed by the SHA-256 of
 *   user, password and the entry's hash: a changed password or file misses.
 *   The plain password is never kept. Identical checks in flight share one
 *   bcrypt (a client pulling layers in parallel sends the same credentials).
 *
 * @module
 */
import { compare, getRounds } from "bcryptjs";
import { createHash, timingSafeEqual } from "node:crypto";
import { AuthFileError, WatchedFile } from "./file_watch.ts";

/** The longest user name accepted, in UTF-8 bytes. */
export const MAX_USER_BYTES = 256;
/** The longest password bcrypt reads, in UTF-8 bytes. */
export const MAX_BCRYPT_PASSWORD_BYTES = 72;
/** The longest candidate password looked at, in UTF-8 bytes. */
export const MAX_PASSWORD_BYTES = 1024;
const CACHE_TTL_MS = 60_000;
const CACHE_MAX = 1000;

const BCRYPT_REGEXP = /^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$/;
const encoder = new TextEncoder();
/** bcrypt, cost 10, of a random password nobody knows. */
const EMPTY_FILE_DECOY = "$2b$10$BV62eWEdaZx7UG6AQujQn.p52UVYbZXmui5AJB3M5eJPhkrzBRhtG";
const decoys = new WeakMap<HtpasswdEntries, string>();

/** The parsed file: user name to bcrypt hash, in file order. */
export type HtpasswdEntries = Map<string, string>;

/**
 * Why `name` cannot be a user name, or null when it can: not empty, at most
 * 256 bytes, no `:` (the htpasswd separator), whitespace or control
 * characters, and not `*` or `anonymous` (the policy file's words for
 * everyone).
 */
export function userNameProblem(name: string): string | null {
  if (name === "") return "is empty";
  if (encoder.encode(name).length > MAX_USER_BYTES) {
    return `is longer than ${MAX_USER_BYTES} bytes`;
  }
  if (name.includes(":")) return `contains ":"`;
  if (/[\s\p{Cc}]/u.test(name)) return "contains whitespace or control characters";
  if (name === "*" || name === "anonymous") return "is reserved by the policy file";
  return null;
}

function schemeName(hash: string): string {
  if (hash.startsWith("$apr1$")) return "MD5 ($apr1$)";
  if (hash.startsWith("{SHA}")) return "SHA-1 ({SHA})";
  if (/^\$(1|5|6|md5|sha1|argon2\w*|y|7)\$/.test(hash)) return `crypt (${hash.split("$", 2)[1]})`;
  if (/^\$2[a-z]?\$/.test(hash)) return "a malformed or unsupported bcrypt hash";
  if (/^[./A-Za-z0-9]{13}$/.test(hash)) return "DES crypt";
  return "plain text or an unknown scheme";
}

/**
 * Parses an htpasswd file.
 * @throws {AuthFileError} naming the line of the first problem.
 */
export function parseHtpasswd(text: string, path: string): HtpasswdEntries {
  const entries: HtpasswdEntries = new Map();
  const lineOf = new Map<string, number>();
  const lines = text.split("\n");
  for (const [i, raw] of lines.entries()) {
    const line = raw.replace(/\r$/, "").trimEnd();
    const fail = (detail: string) => new AuthFileError("htpasswd", path, `line ${i + 1}`, detail);
    if (line.trim() === "" || line.trimStart().startsWith("#")) continue;
    const colon = line.indexOf(":");
    if (colon < 0) throw fail(`expected "user:hash"`);
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    const problem = userNameProblem(user);
    if (problem) throw fail(`the user name ${problem}`);
    if (!BCRYPT_REGEXP.test(hash)) {
      throw fail(
        `user "${user}" has ${schemeName(hash)}; only bcrypt ($2y$, $2a$, $2b$) is accepted ` +
          `(set it again with "berth user add")`,
      );
    }
    const first = lineOf.get(user);
    if (first !== undefined) throw fail(`user "${user}" is already on line ${first}`);
    lineOf.set(user, i + 1);
    entries.set(user, hash);
  }
  return entries;
}

/** Compares two strings in time that depends only on their lengths. */
export function constantTimeEqual(a: string, b: string): boolean {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  // Compare equal lengths always, so a length mismatch costs the same work.
  return timingSafeEqual(x.length === y.length ? x : y, y) && x.length === y.length;
}

function sha256(parts: string[]): string {
  return createHash("sha256").update(JSON.stringify(parts)).digest("base64url");
}

/** What {@linkcode Htpasswd.open} needs besides the path. */
export interface HtpasswdOptions {
  /** Told why an edit of the file was not taken (it keeps the previous version). */
  onError?: (message: string) => void;
  /** The clock, in milliseconds; injectable for tests. */
  now?: () => number;
}

/** The users of an htpasswd file, checked with bcrypt. */
export class Htpasswd {
  #file: WatchedFile<HtpasswdEntries>;
  #now: () => number;
  /** Key (SHA-256 of user, password, hash) to expiry time, oldest first. */
  #verified = new Map<string, number>();
  #inFlight = new Map<string, Promise<boolean>>();

  private constructor(file: WatchedFile<HtpasswdEntries>, now: () => number) {
    this.#file = file;
    this.#now = now;
  }

  /**
   * Loads the file.
   * @throws {AuthFileError} naming the file and line of the first problem.
   */
  static async open(path: string, options: HtpasswdOptions = {}): Promise<Htpasswd> {
    const now = options.now ?? Date.now;
    const file = await WatchedFile.open(path, {
      kind: "htpasswd",
      parse: parseHtpasswd,
      now,
      ...(options.onError ? { onError: options.onError } : {}),
    });
    return new Htpasswd(file, now);
  }

  /** Looks at the file now (at most once a second) so the next calls see its edits. */
  async refresh(): Promise<void> {
    await this.#file.current();
  }

  /** Whether `password` is `user`'s password. Never throws. */
  async verify(user: string, password: string): Promise<boolean> {
    const entries = await this.#file.current();
    if (
      encoder.encode(user).length > MAX_USER_BYTES ||
      encoder.encode(password).length > MAX_PASSWORD_BYTES
    ) return false;
    // bcrypt would only read the first 72 bytes: a longer candidate is not the password.
    // Refused before the user is looked up, so its timing says nothing about who exists.
    if (encoder.encode(password).length > MAX_BCRYPT_PASSWORD_BYTES) return false;
    const hash = entries.get(user);
    if (hash === undefined) {
      await compare(password, decoyHash(entries)).catch(() => false);
      return false;
    }
    const key = sha256([user, password, hash]);
    const now = this.#now();
    const expires = this.#verified.get(key);
    if (expires !== undefined) {
      if (expires > now) return true;
      this.#verified.delete(key);
    }
    let pending = this.#inFlight.get(key);
    if (!pending) {
      pending = compare(password, hash).catch(() => false);
      this.#inFlight.set(key, pending);
      pending.finally(() => this.#inFlight.delete(key));
    }
    const ok = await pending;
    if (ok) this.#remember(key);
    return ok;
  }

  /**
   * A short hash of `user`'s current entry, or null for an unknown user: it
   * changes when the password does, so tokens can carry it and be revoked.
   * It is that of the version last read: `await refresh()` before it to see
   * an edit made within the last second.
   */
  fingerprint(user: string): string | null {
    // Also start a look at the file (it never rejects), so that even callers that
    // never verify a password (refresh tokens) see an edit by their next call;
    // `await refresh()` first to see it now.
    void this.#file.current();
    const hash = this.#file.value.get(user);
    return hash === undefined ? null : sha256([user, hash]).slice(0, 16);
  }

  /** Whether `fingerprint` is `user`'s current {@linkcode fingerprint}, compared in constant time. */
  fingerprintMatches(user: string, fingerprint: string): boolean {
    const current = this.fingerprint(user);
    return current !== null && constantTimeEqual(current, fingerprint);
  }

  /** The user names, in file order. */
  users(): string[] {
    return [...this.#file.value.keys()];
  }

  #remember(key: string): void {
    this.#verified.delete(key);
    while (this.#verified.size >= CACHE_MAX) {
      this.#verified.delete(this.#verified.keys().next().value!);
    }
    this.#verified.set(key, this.#now() + CACHE_TTL_MS);
  }
}

/**
 * The hash an unknown user's password is checked against: an entry of the
 * file's most common cost (the result is ignored), so the time taken is that
 * of a real user's check; for an empty file, a hash of a random password.
 */
function decoyHash(entries: HtpasswdEntries): string {
  let decoy = decoys.get(entries);
  if (decoy === undefined) {
    const byCost = new Map<number, { hash: string; count: number }>();
    for (const hash of entries.values()) {
      const cost = getRounds(hash);
      const seen = byCost.get(cost) ?? { hash, count: 0 };
      seen.count++;
      byCost.set(cost, seen);
    }
    decoy = [...byCost.values()].sort((a, b) => b.count - a.count)[0]?.hash ?? EMPTY_FILE_DECOY;
    decoys.set(entries, decoy);
  }
  return decoy;
}
