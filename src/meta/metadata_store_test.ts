/**
 * Unit tests of the metadata operations over an in-memory Deno KV: the
 * invariants each commit keeps (records, tags, reverse indexes, references
 * and referrer entries change together), paging, mounts and upload sessions.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { type Digest, makeDigest } from "../oci/digest.ts";
import {
  blobReposKey,
  type ManifestRecord,
  referrerKey,
  tagsByDigestKey,
  tagsByDigestPrefix,
  type UploadPart,
  uploadPartKey,
  uploadPartsPrefix,
} from "./keys.ts";
import { Kv } from "./kv.ts";
import {
  KvMetadataStore,
  MAX_TAGS_PER_PUT,
  referrerEntry,
  type UploadSession,
} from "./metadata_store.ts";
import { OCI_INDEX, OCI_MANIFEST } from "../oci/media_type.ts";

function digestOf(text: string): Digest {
  return makeDigest("sha256", createHash("sha256").update(text).digest("hex"));
}

type TestStore = KvMetadataStore & Disposable & { raw: Deno.Kv };

/** An in-memory store, closed by `using`; `raw` is its KV, for looking at keys. */
async function openStore(): Promise<TestStore> {
  const kv = await Deno.openKv(":memory:");
  const meta = new KvMetadataStore(kv);
  return Object.assign(meta, { raw: kv, [Symbol.dispose]: () => kv.close() });
}

function record(extra: Partial<ManifestRecord> = {}): ManifestRecord {
  return { mediaType: OCI_MANIFEST, size: 100, createdAt: 1, ...extra };
}

async function exists(meta: TestStore, key: Deno.KvKey): Promise<boolean> {
  return (await meta.raw.get(key)).versionstamp !== null;
}

async function count(meta: TestStore, prefix: Deno.KvKey): Promise<number> {
  let n = 0;
  for await (const _ of meta.raw.list({ prefix })) n++;
  return n;
}

/** Every item of a listing, following `next` page by page. */
async function allPages<T>(
  page: (last: string | undefined) => Promise<{ items: T[]; next?: string }>,
  pageSize: number,
): Promise<T[][]> {
  const pages: T[][] = [];
  let last: string | undefined;
  for (let i = 0; i < 1000; i++) {
    const result = await page(last);
    assert.ok(result.items.length <= pageSize);
    pages.push(result.items);
    if (result.next === undefined) return pages;
    last = result.next;
  }
  assert.fail("paging did not end");
}

// ---- manifests and tags ----------------------------------------------------

const NO_REFS = { blobs: [], manifests: [] };

Deno.test("putManifest() records the manifest, its tags, the tag index and the repository", async () => {
  using meta = await openStore();
  const digest = digestOf("m1");
  assert.equal(await meta.repoExists("app"), false);
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest,
    record: record(),
    tags: ["latest", "v1"],
  });
  assert.equal(await meta.repoExists("app"), true);
  assert.deepEqual(await meta.getManifest("app", digest), record());
  for (const tag of ["latest", "v1"]) {
    assert.equal((await meta.getTag("app", tag))?.digest, digest);
    assert.equal(await exists(meta, tagsByDigestKey("app", digest, tag)), true);
  }
  assert.equal(await meta.getManifest("other", digest), null);
  assert.equal(await meta.getTag("app", "nope"), null);
});

Deno.test("putManifest() by digest alone sets no tag", async () => {
  using meta = await openStore();
  const digest = digestOf("m1");
  await meta.putManifest({ refs: NO_REFS, name: "app", digest, record: record(), tags: [] });
  assert.ok(await meta.getManifest("app", digest));
  assert.equal(await count(meta, ["tags", "app"]), 0);
  assert.equal(await count(meta, tagsByDigestPrefix("app", digest)), 0);
});

Deno.test("putManifest() moves a tag and updates tags_by_digest", async () => {
  using meta = await openStore();
  const a = digestOf("a");
  const b = digestOf("b");
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: a,
    record: record(),
    tags: ["latest", "keep"],
  });
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: b,
    record: record({ mediaType: OCI_INDEX }),
    tags: ["latest"],
  });
  assert.equal((await meta.getTag("app", "latest"))?.digest, b);
  assert.equal((await meta.getTag("app", "keep"))?.digest, a);
  assert.equal(await exists(meta, tagsByDigestKey("app", a, "latest")), false);
  assert.equal(await exists(meta, tagsByDigestKey("app", b, "latest")), true);
  assert.equal(await exists(meta, tagsByDigestKey("app", a, "keep")), true);
  // Both manifests stay.
  assert.ok(await meta.getManifest("app", a));
  assert.equal((await meta.getManifest("app", b))?.mediaType, OCI_INDEX);
});

