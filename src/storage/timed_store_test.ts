/**
 * Unit tests of {@linkcode timeStore}: it behaves as the store it wraps (the
 * shared blob store suite), and times, counts and tracks what passes through.
 *
 * @module
 */
import assert from "node:assert/strict";
import { blobStoreSuite, bodyOf, bytesOf, digestOf } from "../../tests/_blob_store_suite.ts";
import { metrics } from "../metrics/registry.ts";
import { FsBlobStore } from "./fs_blob_store.ts";
import { timeStore } from "./timed_store.ts";

blobStoreSuite("timed wrapper around the filesystem store", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-store-" });
  const store = timeStore(await FsBlobStore.open(dir));
  return {
    store,
    async [Symbol.asyncDispose]() {
      await store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
});

const DURATION = "berth_blob_store_operation_duration_seconds";
const HELP = "Time a blob store operation took to answer (reads: until the stream is open)";
const timing = (op: string) => metrics.histogram(DURATION, HELP, { op });
const errors = (op: string) =>
  metrics.counter("berth_blob_store_errors_total", "Blob store operations that threw", { op });
const written = metrics.counter(
  "berth_blob_store_written_bytes_total",
  "Bytes written to the blob store (upload parts, monolithic uploads, manifests)",
);
const inFlight = metrics.gauge(
  "berth_uploads_in_flight",
  "Upload bodies being written to the blob store right now",
);

Deno.test("timeStore() times each operation, counts bytes written and failures", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-store-" });
  const store = timeStore(await FsBlobStore.open(dir));
  try {
    const bytes = bytesOf(1000);
    const digest = digestOf(bytes);
    const [puts, stats, writtenBefore] = [timing("put").count, timing("stat").count, written.value];
    assert.equal((await store.put(digest, bodyOf(bytes))).ok, true);
    assert.equal((await store.stat(digest))?.size, 1000);
    assert.equal(timing("put").count, puts + 1);
    assert.equal(timing("stat").count, stats + 1);
    assert.ok(timing("put").sum > 0);
    assert.equal(written.value, writtenBefore + 1000);
    const failures = errors("write_part").value;
    await assert.rejects(store.writePart("../escape", bodyOf(bytes), { algorithm: "sha256" }));
    assert.equal(errors("write_part").value, failures + 1);
    assert.equal(inFlight.value, 0);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("timeStore() keeps the store's own methods and fields working", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-store-" });
  const store = timeStore(await FsBlobStore.open(dir));
  try {
    const bytes = bytesOf(10);
    const digest = digestOf(bytes);
    assert.equal(store.root, dir);
    assert.ok(store.blobPath(digest).startsWith(dir));
    assert.equal(store.location, `file:${dir}`);
    await store.putBytes(digest, bytes);
    assert.deepEqual(await Deno.readFile(store.blobPath(digest)), bytes);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("timeStore() counts an upload body as in flight while it is written", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-store-" });
  const store = timeStore(await FsBlobStore.open(dir));
  try {
    const before = inFlight.value;
    let send!: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({ start: (c) => void (send = c) });
    const writing = store.writePart("a-session", body, { algorithm: "sha256" });
    send.enqueue(bytesOf(10));
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(inFlight.value, before + 1);
    send.close();
    assert.equal((await writing).size, 10);
    assert.equal(inFlight.value, before);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
