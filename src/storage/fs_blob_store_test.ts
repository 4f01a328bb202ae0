/**
 * {@linkcode FsBlobStore}: the shared store suite, plus what only the
 * filesystem layout can show (hard links, temp files).
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { bodyOf, bytesOf, digestOf, readAll } from "../../tests/_blob_store_suite.ts";
import { FsBlobStore } from "./fs_blob_store.ts";

async function tempStore(): Promise<FsBlobStore & AsyncDisposable> {
  const root = await Deno.makeTempDir({ prefix: "berth-fs-store-" });
  const store = await FsBlobStore.open(root);
  return Object.assign(store, {
    [Symbol.asyncDispose]: () => Deno.remove(root, { recursive: true }),
  });
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) out.push(...(await filesUnder(path)));
    else out.push(path);
  }
  return out.sort();
}

Deno.test("FsBlobStore.open() creates the layout and reopens an existing one", async () => {
  await using store = await tempStore();
  for (const dir of ["blobs/sha256", "blobs/sha512", "uploads", "tmp"]) {
    assert.ok((await Deno.stat(join(store.root, dir))).isDirectory, dir);
  }
  const bytes = bytesOf(10);
  await store.put(digestOf(bytes), bodyOf(bytes));
  const again = await FsBlobStore.open(store.root);
  assert.equal((await again.stat(digestOf(bytes)))?.size, 10);
});

Deno.test("FsBlobStore.blobPath() follows blobs/<algorithm>/<2 hex>/<hex>", async () => {
  await using store = await tempStore();
  const digest = digestOf("x", "sha512");
  const hex = digest.slice("sha512:".length);
  assert.equal(store.blobPath(digest), join(store.root, "blobs", "sha512", hex.slice(0, 2), hex));
  await store.putBytes(digest, new TextEncoder().encode("x"));
  assert.equal(await Deno.readTextFile(store.blobPath(digest)), "x");
});

Deno.test("FsBlobStore.finish() hard-links a single part; the part stays until removeUpload()", async () => {
  await using store = await tempStore();
  const bytes = bytesOf(500_000, 3);
  const digest = digestOf(bytes);
  const part = await store.writePart("fast", bodyOf(bytes), { algorithm: "sha256" });
  const partPath = join(store.root, "uploads", "fast", part.file);
  assert.deepEqual(await store.finish("fast", [part], digest), { ok: true, size: 500_000 });
  const partInfo = await Deno.stat(partPath);
  const blobInfo = await Deno.stat(store.blobPath(digest));
  assert.equal(partInfo.ino, blobInfo.ino, "the blob is the part's inode, not a copy");
  assert.equal(blobInfo.nlink, 2);
  // No assembly file was written.
  assert.deepEqual(await filesUnder(join(store.root, "uploads", "fast")), [partPath]);
  // Finishing again (a retry after a crash) is fine.
  assert.deepEqual(await store.finish("fast", [part], digest), { ok: true, size: 500_000 });
  await store.removeUpload("fast");
  await assert.rejects(Deno.stat(partPath), Deno.errors.NotFound);
  assert.equal((await Deno.stat(store.blobPath(digest))).nlink, 1);
  const read = await store.open(digest);
  assert.ok(read);
  assert.deepEqual(await readAll(read.stream), bytes);
});

Deno.test("FsBlobStore.finish() of several parts writes a new file and leaves no temp behind", async () => {
  await using store = await tempStore();
  const a = bytesOf(1000, 1);
  const b = bytesOf(1000, 2);
  const parts = [
    await store.writePart("multi", bodyOf(a), { algorithm: "sha256" }),
    await store.writePart("multi", bodyOf(b), { algorithm: "sha256" }),
  ];
  const whole = new Uint8Array([...a, ...b]);
  assert.equal((await store.finish("multi", parts, digestOf("wrong"))).ok, false);
  assert.equal((await store.finish("multi", parts, digestOf(whole))).ok, true);
  const left = (await filesUnder(join(store.root, "uploads", "multi"))).map((p) =>
    p.slice(p.lastIndexOf("/") + 1)
  );
  assert.deepEqual(left.sort(), parts.map((p) => p.file).sort(), "no a-* assembly file left");
  assert.equal((await Deno.stat(store.blobPath(digestOf(whole)))).nlink, 1);
});

Deno.test("FsBlobStore.put() leaves nothing in uploads/ or tmp/", async () => {
  await using store = await tempStore();
  const bytes = bytesOf(100);
  await store.put(digestOf(bytes), bodyOf(bytes));
  await store.put(digestOf("mismatch"), bodyOf(bytes));
  await store.putBytes(digestOf("m"), new TextEncoder().encode("m"));
  assert.deepEqual(await filesUnder(join(store.root, "uploads")), []);
  assert.deepEqual(await filesUnder(join(store.root, "tmp")), []);
  assert.deepEqual(
    await filesUnder(join(store.root, "blobs")),
    [
      store.blobPath(digestOf(bytes)),
      store.blobPath(digestOf("m")),
    ].sort(),
  );
});

Deno.test("FsBlobStore.writePart() past its limit removes the part file", async () => {
  await using store = await tempStore();
  await assert.rejects(
    store.writePart("lim", bodyOf(bytesOf(2000), 100), { algorithm: "sha256", limit: 1000 }),
  );
  assert.deepEqual(await filesUnder(join(store.root, "uploads")), []);
});

Deno.test("FsBlobStore.putBytes() does not rewrite an existing blob", async () => {
  await using store = await tempStore();
  const bytes = new TextEncoder().encode("manifest");
  const digest = digestOf(bytes);
  await store.putBytes(digest, bytes);
  const before = await Deno.stat(store.blobPath(digest));
  await store.putBytes(digest, bytes);
  const after = await Deno.stat(store.blobPath(digest));
  assert.equal(after.ino, before.ino);
});

Deno.test("FsBlobStore.listUploads() skips files and unsafe names in uploads/", async () => {
  await using store = await tempStore();
  await store.writePart("real", null, { algorithm: "sha256" });
  await Deno.writeTextFile(join(store.root, "uploads", "stray-file"), "x");
  await Deno.mkdir(join(store.root, "uploads", "bad.name"));
  const ids = [];
  for await (const u of store.listUploads()) ids.push(u.uploadId);
  assert.deepEqual(ids, ["real"]);
});

Deno.test("FsBlobStore.debris() lists temp entries as leftovers with their age; remove() takes them", async () => {
  await using store = await tempStore();
  const tmp = join(store.root, "tmp");
  const now = Date.now();
  const old = new Date(now - 3600_000);
  await Deno.writeTextFile(join(tmp, "old-file"), "x");
  await Deno.utime(join(tmp, "old-file"), old, old);
  await Deno.mkdir(join(tmp, "old-dir"));
  await Deno.writeTextFile(join(tmp, "old-dir", "inner"), "xy");
  await Deno.utime(join(tmp, "old-dir"), old, old);
  await Deno.writeTextFile(join(tmp, "fresh-file"), "x");
  const found = [];
  for await (const item of store.debris()) found.push(item);
  assert.deepEqual(
    found.map((d) => [d.where, d.kind, d.size, d.modifiedAt < now - 60_000]),
    [
      ["tmp/fresh-file", "leftover", 1, false],
      ["tmp/old-dir", "leftover", 2, true],
      ["tmp/old-file", "leftover", 1, true],
    ],
  );
  for (const item of found) if (item.modifiedAt < now - 60_000) await item.remove();
  const left = [];
  for await (const entry of Deno.readDir(tmp)) left.push(entry.name);
  assert.deepEqual(left, ["fresh-file"]);
});

Deno.test("FsBlobStore.debris() reports what does not belong under blobs/ as problems", async () => {
  await using store = await tempStore();
  await Deno.mkdir(join(store.root, "blobs", "md5"));
  await Deno.writeTextFile(join(store.root, "blobs", "sha256", "zz"), "x");
  await Deno.mkdir(join(store.root, "blobs", "sha256", "ab"));
  await Deno.writeTextFile(join(store.root, "blobs", "sha256", "ab", "not-hex"), "x");
  const found = [];
  for await (const item of store.debris()) found.push([item.where, item.kind]);
  assert.deepEqual(found, [
    ["blobs/md5", "problem"],
    ["blobs/sha256/ab/not-hex", "problem"],
    ["blobs/sha256/zz", "problem"],
  ]);
  const listed = [];
  for await (const digest of store.list()) listed.push(digest);
  assert.deepEqual(listed, []);
});

Deno.test("FsBlobStore: removing the last appended part after its finish placed the blob leaves the blob whole", async () => {
  // A closing PUT that placed the blob, then lost its commit (the session was ended
  // meanwhile), removes its part: `data` is the placed blob's inode too, never to be cut.
  const root = await Deno.makeTempDir();
  try {
    const store = await FsBlobStore.open(root);
    const bytes = bytesOf(300_000, 5);
    const digest = digestOf(bytes);
    const lock = await store.lockUpload("u");
    const part = await store.writePart("u", bodyOf(bytes), { algorithm: "sha256", at: 0 });
    assert.deepEqual(await store.finish("u", [part], digest), { ok: true, size: 300_000 });
    await store.removePart("u", part.file);
    await lock.release();
    const whole = async () => digestOf(await Deno.readFile(store.blobPath(digest)));
    assert.equal(await whole(), digest);
    await store.removeUpload("u");
    assert.equal(await whole(), digest);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("FsBlobStore.finish() of the acknowledged bytes when a placed blob's longer data shares the file copies them, leaving that blob whole", async () => {
  // A closing PUT with a last chunk placed its blob (a hard link to `data`), then lost its
  // commit; the client then closes the session at what was acknowledged, by that digest.
  await using store = await tempStore();
  const first = bytesOf(200_000, 1);
  const last = bytesOf(100_000, 2);
  const whole = new Uint8Array([...first, ...last]);
  const lock = await store.lockUpload("u");
  const part = await store.writePart("u", bodyOf(first), { algorithm: "sha256", at: 0 });
  store.acknowledgePart!("u", part);
  const final = await store.writePart("u", bodyOf(last), { algorithm: "sha256", at: 200_000 });
  assert.deepEqual(await store.finish("u", [part, final], digestOf(whole)), {
    ok: true,
    size: 300_000,
  });
  assert.deepEqual(await store.finish("u", [part], digestOf(first)), { ok: true, size: 200_000 });
  await lock.release();
  assert.equal(digestOf(await Deno.readFile(store.blobPath(digestOf(whole)))), digestOf(whole));
  assert.equal(digestOf(await Deno.readFile(store.blobPath(digestOf(first)))), digestOf(first));
});