Deno.test("putManifest() re-putting the same tag and digest changes nothing but the time", async () => {
  using meta = await openStore();
  const a = digestOf("a");
  await meta.putManifest({ refs: NO_REFS, name: "app", digest: a, record: record(), tags: ["t"] });
  await meta.putManifest({ refs: NO_REFS, name: "app", digest: a, record: record(), tags: ["t"] });
  assert.equal((await meta.getTag("app", "t"))?.digest, a);
  assert.equal(await count(meta, tagsByDigestPrefix("app", a)), 1);
});

Deno.test("putManifest() refuses more than MAX_TAGS_PER_PUT tags", async () => {
  using meta = await openStore();
  const tags = Array.from({ length: MAX_TAGS_PER_PUT + 1 }, (_, i) => `t${i}`);
  assert.throws(
    () =>
      meta.putManifest({
        refs: NO_REFS,
        name: "app",
        digest: digestOf("a"),
        record: record(),
        tags,
      }),
    RangeError,
  );
  assert.equal(await meta.repoExists("app"), false);
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: digestOf("a"),
    record: record(),
    tags: tags.slice(0, MAX_TAGS_PER_PUT),
  });
  assert.equal(await count(meta, ["tags", "app"]), MAX_TAGS_PER_PUT);
});

Deno.test("putManifest() with a subject writes its referrer entry", async () => {
  using meta = await openStore();
  const subject = digestOf("subject");
  const sig = digestOf("sig");
  const annotations = { "org.example": "yes" };
  const rec = record({ subject, artifactType: "application/x.sig", size: 321 });
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: sig,
    record: rec,
    tags: [],
    annotations,
  });
  assert.equal(await exists(meta, referrerKey("app", subject, "application/x.sig", sig)), true);
  const page = await meta.listReferrers("app", subject, { n: 10 });
  assert.deepEqual(page, {
    items: [{
      mediaType: OCI_MANIFEST,
      digest: sig,
      size: 321,
      artifactType: "application/x.sig",
      annotations,
    }],
  });
});

Deno.test("referrerEntry() leaves out artifactType and annotations when absent", () => {
  const d = digestOf("x");
  assert.deepEqual(referrerEntry(d, record({ mediaType: OCI_INDEX, size: 5 })), {
    mediaType: OCI_INDEX,
    digest: d,
    size: 5,
  });
});

Deno.test("deleteTag() removes the pointer and its index entry, not the manifest", async () => {
  using meta = await openStore();
  const a = digestOf("a");
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: a,
    record: record(),
    tags: ["t", "u"],
  });
  assert.equal(await meta.deleteTag("app", "t"), true);
  assert.equal(await meta.getTag("app", "t"), null);
  assert.equal(await exists(meta, tagsByDigestKey("app", a, "t")), false);
  assert.equal((await meta.getTag("app", "u"))?.digest, a);
  assert.ok(await meta.getManifest("app", a));
  assert.equal(await meta.deleteTag("app", "t"), false);
  assert.equal(await meta.deleteTag("nowhere", "t"), false);
});

Deno.test("deleteManifest() removes the manifest, its tags and its referrer entry", async () => {
  using meta = await openStore();
  const subject = digestOf("s");
  const a = digestOf("a");
  const b = digestOf("b");
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: a,
    record: record({ subject, artifactType: "application/x.a" }),
    tags: ["t1", "t2"],
  });
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: b,
    record: record(),
    tags: ["other"],
  });
  assert.equal(await meta.deleteManifest("app", a), true);
  assert.equal(await meta.getManifest("app", a), null);
  assert.equal(await meta.getTag("app", "t1"), null);
  assert.equal(await meta.getTag("app", "t2"), null);
  assert.equal(await count(meta, tagsByDigestPrefix("app", a)), 0);
  assert.deepEqual((await meta.listReferrers("app", subject, { n: 10 })).items, []);
  assert.equal((await meta.getTag("app", "other"))?.digest, b);
  assert.equal(await meta.deleteManifest("app", a), false);
  assert.equal(await meta.deleteManifest("nowhere", a), false);
});

Deno.test("deleteManifest() removes every tag of the manifest, however many, and no other", async () => {
  for (const total of [9, 10, 18, 25]) {
    using meta = await openStore();
    const a = digestOf("a");
    const tags = Array.from({ length: total }, (_, i) => `tag-${String(i).padStart(2, "0")}`);
    for (let i = 0; i < tags.length; i += MAX_TAGS_PER_PUT) {
      await meta.putManifest({
        refs: NO_REFS,
        name: "app",
        digest: a,
        record: record(),
        tags: tags.slice(i, i + MAX_TAGS_PER_PUT),
      });
    }
    await meta.putManifest({
      refs: NO_REFS,
      name: "app",
      digest: digestOf("b"),
      record: record(),
      tags: ["b"],
    });
    assert.equal(await count(meta, ["tags", "app"]), total + 1);
    assert.equal(await meta.deleteManifest("app", a), true, `${total} tags`);
    assert.equal(await meta.getManifest("app", a), null, `${total} tags`);
    assert.equal(await count(meta, tagsByDigestPrefix("app", a)), 0, `${total} tags`);
    assert.deepEqual((await meta.listTags("app", 100)).items, ["b"], `${total} tags`);
  }
});

