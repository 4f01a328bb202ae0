/**
 * Unit tests of {@linkcode ByteCache}: least recently used entries go first,
 * the total never exceeds the capacity, entries over `maxEntry` are not kept,
 * and `size` is the exact number of bytes held.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ByteCache } from "./byte_cache.ts";

/** `length` bytes, all `fill`, so entries can be told apart. */
function bytes(length: number, fill: number): Uint8Array {
  return new Uint8Array(length).fill(fill);
}

/** The keys among `keys` the cache still holds. */
function held(cache: ByteCache, keys: string[]): string[] {
  return keys.filter((key) => cache.get(key) !== undefined);
}

Deno.test("ByteCache.get() returns the bytes set under a key and undefined for an unknown key", () => {
  const cache = new ByteCache(100);
  const a = bytes(5, 1);
  cache.set("a", a);
  assert.equal(cache.get("a"), a);
  assert.equal(cache.get("b"), undefined);
  const empty = new Uint8Array(0);
  cache.set("empty", empty);
  assert.equal(cache.get("empty"), empty);
});

Deno.test("ByteCache.set() evicts the least recently set entries once the total passes the capacity", () => {
  const cache = new ByteCache(10, 10);
  cache.set("a", bytes(4, 1));
  cache.set("b", bytes(4, 2));
  assert.equal(cache.size, 8);
  cache.set("c", bytes(4, 3));
  assert.equal(cache.size, 8);
  assert.equal(cache.get("a"), undefined);
  assert.deepEqual(cache.get("b"), bytes(4, 2));
  assert.deepEqual(cache.get("c"), bytes(4, 3));
  // One large entry pushes out as many old ones as it must, and no more.
  cache.set("d", bytes(2, 4));
  assert.equal(cache.size, 10);
  cache.set("e", bytes(7, 5));
  assert.deepEqual(held(cache, ["b", "c", "d", "e"]), ["d", "e"]);
  assert.equal(cache.size, 9);
});

Deno.test("ByteCache.set() keeps entries while the total equals the capacity", () => {
  const cache = new ByteCache(12, 12);
  cache.set("a", bytes(4, 1));
  cache.set("b", bytes(4, 2));
  cache.set("c", bytes(4, 3));
  assert.equal(cache.size, 12);
  assert.deepEqual(held(cache, ["a", "b", "c"]), ["a", "b", "c"]);
});

Deno.test("ByteCache.get() makes an entry the most recently used, so eviction takes another", () => {
  const cache = new ByteCache(10, 10);
  cache.set("a", bytes(4, 1));
  cache.set("b", bytes(4, 2));
  assert.ok(cache.get("a"));
  cache.set("c", bytes(4, 3));
  assert.equal(cache.get("b"), undefined);
  assert.deepEqual(cache.get("a"), bytes(4, 1));
  assert.deepEqual(cache.get("c"), bytes(4, 3));
  assert.equal(cache.size, 8);
});

Deno.test("ByteCache.get() of an unknown key changes neither the order nor the size", () => {
  const cache = new ByteCache(10, 10);
  cache.set("a", bytes(4, 1));
  cache.set("b", bytes(4, 2));
  assert.equal(cache.get("x"), undefined);
  assert.equal(cache.size, 8);
  cache.set("c", bytes(4, 3));
  assert.deepEqual(held(cache, ["a", "b", "c"]), ["b", "c"]);
});

Deno.test("ByteCache.set() does not keep an entry larger than maxEntry, and evicts nothing for it", () => {
  const cache = new ByteCache(100, 20);
  for (const [i, key] of ["a", "b", "c", "d"].entries()) cache.set(key, bytes(20, i));
  assert.equal(cache.size, 80);
  cache.set("big", bytes(21, 9));
  assert.equal(cache.get("big"), undefined);
  assert.equal(cache.size, 80);
  assert.deepEqual(held(cache, ["a", "b", "c", "d"]), ["a", "b", "c", "d"]);
  // Exactly maxEntry is kept.
  cache.set("edge", bytes(20, 4));
  assert.deepEqual(cache.get("edge"), bytes(20, 4));
  assert.equal(cache.size, 100);
});

Deno.test("ByteCache() limits entries to a sixteenth of the capacity by default", () => {
  const cache = new ByteCache(1600);
  cache.set("over", bytes(101, 1));
  assert.equal(cache.get("over"), undefined);
  cache.set("fits", bytes(100, 2));
  assert.deepEqual(cache.get("fits"), bytes(100, 2));
  assert.equal(cache.size, 100);
});

Deno.test("ByteCache.set() of a key already held keeps one copy and counts its bytes once", () => {
  const cache = new ByteCache(100, 100);
  const first = bytes(30, 1);
  cache.set("a", first);
  cache.set("a", bytes(30, 1));
  cache.set("a", bytes(30, 1));
  assert.equal(cache.size, 30);
  assert.deepEqual(cache.get("a"), first);
  // The single copy leaves room for two more entries of the same size, and
  // a third evicts exactly one entry.
  cache.set("b", bytes(30, 2));
  cache.set("c", bytes(30, 3));
  assert.equal(cache.size, 90);
  cache.set("d", bytes(30, 4));
  assert.equal(cache.size, 90);
  assert.equal(held(cache, ["a", "b", "c", "d"]).length, 3);
});

Deno.test("ByteCache.size is the exact number of bytes held after every change", () => {
  const cache = new ByteCache(1000, 500);
  assert.equal(cache.size, 0);
  const lengths = [0, 1, 7, 499, 500, 501, 250, 3, 333, 100];
  const model: [string, number][] = [];
  lengths.forEach((length, i) => {
    const key = `k${i}`;
    cache.set(key, bytes(length, i));
    if (length <= 500) model.push([key, length]);
    let total = model.reduce((sum, [, n]) => sum + n, 0);
    while (total > 1000) total -= model.shift()![1];
    assert.equal(cache.size, total, `after setting ${key} (${length} bytes)`);
  });
  const keys = lengths.map((_, i) => `k${i}`);
  const sum = held(cache, keys).reduce((total, key) => total + cache.get(key)!.length, 0);
  assert.equal(cache.size, sum);
});
