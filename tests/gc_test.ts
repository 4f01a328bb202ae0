/**
 * Garbage collection in one process, against a real server: what a
 * collection removes and keeps (tags, untagged manifests after their TTL,
 * multi-platform indexes with their children, referrers with their subject,
 * layers shared across repositories, a blob pushed before its manifest inside
 * the grace period), retention policies and dry runs, large manifests whose
 * references are counted ahead, and usage figures. After each scenario the
 * data directory is checked whole (the fsck invariants).
 *
 * @module
 */
import assert from "node:assert/strict";
import { checkConsistency } from "./_consistency.ts";
import {
  imageManifest,
  pushBlob,
  pushImage,
  randomBytes,
  sha256,
  startRegistry,
  type TestRegistry,
} from "./_registry.ts";
import { collect, type CollectOptions } from "../src/gc/collect.ts";
import { usage } from "../src/gc/usage.ts";
import { parseRetention } from "../src/gc/retention.ts";
import type { Digest } from "../src/oci/digest.ts";

const INDEX_TYPE = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json";
const NOW: Omit<CollectOptions, "policies"> = { graceMs: 0, untaggedTtlMs: 0 };

async function run(reg: TestRegistry, options: Partial<CollectOptions> = {}) {
  return await collect(reg.meta, reg.blobs, { ...NOW, ...options });
}

async function hasBytes(reg: TestRegistry, digest: string): Promise<boolean> {
  return (await reg.blobs.stat(digest as Digest)) !== null;
}

async function status(reg: TestRegistry, path: string, method = "GET"): Promise<number> {
  const res = await reg.fetch(path, { method });
  await res.body?.cancel();
  return res.status;
}

async function put(
  reg: TestRegistry,
  name: string,
  ref: string,
  body: string,
  type = MANIFEST_TYPE,
) {
  const res = await reg.fetch(`/v2/${name}/manifests/${ref}`, {
    method: "PUT",
    headers: { "Content-Type": type },
    body,
  });
  const text = await res.text();
  assert.equal(res.status, 201, `PUT ${name}:${ref}: ${text}`);
  return sha256(body);
}

async function del(reg: TestRegistry, name: string, ref: string) {
  assert.equal(await status(reg, `/v2/${name}/manifests/${ref}`, "DELETE"), 202);
}

Deno.test("a collection removes an untagged image's manifest and bytes, and keeps the tagged one", async () => {
  await using reg = await startRegistry();
  const kept = await pushImage(reg, "app", "v1", { seed: 1 });
  const gone = await pushImage(reg, "app", "v2", { seed: 2 });
  await del(reg, "app", "v2");
  // Untagged manifests are kept by default (no --untagged-ttl), and so is what they reference.
  let report = await run(reg, { untaggedTtlMs: null });
  assert.equal(report.manifests, 0);
  assert.ok(await hasBytes(reg, gone.layer));
  report = await run(reg);
  assert.equal(report.manifests, 1);
  assert.equal(report.links, 2);
  assert.equal(report.blobs, 3);
  for (const d of [gone.digest, gone.config, gone.layer]) {
    assert.equal(await hasBytes(reg, d), false, d);
  }
  for (const d of [kept.digest, kept.config, kept.layer]) assert.ok(await hasBytes(reg, d), d);
  const res = await reg.fetch("/v2/app/manifests/v1");
  assert.equal(await res.text(), kept.body);
  assert.equal(await status(reg, `/v2/app/blobs/${kept.layer}`), 200);
  assert.equal(await status(reg, `/v2/app/manifests/${gone.digest}`), 404);
  await checkConsistency(reg.meta, reg.blobs);
  // A second collection has nothing left to do.
  const again = await run(reg);
  assert.equal(again.manifests + again.links + again.blobs, 0);
});

Deno.test("a blob pushed before its manifest survives inside the grace period, not after", async () => {
  await using reg = await startRegistry();
  const layer = await pushBlob(reg, "app", randomBytes(500, 3));
  await run(reg, { graceMs: 3600_000 });
  assert.ok(await hasBytes(reg, layer));
  assert.equal(await status(reg, `/v2/app/blobs/${layer}`), 200);
  const report = await run(reg, { graceMs: 0 });
  assert.equal(report.links, 1);
  assert.equal(await hasBytes(reg, layer), false);
  assert.equal(await status(reg, `/v2/app/blobs/${layer}`), 404);
  await checkConsistency(reg.meta, reg.blobs);
});

