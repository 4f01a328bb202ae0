/**
 * Unit tests of the schema version and the migration from schema 1 (no
 * version key, `manifest_epochs`, no `manifest_refs`) over an in-memory KV and
 * a filesystem blob store.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { type Algorithm, type Digest, makeDigest } from "../oci/digest.ts";
import { parseManifest } from "../oci/manifest.ts";
import { DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST } from "../oci/media_type.ts";
import { FsBlobStore } from "../storage/fs_blob_store.ts";
import {
  blobLinkKey,
  joinRefs,
  legacyManifestEpochsPrefix,
  manifestKey,
  type ManifestRecord,
  type ManifestRefs,
  manifestRefsPrefix,
  migrationKey,
  referrerKey,
  REFS_PER_PAGE,
  refsPages,
  repoKey,
  schemaKey,
  tagKey,
  tagsByDigestKey,
  uploadKey,
} from "./keys.ts";
import { Kv } from "./kv.ts";
import { migrate, SCHEMA_VERSION, SchemaError } from "./schema.ts";
import { KvMetadataAudit } from "./audit.ts";
import { examine } from "../fsck/invariants.ts";
import { bookkeepingCounters, bookkeepingQueues } from "../fsck/checks/bookkeeping.ts";

const encoder = new TextEncoder();

function digestOf(bytes: Uint8Array | string, algorithm: Algorithm = "sha256"): Digest {
  return makeDigest(algorithm, createHash(algorithm).update(bytes).digest("hex"));
}

/** A manifest as the last release stored it: record in KV, bytes in the blob store. */
interface Stored {
  name: string;
  digest: Digest;
  record: ManifestRecord;
  /** The bytes in the blob store (none when they are missing). */
  bytes?: Uint8Array;
}

function image(
  seed: string,
  options: { layers?: number; algorithm?: Algorithm; subject?: Digest; mediaType?: string } = {},
): Uint8Array {
  const layers = Array.from({ length: options.layers ?? 2 }, (_, i) => ({
    mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
    digest: digestOf(`${seed} layer ${i}`, options.algorithm),
    size: 100 + i,
  }));
  // A layer listed twice is one reference.
  if (layers.length > 1) layers.push(layers[0]!);
  return encoder.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: options.mediaType ?? OCI_MANIFEST,
    config: {
      mediaType: "application/vnd.oci.image.config.v1+json",
      digest: digestOf(`${seed} config`),
      size: 10,
    },
    layers,
    ...(options.subject
      ? { subject: { mediaType: OCI_MANIFEST, digest: options.subject, size: 10 } }
      : {}),
  }));
}

function manifest(
  name: string,
  bytes: Uint8Array,
  mediaType: string,
  extra: Partial<ManifestRecord> = {},
): Stored {
  return {
    name,
    digest: digestOf(bytes),
    record: { mediaType, size: bytes.length, createdAt: 1000, ...extra },
    bytes,
  };
}

/** The manifests of a schema-1 data set, covering every kind the migration meets. */
function schema1Manifests(): Stored[] {
  const amd64 = manifest("team/app", image("amd64"), OCI_MANIFEST);
  const arm64 = manifest("team/app", image("arm64"), OCI_MANIFEST);
  const indexBytes = encoder.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [amd64, arm64].map((m) => ({
      mediaType: OCI_MANIFEST,
      digest: m.digest,
      size: m.record.size,
    })),
  }));
  const index = manifest("team/app", indexBytes, OCI_INDEX);
  const signature = manifest(
    "team/app",
    image("signature", { subject: index.digest }),
    OCI_MANIFEST,
    { subject: index.digest, artifactType: "application/vnd.oci.image.config.v1+json" },
  );
  const missing = manifest("alpine", image("missing", { subject: amd64.digest }), OCI_MANIFEST, {
    subject: amd64.digest,
  });
  delete missing.bytes;
  const garbage = encoder.encode("{not json");
  return [
    manifest("alpine", image("alpine 1"), OCI_MANIFEST),
    manifest("alpine", image("alpine 2", { mediaType: DOCKER_MANIFEST }), DOCKER_MANIFEST),
    amd64,
    arm64,
    index,
    signature,
    missing,
    { name: "alpine", digest: digestOf(garbage), record: record(garbage), bytes: garbage },
    // More references than one page holds, with sha512 digests.
    manifest(
      "tools",
      image("wide", { layers: REFS_PER_PAGE + 10, algorithm: "sha512" }),
      OCI_MANIFEST,
    ),
    // More pages than one commit can hold.
    manifest(
      "tools",
      image("huge", { layers: 16 * REFS_PER_PAGE - 1, algorithm: "sha512" }),
      OCI_MANIFEST,
    ),
  ];
}

