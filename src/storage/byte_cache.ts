/**
 * A small LRU cache of immutable bytes by digest (manifests). Content under a
 * digest never changes, so the cache is safe however many processes share the
 * stores; only what is addressed by digest is cached.
 *
 * Hits, misses and the bytes and entries held are reported to
 * {@linkcode metrics} under the cache's name (`cache` label).
 *
 * @module
 */
import { type Counter, type Gauge, metrics } from "../metrics/registry.ts";

const HITS = "berth_cache_hits_total";
const MISSES = "berth_cache_misses_total";
const BYTES = "berth_cache_bytes";
const ENTRIES = "berth_cache_entries";

/** An LRU cache bounded by total bytes. */
export class ByteCache {
  readonly #entries = new Map<string, Uint8Array>();
  readonly #capacity: number;
  readonly #maxEntry: number;
  #size = 0;
  readonly #hits: Counter;
  readonly #misses: Counter;
  readonly #bytes: Gauge;
  readonly #count: Gauge;

  /**
   * `capacity` bytes in all; entries larger than `maxEntry` are not kept.
   * `name` is the cache's `cache` label in the metrics (caches of one name add up).
   */
  constructor(capacity: number, maxEntry = capacity / 16, options: { name?: string } = {}) {
    this.#capacity = capacity;
    this.#maxEntry = maxEntry;
    const labels = { cache: options.name ?? "manifest_bytes" };
    this.#hits = metrics.counter(HITS, "Cache lookups that found their entry", labels);
    this.#misses = metrics.counter(MISSES, "Cache lookups that did not", labels);
    this.#bytes = metrics.gauge(BYTES, "Bytes a cache holds", labels);
    this.#count = metrics.gauge(ENTRIES, "Entries a cache holds", labels);
  }

  get(digest: string): Uint8Array | undefined {
    const bytes = this.#entries.get(digest);
    if (bytes) {
      this.#entries.delete(digest);
      this.#entries.set(digest, bytes);
      this.#hits.inc();
    } else this.#misses.inc();
    return bytes;
  }

  set(digest: string, bytes: Uint8Array): void {
    if (bytes.length > this.#maxEntry || this.#entries.has(digest)) return;
    this.#entries.set(digest, bytes);
    this.#size += bytes.length;
    this.#bytes.inc(bytes.length);
    this.#count.inc();
    for (const [key, value] of this.#entries) {
      if (this.#size <= this.#capacity) break;
      this.#entries.delete(key);
      this.#size -= value.length;
      this.#bytes.dec(value.length);
      this.#count.dec();
    }
  }

  /** Bytes held. */
  get size(): number {
    return this.#size;
  }
}