Deno.test("a multi-platform index keeps its untagged children while it lives, and they go with it", async () => {
  await using reg = await startRegistry();
  const amd = await pushImage(reg, "multi", "amd", { seed: 10 });
  const arm = await pushImage(reg, "multi", "arm", { seed: 11 });
  const index = JSON.stringify({
    schemaVersion: 2,
    mediaType: INDEX_TYPE,
    manifests: [amd, arm].map((m) => ({
      mediaType: MANIFEST_TYPE,
      digest: m.digest,
      size: new TextEncoder().encode(m.body).length,
    })),
  });
  const indexDigest = await put(reg, "multi", "latest", index, INDEX_TYPE);
  await del(reg, "multi", "amd");
  await del(reg, "multi", "arm");
  let report = await run(reg);
  assert.equal(report.manifests, 0, JSON.stringify(report.removed));
  assert.equal(await status(reg, `/v2/multi/manifests/${amd.digest}`), 200);
  assert.equal(await status(reg, `/v2/multi/blobs/${arm.layer}`), 200);
  await del(reg, "multi", "latest");
  report = await run(reg);
  assert.equal(report.manifests, 3, JSON.stringify(report.removed));
  for (const d of [indexDigest, amd.digest, arm.digest, amd.layer, arm.config]) {
    assert.equal(await hasBytes(reg, d), false, d);
  }
  await checkConsistency(reg.meta, reg.blobs);
});

Deno.test("a referrer is kept while its subject lives and collected after it", async () => {
  await using reg = await startRegistry();
  const subject = await pushImage(reg, "signed", "v1", { seed: 20 });
  const sig = await pushImage(reg, "signed", "sig", {
    seed: 21,
    extra: {
      subject: {
        mediaType: MANIFEST_TYPE,
        digest: subject.digest,
        size: new TextEncoder().encode(subject.body).length,
      },
    },
  });
  await del(reg, "signed", "sig");
  await run(reg);
  assert.equal(await status(reg, `/v2/signed/manifests/${sig.digest}`), 200);
  await del(reg, "signed", "v1");
  const report = await run(reg);
  assert.equal(report.manifests, 2, JSON.stringify(report.removed));
  assert.equal(await hasBytes(reg, sig.digest), false);
  assert.equal(await hasBytes(reg, sig.layer), false);
  await checkConsistency(reg.meta, reg.blobs);
});

Deno.test("a layer shared by two repositories keeps its bytes until neither holds it", async () => {
  await using reg = await startRegistry();
  const a = await pushImage(reg, "one", "v1", { seed: 30 });
  const b = await pushImage(reg, "two", "v1", { seed: 30 });
  assert.equal(a.layer, b.layer);
  await del(reg, "one", "v1");
  let report = await run(reg);
  assert.equal(report.links, 2);
  assert.equal(report.blobs, 0);
  assert.ok(await hasBytes(reg, a.layer));
  assert.equal(await status(reg, `/v2/two/blobs/${a.layer}`), 200);
  assert.equal(await status(reg, `/v2/one/blobs/${a.layer}`), 404);
  await checkConsistency(reg.meta, reg.blobs);
  await del(reg, "two", "v1");
  report = await run(reg);
  assert.equal(report.blobs, 3);
  assert.equal(await hasBytes(reg, a.layer), false);
  await checkConsistency(reg.meta, reg.blobs);
});

Deno.test("a manifest with more references than its commit counts is counted ahead and collected whole", async () => {
  await using reg = await startRegistry();
  const layers = [];
  for (let i = 0; i < 230; i++) {
    const bytes = randomBytes(40, 1000 + i);
    layers.push({ digest: await pushBlob(reg, "wide", bytes), size: bytes.length });
  }
  const config = await pushBlob(reg, "wide", "{}");
  const body = imageManifest({ digest: config, size: 2 }, layers);
  await put(reg, "wide", "v1", body);
  await checkConsistency(reg.meta, reg.blobs);
  assert.equal(await reg.meta.gc().refCount("wide", layers[229]!.digest as Digest), 1);
  assert.equal((await run(reg)).links, 0);
  await del(reg, "wide", "v1");
  const report = await run(reg);
  assert.equal(report.links, 231);
  assert.equal(await hasBytes(reg, layers[100]!.digest), false);
  await checkConsistency(reg.meta, reg.blobs);
});

