/**
 * Unit tests of the sweeper (abandoned upload sessions expire):
 * idle sessions expire with their files, and files no record points at go
 * once older than the upload TTL. Fresh ones stay.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { makeDigest } from "./oci/digest.ts";
import { uploadKey, uploadPartKey, uploadPartsPrefix } from "./meta/keys.ts";
import { KvMetadataStore } from "./meta/metadata_store.ts";
import { FsBlobStore } from "./storage/fs_blob_store.ts";
import { startSweeper, sweep, type SweepReport } from "./sweeper.ts";
import { exists } from "../tests/_registry.ts";

const TTL = 3600_000;

interface Env extends AsyncDisposable {
  meta: KvMetadataStore;
  /** The KV itself, for making sessions look old. */
  kv: Deno.Kv;
  blobs: FsBlobStore;
}

async function openEnv(): Promise<Env> {
  const root = await Deno.makeTempDir({ prefix: "berth-sweeper-" });
  const kv = await Deno.openKv(":memory:");
  return {
    meta: new KvMetadataStore(kv),
    kv,
    blobs: await FsBlobStore.open(root),
    async [Symbol.asyncDispose]() {
      kv.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

/** Opens a session with one written and committed part. */
async function openSession(env: Env, uploadId: string, name = "app"): Promise<void> {
  await env.meta.createUpload(uploadId, name, "sha256");
  const session = await env.meta.getUpload(uploadId);
  assert.ok(session);
  const body = new Blob([new Uint8Array(100)]).stream();
  const part = await env.blobs.writePart(uploadId, body, { algorithm: "sha256" });
  assert.ok(await env.meta.commitPart(session, part));
}

/** Makes a session look idle since `at` (ms since epoch). */
async function idleSince(env: Env, uploadId: string, at: number): Promise<void> {
  const session = await env.meta.getUpload(uploadId);
  assert.ok(session);
  await env.kv.set(uploadKey(uploadId), { ...session.record, updatedAt: at });
}

/** Sets the mtime of a path and of everything directly in it. */
async function age(path: string, at: number): Promise<void> {
  const when = new Date(at);
  if ((await Deno.stat(path)).isDirectory) {
    for await (const entry of Deno.readDir(path)) {
      await Deno.utime(join(path, entry.name), when, when);
    }
  }
  await Deno.utime(path, when, when);
}

async function partKeys(env: Env, uploadId: string): Promise<number> {
  let n = 0;
  for await (const _ of env.kv.list({ prefix: uploadPartsPrefix(uploadId) })) n++;
  return n;
}

const NONE: SweepReport = { expiredSessions: 0, orphanUploads: 0, tempFiles: 0, orphanParts: 0 };

Deno.test("sweep() expires idle sessions with their files, parts and counts", async () => {
  await using env = await openEnv();
  const now = Date.now();
  await openSession(env, "old");
  await openSession(env, "fresh");
  await idleSince(env, "old", now - TTL - 1000);
  assert.deepEqual(await env.meta.countUploads("app"), { repo: 2, total: 2 });
  const report = await sweep(env.meta, env.blobs, { ttlMs: TTL, now });
  assert.deepEqual(report, { ...NONE, expiredSessions: 1 });
  assert.equal(await env.meta.getUpload("old"), null);
  assert.equal(await exists(join(env.blobs.root, "uploads", "old")), false);
  assert.equal(await partKeys(env, "old"), 0);
  assert.deepEqual(await env.meta.countUploads("app"), { repo: 1, total: 1 });
  assert.ok(await env.meta.getUpload("fresh"));
  assert.equal(await exists(join(env.blobs.root, "uploads", "fresh")), true);
  assert.equal(await partKeys(env, "fresh"), 1);
});

Deno.test("sweep() keeps a session idle for just under the TTL", async () => {
  await using env = await openEnv();
  const now = Date.now();
  await openSession(env, "edge");
  await idleSince(env, "edge", now - TTL + 1000);
  assert.deepEqual(await sweep(env.meta, env.blobs, { ttlMs: TTL, now }), NONE);
  assert.ok(await env.meta.getUpload("edge"));
});

Deno.test("sweep() keeps the files of a live session however old they are", async () => {
  await using env = await openEnv();
  const now = Date.now();
  await openSession(env, "live");
  await age(join(env.blobs.root, "uploads", "live"), now - 10 * TTL);
  assert.deepEqual(await sweep(env.meta, env.blobs, { ttlMs: TTL, now }), NONE);
  assert.equal(await exists(join(env.blobs.root, "uploads", "live")), true);
});

Deno.test("sweep() removes orphan upload directories older than the TTL, keeps fresh ones", async () => {
  await using env = await openEnv();
  const now = Date.now();
  const body = () => new Blob([new Uint8Array(10)]).stream();
  await env.blobs.writePart("orphan-old", body(), { algorithm: "sha256" });
  await env.blobs.writePart("orphan-fresh", body(), { algorithm: "sha256" });
  await env.blobs.writePart("orphan-mixed", body(), { algorithm: "sha256" });
  await age(join(env.blobs.root, "uploads", "orphan-old"), now - TTL - 1000);
  await age(join(env.blobs.root, "uploads", "orphan-mixed"), now - TTL - 1000);
  // A part written just now into an old directory: the session may be about to commit it.
  await env.blobs.writePart("orphan-mixed", body(), { algorithm: "sha256" });
  await Deno.utime(
    join(env.blobs.root, "uploads", "orphan-mixed"),
    new Date(now - TTL - 1000),
    new Date(now - TTL - 1000),
  );
  const report = await sweep(env.meta, env.blobs, { ttlMs: TTL, now });
  assert.deepEqual(report, { ...NONE, orphanUploads: 1 });
  assert.equal(await exists(join(env.blobs.root, "uploads", "orphan-old")), false);
  assert.equal(await exists(join(env.blobs.root, "uploads", "orphan-fresh")), true);
  assert.equal(await exists(join(env.blobs.root, "uploads", "orphan-mixed")), true);
});

Deno.test("sweep() removes temp files older than the TTL, keeps fresh ones", async () => {
  await using env = await openEnv();
  const now = Date.now();
  const tmp = join(env.blobs.root, "tmp");
  await Deno.writeTextFile(join(tmp, "old"), "x");
  await age(join(tmp, "old"), now - TTL - 1000);
  await Deno.writeTextFile(join(tmp, "fresh"), "x");
  const report = await sweep(env.meta, env.blobs, { ttlMs: TTL, now });
  assert.deepEqual(report, { ...NONE, tempFiles: 1 });
  assert.equal(await exists(join(tmp, "old")), false);
  assert.equal(await exists(join(tmp, "fresh")), true);
});

Deno.test("sweep() removes part keys whose session is gone", async () => {
  await using env = await openEnv();
  await openSession(env, "live");
  const stray = { file: "p-0000000000000000", size: 1, digest: "sha256:x" };
  await env.kv.set(uploadPartKey("ghost", 0), stray);
  await env.kv.set(uploadPartKey("ghost", 1), stray);
  const report = await sweep(env.meta, env.blobs, { ttlMs: TTL });
  assert.deepEqual(report, { ...NONE, orphanParts: 1 });
  assert.equal(await partKeys(env, "ghost"), 0);
  assert.equal(await partKeys(env, "live"), 1);
});

Deno.test("sweep() of a clean data directory removes nothing", async () => {
  await using env = await openEnv();
  const bytes = new TextEncoder().encode("blob");
  await env.blobs.putBytes(
    makeDigest("sha256", createHash("sha256").update(bytes).digest("hex")),
    bytes,
  );
  assert.deepEqual(await sweep(env.meta, env.blobs, { ttlMs: TTL }), NONE);
  assert.deepEqual(
    await sweep(env.meta, env.blobs, { ttlMs: TTL, now: Date.now() + 100 * TTL }),
    NONE,
  );
  const blobs = [];
  for await (const d of env.blobs.list()) blobs.push(d);
  assert.equal(blobs.length, 1, "blobs are never swept");
});

Deno.test("startSweeper() sweeps on its interval and stops", async () => {
  await using env = await openEnv();
  await openSession(env, "old");
  await idleSince(env, "old", Date.now() - TTL - 1000);
  const { promise, resolve } = Promise.withResolvers<SweepReport>();
  const stop = startSweeper(env.meta, env.blobs, {
    ttlMs: TTL,
    intervalMs: 10,
    onError: (error) => assert.fail(String(error)),
    onSweep: resolve,
  });
  try {
    assert.equal((await promise).expiredSessions, 1);
  } finally {
    await stop();
  }
  assert.equal(await env.meta.getUpload("old"), null);
});
