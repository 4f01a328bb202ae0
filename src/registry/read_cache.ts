/**
 * The read cache: what a pull reads of a repository (tags, manifest records,
 * pages of the tags list), kept in process memory and re-checked on every use
 * against one small per-repository KV key, `repo_version`. Every commit that
 * changes what the repository shows sets that key, so its revision changes;
 * an entry is used only while the revision it was read at is still current.
 * That holds across processes sharing the KV (several servers on one SQLite
 * file or one remote KV), where `kv.watch` sees nothing another process wrote.
 *
 * Two parts:
 *
 * - {@linkcode ReadCache}: an LRU map bounded by entries and by (estimated)
 *   bytes; each entry remembers the version it was read at.
 * - {@linkcode VersionReads}: reads a repository's version, sharing one KV read
 *   among the callers that arrived before it started. A caller never shares a
 *   read that started before it arrived (that read could miss a commit that
 *   finished before the caller arrived); it waits for the next one instead. So
 *   64 concurrent pulls of one repository cost a couple of KV reads, not 64.
 *
 * Versions are compared for equality only; a value read after its version
 * (never before) may be newer than that version, which only costs a re-read.
 *
 * @module
 */
import type { MetadataStore, Revision } from "../meta/metadata_store.ts";

/** A repository's version: the revision of its `repo_version` key, null while it has none. */
export type Version = Revision | null;

/** Bounds of a {@linkcode ReadCache}. */
export interface ReadCacheLimits {
  /** Entries held at most. */
  maxEntries: number;
  /** Estimated bytes held at most. */
  maxBytes: number;
  /** An entry estimated larger than this is not kept. */
  maxEntryBytes: number;
}

/** The defaults: 16 MiB and 50,000 entries in all, at most 1 MiB an entry. */
export const READ_CACHE_LIMITS: ReadCacheLimits = {
  maxEntries: 50_000,
  maxBytes: 16 * 1024 * 1024,
  maxEntryBytes: 1024 * 1024,
};

interface Entry {
  version: Version;
  value: unknown;
  bytes: number;
}

/** An LRU cache of values read at a repository version, bounded by entries and bytes. */
export class ReadCache {
  readonly #entries = new Map<string, Entry>();
  readonly #limits: ReadCacheLimits;
  #bytes = 0;

  constructor(limits: Partial<ReadCacheLimits> = {}) {
    this.#limits = { ...READ_CACHE_LIMITS, ...limits };
  }

  /** Whether `key` holds anything (of any version): worth checking the version first. */
  has(key: string): boolean {
    return this.#entries.has(key);
  }

  /**
   * The value of `key` if it was read at `version`; undefined otherwise (a
   * stale entry is dropped). A hit becomes the most recently used.
   */
  get<T>(key: string, version: Version): T | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    this.#entries.delete(key);
    if (entry.version !== version) {
      this.#bytes -= entry.bytes;
      return undefined;
    }
    this.#entries.set(key, entry);
    return entry.value as T;
  }

  /**
   * Keeps `value`, read at `version`, under `key` (`bytes`: its estimated
   * size). Too large a value is not kept; the least recently used entries go
   * until the bounds hold.
   */
  set(key: string, version: Version, value: unknown, bytes: number): void {
    const old = this.#entries.get(key);
    if (old) {
      this.#entries.delete(key);
      this.#bytes -= old.bytes;
    }
    if (bytes > this.#limits.maxEntryBytes) return;
    this.#entries.set(key, { version, value, bytes });
    this.#bytes += bytes;
    for (const [oldest, entry] of this.#entries) {
      if (this.#bytes <= this.#limits.maxBytes && this.#entries.size <= this.#limits.maxEntries) {
        break;
      }
      this.#entries.delete(oldest);
      this.#bytes -= entry.bytes;
    }
  }

  /** Entries held. */
  get size(): number {
    return this.#entries.size;
  }

  /** Estimated bytes held. */
  get bytes(): number {
    return this.#bytes;
  }
}

/**
 * Reads repository versions with `read`, sharing each read among the callers
 * that arrived before it started. At most two reads per repository are
 * pending: the one in flight and the next, which starts when it ends.
 */
export class VersionReads {
  readonly #read: (name: string) => Promise<Version>;
  readonly #inFlight = new Map<string, Promise<Version>>();
  readonly #next = new Map<string, Promise<Version>>();

  constructor(read: (name: string) => Promise<Version>) {
    this.#read = read;
  }

  /** The version of `name` as of a read that started after this call. */
  version(name: string): Promise<Version> {
    const next = this.#next.get(name);
    if (next) return next; // not started yet: it will start after this call
    const current = this.#inFlight.get(name);
    if (!current) return this.#start(name);
    // The read in flight started before this call: it could miss a commit this caller
    // must see. Queue the next one, to start when it ends.
    const queued = current.then(noop, noop).then(() => {
      this.#next.delete(name);
      return this.#start(name);
    });
    this.#next.set(name, queued);
    return queued;
  }

  #start(name: string): Promise<Version> {
    const read = this.#read(name).finally(() => {
      if (this.#inFlight.get(name) === read) this.#inFlight.delete(name);
    });
    this.#inFlight.set(name, read);
    return read;
  }
}

function noop(): void {}

/** The cache and version reads of one metadata store, shared by the registry's parts. */
export interface RepoReadCache {
  readonly cache: ReadCache;
  readonly versions: VersionReads;
}

const shared = new WeakMap<MetadataStore, RepoReadCache>();

/**
 * The read cache of `meta`, made on first use: the manifest and listing
 * operations of one registry share it (and its bounds), whatever creates them.
 */
export function readCacheOf(meta: MetadataStore): RepoReadCache {
  let caches = shared.get(meta);
  if (!caches) {
    caches = {
      cache: new ReadCache(),
      versions: new VersionReads((name) => meta.repoVersion(name)),
    };
    shared.set(meta, caches);
  }
  return caches;
}

/** The estimated bytes of a string held in memory (UTF-16, plus the object around it). */
export function stringBytes(...parts: string[]): number {
  return parts.reduce((n, s) => n + 2 * s.length + 32, 64);
}

/**
 * Reads `key` of repository `name` through the cache. An entry is used only
 * when a version read that started after this call matches the one it was
 * read at; otherwise `read` (the value and the version, in one consistent KV
 * read) gives the answer, which is kept. `bytes` estimates a value's size.
 */
export async function readThrough<T>(
  caches: RepoReadCache,
  name: string,
  key: string,
  read: () => Promise<{ readonly version: Version; readonly value: T }>,
  bytes: (value: T) => number,
): Promise<T> {
  const { cache, versions } = caches;
  if (cache.has(key)) {
    const hit = cache.get<T>(key, await versions.version(name));
    if (hit !== undefined) return hit;
  }
  const fresh = await read();
  cache.set(key, fresh.version, fresh.value, bytes(fresh.value));
  return fresh.value;
}