Deno.test("deleteManifest() keeps a tag whose index entry is stale (it moved elsewhere)", async () => {
  using meta = await openStore();
  const a = digestOf("a");
  const b = digestOf("b");
  await meta.putManifest({ refs: NO_REFS, name: "app", digest: a, record: record(), tags: [] });
  await meta.putManifest({ refs: NO_REFS, name: "app", digest: b, record: record(), tags: ["t"] });
  // A stale reverse-index entry says "t" points at a.
  await meta.raw.set(tagsByDigestKey("app", a, "t"), true);
  assert.equal(await meta.deleteManifest("app", a), true);
  assert.equal((await meta.getTag("app", "t"))?.digest, b);
  assert.equal(await exists(meta, tagsByDigestKey("app", a, "t")), false);
  assert.equal(await exists(meta, tagsByDigestKey("app", b, "t")), true);
});

// ---- listings ----------------------------------------------------------------

Deno.test("listTags() returns tags in byte order, paged strictly after last", async () => {
  using meta = await openStore();
  const tags = ["b", "A", "a", "_x", "Z", "0", "a.b", "a-b", "aa", "v1.10", "v1.9"];
  for (let i = 0; i < tags.length; i++) {
    await meta.putManifest({
      refs: NO_REFS,
      name: "app",
      digest: digestOf(String(i)),
      record: record(),
      tags: [tags[i]!],
    });
  }
  const sorted = [...tags].sort();
  assert.deepEqual((await meta.listTags("app", 100)).items, sorted);
  assert.equal((await meta.listTags("app", 100)).next, undefined);
  for (const n of [1, 2, 3, 10, 11]) {
    const pages = await allPages((last) => meta.listTags("app", n, last), n);
    assert.deepEqual(pages.flat(), sorted, `n=${n}`);
    // Every page but the last is full.
    for (const page of pages.slice(0, -1)) assert.equal(page.length, n);
  }
});

Deno.test("listTags() with n equal to the count sends no next", async () => {
  using meta = await openStore();
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: digestOf("a"),
    record: record(),
    tags: ["x", "y"],
  });
  assert.deepEqual(await meta.listTags("app", 2), { items: ["x", "y"] });
  assert.deepEqual(await meta.listTags("app", 1), { items: ["x"], next: "x" });
  assert.deepEqual(await meta.listTags("app", 1, "x"), { items: ["y"] });
});

Deno.test("listTags() with n=0 returns nothing and no next", async () => {
  using meta = await openStore();
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: digestOf("a"),
    record: record(),
    tags: ["x"],
  });
  assert.deepEqual(await meta.listTags("app", 0), { items: [] });
});

Deno.test("listTags() with a last that is not a tag starts after where it would sort", async () => {
  using meta = await openStore();
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: digestOf("a"),
    record: record(),
    tags: ["a", "c", "e"],
  });
  assert.deepEqual((await meta.listTags("app", 10, "b")).items, ["c", "e"]);
  assert.deepEqual((await meta.listTags("app", 10, "e")).items, []);
  assert.deepEqual((await meta.listTags("app", 10, "zzz")).items, []);
  assert.deepEqual((await meta.listTags("app", 10, "")).items, ["a", "c", "e"]);
});

Deno.test("listTags() lists only the named repository", async () => {
  using meta = await openStore();
  await meta.putManifest({
    refs: NO_REFS,
    name: "a",
    digest: digestOf("1"),
    record: record(),
    tags: ["one"],
  });
  await meta.putManifest({
    refs: NO_REFS,
    name: "a/b",
    digest: digestOf("2"),
    record: record(),
    tags: ["two"],
  });
  await meta.putManifest({
    refs: NO_REFS,
    name: "ab",
    digest: digestOf("3"),
    record: record(),
    tags: ["three"],
  });
  assert.deepEqual((await meta.listTags("a", 10)).items, ["one"]);
  assert.deepEqual((await meta.listTags("a/b", 10)).items, ["two"]);
  assert.deepEqual((await meta.listTags("none", 10)).items, []);
});

Deno.test("listRepos() returns repositories in byte order, paged strictly after last", async () => {
  using meta = await openStore();
  const names = ["b", "a/c", "a", "a-b", "a/b", "z/z/z", "0"];
  for (const name of names) {
    await meta.putManifest({
      refs: NO_REFS,
      name,
      digest: digestOf(name),
      record: record(),
      tags: [],
    });
  }
  const sorted = [...names].sort();
  assert.deepEqual((await meta.listRepos(100)).items, sorted);
  for (const n of [1, 2, 3, 7]) {
    const pages = await allPages((last) => meta.listRepos(n, last), n);
    assert.deepEqual(pages.flat(), sorted, `n=${n}`);
  }
  assert.deepEqual(await meta.listRepos(0), { items: [] });
  assert.deepEqual((await meta.listRepos(10, "a/b")).items, ["a/c", "b", "z/z/z"]);
});

