/**
 * The shared test suite every blob store backend must pass (one suite, run
 * against every store, like distribution's `storage/driver/testsuites`).
 * `tests/blob_stores_test.ts` runs it against each backend:
 *
 * ```ts ignore
 * blobStoreSuite("FsBlobStore", async () => { ... return { store, [Symbol.asyncDispose] } });
 * ```
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { type Algorithm, type Digest, makeDigest } from "../src/oci/digest.ts";
import type { Storage } from "../src/storage/blob_store.ts";
import { TooLargeError } from "../src/storage/streams.ts";

/** A store under test and how to throw it away. */
export interface StoreFixture extends AsyncDisposable {
  store: Storage;
}

/** The digest of `bytes` with `algorithm`. */
export function digestOf(bytes: Uint8Array | string, algorithm: Algorithm = "sha256"): Digest {
  return makeDigest(algorithm, createHash(algorithm).update(bytes).digest("hex"));
}

/** Deterministic pseudo-random bytes (xorshift). */
export function bytesOf(length: number, seed = 1): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** A body that delivers `bytes` in chunks of `chunk` bytes. */
export function bodyOf(bytes: Uint8Array, chunk = 65536): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(offset, offset + chunk));
      offset += chunk;
    },
  });
}

/** Reads a whole stream. */
export async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

