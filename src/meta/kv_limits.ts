/**
 * Deno KV's limits on one atomic commit, enforced before the commit is sent.
 *
 * Remote KV (KV Connect) and Deno Deploy refuse a commit with more than 10
 * checks, while the local SQLite backend accepts up to 100: a commit that
 * grew an eleventh check would pass every local test and fail in production.
 * So every commit Berth makes goes through {@linkcode LimitedAtomic}, which
 * counts checks and mutations exactly, estimates sizes (exactly for byte and
 * string values, from JSON for structured ones), and refuses with
 * {@linkcode KvLimitError} before anything is written. Queues are refused
 * outright: Berth uses none, so the same code runs everywhere.
 *
 * @module
 */

/**
 * The limits, with the margins Berth keeps: at most 10 checks; at most 1000
 * mutations (Berth plans for 900); keys and values together at most 800 KiB,
 * keys alone 80 KiB.
 */
export const KV_LIMITS = { checks: 10, mutations: 900, bytes: 800 * 1024, keyBytes: 80 * 1024 };

/** A commit that would break one of {@linkcode KV_LIMITS} (a programming error). */
export class KvLimitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KvLimitError";
  }
}

const encoder = new TextEncoder();

function stringBytes(value: string): number {
  // UTF-8 length without allocating for the common ASCII case.
  // deno-lint-ignore no-control-regex
  return /^[\x00-\x7f]*$/.test(value) ? value.length : encoder.encode(value).length;
}

/** Bytes a key takes in KV's encoding, to within a few bytes per part. */
export function keyBytes(key: Deno.KvKey): number {
  let total = 0;
  for (const part of key) {
    if (typeof part === "string") total += stringBytes(part) + 2;
    else if (part instanceof Uint8Array) total += part.length + 2;
    else if (typeof part === "bigint") total += 10;
    else if (typeof part === "number") total += 9;
    else total += 1;
  }
  return total;
}

/** Bytes a value takes, exactly for bytes and strings, estimated from JSON otherwise. */
export function valueBytes(value: unknown): number {
  if (value instanceof Uint8Array) return value.length;
  if (typeof value === "string") return stringBytes(value);
  if (value instanceof Deno.KvU64) return 8;
  try {
    const json = JSON.stringify(
      value,
      (_key, v) =>
        v instanceof Uint8Array ? `${"x".repeat(v.length)}` : typeof v === "bigint" ? String(v) : v,
    );
    return json === undefined ? 1 : stringBytes(json);
  } catch {
    return 1;
  }
}

/**
 * An atomic operation that keeps count of what it holds and refuses, with
 * {@linkcode KvLimitError}, the check, mutation or size that would go over
 * {@linkcode KV_LIMITS}.
 */
export class LimitedAtomic {
  readonly #op: Deno.AtomicOperation;
  #checks = 0;
  #mutations = 0;
  #bytes = 0;
  #keyBytes = 0;

  constructor(op: Deno.AtomicOperation) {
    this.#op = op;
  }

  #count(kind: "check" | "mutation", key: Deno.KvKey, value?: unknown): void {
    const k = keyBytes(key);
    this.#keyBytes += k;
    this.#bytes += k + (value === undefined ? 0 : valueBytes(value));
    if (kind === "check") this.#checks++;
    else this.#mutations++;
    const over = this.#checks > KV_LIMITS.checks
      ? `${this.#checks} checks (limit ${KV_LIMITS.checks})`
      : this.#mutations > KV_LIMITS.mutations
      ? `${this.#mutations} mutations (limit ${KV_LIMITS.mutations})`
      : this.#keyBytes > KV_LIMITS.keyBytes
      ? `${this.#keyBytes} bytes of keys (limit ${KV_LIMITS.keyBytes})`
      : this.#bytes > KV_LIMITS.bytes
      ? `${this.#bytes} bytes (limit ${KV_LIMITS.bytes})`
      : null;
    if (over) throw new KvLimitError(`KV commit over its limits: ${over}`);
  }

  check(...checks: Deno.AtomicCheck[]): this {
    for (const c of checks) this.#count("check", c.key);
    this.#op.check(...checks);
    return this;
  }

  mutate(...mutations: Deno.KvMutation[]): this {
    for (const m of mutations) this.#count("mutation", m.key, "value" in m ? m.value : undefined);
    this.#op.mutate(...mutations);
    return this;
  }

  sum(key: Deno.KvKey, n: bigint): this {
    this.#count("mutation", key, 8);
    this.#op.sum(key, n);
    return this;
  }

  min(key: Deno.KvKey, n: bigint): this {
    this.#count("mutation", key, 8);
    this.#op.min(key, n);
    return this;
  }

  max(key: Deno.KvKey, n: bigint): this {
    this.#count("mutation", key, 8);
    this.#op.max(key, n);
    return this;
  }

  set(key: Deno.KvKey, value: unknown, options?: { expireIn?: number }): this {
    this.#count("mutation", key, value);
    this.#op.set(key, value, options);
    return this;
  }

  delete(key: Deno.KvKey): this {
    this.#count("mutation", key);
    this.#op.delete(key);
    return this;
  }

  enqueue(): this {
    throw new KvLimitError("KV queues are not used: they do not exist everywhere Berth runs");
  }

  commit(): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    return this.#op.commit();
  }
}