Deno.test("listReferrers() pages through every referrer of a subject", async () => {
  using meta = await openStore();
  const subject = digestOf("subject");
  const expected: Digest[] = [];
  for (let i = 0; i < 7; i++) {
    const digest = digestOf(`ref${i}`);
    expected.push(digest);
    await meta.putManifest({
      refs: NO_REFS,
      name: "app",
      digest,
      record: record({ subject, artifactType: `application/x.t${i % 3}` }),
      tags: [],
    });
  }
  // An index without artifactType is a referrer too.
  const index = digestOf("index");
  expected.push(index);
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: index,
    record: record({ subject, mediaType: OCI_INDEX }),
    tags: [],
  });
  // Not referrers of this subject in this repository.
  await meta.putManifest({
    refs: NO_REFS,
    name: "other",
    digest: digestOf("elsewhere"),
    record: record({ subject, artifactType: "application/x.t0" }),
    tags: [],
  });
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: digestOf("unrelated"),
    record: record({ subject: digestOf("another"), artifactType: "application/x.t0" }),
    tags: [],
  });
  const all = await meta.listReferrers("app", subject, { n: 100 });
  assert.equal(all.next, undefined);
  assert.deepEqual(new Set(all.items.map((d) => d.digest)), new Set(expected));
  for (const n of [1, 2, 3, 8]) {
    const pages = await allPages(
      (last) => meta.listReferrers("app", subject, last === undefined ? { n } : { n, last }),
      n,
    );
    assert.deepEqual(
      pages.flat().map((d) => d.digest),
      all.items.map((d) => d.digest),
      `n=${n}`,
    );
  }
});

Deno.test("listReferrers() filters by artifactType, also across pages", async () => {
  using meta = await openStore();
  const subject = digestOf("subject");
  const sigs: Digest[] = [];
  for (let i = 0; i < 5; i++) {
    const digest = digestOf(`sig${i}`);
    sigs.push(digest);
    await meta.putManifest({
      refs: NO_REFS,
      name: "app",
      digest,
      record: record({ subject, artifactType: "application/x.sig" }),
      tags: [],
    });
    await meta.putManifest({
      refs: NO_REFS,
      name: "app",
      digest: digestOf(`sbom${i}`),
      record: record({ subject, artifactType: "application/x.sbom" }),
      tags: [],
    });
  }
  // A type that is a prefix of another must not match it.
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: digestOf("prefix"),
    record: record({ subject, artifactType: "application/x.si" }),
    tags: [],
  });
  const filtered = await meta.listReferrers("app", subject, {
    n: 100,
    artifactType: "application/x.sig",
  });
  assert.deepEqual(filtered.items.map((d) => d.digest).sort(), [...sigs].sort());
  assert.ok(filtered.items.every((d) => d.artifactType === "application/x.sig"));
  const pages = await allPages(
    (last) =>
      meta.listReferrers("app", subject, {
        n: 2,
        artifactType: "application/x.sig",
        ...(last === undefined ? {} : { last }),
      }),
    2,
  );
  assert.deepEqual(pages.map((p) => p.length), [2, 2, 1]);
  assert.deepEqual(pages.flat(), filtered.items);
  const none = await meta.listReferrers("app", subject, { n: 10, artifactType: "application/x" });
  assert.deepEqual(none, { items: [] });
});

Deno.test("listReferrers() of an unknown subject or repository is empty", async () => {
  using meta = await openStore();
  assert.deepEqual(await meta.listReferrers("app", digestOf("s"), { n: 10 }), { items: [] });
});

Deno.test("listReferrers() with n=0 returns nothing and no next", async () => {
  using meta = await openStore();
  const subject = digestOf("s");
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: digestOf("r"),
    record: record({ subject, artifactType: "application/x.a" }),
    tags: [],
  });
  assert.deepEqual(await meta.listReferrers("app", subject, { n: 0 }), { items: [] });
});

Deno.test("listReferrers() with a last of another artifactType than the filter does not throw", async () => {
  using meta = await openStore();
  const subject = digestOf("s");
  for (const type of ["application/a", "application/m", "application/z"]) {
    await meta.putManifest({
      refs: NO_REFS,
      name: "app",
      digest: digestOf(type),
      record: record({ subject, artifactType: type }),
      tags: [],
    });
  }
  const before = await meta.listReferrers("app", subject, {
    n: 10,
    artifactType: "application/m",
    last: `application/a@${digestOf("application/a")}`,
  });
  assert.deepEqual(before.items.map((d) => d.artifactType), ["application/m"]);
  const after = await meta.listReferrers("app", subject, {
    n: 10,
    artifactType: "application/m",
    last: `application/z@${digestOf("application/z")}`,
  });
  assert.deepEqual(after, { items: [] });
});

