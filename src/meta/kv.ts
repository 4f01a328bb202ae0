/**
 * The one module that calls Deno KV, and its one retry loop. Two things make
 * a KV call worth repeating, and both are handled here:
 *
 * - contention: SQLite answers "database is locked" when two processes share
 *   one KV file; every call is retried with jittered backoff;
 * - a lost race: an atomic commit whose checks failed because another writer
 *   got there first; {@linkcode Kv.transact} reads again and retries.
 *
 * @module
 */

const LOCKED_REGEXP = /database is locked|database table is locked|SQLITE_BUSY/i;
/** Attempts before giving up on contention or on lost races (each round is a few ms). */
const MAX_ATTEMPTS = 100;

/**
 * Whether an error is SQLite contention worth retrying. Deno 2.9.6 raises it
 * as a plain `TypeError` (or `Deno.errors.Busy` where the runtime maps it), so
 * the class narrows the match and the message decides.
 */
export function isLockedError(error: unknown): boolean {
  if (error instanceof Deno.errors.Busy) return true;
  return (error instanceof TypeError || error instanceof Error) &&
    LOCKED_REGEXP.test(error.message);
}

/** Jittered backoff for attempt `n` (1-based): a few ms, at most ~75 ms. */
function backoff(n: number): Promise<void> {
  const delay = Math.min(2 ** Math.min(n, 6), 50) * (0.5 + Math.random());
  return new Promise((resolve) => setTimeout(resolve, delay));
}

/** Runs `fn`, retrying on lock contention with jittered backoff. */
async function retryLocked<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (!isLockedError(error) || attempt >= MAX_ATTEMPTS) throw error;
      await backoff(attempt);
    }
  }
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

/** A thin wrapper over `Deno.Kv` whose calls all retry on contention. */
export class Kv {
  readonly #raw: Deno.Kv;

  constructor(raw: Deno.Kv) {
    this.#raw = raw;
  }

  get<T>(key: Deno.KvKey): Promise<Deno.KvEntryMaybe<T>> {
    return retryLocked(() => this.#raw.get<T>(key));
  }

  getMany<T extends readonly unknown[]>(
    keys: readonly [...{ [K in keyof T]: Deno.KvKey }],
  ): Promise<{ [K in keyof T]: Deno.KvEntryMaybe<T[K]> }> {
    return retryLocked(() => this.#raw.getMany<T>(keys));
  }

  /** Lists at most `limit` entries (never unbounded). */
  list<T>(
    selector: Deno.KvListSelector,
    limit: number,
    reverse = false,
  ): Promise<Deno.KvEntry<T>[]> {
    return retryLocked(async () => {
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
      const page = await retryLocked(async () => {
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
    return retryLocked(async () => {
      const result = await build(this.#raw.atomic()).commit();
      return result.ok ? result.versionstamp : null;
    });
  }

  /**
   * The one loop for read-check-commit transactions: runs `body` until it
   * returns something other than {@linkcode RETRY} (a commit whose checks
   * failed), backing off between rounds. Throws {@linkcode ContentionError}
   * after too many lost races.
   */
  async transact<T>(what: string, body: () => Promise<T | typeof RETRY>): Promise<T> {
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      const result = await body();
      if (result !== RETRY) return result;
      // Short and jittered: the winner is already done, so the next round usually succeeds.
      await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(attempt, 20)));
    }
    throw new ContentionError(what);
  }

  close(): void {
    this.#raw.close();
  }
}
