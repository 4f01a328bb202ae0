/**
 * Unit tests of {@linkcode KvMetadataAudit}: scans parse keys (and keep
 * malformed ones), counters come back as {@linkcode Counter}, and a repair
 * commits only if what it names is unchanged.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Digest } from "../oci/digest.ts";
import { type AuditEntry, type AuditFamily, Counter, KvMetadataAudit } from "./audit.ts";
import {
  manifestRefsKey,
  tagClockKey,
  tagKey,
  tagsByDigestKey,
  uploadCountKey,
  uploadTotalKey,
} from "./keys.ts";
import { Kv } from "./kv.ts";
import { KvMetadataStore } from "./metadata_store.ts";

const DIGEST = `sha256:${"a".repeat(64)}` as Digest;

async function withAudit(
  fn: (raw: Deno.Kv, audit: KvMetadataAudit) => Promise<void>,
): Promise<void> {
  using raw = await Deno.openKv(":memory:");
  await fn(raw, new KvMetadataAudit(new Kv(raw)));
}

async function scan<F extends AuditFamily>(
  audit: KvMetadataAudit,
  family: F,
): Promise<AuditEntry<F>[]> {
  const entries: AuditEntry<F>[] = [];
  for await (const entry of audit.scan(family)) entries.push(entry);
  return entries;
}

Deno.test("KvMetadataAudit.scan() parses each key and keeps a malformed one with a null key", async () => {
  await withAudit(async (raw, audit) => {
    await raw.set(tagsByDigestKey("app", DIGEST, "v1"), true);
    await raw.set(["tags_by_digest", "app", "sha256:short", "v1"], true);
    await raw.set(["tags_by_digest", "app", DIGEST], true);
    await raw.set(["tags", "app", "v1"], { digest: DIGEST }); // another family: not listed
    const entries = await scan(audit, "tags_by_digest");
    const good = entries.find((e) => e.key !== null)!;
    assert.deepEqual(good.key, {
      family: "tags_by_digest",
      name: "app",
      digest: DIGEST,
      tag: "v1",
    });
    assert.deepEqual(good.parts, ["app", DIGEST, "v1"]);
    assert.equal(good.value, true);
    assert.equal(typeof good.revision, "string");
    assert.deepEqual(
      entries.filter((e) => e.key === null).map((e) => e.parts).sort(),
      [["app", DIGEST], ["app", "sha256:short", "v1"]],
    );
  });
});

Deno.test("KvMetadataAudit.scan() gives counters as Counter and reads a family's bare key", async () => {
  await withAudit(async (raw, audit) => {
    await raw.set(uploadTotalKey(), new Deno.KvU64(3n));
    await raw.set(tagClockKey("app"), "not a counter");
    const [total] = await scan(audit, "upload_total");
    assert.deepEqual(total!.key, { family: "upload_total" });
    assert.ok(total!.value instanceof Counter);
    assert.equal((total!.value as Counter).value, 3n);
    const [clock] = await scan(audit, "tag_clock");
    assert.equal(clock!.value, "not a counter");
  });
});

Deno.test("KvMetadataAudit.repair() sets, deletes and adds when every checked entry is unchanged", async () => {
  await withAudit(async (raw, audit) => {
    await raw.set(tagKey("app", "v1"), { digest: DIGEST, mediaType: "a", size: 1 });
    await raw.set(manifestRefsKey("app", DIGEST, 3), { blobs: [], manifests: [] });
    await raw.set(uploadCountKey("app"), new Deno.KvU64(2n));
    const [tag] = await scan(audit, "tags");
    const [page] = await scan(audit, "manifest_refs");
    const ok = await audit.repair({
      check: [tag!, page!, { absent: { family: "repos", name: "app" } }],
      set: [
        [tag!, { digest: DIGEST, mediaType: "b", size: 1 }],
        [{ family: "repos", name: "app" }, { createdAt: 1 }],
        [{ family: "tag_clock", name: "app" }, new Counter(7n)],
      ],
      delete: [page!],
      add: [[{ family: "upload_counts", name: "app" }, -1n]],
    });
    assert.equal(ok, true);
    assert.deepEqual((await raw.get(tagKey("app", "v1"))).value, {
      digest: DIGEST,
      mediaType: "b",
      size: 1,
    });
    assert.deepEqual((await raw.get(["repos", "app"])).value, { createdAt: 1 });
    assert.deepEqual((await raw.get(tagClockKey("app"))).value, new Deno.KvU64(7n));
    assert.equal((await raw.get(manifestRefsKey("app", DIGEST, 3))).versionstamp, null);
    assert.deepEqual((await raw.get(uploadCountKey("app"))).value, new Deno.KvU64(1n));
  });
});

Deno.test("KvMetadataAudit.repair() removes an entry with a malformed key by its stored parts", async () => {
  await withAudit(async (raw, audit) => {
    await raw.set(["tags", "app", 42], { digest: DIGEST });
    const [entry] = await scan(audit, "tags");
    assert.equal(entry!.key, null);
    assert.equal(await audit.repair({ check: [entry!], delete: [entry!] }), true);
    assert.equal((await raw.get(["tags", "app", 42])).versionstamp, null);
  });
});

Deno.test("KvMetadataAudit.repair() loses to a concurrent change of an entry it checks", async () => {
  await withAudit(async (raw, audit) => {
    const meta = new KvMetadataStore(raw);
    await raw.set(tagKey("app", "v1"), { digest: DIGEST, mediaType: "a", size: 1 });
    const [tag] = await scan(audit, "tags");
    // Meanwhile the registry deletes the tag.
    assert.equal(await meta.deleteTag("app", "v1"), true);
    const ok = await audit.repair({
      check: [tag!],
      set: [[tag!, { digest: DIGEST, mediaType: "b", size: 1 }]],
    });
    assert.equal(ok, false);
    assert.equal((await raw.get(tagKey("app", "v1"))).versionstamp, null, "not brought back");
  });
});

Deno.test("KvMetadataAudit.repair() loses when a key it needs absent was written meanwhile", async () => {
  await withAudit(async (raw, audit) => {
    const key = { family: "tags_by_digest" as const, name: "app", digest: DIGEST, tag: "v1" };
    await raw.set(tagsByDigestKey("app", DIGEST, "v1"), "written meanwhile");
    assert.equal(await audit.repair({ check: [{ absent: key }], set: [[key, true]] }), false);
    assert.equal((await raw.get(tagsByDigestKey("app", DIGEST, "v1"))).value, "written meanwhile");
  });
});

Deno.test("KvMetadataAudit.repair() refuses more checks than one commit may make", async () => {
  await withAudit(async (_raw, audit) => {
    const check = Array.from({ length: 11 }, (_, i) => ({
      absent: { family: "repos" as const, name: `r${i}` },
    }));
    await assert.rejects(audit.repair({ check }), RangeError);
  });
});