Deno.test("listReferrers() accepts any cursor the handler lets through (512 characters)", async () => {
  using meta = await openStore();
  const name = "a/".repeat(127) + "b"; // the longest name
  const subject = makeDigest("sha512", "0".repeat(128));
  await meta.putManifest({
    refs: NO_REFS,
    name,
    digest: digestOf("r"),
    record: record({ subject, artifactType: "application/x.a" }),
    tags: [],
  });
  // The handler refuses a longer last (a KV key over 2 KiB would throw).
  for (const last of ["x".repeat(511) + "@", "@" + "y".repeat(511), "0".repeat(256) + "@y"]) {
    const page = await meta.listReferrers(name, subject, { n: 10, last });
    assert.ok(page.items.length <= 1);
  }
});

// ---- blobs -------------------------------------------------------------------

Deno.test("linkBlob() links a blob, creates the repository and is idempotent", async () => {
  using meta = await openStore();
  const d = digestOf("blob");
  assert.equal(await meta.getBlobLink("app", d), null);
  await meta.linkBlob("app", d, 42);
  await meta.linkBlob("app", d, 42);
  assert.equal((await meta.getBlobLink("app", d))?.size, 42);
  assert.equal(await meta.repoExists("app"), true);
  assert.equal(await exists(meta, blobReposKey(d, "app")), true);
  assert.equal(await meta.getBlobLink("other", d), null);
});

Deno.test("unlinkBlob() removes the link and reverse index, once", async () => {
  using meta = await openStore();
  const d = digestOf("blob");
  await meta.linkBlob("app", d, 1);
  await meta.linkBlob("other", d, 1);
  assert.equal(await meta.unlinkBlob("app", d), true);
  assert.equal(await meta.getBlobLink("app", d), null);
  assert.equal(await exists(meta, blobReposKey(d, "app")), false);
  assert.equal(await meta.unlinkBlob("app", d), false);
  assert.ok(await meta.getBlobLink("other", d));
  assert.equal(await meta.repoExists("app"), true, "the repository stays");
});

Deno.test("mountBlob() from a named repository links the blob and returns its size", async () => {
  using meta = await openStore();
  const d = digestOf("blob");
  await meta.linkBlob("src", d, 99);
  assert.equal(await meta.mountBlob("dst", d, "src"), 99);
  assert.equal((await meta.getBlobLink("dst", d))?.size, 99);
  assert.equal(await meta.repoExists("dst"), true);
  assert.equal(await exists(meta, blobReposKey(d, "dst")), true);
});

Deno.test("mountBlob() returns null when the named repository lacks the blob", async () => {
  using meta = await openStore();
  const d = digestOf("blob");
  await meta.linkBlob("elsewhere", d, 99);
  assert.equal(await meta.mountBlob("dst", d, "src"), null);
  assert.equal(await meta.getBlobLink("dst", d), null);
  assert.equal(await meta.repoExists("dst"), false);
});

Deno.test("reposLinking() lists up to n repositories that link a blob, in name order", async () => {
  using meta = await openStore();
  const d = digestOf("blob");
  assert.deepEqual(await meta.reposLinking(d, 10), []);
  for (const name of ["c", "a/b", "b"]) await meta.linkBlob(name, d, 7);
  await meta.linkBlob("other", digestOf("other"), 1);
  assert.deepEqual(await meta.reposLinking(d, 10), ["a/b", "b", "c"]);
  assert.deepEqual(await meta.reposLinking(d, 2), ["a/b", "b"]);
  await meta.unlinkBlob("b", d);
  assert.deepEqual(await meta.reposLinking(d, 10), ["a/b", "c"]);
});

Deno.test("missingBlobs() and missingManifests() report what is absent, in batches", async () => {
  using meta = await openStore();
  const digests = Array.from({ length: 25 }, (_, i) => digestOf(`d${i}`));
  for (const d of digests.filter((_, i) => i % 2 === 0)) await meta.linkBlob("app", d, 1);
  const odd = digests.filter((_, i) => i % 2 === 1);
  assert.deepEqual(await meta.missingBlobs("app", [...digests, ...digests]), odd);
  assert.deepEqual(await meta.missingBlobs("app", []), []);
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: digests[0]!,
    record: record(),
    tags: [],
  });
  assert.deepEqual(await meta.missingManifests("app", digests.slice(0, 12)), digests.slice(1, 12));
});

// ---- upload sessions -----------------------------------------------------------

function part(i: number, size = 10): UploadPart {
  return {
    file: `p-${String(i).padStart(16, "0")}`,
    size,
    digest: digestOf(`part${i}`),
  };
}

async function session(meta: KvMetadataStore, id: string): Promise<UploadSession> {
  const found = await meta.getUpload(id);
  assert.ok(found, `no session ${id}`);
  return found;
}

