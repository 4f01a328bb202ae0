/**
 * Limits failed logins, per client address and per user, in memory.
 *
 * The numbers (constants below):
 * - An address may fail 10 times. Each failure after that locks it out for
 *   1 s, doubling with every further failure up to 5 minutes (11th failure:
 *   1 s, 12th: 2 s, ..., 19th: 256 s, then 300 s). Its failures are forgotten
 *   after a minute without failures once the lock has ended. IPv6 addresses
 *   count per /64, which one client usually holds whole.
 * - A user may fail 20 times (from addresses it is not trusted at). Then each
 *   failure locks the user out for 1 s, doubling up to 30 s only, so a
 *   bystander who knows a user name cannot lock its owner out for long.
 * - An address from which the user signed in within the last 24 hours (the
 *   16 most recent per user) is trusted for that user: neither the address's
 *   lock nor the user's applies to it, so a neighbour behind the same NAT or
 *   proxy cannot lock the user out there; instead the pair has a budget of
 *   its own, as an address does (10 failures, then 1 s doubling to 5 min),
 *   and its failures count against the address, not the user.
 * - Checks still in flight count as failures until they end, each distinct
 *   credential once, so parallel guesses get the same budget as guesses in a
 *   row and parallel requests with the same password are not held.
 * - A success clears the user's failures but not the address's: an account
 *   of one's own must not buy more guesses at others.
 * - At most 10,000 addresses and 10,000 users are tracked; the least recently
 *   seen are forgotten first.
 *
 * The caller asks {@linkcode LoginThrottle.check} before checking a password
 * and answers 429 with `Retry-After` when it says to wait, without checking.
 *
 * @module
 */

/** Failures an address may make before it is locked out. */
export const ADDRESS_FREE_FAILURES = 10;
/** The first address lock; it doubles with every further failure. */
export const ADDRESS_BASE_LOCK_MS = 1_000;
/** The longest address lock. */
export const ADDRESS_MAX_LOCK_MS = 300_000;
/** Failures a user may have (from untrusted addresses) before it is locked out. */
export const USER_FREE_FAILURES = 20;
/** The first user lock; it doubles with every further failure. */
export const USER_BASE_LOCK_MS = 1_000;
/** The longest user lock: short, since anyone can cause it. */
export const USER_MAX_LOCK_MS = 30_000;
/** Failures are forgotten after this long without one, once the lock has ended. */
export const FORGET_AFTER_MS = 60_000;
/** How long a successful login trusts its address for that user. */
export const TRUST_MS = 24 * 60 * 60 * 1000;
/** Trusted addresses kept per user. */
export const TRUSTED_PER_USER = 16;
/** Addresses, and users, tracked at most. */
export const MAX_TRACKED = 10_000;

interface Failures {
  count: number;
  last: number;
  lockedUntil: number;
}

interface Budget {
  free: number;
  baseMs: number;
  maxMs: number;
}

const ADDRESS: Budget = {
  free: ADDRESS_FREE_FAILURES,
  baseMs: ADDRESS_BASE_LOCK_MS,
  maxMs: ADDRESS_MAX_LOCK_MS,
};
const USER: Budget = {
  free: USER_FREE_FAILURES,
  baseMs: USER_BASE_LOCK_MS,
  maxMs: USER_MAX_LOCK_MS,
};

/** A bounded map that forgets the least recently touched key first. */
class Recent<V> extends Map<string, V> {
  constructor(readonly limit: number) {
    super();
  }
  touch(key: string, value: V): void {
    this.delete(key);
    while (this.size >= this.limit) this.delete(this.keys().next().value!);
    this.set(key, value);
  }
}

/**
 * The key an address is counted under: IPv4 as is, IPv6 by its /64 (an
 * IPv4-mapped IPv6 address as its IPv4 address).
 */
export function addressKey(address: string): string {
  const ip = address.replace(/%.*$/, "").toLowerCase();
  if (!ip.includes(":")) return ip;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(ip);
  if (mapped) return mapped[1]!;
  const [head = "", tail] = ip.split("::", 2);
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":");
  const zeros = Array(Math.max(8 - headGroups.length - tailGroups.length, 0)).fill("0");
  const groups = tail === undefined ? headGroups : [...headGroups, ...zeros, ...tailGroups];
  const prefix = groups.slice(0, 4).map((group) => group.replace(/^0+(?=.)/, ""));
  return `${prefix.join(":")}::/64`;
}

/** Failed-login limits per address and per user; see the module doc for the numbers. */
export class LoginThrottle {
  #now: () => number;
  #addresses = new Recent<Failures>(MAX_TRACKED);
  #users = new Recent<Failures>(MAX_TRACKED);
  /** User to (address key to trusted-until). */
  #trusted = new Recent<Recent<number>>(MAX_TRACKED);
  /** Address key to the distinct credentials being checked now, and how many checks each. */
  #pending = new Map<string, Map<string, number>>();
  /** `user address-key` to the failures of a trusted pair (its own budget). */
  #pairs = new Recent<Failures>(MAX_TRACKED);