Deno.test("retention keeps the newest tags and protected ones; a dry run lists and removes nothing", async () => {
  await using reg = await startRegistry();
  const images = [];
  for (const [i, tag] of ["t1", "t2", "t3", "t4", "v1.0", "latest"].entries()) {
    images.push(await pushImage(reg, "ci/app", tag, { seed: 40 + i }));
    await new Promise((resolve) => setTimeout(resolve, 5)); // distinct push times
  }
  await pushImage(reg, "other", "t1", { seed: 50 });
  const policies = parseRetention([
    { repositories: "ci/*", "keep-last": 1, keep: ["v*", "latest"] },
  ]);
  const dry = await run(reg, { policies, dryRun: true });
  assert.deepEqual(
    dry.removed.filter((r) => r.startsWith("tag ")).sort(),
    ["tag ci/app:t1", "tag ci/app:t2", "tag ci/app:t3"],
  );
  // It follows what removing the tags would collect: their manifests, links and bytes.
  assert.equal(dry.manifests, 3);
  assert.ok(dry.removed.includes(`manifest ci/app@${images[0]!.digest}`));
  assert.ok(dry.removed.includes(`bytes ${images[0]!.layer}`));
  assert.equal(await status(reg, "/v2/ci/app/manifests/t1"), 200);
  assert.ok(await hasBytes(reg, images[0]!.layer));
  const report = await run(reg, { policies });
  assert.equal(report.tags, 3);
  assert.equal(report.manifests, 3);
  assert.deepEqual(report.removed.sort(), dry.removed.sort());
  assert.equal(report.reclaimedBytes, dry.reclaimedBytes);
  for (const tag of ["t1", "t2", "t3"]) {
    assert.equal(await status(reg, `/v2/ci/app/manifests/${tag}`), 404);
  }
  for (const tag of ["t4", "v1.0", "latest"]) {
    assert.equal(await status(reg, `/v2/ci/app/manifests/${tag}`), 200);
  }
  assert.equal(await status(reg, "/v2/other/manifests/t1"), 200);
  assert.equal(await hasBytes(reg, images[0]!.layer), false);
  await checkConsistency(reg.meta, reg.blobs);
});

Deno.test("usage counts each blob once per repository and once in all, and what is reclaimable", async () => {
  await using reg = await startRegistry();
  const a = await pushImage(reg, "one", "v1", { seed: 60 });
  await pushImage(reg, "two", "v1", { seed: 60 });
  const extra = randomBytes(700, 61);
  await pushBlob(reg, "two", extra);
  const size = (d: string) => reg.blobs.stat(d as Digest).then((i) => i!.size);
  const image = (await size(a.digest)) + (await size(a.config)) + (await size(a.layer));
  const config = { gcGraceMs: 3600_000, untaggedTtlMs: null, retention: [] };
  const u = await usage(reg.meta, reg.blobs, config);
  assert.equal(u.repositories.get("one"), image);
  assert.equal(u.repositories.get("two"), image + 700);
  assert.equal(u.total, image + 700);
  assert.equal(u.reclaimableNow, 0);
  assert.equal(u.reclaimableAfterGrace, 700);
  // Untagged, the image would go with --untagged-ttl 0, but "two" holds the same bytes.
  await del(reg, "one", "v1");
  const zero = { ...config, untaggedTtlMs: 0 };
  let after = await usage(reg.meta, reg.blobs, zero);
  assert.equal(after.repositories.get("one"), image);
  assert.equal(after.reclaimableNow, 0);
  await del(reg, "two", "v1");
  after = await usage(reg.meta, reg.blobs, zero);
  // Now: the manifest's bytes (the layers were pushed inside the grace period); after it, all.
  const manifestSize = await size(a.digest);
  assert.equal(after.reclaimableNow, manifestSize);
  assert.equal(after.reclaimableAfterGrace, image + 700);
  // What a dry run promised is what the collections take.
  let report = await run(reg, { graceMs: 3600_000 });
  assert.equal(report.reclaimedBytes, manifestSize);
  report = await run(reg, { graceMs: 0 });
  assert.equal(report.reclaimedBytes, image + 700 - manifestSize);
  assert.equal((await usage(reg.meta, reg.blobs, config)).total, 0);
  await checkConsistency(reg.meta, reg.blobs);
});