Deno.test("createUpload() opens a session at offset 0", async () => {
  using meta = await openStore();
  await meta.createUpload("u1", "app", "sha512");
  const entry = await session(meta, "u1");
  assert.equal(entry.record.name, "app");
  assert.equal(entry.record.offset, 0);
  assert.equal(entry.record.parts, 0);
  assert.equal(entry.record.algorithm, "sha512");
  assert.equal(await meta.getUpload("nope"), null);
  assert.equal(await meta.repoExists("app"), false, "a session does not create the repository");
});

Deno.test("commitPart() appends parts in order and advances the offset", async () => {
  using meta = await openStore();
  await meta.createUpload("u1", "app", "sha256");
  let entry = await session(meta, "u1");
  for (let i = 0; i < 12; i++) {
    const next = await meta.commitPart(entry, part(i, i + 1));
    assert.ok(next);
    entry = next;
  }
  assert.equal(entry.record.parts, 12);
  assert.equal(entry.record.offset, (12 * 13) / 2);
  assert.deepEqual(await session(meta, "u1"), entry);
  const parts = await meta.listUploadParts(entry);
  assert.deepEqual(parts, Array.from({ length: 12 }, (_, i) => part(i, i + 1)));
});

Deno.test("commitPart() with a stale entry returns null and writes nothing", async () => {
  using meta = await openStore();
  await meta.createUpload("u1", "app", "sha256");
  const stale = await session(meta, "u1");
  assert.ok(await meta.commitPart(stale, part(0)));
  assert.equal(await meta.commitPart(stale, part(1, 99)), null);
  const entry = await session(meta, "u1");
  assert.equal(entry.record.offset, 10);
  assert.deepEqual(await meta.listUploadParts(entry), [part(0)]);
});

Deno.test("endUpload() removes the session and its parts; a stale entry loses", async () => {
  using meta = await openStore();
  await meta.createUpload("u1", "app", "sha256");
  const first = await session(meta, "u1");
  const entry = await meta.commitPart(first, part(0));
  assert.ok(entry);
  assert.equal(await meta.endUpload(first), false, "stale entry");
  assert.ok(await meta.getUpload("u1"));
  assert.equal(await meta.endUpload(entry), true);
  assert.equal(await meta.getUpload("u1"), null);
  assert.equal(await count(meta, uploadPartsPrefix("u1")), 0);
  assert.equal(await meta.endUpload(entry), false, "already ended");
  assert.equal(await meta.getBlobLink("app", digestOf("x")), null);
  assert.equal(await meta.repoExists("app"), false);
});

Deno.test("endUpload() with link links the blob and creates the repository", async () => {
  using meta = await openStore();
  const d = digestOf("blob");
  await meta.createUpload("u1", "app", "sha256");
  const entry = await meta.commitPart(await session(meta, "u1"), part(0, 5));
  assert.ok(entry);
  assert.equal(await meta.endUpload(entry, { digest: d, size: 5 }), true);
  assert.equal((await meta.getBlobLink("app", d))?.size, 5);
  assert.equal(await exists(meta, blobReposKey(d, "app")), true);
  assert.equal(await meta.repoExists("app"), true);
  assert.equal(await meta.getUpload("u1"), null);
});

Deno.test("endUpload() removes the parts of a session with more parts than one commit holds", async () => {
  using meta = await openStore();
  await meta.createUpload("big", "app", "sha256");
  let entry = await session(meta, "big");
  const total = 905;
  for (let i = 0; i < total; i++) {
    const next = await meta.commitPart(entry, part(i, 1));
    assert.ok(next);
    entry = next;
  }
  assert.equal(await count(meta, uploadPartsPrefix("big")), total);
  assert.equal(await meta.endUpload(entry), true);
  assert.equal(await count(meta, uploadPartsPrefix("big")), 0);
  assert.equal(await exists(meta, uploadPartKey("big", total - 1)), false);
});

Deno.test("countUploads() goes up and down exactly with sessions", async () => {
  using meta = await openStore();
  assert.deepEqual(await meta.countUploads("a"), { repo: 0, total: 0 });
  await meta.createUpload("a1", "a", "sha256");
  await meta.createUpload("a2", "a", "sha256");
  await meta.createUpload("b1", "b", "sha256");
  assert.deepEqual(await meta.countUploads("a"), { repo: 2, total: 3 });
  assert.deepEqual(await meta.countUploads("b"), { repo: 1, total: 3 });
  assert.deepEqual(await meta.countUploads("c"), { repo: 0, total: 3 });
  // A duplicate id is refused and not counted.
  await meta.createUpload("a1", "a", "sha256");
  assert.deepEqual(await meta.countUploads("a"), { repo: 2, total: 3 });
  // A stale end does not count down.
  const a1 = await session(meta, "a1");
  const moved = await meta.commitPart(a1, part(0));
  assert.ok(moved);
  assert.equal(await meta.endUpload(a1), false);
  assert.deepEqual(await meta.countUploads("a"), { repo: 2, total: 3 });
  assert.equal(await meta.endUpload(moved), true);
  assert.deepEqual(await meta.countUploads("a"), { repo: 1, total: 2 });
  assert.equal(
    await meta.endUpload(await session(meta, "a2"), {
      digest: digestOf("x"),
      size: 1,
    }),
    true,
  );
  assert.equal(await meta.endUpload(await session(meta, "b1")), true);
  assert.deepEqual(await meta.countUploads("a"), { repo: 0, total: 0 });
  assert.deepEqual(await meta.countUploads("b"), { repo: 0, total: 0 });
  // Up again from zero (no wrap-around left over).
  await meta.createUpload("a3", "a", "sha256");
  assert.deepEqual(await meta.countUploads("a"), { repo: 1, total: 1 });
});

