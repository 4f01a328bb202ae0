/**
 * The one module that calls Deno KV. Every call is retried with jittered
 * backoff when SQLite answers "database is locked", which it does when two
 * processes share one KV file.
 *
 * @module
 */

const LOCKED_REGEXP = /database is locked|database table is locked|SQLITE_BUSY/i;
const MAX_ATTEMPTS = 50;

/** Whether an error is SQLite contention worth retrying. */
export function isLockedError(error: unknown): boolean {
  return error instanceof Error && LOCKED_REGEXP.test(error.message);
}

/** Runs `fn`, retrying on lock contention with jittered backoff. */
export async function retryLocked<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (!isLockedError(error) || attempt >= MAX_ATTEMPTS) throw error;
      const delay = Math.min(2 ** Math.min(attempt, 6), 50) * (0.5 + Math.random());
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

/** A thin wrapper over `Deno.Kv` whose calls all retry on contention. */
export class Kv {
  readonly raw: Deno.Kv;

  constructor(raw: Deno.Kv) {
    this.raw = raw;
  }

  get<T>(key: Deno.KvKey): Promise<Deno.KvEntryMaybe<T>> {
    return retryLocked(() => this.raw.get<T>(key));
  }

  getMany<T extends readonly unknown[]>(
    keys: readonly [...{ [K in keyof T]: Deno.KvKey }],
  ): Promise<{ [K in keyof T]: Deno.KvEntryMaybe<T[K]> }> {
    return retryLocked(() => this.raw.getMany<T>(keys));
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
        const entry of this.raw.list<T>(selector, {
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

  /** Iterates a whole family in pages, for fsck and the sweeper (never on a request path). */
  async *scan<T>(prefix: Deno.KvKey, pageSize = 500): AsyncGenerator<Deno.KvEntry<T>> {
    let cursor: string | undefined;
    for (;;) {
      const page = await retryLocked(async () => {
        const iter = this.raw.list<T>(
          { prefix },
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
      const result = await build(this.raw.atomic()).commit();
      return result.ok ? result.versionstamp : null;
    });
  }

  close(): void {
    this.raw.close();
  }
}