function record(bytes: Uint8Array): ManifestRecord {
  return { mediaType: OCI_MANIFEST, size: bytes.length, createdAt: 1000 };
}

/** Stores the bytes of `manifests`. */
async function writeBytes(blobs: FsBlobStore, manifests: Stored[]): Promise<void> {
  const done = new Set<string>();
  for (const m of manifests) {
    if (!m.bytes || done.has(m.digest)) continue;
    await blobs.putBytes(m.digest, m.bytes);
    done.add(m.digest);
  }
}

/** Writes the records of `manifests` and what the last release kept beside them (schema 1). */
async function writeSchema1(kv: Deno.Kv, manifests: Stored[]): Promise<void> {
  for (const m of manifests) {
    const op = kv.atomic()
      .set(repoKey(m.name), { createdAt: 1 })
      .set(manifestKey(m.name, m.digest), m.record)
      .set([...legacyManifestEpochsPrefix(), m.name, m.digest], new Deno.KvU64(2n))
      .set(tagKey(m.name, `t-${m.digest.slice(7, 15)}`), {
        digest: m.digest,
        mediaType: m.record.mediaType,
        size: m.record.size,
        updatedAt: 1,
      })
      .set(tagsByDigestKey(m.name, m.digest, `t-${m.digest.slice(7, 15)}`), true);
    if (m.record.subject) {
      op.set(referrerKey(m.name, m.record.subject, m.record.artifactType ?? "", m.digest), {
        mediaType: m.record.mediaType,
        digest: m.digest,
        size: m.record.size,
      });
    }
    assert.ok((await op.commit()).ok);
  }
  await kv.set(blobLinkKey("alpine", digestOf("alpine 1 config")), { size: 10, linkedAt: 1 });
  await kv.set(uploadKey("session-1"), { name: "tools", offset: 0, parts: 0 });
}

/** Every entry of a KV, in key order, with values made comparable. */
async function dump(kv: Deno.Kv, options: { versionstamps?: boolean } = {}): Promise<unknown[]> {
  const entries: unknown[] = [];
  for await (const entry of kv.list({ prefix: [] })) {
    let value: unknown = entry.value;
    if (value instanceof Deno.KvU64) value = `u64:${value.value}`;
    if (entry.key[0] === "schema" && !options.versionstamps) {
      value = { ...(value as object), migratedAt: "(any)" };
    }
    entries.push(
      options.versionstamps
        ? { key: entry.key, value, versionstamp: entry.versionstamp }
        : { key: entry.key, value },
    );
  }
  return entries;
}

interface Fixture extends AsyncDisposable {
  blobs: FsBlobStore;
  manifests: Stored[];
  /** A new in-memory KV holding the schema-1 data set. */
  openSchema1(): Promise<Deno.Kv & Disposable>;
}

