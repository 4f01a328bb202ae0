/**
 * Unit tests of the listings of the service layer: the catalog as a caller
 * who may see only some repositories gets it.
 *
 * @module
 */
import assert from "node:assert/strict";
import { defaultConfig } from "../config.ts";
import { KvMetadataStore } from "../meta/metadata_store.ts";
import { makeDigest } from "../oci/digest.ts";
import { FsBlobStore } from "../storage/fs_blob_store.ts";
import { OciError } from "../oci/errors.ts";
import { SealedCursors } from "./cursor.ts";
import { CATALOG_SCAN } from "./listings.ts";
import { Registry } from "./registry.ts";

async function withRepos(count: number, fn: (r: Registry) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "berth-listings-" });
  const kv = await Deno.openKv(":memory:");
  const meta = new KvMetadataStore(kv);
  const digest = makeDigest("sha256", "a".repeat(64));
  try {
    for (let i = 0; i < count; i += 500) {
      const batch = [];
      for (let j = i; j < Math.min(i + 500, count); j++) {
        batch.push(meta.linkBlob(`r${String(j).padStart(6, "0")}`, digest, 1));
      }
      await Promise.all(batch);
    }
    await fn(new Registry({ meta, blobs: await FsBlobStore.open(dir), config: defaultConfig() }));
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("Listings.catalog() pages through only the repositories the caller may see", async () => {
  await withRepos(30, async (registry) => {
    const even = (repo: string) => Number(repo.slice(1)) % 2 === 0;
    const seen: string[] = [];
    let last: string | undefined;
    for (let pages = 0; pages < 20; pages++) {
      const page = await registry.listings.catalog(4, last, even);
      assert.ok(page.items.every(even));
      assert.ok(page.items.length <= 4);
      seen.push(...page.items);
      if (page.next === undefined) break;
      last = page.next;
    }
    assert.equal(seen.length, 15);
    assert.deepEqual(seen, [...seen].sort());
    assert.deepEqual(await registry.listings.catalog(0, undefined, even), { items: [], n: 0 });
    const none = await registry.listings.catalog(10, undefined, () => false);
    assert.deepEqual(none, { items: [], n: 10 });
  });
});

Deno.test("Listings.catalog() reads at most CATALOG_SCAN names per page and links onwards", async () => {
  await withRepos(CATALOG_SCAN + 5, async (registry) => {
    const onlyLast = (repo: string) => repo === `r${String(CATALOG_SCAN + 4).padStart(6, "0")}`;
    const first = await registry.listings.catalog(10, undefined, onlyLast);
    assert.deepEqual(first.items, []);
    // The cursor is a hidden name: sealed, it reveals nothing.
    assert.match(first.next!, /^~[A-Za-z0-9_-]+$/);
    assert.ok(!first.next!.includes(`r${String(CATALOG_SCAN - 1).padStart(6, "0")}`));
    const second = await registry.listings.catalog(10, first.next, onlyLast);
    assert.deepEqual(second.items, [`r${String(CATALOG_SCAN + 4).padStart(6, "0")}`]);
    assert.equal(second.next, undefined);
    // Every sealed cursor has the same length, whatever the name.
    const cursors = new SealedCursors(registry.context.meta);
    const short = await cursors.seal("a");
    const long = await cursors.seal("a/".repeat(100) + "b");
    assert.equal(short.length, long.length);
    assert.equal(await cursors.open(long), "a/".repeat(100) + "b");
    const other = await registry.listings.catalog(1, "r000000", () => true);
    assert.equal(other.next, "r000001", "a visible name is a plain cursor");
    // A plain cursor the caller may not see is refused: it would tell where hidden names are.
    await assert.rejects(
      () => registry.listings.catalog(10, "r000123", onlyLast),
      (error) => error instanceof OciError && error.code === "PAGINATION_NUMBER_INVALID",
    );
    // A sealed cursor made up or tampered with is refused.
    const tampered = first.next!.slice(0, -2) + (first.next!.endsWith("A") ? "BB" : "AA");
    for (const last of [tampered, "~", "~abc", "~!!"]) {
      await assert.rejects(
        () => registry.listings.catalog(10, last, onlyLast),
        (error) => error instanceof OciError && error.code === "PAGINATION_NUMBER_INVALID",
      );
    }
  });
});