Deno.test("intents a crashed push left are undone after an hour; removed markers are forgotten after a day", async () => {
  await using reg = await startRegistry();
  const layer = await pushBlob(reg, "app", randomBytes(300, 70));
  // What a push of a large manifest that died before its record commit leaves: a counted intent.
  const chunk = {
    name: "app",
    digest: sha256("never recorded"),
    at: Date.now(),
    blobs: [layer],
    manifests: [],
  };
  await reg.kv.atomic()
    .set(["gc_intents", "token-1", 0], chunk)
    .sum(["gc_refs", "app", layer], 1n)
    .commit();
  await checkConsistency(reg.meta, reg.blobs);
  let report = await run(reg);
  assert.equal(report.intentsUndone, 0);
  assert.ok(await hasBytes(reg, layer), "the intent holds the layer");
  report = await run(reg, { now: Date.now() + 2 * 3600_000 });
  assert.equal(report.intentsUndone, 1);
  assert.equal(report.links, 1);
  assert.equal(await hasBytes(reg, layer), false);
  const marker = await reg.kv.get<{ state: string }>(["blob_gone", layer]);
  assert.equal(marker.value?.state, "removed");
  await checkConsistency(reg.meta, reg.blobs);
  await run(reg, { now: Date.now() + 2 * 86400_000 });
  assert.equal((await reg.kv.get(["blob_gone", layer])).versionstamp, null);
  // The same bytes pushed again are stored and served.
  assert.equal(await pushBlob(reg, "app", randomBytes(300, 70)), layer);
  assert.equal(await status(reg, `/v2/app/blobs/${layer}`), 200);
  await checkConsistency(reg.meta, reg.blobs);
});

Deno.test("an untagged manifest's TTL counts from when it last lost its tags, not from its push", async () => {
  await using reg = await startRegistry();
  const x = await pushImage(reg, "app", "scratch", { seed: 7 });
  // Pushed untagged (by digest, as buildx push-by-digest does): queued now.
  await del(reg, "app", "scratch");
  await put(reg, "app", x.digest, x.body);
  await new Promise((resolve) => setTimeout(resolve, 1500));
  // Tagged later, then the tag moves on: untagged again from now.
  await put(reg, "app", "prod", x.body);
  const y = await pushImage(reg, "app", "prod", { seed: 8 });
  const untaggedAt = Date.now();
  const ttl = { untaggedTtlMs: 2000, graceMs: 3600_000 };
  // The entry of its first push is due, but it has been untagged for less than the TTL.
  let report = await run(reg, { ...ttl, now: untaggedAt + 1000 });
  assert.equal(report.manifests, 0);
  assert.equal(await status(reg, `/v2/app/manifests/${x.digest}`), 200);
  report = await run(reg, { ...ttl, now: untaggedAt + 2500 });
  assert.equal(report.manifests, 1);
  assert.equal(await status(reg, `/v2/app/manifests/${x.digest}`), 404);
  assert.equal(await status(reg, `/v2/app/manifests/${y.digest}`), 200);
  await checkConsistency(reg.meta, reg.blobs);
});

Deno.test("gc --full finds bytes a crashed push left without a link, after the grace period", async () => {
  await using reg = await startRegistry();
  const kept = await pushImage(reg, "app", "v1", { seed: 11 });
  // Bytes placed by a push that died before its link commit: nothing holds or queues them.
  const orphan = randomBytes(700, 12);
  const digest = sha256(orphan) as Digest;
  assert.ok((await reg.blobs.put(digest, new Blob([orphan]).stream())).ok);
  // A plain collection reads only its queue: it never sees them.
  assert.equal((await run(reg)).blobs, 0);
  assert.ok(await hasBytes(reg, digest));
  // A full one inside the grace period keeps them; a dry run outside it lists them only.
  await run(reg, { full: true, graceMs: 3600_000 });
  assert.ok(await hasBytes(reg, digest));
  const dry = await run(reg, { full: true, dryRun: true });
  assert.ok(dry.removed.includes(`bytes ${digest}`), dry.removed.join("\n"));
  assert.ok(await hasBytes(reg, digest));
  const report = await run(reg, { full: true });
  assert.equal(report.blobs, 1);
  assert.equal(await hasBytes(reg, digest), false);
  for (const d of [kept.digest, kept.config, kept.layer]) assert.ok(await hasBytes(reg, d), d);
  await checkConsistency(reg.meta, reg.blobs);
});
