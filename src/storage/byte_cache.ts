/**
 * A small LRU cache of immutable bytes by digest (manifests). Content under a
 * digest never changes, so the cache is safe however many processes share the
 * stores; only what is addressed by digest is cached.
 *
 * @module
 */

/** An LRU cache bounded by total bytes. */
export class ByteCache {
  readonly #entries = new Map<string, Uint8Array>();
  readonly #capacity: number;
  readonly #maxEntry: number;
  #size = 0;

  /** `capacity` bytes in all; entries larger than `maxEntry` are not kept. */
  constructor(capacity: number, maxEntry = capacity / 16) {
    this.#capacity = capacity;
    this.#maxEntry = maxEntry;
  }

  get(digest: string): Uint8Array | undefined {
    const bytes = this.#entries.get(digest);
    if (bytes) {
      this.#entries.delete(digest);
      this.#entries.set(digest, bytes);
    }
    return bytes;
  }

  set(digest: string, bytes: Uint8Array): void {
    if (bytes.length > this.#maxEntry || this.#entries.has(digest)) return;
    this.#entries.set(digest, bytes);
    this.#size += bytes.length;
    for (const [key, value] of this.#entries) {
      if (this.#size <= this.#capacity) break;
      this.#entries.delete(key);
      this.#size -= value.length;
    }
  }

  /** Bytes held. */
  get size(): number {
    return this.#size;
  }
}