  /** @param options.now The clock, in milliseconds; injectable for tests. */
  constructor(options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
  }

  /**
   * Whether a login from `address` as `user` (null when none is named) may be
   * checked now.
   * @returns 0 to go ahead, else the seconds to wait (for `Retry-After`).
   */
  check(address: string, user: string | null): number {
    user = userKey(user);
    const now = this.#now();
    const key = addressKey(address);
    // An address the user signed in from lately has a budget of its own for that user:
    // neither the address's lock (a neighbour behind the same NAT) nor the user's holds it.
    if (user !== null && this.#isTrusted(user, key, now)) {
      return wait(this.#pairs.get(pairKey(user, key))?.lockedUntil ?? 0, now);
    }
    const recent = this.#addresses.get(key);
    let until = recent?.lockedUntil ?? 0;
    // Checks in flight count as failures until they end (each distinct credential once),
    // so a burst of parallel guesses is held to the same budget as guesses in a row.
    const pending = this.#pending.get(key)?.size ?? 0;
    const counted = recent && now - Math.max(recent.last, recent.lockedUntil) < FORGET_AFTER_MS
      ? recent.count
      : 0;
    if (pending > 0 && counted + pending >= ADDRESS_FREE_FAILURES) {
      until = Math.max(until, now + ADDRESS_BASE_LOCK_MS);
    }
    if (user !== null) until = Math.max(until, this.#users.get(user)?.lockedUntil ?? 0);
    return wait(until, now);
  }

  /** Records a failed login from `address` as `user`. */
  failed(address: string, user: string | null): void {
    user = userKey(user);
    const now = this.#now();
    const key = addressKey(address);
    this.#addresses.touch(key, fail(this.#addresses.get(key), ADDRESS, now));
    if (user === null) return;
    if (this.#isTrusted(user, key, now)) {
      const pair = pairKey(user, key);
      this.#pairs.touch(pair, fail(this.#pairs.get(pair), ADDRESS, now));
    } else {
      this.#users.touch(user, fail(this.#users.get(user), USER, now));
    }
  }

  /**
   * Marks a check of `credential` (an opaque key: the same for the same user
   * and password) from `address` as started; {@linkcode end} when it is over.
   */
  begin(address: string, credential: string): void {
    const key = addressKey(address);
    const checks = this.#pending.get(key) ?? new Map<string, number>();
    checks.set(credential, (checks.get(credential) ?? 0) + 1);
    this.#pending.set(key, checks);
  }

  /** Marks a check begun with {@linkcode begin} as over. */
  end(address: string, credential: string): void {
    const key = addressKey(address);
    const checks = this.#pending.get(key);
    if (!checks) return;
    const left = (checks.get(credential) ?? 1) - 1;
    if (left > 0) checks.set(credential, left);
    else checks.delete(credential);
    if (checks.size === 0) this.#pending.delete(key);
  }

  /** Records a successful login: clears the user's failures and trusts the address for it. */
  succeeded(address: string, user: string | null): void {
    user = userKey(user);
    if (user === null) return;
    const now = this.#now();
    this.#users.delete(user);
    this.#pairs.delete(pairKey(user, addressKey(address)));
    const trusted = this.#trusted.get(user) ?? new Recent<number>(TRUSTED_PER_USER);
    trusted.touch(addressKey(address), now + TRUST_MS);
    this.#trusted.touch(user, trusted);
  }

  #isTrusted(user: string, key: string, now: number): boolean {
    return (this.#trusted.get(user)?.get(key) ?? 0) > now;
  }
}

function pairKey(user: string, key: string): string {
  return `${user} ${key}`;
}

function wait(until: number, now: number): number {
  return until > now ? Math.ceil((until - now) / 1000) : 0;
}

/** Bounds the memory a made-up user name can take (real ones are at most 256 bytes). */
function userKey(user: string | null): string | null {
  return user === null ? null : user.slice(0, 256);
}

function fail(previous: Failures | undefined, budget: Budget, now: number): Failures {
  const forgotten = !previous ||
    now - Math.max(previous.last, previous.lockedUntil) >= FORGET_AFTER_MS;
  const count = forgotten ? 1 : previous.count + 1;
  const over = count - budget.free;
  const lockMs = over > 0 ? Math.min(budget.baseMs * 2 ** Math.min(over - 1, 30), budget.maxMs) : 0;
  const lockedUntil = Math.max(forgotten ? 0 : previous.lockedUntil, now + lockMs);
  return { count, last: now, lockedUntil };
}
