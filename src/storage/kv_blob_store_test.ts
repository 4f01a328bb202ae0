/**
 * {@linkcode KvBlobStore}: the shared store suite runs in tests/blob_stores_test.ts;
 * here, what only the KV layout can show: the largest blob, a crashed
 * writer's leftovers, finishing without copying, and that no commit
 * exceeds KV's limits.
 *
 * @module
 */
import assert from "node:assert/strict";
import { bodyOf, bytesOf, digestOf, readAll } from "../../tests/_blob_store_suite.ts";
import type { Debris } from "./blob_store.ts";
import { CHUNK_BYTES, KvBlobStore, MAX_RUNS_PER_BLOB } from "./kv_blob_store.ts";
import { TooLargeError } from "./streams.ts";

/** What one commit asked of KV. */
interface CommitShape {
  checks: number;
  mutations: number;
  /** Keys and values, as KV counts them (values serialized: byte arrays by their length). */
  bytes: number;
  largestValue: number;
}

function valueBytes(value: unknown): number {
  if (value instanceof Uint8Array) return value.length;
  return new TextEncoder().encode(JSON.stringify(value) ?? "").length;
}

function keyBytes(key: Deno.KvKey): number {
  return new TextEncoder().encode(JSON.stringify(key)).length;
}

/**
 * A KV that records every commit's shape, and, once `crashAfter` commits
 * went through, fails every later one (a process that died: nothing it
 * tries afterwards reaches KV).
 */