Deno.test("sweepOrphanParts() removes the part records of sessions that are gone, only those", async () => {
  using meta = await openStore();
  await meta.createUpload("live", "app", "sha256");
  assert.ok(await meta.commitPart(await session(meta, "live"), part(0)));
  for (let i = 0; i < 5; i++) await meta.raw.set(uploadPartKey("gone", i), part(i));
  assert.equal(await meta.sweepOrphanParts(), 1);
  assert.equal(await count(meta, uploadPartsPrefix("gone")), 0);
  assert.equal(await count(meta, uploadPartsPrefix("live")), 1);
  assert.equal(await meta.sweepOrphanParts(), 0);
});

Deno.test("scanUploads() yields every open session with its record", async () => {
  using meta = await openStore();
  await meta.createUpload("a", "app", "sha256");
  await meta.createUpload("b", "lib", "sha512");
  const seen = [];
  for await (const s of meta.scanUploads()) seen.push([s.uploadId, s.record.name]);
  assert.deepEqual(seen, [["a", "app"], ["b", "lib"]]);
});

Deno.test("keys are laid out as the key table in keys.ts documents", async () => {
  using meta = await openStore();
  const d = digestOf("m");
  const layer = digestOf("layer");
  const subject = digestOf("subject");
  await meta.linkBlob("app", layer, 1);
  await meta.putManifest({
    refs: { blobs: [layer], manifests: [], subject },
    name: "app",
    digest: d,
    record: record({ subject, artifactType: "application/x.sig" }),
    tags: ["t"],
  });
  await meta.createUpload("u", "app", "sha256");
  assert.ok(await meta.commitPart(await session(meta, "u"), part(0)));
  const keys: Deno.KvKey[] = [];
  const LINKED_AT = (await meta.getBlobLink("app", layer))!.linkedAt;
  for await (const entry of meta.raw.list({ prefix: [] })) keys.push(entry.key);
  // Written out, not built with the key builders: this is the documented layout.
  assert.deepEqual(keys, [
    ["blob_holders", d],
    ["blob_holders", layer],
    ["blob_links", "app", layer],
    ["blob_repos", layer, "app"],
    ["gc_due", "blob", LINKED_AT, "app", layer],
    ["gc_refs", "app", layer],
    ["manifest_refs", "app", d, 0],
    ["manifests", "app", d],
    ["referrers", "app", subject, "application/x.sig", d],
    ["repo_version", "app"],
    ["repos", "app"],
    ["tag_clock", "app"],
    ["tags", "app", "t"],
    ["tags_by_digest", "app", d, "t"],
    ["upload_counts", "app"],
    ["upload_parts", "u", 0],
    ["upload_total"],
    ["uploads", "u"],
    ["usage", "app"],
    ["usage_total"],
  ]);
  // Every family written is a row of the key table in keys.ts's doc comment.
  const table = await Deno.readTextFile(new URL("./keys.ts", import.meta.url));
  for (const family of new Set(keys.map((key) => key[0] as string))) {
    assert.match(table, new RegExp(`\\| \`\\["${family}"`), family);
  }
});

Deno.test("deleteManifest() removes 1,001 tags, the record last", async () => {
  using meta = await openStore();
  const a = digestOf("a");
  const tags = Array.from({ length: 1001 }, (_, i) => `t${String(i).padStart(4, "0")}`);
  for (let i = 0; i < tags.length; i += MAX_TAGS_PER_PUT) {
    await meta.putManifest({
      refs: NO_REFS,
      name: "app",
      digest: a,
      record: record(),
      tags: tags.slice(i, i + MAX_TAGS_PER_PUT),
    });
  }
  assert.equal(await meta.deleteManifest("app", a), true);
  assert.equal(await meta.getManifest("app", a), null);
  assert.equal(await count(meta, ["tags", "app"]), 0);
  assert.equal(await count(meta, tagsByDigestPrefix("app", a)), 0);
  assert.equal(await count(meta, ["manifest_refs", "app", a]), 0);
});