async function fixture(manifests = schema1Manifests()): Promise<Fixture> {
  const dir = await Deno.makeTempDir({ prefix: "berth-schema-test-" });
  const blobs = await FsBlobStore.open(dir);
  await writeBytes(blobs, manifests);
  return {
    blobs,
    manifests,
    async openSchema1() {
      const kv = await Deno.openKv(":memory:");
      await writeSchema1(kv, manifests);
      return Object.assign(kv, { [Symbol.dispose]: () => kv.close() });
    },
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function refsOf(kv: Deno.Kv, name: string, digest: Digest): Promise<ManifestRefs[]> {
  const pages: ManifestRefs[] = [];
  for await (const entry of kv.list<ManifestRefs>({ prefix: manifestRefsPrefix(name, digest) })) {
    pages.push(entry.value);
  }
  return pages;
}

Deno.test("migrate() gives a new, empty KV the current version", async () => {
  await using f = await fixture([]);
  using kv = await Deno.openKv(":memory:");
  const before = Date.now();
  assert.deepEqual(await migrate(new Kv(kv), f.blobs), { from: 3, to: 3 });
  assert.equal(SCHEMA_VERSION, 3);
  const entries = await dump(kv, { versionstamps: true });
  assert.equal(entries.length, 1);
  const schema = (await kv.get<{ version: number; migratedAt: number }>(schemaKey())).value;
  assert.equal(schema?.version, 3);
  assert.ok(schema.migratedAt >= before && schema.migratedAt <= Date.now());
});

Deno.test("migrate() records every schema-1 manifest's references as parsing its bytes gives them", async () => {
  await using f = await fixture();
  using kv = await f.openSchema1();
  const lines: string[] = [];
  const result = await migrate(new Kv(kv), f.blobs, { onProgress: (line) => lines.push(line) });
  assert.deepEqual(result, { from: 1, to: 3 });
  for (const m of f.manifests) {
    const pages = await refsOf(kv, m.name, m.digest);
    let parsed;
    try {
      parsed = m.bytes ? parseManifest(m.bytes, m.record.mediaType) : null;
    } catch {
      parsed = null;
    }
    if (parsed) {
      const expected = refsPages({
        blobs: parsed.blobs,
        manifests: parsed.manifests,
        ...(parsed.subject ? { subject: parsed.subject } : {}),
      });
      assert.deepEqual(pages, expected, `${m.name}@${m.digest}`);
      const joined = joinRefs(pages);
      assert.deepEqual(joined.blobs, [...new Set(parsed.blobs)]);
      assert.deepEqual(joined.manifests, parsed.manifests);
      assert.equal(joined.subject, parsed.subject);
    } else {
      // Missing or unparsable bytes: what the record knows, and a line about it.
      const expected: ManifestRefs = { blobs: [], manifests: [] };
      if (m.record.subject) expected.subject = m.record.subject;
      assert.deepEqual(pages, [expected], `${m.name}@${m.digest}`);
      assert.ok(lines.some((line) => line.includes(m.digest)), `no line about ${m.digest}`);
    }
  }
  const index = f.manifests[4]!;
  assert.deepEqual(joinRefs(await refsOf(kv, index.name, index.digest)).manifests, [
    f.manifests[2]!.digest,
    f.manifests[3]!.digest,
  ]);
  assert.equal((await refsOf(kv, "tools", f.manifests[8]!.digest)).length, 2);
  assert.equal((await refsOf(kv, "tools", f.manifests[9]!.digest)).length, 16);
  assert.equal(await count(kv, legacyManifestEpochsPrefix()), 0);
  assert.equal(await count(kv, migrationKey()), 0);
  assert.equal((await kv.get<{ version: number }>(schemaKey())).value?.version, 3);
  // Everything else is as it was.
  assert.equal(await count(kv, ["tags"]), f.manifests.length);
  assert.equal(await count(kv, ["manifests"]), f.manifests.length);
  assert.equal(await count(kv, ["referrers"]), 2);
  assert.equal(await count(kv, ["uploads"]), 1);
});

async function count(kv: Deno.Kv, prefix: Deno.KvKey): Promise<number> {
  let n = 0;
  for await (const _ of kv.list({ prefix })) n++;
  return n;
}

Deno.test("migrate() refuses a KV written by a newer Berth and changes nothing", async () => {
  await using f = await fixture();
  using kv = await f.openSchema1();
  await kv.set(schemaKey(), { version: 99, migratedAt: 1 });
  const before = await dump(kv, { versionstamps: true });
  await assert.rejects(
    () => migrate(new Kv(kv), f.blobs),
    (error: unknown) => {
      assert.ok(error instanceof SchemaError);
      assert.match(error.message, /newer Berth \(schema 99\).*schema 3 and older: upgrade Berth/);
      assert.doesNotMatch(error.message, /\n/);
      return true;
    },
  );
  assert.deepEqual(await dump(kv, { versionstamps: true }), before);
});

Deno.test("migrate() refuses a KV a newer Berth was migrating, and changes nothing", async () => {
  await using f = await fixture([]);
  using kv = await Deno.openKv(":memory:");
  await kv.set(schemaKey(), { version: 3, migratedAt: 1 });
  await kv.set(migrationKey(), { from: 3, to: 4, step: "something" });
  const before = await dump(kv, { versionstamps: true });
  await assert.rejects(() => migrate(new Kv(kv), f.blobs), SchemaError);
  assert.deepEqual(await dump(kv, { versionstamps: true }), before);
});

Deno.test("migrate() refuses an unreadable schema record with a SchemaError", async () => {
  await using f = await fixture([]);
  using kv = await Deno.openKv(":memory:");
  await kv.set(schemaKey(), "two");
  await assert.rejects(() => migrate(new Kv(kv), f.blobs), SchemaError);
});

Deno.test("migrate() interrupted after any commit and resumed ends as an uninterrupted run", async () => {
  await using f = await fixture();
  let expected: unknown[];
  {
    using kv = await f.openSchema1();
    await migrate(new Kv(kv), f.blobs, { batch: 3 });
    expected = await dump(kv);
  }
  let crashes = 0;
  for (let stop = 1;; stop++) {
    using kv = await f.openSchema1();
    let finished = false;
    try {
      await migrate(new Kv(kv), f.blobs, { batch: 3, stopAfterBatches: stop });
      finished = true;
    } catch (error) {
      assert.match((error as Error).message, /stopped after/);
      crashes++;
      // The resumed run crashes once more, right away, then completes with another batch size.
      try {
        await migrate(new Kv(kv), f.blobs, { batch: 2, stopAfterBatches: 1 });
      } catch (again) {
        assert.match((again as Error).message, /stopped after 1 commits/);
      }
      const from = (await kv.get(schemaKey())).value === null ? 1 : 3;
      assert.deepEqual(await migrate(new Kv(kv), f.blobs, { batch: 5 }), { from, to: 3 });
    }
    assert.deepEqual(await dump(kv), expected, `stopped after ${stop} commits`);
    if (finished) break;
  }
  // refs in batches of 3 (10 manifests, the huge one over several commits), the step change,
  // epochs in batches of 3, the last commit: many crash points were tried.
  assert.ok(crashes >= 10, `${crashes} crash points`);
});

Deno.test("migrate() run twice at once ends as one run", async () => {
  await using f = await fixture();
  let expected: unknown[];
  {
    using kv = await f.openSchema1();
    await migrate(new Kv(kv), f.blobs, { batch: 2 });
    expected = await dump(kv);
  }
  using kv = await f.openSchema1();
  const results = await Promise.all([
    migrate(new Kv(kv), f.blobs, { batch: 2 }),
    migrate(new Kv(kv), f.blobs, { batch: 3 }),
  ]);
  assert.deepEqual(results, [{ from: 1, to: 3 }, { from: 1, to: 3 }]);
  assert.deepEqual(await dump(kv), expected);
});

Deno.test("migrate() on schema 3 changes nothing", async () => {
  await using f = await fixture();
  using kv = await f.openSchema1();
  await migrate(new Kv(kv), f.blobs);
  const before = await dump(kv, { versionstamps: true });
  const lines: string[] = [];
  assert.deepEqual(
    await migrate(new Kv(kv), f.blobs, { onProgress: (line) => lines.push(line) }),
    { from: 3, to: 3 },
  );
  assert.deepEqual(await dump(kv, { versionstamps: true }), before);
  assert.deepEqual(lines, []);
});

Deno.test("migrate() keeps each commit within Deno KV's limits with long names and large batches", async () => {
  // 950 repositories with 200-character names, each with the same manifest and an epoch:
  // one batch of 1000 is more mutations and key bytes than one commit may hold.
  const bytes = image("shared");
  const manifests = Array.from(
    { length: 950 },
    (_, i) => manifest(`${String(i).padStart(4, "0")}/${"n".repeat(195)}`, bytes, OCI_MANIFEST),
  );
  await using f = await fixture(manifests);
  using kv = await f.openSchema1();
  const lines: string[] = [];
  assert.deepEqual(
    await migrate(new Kv(kv), f.blobs, { batch: 1000, onProgress: (line) => lines.push(line) }),
    { from: 1, to: 3 },
  );
  assert.equal(await count(kv, ["manifest_refs"]), 950);
  assert.equal(await count(kv, legacyManifestEpochsPrefix()), 0);
  assert.ok(lines.filter((line) => /references of \d+ manifest/.test(line)).length > 1);
  assert.ok(lines.filter((line) => /manifest_epochs key/.test(line)).length > 1);
});

Deno.test("migrate() migrates a schema-1 KV that holds no manifests", async () => {
  await using f = await fixture([]);
  using kv = await Deno.openKv(":memory:");
  await kv.set(repoKey("empty"), { createdAt: 1 });
  await kv.set([...legacyManifestEpochsPrefix(), "empty", digestOf("gone")], new Deno.KvU64(1n));
  assert.deepEqual(await migrate(new Kv(kv), f.blobs), { from: 1, to: 3 });
  const entries = await dump(kv);
  assert.deepEqual(entries, [
    { key: ["repos", "empty"], value: { createdAt: 1 } },
    { key: ["schema"], value: { version: 3, migratedAt: "(any)" } },
  ]);
});

Deno.test("migrate() builds the collector's counts and queue as the records imply", async () => {
  await using f = await fixture();
  using kv = await f.openSchema1();
  // Links too: what the last release held besides manifests.
  const layer = digestOf("alpine 1 layer 0");
  await kv.set(["blob_links", "alpine", layer], { size: 100, linkedAt: 5 });
  await kv.set(["blob_repos", layer, "alpine"], true);
  await migrate(new Kv(kv), f.blobs, { batch: 3 });
  const ctx = await examine(new KvMetadataAudit(new Kv(kv)), f.blobs);
  const found = [...bookkeepingCounters.check(ctx), ...bookkeepingQueues.check(ctx)];
  assert.deepEqual(found.map((x) => x.message), []);
  assert.ok(await count(kv, ["gc_refs"]) > 0);
  assert.deepEqual((await kv.get(["gc_due", "blob", 5, "alpine", layer])).value, true);
  assert.equal((await kv.get<Deno.KvU64>(["blob_holders", layer])).value?.value, 1n);
});
