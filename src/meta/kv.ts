/**
 * The one module that calls Deno KV, and its one retry loop. Two things make
 * a KV call worth repeating, and both are handled here:
 *
 * - contention: SQLite answers "database is locked" when two processes share
 *   one KV file; every call is retried with jittered backoff;
 * - a lost race: an atomic commit whose checks failed because another writer
 *   got there first; {@linkcode Kv.transact} reads again and retries.
 *
 * Both kinds of retry, commits and give-ups are counted in {@linkcode metrics}.
 *
 * @module
 */
import { metrics } from "../metrics/registry.ts";

import { KV_LIMITS, LimitedAtomic } from "./kv_limits.ts";

export { KV_LIMITS };

const LOCKED_REGEXP = /database is locked|database table is locked|SQLITE_BUSY/i;
/** Attempts before giving up on contention or on lost races (each round is a few ms). */
const MAX_ATTEMPTS = 100;

const lockedRetries = metrics.counter(
  "berth_kv_locked_retries_total",
  `KV calls repeated because SQLite answered "database is locked"`,
);
const raceRetries = metrics.counter(
  "berth_kv_transaction_retries_total",
  "Transactions read and committed again after their commit lost a race",
);
const commitsOk = metrics.counter(
  "berth_kv_commits_total",
  "Atomic KV commits, by result (conflict: a check failed)",
  { result: "ok" },
);
const commitsConflict = metrics.counter(
  "berth_kv_commits_total",
  "Atomic KV commits, by result (conflict: a check failed)",
  { result: "conflict" },
);
const gaveUp = metrics.counter(
  "berth_kv_contention_failures_total",
  "KV calls and transactions given up after too many locked answers or lost races",
);

/**
 * Whether an error is SQLite contention worth retrying: `Deno.errors.Busy`
 * by its class; Deno 2.9.6's KV raises it as a plain `TypeError`, so a
 * `TypeError` (only) is recognised by its message.
 */
export function isLockedError(error: unknown): boolean {
  if (error instanceof Deno.errors.Busy) return true;
  return error instanceof TypeError && LOCKED_REGEXP.test(error.message);
}

/** Returned by a {@linkcode Kv.transact} body whose commit lost a race: read again and retry. */
export const RETRY: unique symbol = Symbol("retry");

/** Raised when a transaction lost {@linkcode MAX_ATTEMPTS} races in a row. */
export class ContentionError extends Error {
  constructor(what: string) {
    super(`${what}: gave up after ${MAX_ATTEMPTS} conflicting commits`);
    this.name = "ContentionError";
  }
}

/**
 * The one retry loop. `body` is run until it returns something other than
 * {@linkcode RETRY}; a "database is locked" error is retried too. Between
 * rounds it waits a short, jittered and growing time (a few ms: the other
 * writer is usually done by then).
 */
async function retry<T>(
  what: string,
  body: () => Promise<T | typeof RETRY>,
  options: { locked: boolean } = { locked: true },
): Promise<T> {
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    try {
      const result = await body();
      if (result !== RETRY) return result;
      if (attempt < MAX_ATTEMPTS) raceRetries.inc();
    } catch (error) {
      if (!options.locked || !isLockedError(error)) throw error;
      if (attempt === MAX_ATTEMPTS) {
        gaveUp.inc();
        throw error;
      }
      lockedRetries.inc();
    }
    const delay = Math.min(2 ** Math.min(attempt, 6), 50) * (0.1 + Math.random());
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
  gaveUp.inc();
  throw new ContentionError(what);
}

/** A thin wrapper over `Deno.Kv` whose calls all retry on contention. */
export class Kv {
  readonly #raw: Deno.Kv;

  constructor(raw: Deno.Kv) {
    this.#raw = raw;
  }

  get<T>(key: Deno.KvKey): Promise<Deno.KvEntryMaybe<T>> {
    return retry("get", () => this.#raw.get<T>(key));
  }

  getMany<T extends readonly unknown[]>(
    keys: readonly [...{ [K in keyof T]: Deno.KvKey }],
  ): Promise<{ [K in keyof T]: Deno.KvEntryMaybe<T[K]> }> {
    return retry("getMany", () => this.#raw.getMany<T>(keys));
  }

  /** Lists at most `limit` entries (never unbounded). */
  list<T>(
    selector: Deno.KvListSelector,
    limit: number,
    reverse = false,
  ): Promise<Deno.KvEntry<T>[]> {
    return retry("list", async () => {
      const entries: Deno.KvEntry<T>[] = [];
      for await (
        const entry of this.#raw.list<T>(selector, {
          limit,
          reverse,
          batchSize: Math.min(limit, 500),
        })
      ) {
        entries.push(entry);
      }
      return entries;
    });
  }

  /** Iterates a whole family in pages (fsck, the sweeper, migrations; never on a request path). */
  async *scan<T>(
    prefix: Deno.KvKey,
    options: { pageSize?: number; start?: Deno.KvKey } = {},
  ): AsyncGenerator<Deno.KvEntry<T>> {
    const pageSize = options.pageSize ?? 500;
    let cursor: string | undefined;
    const selector: Deno.KvListSelector = options.start ? { prefix, start: options.start } : {
      prefix,
    };
    for (;;) {
      const page = await retry("scan", async () => {
        const iter = this.#raw.list<T>(
          selector,
          cursor ? { limit: pageSize, cursor } : { limit: pageSize },
        );
        const entries: Deno.KvEntry<T>[] = [];
        for await (const entry of iter) entries.push(entry);
        return { entries, next: iter.cursor };
      });
      yield* page.entries;
      if (page.entries.length < pageSize) return;
      cursor = page.next;
    }
  }

  /**
   * Commits an atomic operation built by `build`. Returns the new
   * versionstamp, or null when a check failed.
   */
  commit(build: (op: Deno.AtomicOperation) => Deno.AtomicOperation): Promise<string | null> {
    return retry("commit", async () => {
      // Every commit is counted against KV_LIMITS before it is sent (see kv_limits.ts).
      const op = new LimitedAtomic(this.#raw.atomic()) as unknown as Deno.AtomicOperation;
      const result = await build(op).commit();
      (result.ok ? commitsOk : commitsConflict).inc();
      return result.ok ? result.versionstamp : null;
    });
  }

  /**
   * The one loop for read-check-commit transactions: runs `body` until it
   * returns something other than {@linkcode RETRY} (a commit whose checks
   * failed), backing off between rounds. Throws {@linkcode ContentionError}
   * after too many lost races.
   */
  transact<T>(what: string, body: () => Promise<T | typeof RETRY>): Promise<T> {
    // The calls inside `body` already retry contention: here only lost races go round again.
    return retry(what, body, { locked: false });
  }

  close(): void {
    this.#raw.close();
  }
}