/** Registers the suite's tests for the store `makeStore` builds (a fresh one per test). */
export function blobStoreSuite(name: string, makeStore: () => Promise<StoreFixture>): void {
  const test = (what: string, fn: (store: Storage) => Promise<void>) =>
    Deno.test(`${name}: ${what}`, async () => {
      await using fixture = await makeStore();
      await fn(fixture.store);
    });

  test("put() stores a blob that stat() and open() find", async (store) => {
    const bytes = bytesOf(300_000, 7);
    const digest = digestOf(bytes);
    assert.equal(await store.stat(digest), null);
    assert.equal(await store.open(digest), null);
    assert.deepEqual(await store.put(digest, bodyOf(bytes, 4097)), { ok: true, size: 300_000 });
    assert.equal((await store.stat(digest))?.size, 300_000);
    const read = await store.open(digest);
    assert.ok(read);
    assert.equal(read.size, 300_000);
    assert.deepEqual(await readAll(read.stream), bytes);
  });

  test("open() with a range returns those bytes and the whole size", async (store) => {
    const bytes = bytesOf(3 * 1024 * 1024 + 11, 3);
    const digest = digestOf(bytes);
    await store.put(digest, bodyOf(bytes));
    for (
      const range of [
        { start: 0, end: 0 },
        { start: 0, end: 9 },
        { start: 10, end: 10 },
        { start: 1024 * 1024 - 1, end: 2 * 1024 * 1024 + 5 },
        { start: bytes.length - 1, end: bytes.length - 1 },
        { start: 5, end: bytes.length - 1 },
      ]
    ) {
      const read = await store.open(digest, range);
      assert.ok(read);
      assert.equal(read.size, bytes.length);
      assert.deepEqual(
        await readAll(read.stream),
        bytes.subarray(range.start, range.end + 1),
        JSON.stringify(range),
      );
    }
  });

  test("open() clamps a range end beyond the blob", async (store) => {
    const bytes = bytesOf(100);
    const digest = digestOf(bytes);
    await store.put(digest, bodyOf(bytes));
    const read = await store.open(digest, { start: 90, end: 1000 });
    assert.ok(read);
    assert.deepEqual(await readAll(read.stream), bytes.subarray(90));
  });

  test("open() streams can be cancelled without reading", async (store) => {
    const bytes = bytesOf(2 * 1024 * 1024);
    const digest = digestOf(bytes);
    await store.put(digest, bodyOf(bytes));
    const read = await store.open(digest);
    assert.ok(read);
    await read.stream.cancel();
    const ranged = await store.open(digest, { start: 100, end: 200 });
    assert.ok(ranged);
    await ranged.stream.cancel();
  });

  test("put() of a body that does not match leaves no blob", async (store) => {
    const bytes = bytesOf(70_000, 9);
    const claimed = digestOf("something else");
    const result = await store.put(claimed, bodyOf(bytes));
    assert.deepEqual(result, { ok: false, actual: digestOf(bytes), size: 70_000 });
    assert.equal(await store.stat(claimed), null);
    assert.equal(await store.stat(digestOf(bytes)), null);
    assert.deepEqual(await collect(store.list()), []);
  });

  test("put() of a body that fails leaves no blob and rethrows", async (store) => {
    const digest = digestOf("x");
    const failing = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new Uint8Array(10));
        controller.error(new Error("connection reset"));
      },
    });
    await assert.rejects(store.put(digest, failing), /connection reset/);
    assert.equal(await store.stat(digest), null);
    assert.deepEqual(await collect(store.list()), []);
  });

  test("put() stores sha512 blobs", async (store) => {
    const bytes = bytesOf(1000, 5);
    const digest = digestOf(bytes, "sha512");
    assert.deepEqual(await store.put(digest, bodyOf(bytes)), { ok: true, size: 1000 });
    const read = await store.open(digest);
    assert.ok(read);
    assert.deepEqual(await readAll(read.stream), bytes);
    // The same bytes under sha256 are another blob.
    assert.equal(await store.stat(digestOf(bytes)), null);
  });

  test("put() stores the empty blob, from a null or an empty body", async (store) => {
    for (const algorithm of ["sha256", "sha512"] as const) {
      const empty = digestOf("", algorithm);
      assert.deepEqual(await store.put(empty, null), { ok: true, size: 0 });
      assert.deepEqual(await store.put(empty, bodyOf(new Uint8Array())), { ok: true, size: 0 });
      assert.equal((await store.stat(empty))?.size, 0);
      const read = await store.open(empty);
      assert.ok(read);
      assert.equal(read.size, 0);
      assert.deepEqual(await readAll(read.stream), new Uint8Array());
    }
    const claimed = digestOf("not empty");
    assert.deepEqual(await store.put(claimed, null), {
      ok: false,
      actual: digestOf(""),
      size: 0,
    });
  });

  test("put() of a blob already stored succeeds and keeps it", async (store) => {
    const bytes = bytesOf(5000);
    const digest = digestOf(bytes);
    await store.put(digest, bodyOf(bytes));
    assert.deepEqual(await store.put(digest, bodyOf(bytes, 3)), { ok: true, size: 5000 });
    const read = await store.open(digest);
    assert.ok(read);
    assert.deepEqual(await readAll(read.stream), bytes);
  });

  test("putBytes() stores bytes and is idempotent", async (store) => {
    const bytes = new TextEncoder().encode('{"schemaVersion":2}');
    const digest = digestOf(bytes);
    await store.putBytes(digest, bytes);
    await store.putBytes(digest, bytes);
    assert.equal((await store.stat(digest))?.size, bytes.length);
    const read = await store.open(digest);
    assert.ok(read);
    assert.deepEqual(await readAll(read.stream), bytes);
    assert.deepEqual(await collect(store.list()), [digest]);
  });

  test("delete() removes a blob once", async (store) => {
    const bytes = bytesOf(10);
    const digest = digestOf(bytes);
    await store.put(digest, bodyOf(bytes));
    assert.equal(await store.delete(digest), true);
    assert.equal(await store.stat(digest), null);
    assert.equal(await store.open(digest), null);
    assert.equal(await store.delete(digest), false);
  });

  test("list() yields every stored digest of both algorithms", async (store) => {
    const expected: Digest[] = [];
    for (let i = 0; i < 20; i++) {
      const bytes = bytesOf(10 + i, i + 1);
      const digest = digestOf(bytes, i % 3 === 0 ? "sha512" : "sha256");
      expected.push(digest);
      await store.put(digest, bodyOf(bytes));
    }
    assert.deepEqual((await collect(store.list())).sort(), expected.sort());
    await store.delete(expected[0]!);
    assert.equal((await collect(store.list())).length, 19);
  });

  test("writePart() hashes a part and finish() of that one part stores it", async (store) => {
    const bytes = bytesOf(262_145, 11);
    const part = await store.writePart("up-1", bodyOf(bytes, 1000), { algorithm: "sha256" });
    assert.equal(part.size, 262_145);
    assert.equal(part.digest, digestOf(bytes));
    assert.equal(part.expected, undefined);
    assert.match(part.file, /^p-/);
    assert.deepEqual(await store.finish("up-1", [part], digestOf(bytes)), {
      ok: true,
      size: 262_145,
    });
    const read = await store.open(digestOf(bytes));
    assert.ok(read);
    assert.deepEqual(await readAll(read.stream), bytes);
    await store.removeUpload("up-1");
  });

  test("finish() of a session removed under it rejects with NotFound and stores nothing", async (store) => {
    // The registry answers such a closing PUT 404 (the session ended), never a 500.
    const one = bytesOf(70_000, 21);
    const two = bytesOf(90_000, 22);
    const whole = new Uint8Array([...one, ...two]);
    const single = await store.writePart("gone-1", bodyOf(one), { algorithm: "sha256" });
    const first = await store.writePart("gone-2", bodyOf(one), { algorithm: "sha256" });
    const second = await store.writePart("gone-2", bodyOf(two), { algorithm: "sha256" });
    await store.removeUpload("gone-1");
    await store.removeUpload("gone-2");
    await assert.rejects(store.finish("gone-1", [single], digestOf(one)), Deno.errors.NotFound);
    await assert.rejects(
      store.finish("gone-2", [first, second], digestOf(whole)),
      Deno.errors.NotFound,
    );
    assert.equal(await store.stat(digestOf(one)), null);
    assert.equal(await store.stat(digestOf(whole)), null);
  });

  test("writePart() with alsoHash gives the second digest as expected", async (store) => {
    const bytes = bytesOf(5000, 12);
    const part = await store.writePart("up-1", bodyOf(bytes), {
      algorithm: "sha256",
      alsoHash: "sha512",
    });
    assert.equal(part.digest, digestOf(bytes));
    assert.equal(part.expected, digestOf(bytes, "sha512"));
    assert.deepEqual(await store.finish("up-1", [part], digestOf(bytes, "sha512")), {
      ok: true,
      size: 5000,
    });
    assert.equal((await store.stat(digestOf(bytes, "sha512")))?.size, 5000);
    // alsoHash equal to the algorithm adds nothing.
    const same = await store.writePart("up-2", bodyOf(bytes), {
      algorithm: "sha512",
      alsoHash: "sha512",
    });
    assert.equal(same.digest, digestOf(bytes, "sha512"));
    assert.equal(same.expected, undefined);
    await store.removeUpload("up-1");
    await store.removeUpload("up-2");
  });

  test("chunks written with the optional lock and `at` finish to exactly the acknowledged ones", async (store) => {
    // A store may ignore the hints (no lockUpload, `at` unused): the same calls must still hold.
    const chunks = [bytesOf(300_000, 41), bytesOf(1, 42), bytesOf(2 * 1024 * 1024 + 3, 43)];
    const whole = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    const parts = [];
    for (const chunk of chunks) {
      const lock = await store.lockUpload?.("held");
      try {
        // A chunk that loses its race first: written, then removed, never acknowledged.
        const lost = await store.writePart("held", bodyOf(bytesOf(70_000, 44)), {
          algorithm: "sha256",
          ...(lock ? { at } : {}),
        });
        await store.removePart("held", lost.file);
        const part = await store.writePart("held", bodyOf(chunk, 8191), {
          algorithm: "sha256",
          ...(lock ? { at } : {}),
        });
        assert.equal(part.size, chunk.length);
        store.acknowledgePart?.("held", part);
        parts.push(part);
      } finally {
        await lock?.release();
      }
      whole.set(chunk, at);
      at += chunk.length;
    }
    const lock = await store.lockUpload?.("held");
    try {
      const wrong = await store.finish("held", parts, digestOf(chunks[0]!));
      assert.equal(wrong.ok, false);
      assert.deepEqual(await store.finish("held", parts, digestOf(whole)), {
        ok: true,
        size: whole.length,
      });
    } finally {
      await lock?.release();
    }
    await store.removeUpload("held");
    assert.deepEqual(await readAll((await store.open(digestOf(whole)))!.stream), whole);
    assert.deepEqual(await collect(store.listUploads()), []);
  });

  test("finish() assembles several parts in order", async (store) => {
    const chunks = [bytesOf(100_000, 1), bytesOf(1, 2), bytesOf(0, 3), bytesOf(1_300_000, 4)];
    const whole = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let offset = 0;
    for (const c of chunks) {
      whole.set(c, offset);
      offset += c.length;
    }
    const parts = [];
    for (const c of chunks) {
      parts.push(await store.writePart("multi", bodyOf(c, 777), { algorithm: "sha256" }));
    }
    assert.deepEqual(parts.map((p) => p.size), chunks.map((c) => c.length));
    // Out of order, the bytes differ.
    const swapped = await store.finish("multi", [parts[1]!, parts[0]!], digestOf(whole));
    assert.equal(swapped.ok, false);
    const result = await store.finish("multi", parts, digestOf(whole));
    assert.deepEqual(result, { ok: true, size: whole.length });
    const read = await store.open(digestOf(whole));
    assert.ok(read);
    assert.deepEqual(await readAll(read.stream), whole);
    await store.removeUpload("multi");
  });

  test("finish() of parts that do not match the digest leaves no blob", async (store) => {
    const a = bytesOf(1000, 1);
    const b = bytesOf(2000, 2);
    const parts = [
      await store.writePart("bad", bodyOf(a), { algorithm: "sha256" }),
      await store.writePart("bad", bodyOf(b), { algorithm: "sha256" }),
    ];
    const claimed = digestOf("claimed");
    const whole = new Uint8Array([...a, ...b]);
    assert.deepEqual(await store.finish("bad", parts, claimed), {
      ok: false,
      actual: digestOf(whole),
      size: 3000,
    });
    // One part whose digest is not the claimed one.
    const single = await store.finish("bad", [parts[0]!], claimed);
    assert.deepEqual(single, { ok: false, actual: digestOf(a), size: 1000 });
    assert.equal(await store.stat(claimed), null);
    assert.equal(await store.stat(digestOf(whole)), null);
    assert.deepEqual(await collect(store.list()), []);
    // The parts are still there: the session may finish with the right digest.
    assert.deepEqual(await store.finish("bad", parts, digestOf(whole)), { ok: true, size: 3000 });
    await store.removeUpload("bad");
  });

  test("finish() assembles sha512 sessions", async (store) => {
    const a = bytesOf(300_000, 8);
    const b = bytesOf(5, 9);
    const parts = [
      await store.writePart("s512", bodyOf(a), { algorithm: "sha512" }),
      await store.writePart("s512", bodyOf(b), { algorithm: "sha512" }),
    ];
    const digest = digestOf(new Uint8Array([...a, ...b]), "sha512");
    assert.deepEqual(await store.finish("s512", parts, digest), { ok: true, size: 300_005 });
    assert.equal((await store.stat(digest))?.size, 300_005);
    await store.removeUpload("s512");
  });

  test("finish() with no parts stores the empty blob only", async (store) => {
    assert.deepEqual(await store.finish("none", [], digestOf("")), { ok: true, size: 0 });
    assert.equal((await store.stat(digestOf("")))?.size, 0);
    assert.deepEqual(await store.finish("none2", [], digestOf("", "sha512")), {
      ok: true,
      size: 0,
    });
    assert.deepEqual(await store.finish("none3", [], digestOf("x")), {
      ok: false,
      actual: digestOf(""),
      size: 0,
    });
    assert.equal(await store.stat(digestOf("x")), null);
    for (const id of ["none", "none2", "none3"]) await store.removeUpload(id);
  });

  test("writePart() of an empty or null body is a part of size 0", async (store) => {
    for (const body of [null, bodyOf(new Uint8Array())]) {
      const part = await store.writePart("zero", body, { algorithm: "sha256" });
      assert.equal(part.size, 0);
      assert.equal(part.digest, digestOf(""));
    }
    await store.removeUpload("zero");
  });

  test("writePart() past its limit throws TooLargeError and keeps nothing", async (store) => {
    const bytes = bytesOf(10_001);
    await assert.rejects(
      store.writePart("lim", bodyOf(bytes, 999), { algorithm: "sha256", limit: 10_000 }),
      TooLargeError,
    );
    const exact = await store.writePart("lim", bodyOf(bytes.subarray(0, 10_000)), {
      algorithm: "sha256",
      limit: 10_000,
    });
    assert.equal(exact.size, 10_000);
    assert.deepEqual(await store.finish("lim", [exact], digestOf(bytes.subarray(0, 10_000))), {
      ok: true,
      size: 10_000,
    });
    await store.removeUpload("lim");
  });

  test("removePart() removes one part; finish() without it fails", async (store) => {
    const a = bytesOf(10, 1);
    const part = await store.writePart("rm", bodyOf(a), { algorithm: "sha256" });
    const other = await store.writePart("rm", bodyOf(a), { algorithm: "sha256" });
    await store.removePart("rm", part.file);
    await store.removePart("rm", part.file); // twice is fine
    await assert.rejects(store.finish("rm", [part, other], digestOf(new Uint8Array([...a, ...a]))));
    assert.deepEqual(await store.finish("rm", [other], digestOf(a)), { ok: true, size: 10 });
    await store.removeUpload("rm");
  });

  test("removeUpload() removes every part of a session and listUploads() forgets it", async (store) => {
    const started = Date.now();
    await store.writePart("keep", bodyOf(bytesOf(10)), { algorithm: "sha256" });
    const part = await store.writePart("gone", bodyOf(bytesOf(10)), { algorithm: "sha256" });
    const listed = await collect(store.listUploads());
    assert.deepEqual(listed.map((u) => u.uploadId).sort(), ["gone", "keep"]);
    for (const u of listed) assert.ok(u.modifiedAt >= started - 2000, `${u.modifiedAt}`);
    await store.removeUpload("gone");
    await store.removeUpload("gone"); // twice is fine
    await store.removeUpload("never-existed");
    assert.deepEqual((await collect(store.listUploads())).map((u) => u.uploadId), ["keep"]);
    await assert.rejects(store.finish("gone", [part], digestOf(bytesOf(10))));
    await store.removeUpload("keep");
    assert.deepEqual(await collect(store.listUploads()), []);
  });

  test("a finished blob outlives its session", async (store) => {
    const bytes = bytesOf(1234);
    const part = await store.writePart("s", bodyOf(bytes), { algorithm: "sha256" });
    await store.finish("s", [part], digestOf(bytes));
    await store.removeUpload("s");
    const read = await store.open(digestOf(bytes));
    assert.ok(read);
    assert.deepEqual(await readAll(read.stream), bytes);
  });

  test("writePart() refuses unsafe session ids and part names", async (store) => {
    for (const id of ["../x", "a/b", "", ".", "x".repeat(65)]) {
      await assert.rejects(
        store.writePart(id, null, { algorithm: "sha256" }),
        Error,
        JSON.stringify(id),
      );
    }
    await assert.rejects(store.removePart("ok", "../../blobs"));
  });

  test("stat() gives the size and a modification time", async (store) => {
    const before = Date.now() - 2000;
    const digest = digestOf("timed");
    await store.putBytes(digest, new TextEncoder().encode("timed"));
    const info = await store.stat(digest);
    assert.equal(info?.size, 5);
    assert.ok(info && info.modifiedAt >= before && info.modifiedAt <= Date.now() + 2000);
  });

  test("listParts() and listUploads() show what a session stores; removeUpload() takes it", async (store) => {
    const part = await store.writePart("s-parts", bodyOf(bytesOf(10)), { algorithm: "sha256" });
    assert.deepEqual(await collect(store.listParts("s-parts")), [{ file: part.file, size: 10 }]);
    const read = await store.openPart("s-parts", part.file);
    assert.ok(read);
    assert.deepEqual(await readAll(read), bytesOf(10));
    assert.equal(await store.openPart("s-parts", "p-0000000000000000"), null);
    const sessions = await collect(store.listUploads());
    assert.deepEqual(sessions.map((s) => s.uploadId), ["s-parts"]);
    assert.ok(sessions[0]!.modifiedAt > Date.now() - 60_000);
    await store.removeUpload("s-parts");
    assert.deepEqual(await collect(store.listParts("s-parts")), []);
    assert.deepEqual(await collect(store.listUploads()), []);
  });

  test("debris() of a store nothing went wrong in is empty", async (store) => {
    await store.put(digestOf("ok"), bodyOf(new TextEncoder().encode("ok")));
    await store.writePart("s-debris", bodyOf(bytesOf(3)), { algorithm: "sha256" });
    assert.deepEqual(await collect(store.debris()), []);
  });
}