function recordingKv(raw: Deno.Kv, options: { crashAfter?: number } = {}) {
  const commits: CommitShape[] = [];
  const atomic = () => {
    const op = raw.atomic();
    const shape: CommitShape = { checks: 0, mutations: 0, bytes: 0, largestValue: 0 };
    const proxy: Deno.AtomicOperation = new Proxy(op, {
      get(target, prop) {
        if (prop === "check") {
          return (...checks: Deno.AtomicCheck[]) => {
            shape.checks += checks.length;
            target.check(...checks);
            return proxy;
          };
        }
        if (prop === "set" || prop === "delete" || prop === "sum") {
          return (key: Deno.KvKey, value?: unknown) => {
            shape.mutations++;
            shape.bytes += keyBytes(key) + (prop === "delete" ? 0 : valueBytes(value));
            if (prop === "set") {
              shape.largestValue = Math.max(shape.largestValue, valueBytes(value));
            }
            (target[prop] as (k: Deno.KvKey, v?: unknown) => unknown).call(target, key, value);
            return proxy;
          };
        }
        if (prop === "commit") {
          return () => {
            if (options.crashAfter !== undefined && commits.length >= options.crashAfter) {
              return Promise.reject(new Error("the process died"));
            }
            commits.push(shape);
            return target.commit();
          };
        }
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    return proxy;
  };
  const kv = new Proxy(raw, {
    get(target, prop) {
      if (prop === "atomic") return atomic;
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { kv, commits };
}

async function keysOf(raw: Deno.Kv): Promise<Deno.KvKey[]> {
  const keys: Deno.KvKey[] = [];
  for await (const entry of raw.list({ prefix: [] })) keys.push(entry.key);
  return keys;
}

async function familyCount(raw: Deno.Kv, family: string): Promise<number> {
  return (await keysOf(raw)).filter((key) => key[0] === family).length;
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

Deno.test("KvBlobStore refuses a blob larger than its largest, in one body or across a session's parts", async () => {
  using raw = await Deno.openKv(":memory:");
  const store = new KvBlobStore(raw, { maxBlobBytes: 200_000 });
  const big = bytesOf(200_001);
  await assert.rejects(store.put(digestOf(big), bodyOf(big)), TooLargeError);
  await assert.rejects(store.putBytes(digestOf(big), big), TooLargeError);
  const first = await store.writePart("s", bodyOf(bytesOf(150_000)), { algorithm: "sha256" });
  const error = await store.writePart("s", bodyOf(bytesOf(60_000)), { algorithm: "sha256" })
    .then(() => null, (e) => e);
  assert.ok(error instanceof TooLargeError);
  assert.equal(error.limit, 200_000);
  // A chunk's own limit, when it is the smaller one, is what the error names.
  const own = await store.writePart("s", bodyOf(bytesOf(1000)), {
    algorithm: "sha256",
    limit: 999,
  }).then(() => null, (e) => e);
  assert.equal((own as TooLargeError).limit, 999);
  // What was refused left nothing behind: only the first part's chunks are stored.
  assert.deepEqual((await collect(store.listParts("s"))).map((p) => p.file), [first.file]);
  assert.equal(await familyCount(raw, "store_chunks"), Math.ceil(150_000 / CHUNK_BYTES));
  assert.equal(await familyCount(raw, "store_unsettled"), 0);
  // Exactly the largest is kept.
  const exact = bytesOf(200_000, 2);
  assert.deepEqual(await store.put(digestOf(exact), bodyOf(exact)), { ok: true, size: 200_000 });
});

Deno.test("KvBlobStore: a writer that dies mid-way leaves a leftover run that debris() reports and remove() takes", async () => {
  using raw = await Deno.openKv(":memory:");
  const { kv } = recordingKv(raw, { crashAfter: 2 });
  const dying = new KvBlobStore(kv, { maxBlobBytes: 1024 ** 3 });
  const bytes = bytesOf(3 * 1024 * 1024, 5);
  await assert.rejects(dying.put(digestOf(bytes), bodyOf(bytes)), /the process died/);
  const store = new KvBlobStore(raw, { maxBlobBytes: 1024 ** 3 });
  // Nothing half-written is visible.
  assert.equal(await store.stat(digestOf(bytes)), null);
  assert.deepEqual(await collect(store.list()), []);
  assert.deepEqual(await collect(store.listUploads()), []);
  assert.ok(await familyCount(raw, "store_chunks") > 0);
  for (const options of [{}, { leftoversOnly: true }]) {
    const found = await collect(store.debris(options));
    assert.equal(found.length, 1);
    const [item] = found as (Debris & { kind: string })[];
    assert.equal(item!.kind, "leftover");
    assert.match(item!.where, /^runs\/[a-f0-9]{16}$/);
    assert.equal(item!.size % CHUNK_BYTES, 0);
    assert.ok(item!.size > 0 && item!.modifiedAt > Date.now() - 60_000);
  }
  await (await collect(store.debris()))[0]!.remove();
  assert.deepEqual(await keysOf(raw), []);
});

Deno.test("KvBlobStore.finish() of several parts copies no bytes: the blob names the parts' runs", async () => {
  using raw = await Deno.openKv(":memory:");
  const store = new KvBlobStore(raw, { maxBlobBytes: 1024 ** 3 });
  const chunks = [bytesOf(200_000, 1), bytesOf(70_000, 2), bytesOf(5, 3)];
  const whole = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  chunks.reduce((at, c) => (whole.set(c, at), at + c.length), 0);
  const parts = [];
  for (const c of chunks) {
    parts.push(await store.writePart("u", bodyOf(c), { algorithm: "sha256" }));
  }
  const before = await familyCount(raw, "store_chunks");
  assert.deepEqual(await store.finish("u", parts, digestOf(whole)), {
    ok: true,
    size: whole.length,
  });
  assert.equal(await familyCount(raw, "store_chunks"), before);
  await store.removeUpload("u");
  assert.equal(await familyCount(raw, "store_chunks"), before);
  const read = await store.open(digestOf(whole), { start: 199_990, end: 270_010 });
  assert.deepEqual(await readAll(read!.stream), whole.subarray(199_990, 270_011));
  assert.deepEqual(await collect(store.debris()), []);
  // Removing the blob removes every chunk, and nothing else is left.
  assert.equal(await store.delete(digestOf(whole)), true);
  assert.deepEqual(await keysOf(raw), []);
});

Deno.test("KvBlobStore.finish() again after a collection removed the blob its parts became: NotFound, not a 500", async () => {
  // The registry finishes again when a collection removed the digest before the session's
  // commit; the parts' runs went with the blob, so the session has ended (404 to the client).
  using raw = await Deno.openKv(":memory:");
  const store = new KvBlobStore(raw, { maxBlobBytes: 1024 ** 3 });
  const bytes = bytesOf(100_000, 9);
  const part = await store.writePart("u", bodyOf(bytes), { algorithm: "sha256" });
  assert.deepEqual(await store.finish("u", [part], digestOf(bytes)), { ok: true, size: 100_000 });
  assert.equal(await store.delete(digestOf(bytes)), true);
  await assert.rejects(store.finish("u", [part], digestOf(bytes)), Deno.errors.NotFound);
  assert.equal(await store.stat(digestOf(bytes)), null);
  await store.removeUpload("u");
});

Deno.test("KvBlobStore.finish() copies parts that are already another blob's, and too many parts", async () => {
  using raw = await Deno.openKv(":memory:");
  const store = new KvBlobStore(raw, { maxBlobBytes: 1024 ** 3 });
  const a = bytesOf(100_000, 1);
  const b = bytesOf(10, 2);
  const pa = await store.writePart("u", bodyOf(a), { algorithm: "sha256" });
  const pb = await store.writePart("u", bodyOf(b), { algorithm: "sha256" });
  assert.equal((await store.finish("u", [pa], digestOf(a))).ok, true);
  const ab = new Uint8Array([...a, ...b]);
  assert.equal((await store.finish("u", [pa, pb], digestOf(ab))).ok, true);
  await store.removeUpload("u");
  assert.equal(await store.delete(digestOf(a)), true);
  assert.deepEqual(await readAll((await store.open(digestOf(ab)))!.stream), ab);
  // More parts than one index names: copied into one run.
  const many = [];
  for (let i = 0; i <= MAX_RUNS_PER_BLOB; i++) {
    many.push(
      await store.writePart("m", bodyOf(new Uint8Array([i & 0xff])), {
        algorithm: "sha256",
      }),
    );
  }
  const bytes = Uint8Array.from({ length: MAX_RUNS_PER_BLOB + 1 }, (_, i) => i & 0xff);
  assert.deepEqual(await store.finish("m", many, digestOf(bytes)), {
    ok: true,
    size: bytes.length,
  });
  await store.removeUpload("m");
  assert.deepEqual(await readAll((await store.open(digestOf(bytes)))!.stream), bytes);
  assert.deepEqual(await collect(store.debris()), []);
});

Deno.test("KvBlobStore never commits more than KV allows (checks, mutations, bytes, value size)", async () => {
  using raw = await Deno.openKv(":memory:");
  const { kv, commits } = recordingKv(raw);
  const store = new KvBlobStore(kv, { maxBlobBytes: 1024 ** 3 });
  // Over 900 chunks: its removal takes more than one commit.
  const big = bytesOf(1000 * CHUNK_BYTES + 17, 9);
  assert.deepEqual(await store.put(digestOf(big), bodyOf(big, 1 << 20)), {
    ok: true,
    size: big.length,
  });
  const parts = [];
  for (let i = 0; i < 12; i++) {
    parts.push(await store.writePart("u", bodyOf(bytesOf(100_000, i)), { algorithm: "sha256" }));
  }
  const whole = new Uint8Array(1_200_000);
  for (let i = 0; i < 12; i++) whole.set(bytesOf(100_000, i), i * 100_000);
  assert.equal((await store.finish("u", parts, digestOf(whole))).ok, true);
  await store.removeUpload("u");
  assert.equal(await store.delete(digestOf(big)), true);
  assert.equal(await store.delete(digestOf(whole)), true);
  assert.deepEqual(await keysOf(raw), []);
  assert.ok(commits.length > 80);
  for (const shape of commits) {
    assert.ok(shape.checks <= 10, JSON.stringify(shape));
    assert.ok(shape.mutations <= 1000, JSON.stringify(shape));
    assert.ok(shape.bytes <= 800 * 1024, JSON.stringify(shape));
    assert.ok(shape.largestValue < 64 * 1024, JSON.stringify(shape));
  }
  // The commits that write chunks are as large as the limits let them be.
  assert.ok(Math.max(...commits.map((c) => c.bytes)) > 700 * 1024);
  assert.ok(Math.max(...commits.map((c) => c.mutations)) >= 900);
});

Deno.test("KvBlobStore keys are laid out as the key table in keys.ts documents", async () => {
  using raw = await Deno.openKv(":memory:");
  const { kv } = recordingKv(raw, { crashAfter: 1 });
  const store = new KvBlobStore(raw, { maxBlobBytes: 1024 ** 3 });
  const bytes = bytesOf(70_000);
  await store.put(digestOf(bytes), bodyOf(bytes));
  const part = await store.writePart("u", bodyOf(bytesOf(10)), { algorithm: "sha256" });
  // A write that died, for a staging run.
  await assert.rejects(new KvBlobStore(kv, { maxBlobBytes: 1024 ** 3 }).putBytes(
    digestOf(bytesOf(200_000)),
    bytesOf(200_000),
  ));
  const keys = await keysOf(raw);
  const families = keys.map((k) => [k[0], k.length]);
  assert.deepEqual(
    [...new Set(families.map((f) => JSON.stringify(f)))].sort(),
    [
      ["store_blobs", 2],
      ["store_chunks", 3],
      ["store_parts", 3],
      ["store_runs", 2],
      ["store_sessions", 2],
      ["store_unsettled", 2],
    ].map((f) => JSON.stringify(f)).sort(),
  );
  assert.ok(keys.some((k) => k[0] === "store_parts" && k[1] === "u" && k[2] === part.file));
  assert.ok(keys.some((k) => k[0] === "store_blobs" && k[1] === digestOf(bytes)));
  const table = await Deno.readTextFile(new URL("../meta/keys.ts", import.meta.url));
  for (const family of new Set(keys.map((key) => key[0] as string))) {
    assert.match(table, new RegExp(`\\| \`\\["${family}"`), family);
  }
});