Deno.test("deleteManifest() racing tag moves never removes a tag that moved away, nor leaves one behind", async () => {
  for (let round = 0; round < 20; round++) {
    using meta = await openStore();
    const a = digestOf("a");
    const b = digestOf("b");
    const tags = Array.from({ length: 12 }, (_, i) => `t${i}`);
    await meta.putManifest({
      refs: NO_REFS,
      name: "app",
      digest: a,
      record: record(),
      tags: tags.slice(0, 10),
    });
    await meta.putManifest({
      refs: NO_REFS,
      name: "app",
      digest: a,
      record: record(),
      tags: tags.slice(10),
    });
    await meta.putManifest({ refs: NO_REFS, name: "app", digest: b, record: record(), tags: [] });
    const moved = tags.filter((_, i) => i % 3 === round % 3);
    await Promise.all([
      meta.deleteManifest("app", a),
      ...moved.map((tag) =>
        meta.putManifest({ refs: NO_REFS, name: "app", digest: b, record: record(), tags: [tag] })
      ),
    ]);
    assert.equal(await meta.getManifest("app", a), null);
    for (const tag of tags) {
      const value = await meta.getTag("app", tag);
      // A tag either moved to b (and stays) or was deleted with a: never left on a.
      if (value) assert.equal(value.digest, b, tag);
      if (value) assert.ok(moved.includes(tag), tag);
    }
    assert.equal(await count(meta, tagsByDigestPrefix("app", a)), 0);
    assert.equal(await count(meta, ["manifest_refs", "app", a]), 0);
  }
});

Deno.test("putManifest() keeps the media type a digest was first stored with, in the record and its tags", async () => {
  using meta = await openStore();
  const a = digestOf("same bytes");
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: a,
    record: record(),
    tags: ["first"],
  });
  const docker = "application/vnd.docker.distribution.manifest.v2+json";
  await meta.putManifest({
    refs: NO_REFS,
    name: "app",
    digest: a,
    record: record({ mediaType: docker }),
    tags: ["second"],
  });
  assert.equal((await meta.getManifest("app", a))?.mediaType, OCI_MANIFEST);
  assert.equal((await meta.getTag("app", "first"))?.mediaType, OCI_MANIFEST);
  assert.equal((await meta.getTag("app", "second"))?.mediaType, OCI_MANIFEST);
});

Deno.test("putManifest() reads the tag clock before the tags, so a tag moved in between is not written from a stale read", async () => {
  const raw = await Deno.openKv(":memory:");
  try {
    const x = digestOf("x");
    const a = digestOf("a");
    const b = digestOf("b");
    const other = new KvMetadataStore(raw);
    await other.putManifest({
      refs: NO_REFS,
      name: "app",
      digest: x,
      record: record(),
      tags: ["t"],
    });
    /** A KV whose clock reads are slow and where another writer moves the tag right after a tag read. */
    class Interleaved extends Kv {
      slowed = false;
      moved = false;
      override async getMany<T extends readonly unknown[]>(
        keys: readonly [...{ [K in keyof T]: Deno.KvKey }],
      ): Promise<{ [K in keyof T]: Deno.KvEntryMaybe<T[K]> }> {
        const clock = keys.some((key) => key[0] === "tag_clock");
        if (clock && !this.slowed) {
          this.slowed = true;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        const result = await super.getMany<T>(keys);
        if (keys[0]?.[0] === "tags" && !this.moved) {
          this.moved = true;
          await other.putManifest({
            refs: NO_REFS,
            name: "app",
            digest: b,
            record: record(),
            tags: ["t"],
          });
        }
        return result;
      }
    }
    const meta = new KvMetadataStore(new Interleaved(raw));
    await meta.putManifest({
      refs: NO_REFS,
      name: "app",
      digest: a,
      record: record(),
      tags: ["t"],
    });
    assert.equal((await meta.getTag("app", "t"))?.digest, a);
    const reverse: Deno.KvKey[] = [];
    for await (const e of raw.list({ prefix: ["tags_by_digest", "app"] })) reverse.push(e.key);
    assert.deepEqual(reverse, [["tags_by_digest", "app", a, "t"]]);
  } finally {
    raw.close();
  }
});

Deno.test("putManifest() racing moves of one tag leave exactly one reverse entry, the tag's", async () => {
  for (let round = 0; round < 30; round++) {
    using meta = await openStore();
    const digests = Array.from({ length: 8 }, (_, i) => digestOf(`r${round}-${i}`));
    await Promise.all(
      digests.map((digest) =>
        meta.putManifest({ refs: NO_REFS, name: "app", digest, record: record(), tags: ["t"] })
      ),
    );
    const tag = await meta.getTag("app", "t");
    const reverse: Deno.KvKey[] = [];
    for await (const e of meta.raw.list({ prefix: ["tags_by_digest", "app"] })) reverse.push(e.key);
    assert.deepEqual(reverse, [["tags_by_digest", "app", tag!.digest, "t"]], `round ${round}`);
  }
});
