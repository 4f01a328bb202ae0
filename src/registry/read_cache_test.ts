import assert from "node:assert/strict";
import { KvMetadataStore, type Revision } from "../meta/metadata_store.ts";
import type { Digest } from "../oci/digest.ts";
import { ReadCache, readThrough, type Version, VersionReads } from "./read_cache.ts";

const v = (s: string) => s as Revision;

Deno.test("ReadCache.get() returns a value only at the version it was read at", () => {
  const cache = new ReadCache();
  cache.set("a", v("01"), "x", 10);
  assert.equal(cache.get("a", v("01")), "x");
  assert.equal(cache.get("a", v("02")), undefined);
  // A stale entry is dropped, with its bytes.
  assert.equal(cache.size, 0);
  assert.equal(cache.bytes, 0);
  assert.equal(cache.get("a", v("01")), undefined);
  cache.set("n", null, null, 10);
  assert.equal(cache.get("n", null), null, "a null value at no version is a hit");
  assert.equal(cache.get("n", v("01")), undefined);
});

Deno.test("ReadCache.set() keeps the entry and byte bounds, evicting the least recently used", () => {
  const cache = new ReadCache({ maxEntries: 3, maxBytes: 1000, maxEntryBytes: 600 });
  cache.set("a", null, 1, 100);
  cache.set("b", null, 2, 100);
  cache.set("c", null, 3, 100);
  assert.equal(cache.get("a", null), 1); // a is now the most recent
  cache.set("d", null, 4, 100);
  assert.equal(cache.size, 3);
  assert.equal(cache.get("b", null), undefined, "b was the least recently used");
  assert.equal(cache.get("a", null), 1);
  cache.set("big", null, 5, 700);
  assert.equal(cache.get("big", null), undefined, "over maxEntryBytes: not kept");
  cache.set("e", null, 6, 600);
  assert.ok(cache.bytes <= 1000, `bytes ${cache.bytes}`);
  assert.equal(cache.get("e", null), 6);
  cache.set("e", null, 7, 50); // replacing an entry replaces its bytes
  assert.ok(cache.bytes <= 1000);
  assert.equal(cache.get("e", null), 7);
  for (let i = 0; i < 10_000; i++) cache.set(`k${i}`, null, i, 90);
  assert.equal(cache.size, 3);
  assert.equal(cache.bytes, 270);
});

Deno.test("VersionReads.version() shares only reads that start after the call", async () => {
  let reads = 0;
  const release: (() => void)[] = [];
  let current = "00";
  const versions = new VersionReads(async () => {
    reads++;
    const seen = current; // what a KV read that starts now sees
    await new Promise<void>((resolve) => release.push(resolve));
    return v(seen);
  });
  const tick = () => new Promise((r) => setTimeout(r, 0));
  const first = versions.version("r");
  assert.equal(reads, 1, "the first caller starts a read at once");
  // A commit finishes now: callers arriving after it must not get the read in flight.
  current = "01";
  const later = [versions.version("r"), versions.version("r"), versions.version("r")];
  assert.equal(reads, 1, "the next read waits for the one in flight");
  release.shift()!();
  assert.equal(await first, "00");
  await tick();
  assert.equal(reads, 2, "one read for all who came during the first");
  const third = versions.version("r"); // the second read has started: a third is queued
  current = "02";
  release.shift()!();
  assert.deepEqual(await Promise.all(later), ["01", "01", "01"]);
  await tick();
  assert.equal(reads, 3);
  release.shift()!();
  assert.equal(await third, "02");
  // Other repositories read on their own, at once.
  const other = versions.version("s");
  assert.equal(reads, 4);
  release.shift()!();
  assert.equal(await other, "02");
  // Nothing in flight: the next caller reads anew.
  const again = versions.version("r");
  assert.equal(reads, 5);
  release.shift()!();
  assert.equal(await again, "02");
});

Deno.test("VersionReads.version() recovers after a failed read", async () => {
  let fail = true;
  const versions = new VersionReads(() => {
    if (fail) return Promise.reject(new Error("down"));
    return Promise.resolve(v("07"));
  });
  await assert.rejects(versions.version("r"), /down/);
  fail = false;
  assert.equal(await versions.version("r"), "07");
});

Deno.test("readThrough() serves from the cache until the repository's KV version changes", async () => {
  const kv = await Deno.openKv(":memory:");
  using meta = Object.assign(new KvMetadataStore(kv), { [Symbol.dispose]: () => kv.close() });
  const caches = {
    cache: new ReadCache(),
    versions: new VersionReads((name: string): Promise<Version> => meta.repoVersion(name)),
  };
  const digest = `sha256:${"a".repeat(64)}` as Digest;
  let kvReads = 0;
  const read = () =>
    readThrough(caches, "app", "t:latest", async () => {
      kvReads++;
      const r = await meta.getTagVersioned("app", "latest");
      return { version: r.version, value: r.value?.digest ?? null };
    }, () => 100);
  assert.equal(await read(), null);
  assert.equal(await read(), null);
  assert.equal(kvReads, 1, "an absent tag is kept too");
  const record = { mediaType: "application/x", size: 1, createdAt: 0 };
  const refs = { blobs: [], manifests: [] };
  assert.ok(await meta.putManifest({ name: "app", digest, record, tags: ["latest"], refs }));
  assert.equal(await read(), digest, "a push changes the version");
  assert.equal(await read(), digest);
  assert.equal(kvReads, 2);
  assert.ok(await meta.deleteTag("app", "latest"));
  assert.equal(await read(), null, "a tag delete changes the version");
  assert.ok(await meta.putManifest({ name: "app", digest, record, tags: ["latest"], refs }));
  assert.equal(await read(), digest);
  assert.ok(await meta.deleteManifest("app", digest));
  assert.equal(await read(), null, "a manifest delete changes the version");
  assert.equal(kvReads, 5);
});
