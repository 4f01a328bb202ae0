/**
 * Blob push, black-box (checklist A2 and A5): end-4a/4b/4c (POST), end-5
 * (PATCH), end-6 (closing PUT), end-11 (mount), end-13 (upload status),
 * end-14 (cancel), and the per-repository and total session caps.
 *
 * Every test drives the registry as a client does: it reuses the `Location`
 * it was given verbatim and appends `digest=`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  assertError,
  pushBlob,
  randomBytes,
  sha256,
  sha512,
  startRegistry,
  type TestRegistry,
} from "./_registry.ts";
import type { Digest } from "../src/oci/digest.ts";

const UUID_REGEXP = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i;
const EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const EMPTY_CONFIG = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
const OCTET = { "Content-Type": "application/octet-stream" };

/** Opens a session (`POST …/uploads/<query>`), asserts 202, returns its Location. */
async function startUpload(reg: TestRegistry, name: string, query = ""): Promise<string> {
  const res = await reg.fetch(`/v2/${name}/blobs/uploads/${query}`, {
    method: "POST",
    headers: { "Content-Length": "0" },
  });
  const body = await res.text();
  assert.equal(res.status, 202, `POST uploads for ${name}${query}: ${body}`);
  const location = res.headers.get("Location");
  assert.ok(location, "202 without Location");
  return location;
}

/** The session URL with `digest=` appended, as a client builds it. */
function withDigest(location: string, digest: string): string {
  return `${location}${location.includes("?") ? "&" : "?"}digest=${digest}`;
}

/** PATCHes `bytes` to a session; with `start`, sends `Content-Range: start-end`. */
function patch(
  reg: TestRegistry,
  location: string,
  bytes: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array>,
  start?: number,
  length?: number,
): Promise<Response> {
  const headers: Record<string, string> = { ...OCTET };
  if (start !== undefined) {
    const size = length ?? (bytes as Uint8Array).length;
    headers["Content-Range"] = `${start}-${start + size - 1}`;
  }
  return reg.fetch(location, { method: "PATCH", headers, body: bytes });
}

/** PATCHes and asserts 202; returns the response's headers. */
async function patchOk(
  reg: TestRegistry,
  location: string,
  bytes: Uint8Array<ArrayBuffer>,
  start?: number,
): Promise<Headers> {
  const res = await patch(reg, location, bytes, start);
  const body = await res.text();
  assert.equal(res.status, 202, `PATCH ${location}: ${body}`);
  return res.headers;
}

/** PUTs `?digest=` (with an optional final chunk); returns the response, body consumed. */
async function put(
  reg: TestRegistry,
  location: string,
  digest: string,
  body?: Uint8Array<ArrayBuffer>,
  headers: Record<string, string> = {},
): Promise<Response> {
  const res = await reg.fetch(withDigest(location, digest), {
    method: "PUT",
    headers: { ...OCTET, ...headers },
    ...(body ? { body } : {}),
  });
  return res;
}

/** PUTs and asserts 201 with the blob's Location and digest. */
async function putOk(
  reg: TestRegistry,
  name: string,
  location: string,
  digest: string,
  body?: Uint8Array<ArrayBuffer>,
): Promise<void> {
  const res = await put(reg, location, digest, body);
  const text = await res.text();
  assert.equal(res.status, 201, `PUT ${location}: ${text}`);
  assert.equal(res.headers.get("Location"), `/v2/${name}/blobs/${digest}`);
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
}

/** GETs a blob and asserts it is exactly `bytes`. */
async function assertBlob(
  reg: TestRegistry,
  name: string,
  digest: string,
  bytes: Uint8Array,
): Promise<void> {
  const res = await reg.fetch(`/v2/${name}/blobs/${digest}`);
  const got = new Uint8Array(await res.arrayBuffer());
  assert.equal(res.status, 200, `GET blob ${digest} in ${name}`);
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
  assert.equal(got.length, bytes.length);
  assert.deepEqual(got, bytes);
}

/** GETs a session's status, asserts 204, returns its Range. */
async function statusRange(reg: TestRegistry, location: string): Promise<string | null> {
  const res = await reg.fetch(location);
  await res.body?.cancel();
  assert.equal(res.status, 204, `GET ${location}`);
  return res.headers.get("Range");
}

/** Every file under the data directory's `uploads/` (session chunks and scratch files). */
async function uploadFiles(reg: TestRegistry): Promise<string[]> {
  const found: string[] = [];
  async function walk(dir: string): Promise<void> {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      if (entry.isDirectory) await walk(path);
      // A session's lock file, and its data file cut back to nothing, hold no bytes.
      else if ((await Deno.stat(path)).size > 0) found.push(path);
    }
  }
  await walk(join(reg.dataDir, "uploads"));
  return found;
}

/** A request body that arrives as a stream of `piece`-byte chunks (no Content-Length). */
function streamOf(bytes: Uint8Array, piece: number): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= bytes.length) {
        controller.close();
        return;
      }
      controller.enqueue(bytes.slice(offset, offset + piece));
      offset += piece;
    },
  }, { highWaterMark: 0 });
}

// ---- end-4a: POST opens a session ----------------------------------------

Deno.test("end-4a: POST answers 202 with a Location holding a UUID, Range 0-0 and Docker-Upload-UUID", async () => {
  await using reg = await startRegistry();
  const uuids = new Set<string>();
  for (let i = 0; i < 2; i++) {
    const res = await reg.fetch("/v2/library/app/blobs/uploads/", {
      method: "POST",
      headers: { "Content-Length": "0" },
    });
    await res.body?.cancel();
    assert.equal(res.status, 202);
    const location = res.headers.get("Location") ?? "";
    const uuid = UUID_REGEXP.exec(location)?.[0];
    assert.ok(uuid, `no UUID in Location "${location}"`);
    assert.ok(location.startsWith("/v2/library/app/blobs/uploads/"), location);
    assert.equal(res.headers.get("Range"), "0-0");
    assert.equal(res.headers.get("Docker-Upload-UUID"), uuid);
    // The filesystem store takes chunks of any size: no minimum to announce.
    assert.equal(res.headers.get("OCI-Chunk-Min-Length"), null);
    uuids.add(uuid);
  }
  assert.equal(uuids.size, 2, "two POSTs got the same session");
});

Deno.test("end-4a: POST without the trailing slash also opens a session", async () => {
  await using reg = await startRegistry();
  const res = await reg.fetch("/v2/app/blobs/uploads", { method: "POST" });
  await res.body?.cancel();
  assert.equal(res.status, 202);
  assert.match(res.headers.get("Location") ?? "", UUID_REGEXP);
});

Deno.test("end-4a: POST to an invalid repository name answers 400 NAME_INVALID and opens nothing", async () => {
  await using reg = await startRegistry();
  await assertError(
    await reg.fetch("/v2/Bad_Name/blobs/uploads/", { method: "POST" }),
    400,
    "NAME_INVALID",
  );
  assert.deepEqual(await reg.meta.countUploads("Bad_Name"), { repo: 0, total: 0 });
});

// ---- end-4b: single POST -------------------------------------------------

Deno.test("end-4b: POST ?digest= with the whole body answers 201 with Location /v2/<name>/blobs/<digest>", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(50_000, 41);
  const digest = sha256(bytes);
  const res = await reg.fetch(`/v2/library/app/blobs/uploads/?digest=${digest}`, {
    method: "POST",
    headers: OCTET,
    body: bytes,
  });
  await res.body?.cancel();
  assert.equal(res.status, 201);
  assert.equal(res.headers.get("Location"), `/v2/library/app/blobs/${digest}`);
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
  await assertBlob(reg, "library/app", digest, bytes);
  assert.deepEqual(await uploadFiles(reg), []);
  assert.deepEqual(await reg.meta.countUploads("library/app"), { repo: 0, total: 0 });
});

Deno.test("end-4b: POST ?digest= with the wrong digest answers 400 DIGEST_INVALID and stores nothing", async () => {
  await using reg = await startRegistry();
  await pushBlob(reg, "app", "keeps the repository alive");
  const bytes = randomBytes(10_000, 42);
  const claimed = sha256("something else");
  await assertError(
    await reg.fetch(`/v2/app/blobs/uploads/?digest=${claimed}`, {
      method: "POST",
      headers: OCTET,
      body: bytes,
    }),
    400,
    "DIGEST_INVALID",
  );
  await assertError(await reg.fetch(`/v2/app/blobs/${claimed}`), 404, "BLOB_UNKNOWN");
  await assertError(await reg.fetch(`/v2/app/blobs/${sha256(bytes)}`), 404, "BLOB_UNKNOWN");
  assert.equal(await reg.blobs.stat(claimed as Digest), null);
  assert.equal(await reg.blobs.stat(sha256(bytes) as Digest), null);
  assert.deepEqual(await uploadFiles(reg), []);
});

Deno.test("end-4b: POST ?digest= with a malformed or unsupported digest answers 400 DIGEST_INVALID", async () => {
  await using reg = await startRegistry();
  for (
    const bad of ["sha256:1234", "sha256:" + "G".repeat(64), "md5:" + "a".repeat(32), "nodigest"]
  ) {
    await assertError(
      await reg.fetch(`/v2/app/blobs/uploads/?digest=${bad}`, {
        method: "POST",
        headers: OCTET,
        body: "abc",
      }),
      400,
      "DIGEST_INVALID",
    );
  }
  assert.equal(await reg.meta.repoExists("app"), false);
  assert.deepEqual(await uploadFiles(reg), []);
});

// ---- end-4c: digest-algorithm --------------------------------------------

Deno.test("end-4c: POST ?digest-algorithm=sha512 opens a session that a sha512 PUT completes", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app", "?digest-algorithm=sha512");
  const bytes = randomBytes(20_000, 43);
  const digest = sha512(bytes);
  await putOk(reg, "app", location, digest, bytes);
  await assertBlob(reg, "app", digest, bytes);
  assert.deepEqual(await uploadFiles(reg), []);
});

Deno.test("end-4c: POST with an unsupported ?digest-algorithm answers 400 DIGEST_INVALID and opens no session", async () => {
  await using reg = await startRegistry();
  for (const algorithm of ["md5", "sha384", "blake3", ""]) {
    await assertError(
      await reg.fetch(`/v2/app/blobs/uploads/?digest-algorithm=${algorithm}`, { method: "POST" }),
      400,
      "DIGEST_INVALID",
    );
  }
  assert.deepEqual(await reg.meta.countUploads("app"), { repo: 0, total: 0 });
});

// ---- A5: POST then PUT (monolithic) --------------------------------------

Deno.test("A5: POST then PUT ?digest= with the whole body answers 201 with the blob's Location", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "library/app");
  const bytes = randomBytes(300_000, 44);
  const digest = sha256(bytes);
  await putOk(reg, "library/app", location, digest, bytes);
  await assertBlob(reg, "library/app", digest, bytes);
});

// ---- end-5: chunked PATCH ------------------------------------------------

Deno.test("end-5: PATCH chunks with Content-Range answer 202 with Range 0-<end> and Location", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const bytes = randomBytes(30_000, 51);
  const chunks = [bytes.slice(0, 10_000), bytes.slice(10_000, 25_000), bytes.slice(25_000)];
  let offset = 0;
  for (const chunk of chunks) {
    const headers = await patchOk(reg, location, chunk, offset);
    offset += chunk.length;
    assert.equal(headers.get("Range"), `0-${offset - 1}`);
    assert.equal(headers.get("Location"), location);
    assert.equal(await statusRange(reg, location), `0-${offset - 1}`);
  }
  const digest = sha256(bytes);
  await putOk(reg, "app", location, digest);
  await assertBlob(reg, "app", digest, bytes);
});

Deno.test("end-5: re-sending chunk 1 gets 416 BLOB_UPLOAD_INVALID with the current Range", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const bytes = randomBytes(2000, 52);
  const first = bytes.slice(0, 1000);
  await patchOk(reg, location, first, 0);
  const res = await patch(reg, location, first, 0);
  assert.equal(res.headers.get("Range"), "0-999");
  assert.equal(res.headers.get("Location"), location);
  await assertError(res, 416, "BLOB_UPLOAD_INVALID");
  assert.equal(await statusRange(reg, location), "0-999");
  // The session goes on from where it was.
  await patchOk(reg, location, bytes.slice(1000), 1000);
  await putOk(reg, "app", location, sha256(bytes));
  await assertBlob(reg, "app", sha256(bytes), bytes);
});

Deno.test("end-5: a chunk that skips ahead or overlaps gets 416 and writes nothing", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const bytes = randomBytes(3000, 53);
  // The first chunk must start at 0.
  await assertError(
    await patch(reg, location, bytes.slice(0, 100), 100),
    416,
    "BLOB_UPLOAD_INVALID",
  );
  assert.equal(await statusRange(reg, location), "0-0");
  await patchOk(reg, location, bytes.slice(0, 1000), 0);
  // A gap, then an overlap.
  await assertError(
    await patch(reg, location, bytes.slice(1500, 2000), 1500),
    416,
    "BLOB_UPLOAD_INVALID",
  );
  await assertError(
    await patch(reg, location, bytes.slice(900, 1900), 900),
    416,
    "BLOB_UPLOAD_INVALID",
  );
  assert.equal(await statusRange(reg, location), "0-999");
  await patchOk(reg, location, bytes.slice(1000), 1000);
  const digest = sha256(bytes);
  await putOk(reg, "app", location, digest);
  await assertBlob(reg, "app", digest, bytes);
});

Deno.test("end-5: a malformed Content-Range answers 400 BLOB_UPLOAD_INVALID", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  for (const range of ["abc", "5-2", "-5", "0-"]) {
    await assertError(
      await reg.fetch(location, {
        method: "PATCH",
        headers: { ...OCTET, "Content-Range": range },
        body: "hello",
      }),
      400,
      "BLOB_UPLOAD_INVALID",
    );
  }
  assert.equal(await statusRange(reg, location), "0-0");
});

Deno.test("end-5: a chunk whose body does not match its Content-Range is refused and writes nothing", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const bytes = randomBytes(1000, 54);
  // Content-Range promises 2000 bytes; the body has 1000.
  await assertError(await patch(reg, location, bytes, 0, 2000), 400, "SIZE_INVALID");
  // A streamed body (no Content-Length) shorter than its Content-Range.
  await assertError(await patch(reg, location, streamOf(bytes, 100), 0, 2000), 400, "SIZE_INVALID");
  // A streamed body longer than its Content-Range.
  const long = await patch(reg, location, streamOf(bytes, 100), 0, 500);
  await long.body?.cancel();
  assert.ok(long.status >= 400 && long.status < 500, `got ${long.status}`);
  assert.equal(await statusRange(reg, location), "0-0");
  assert.deepEqual(await uploadFiles(reg), []);
});

Deno.test("end-5: streamed PATCHes without Content-Range append at the current offset", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const bytes = randomBytes(40_000, 55);
  const cuts = [0, 7_000, 7_001, 22_000, 40_000];
  for (let i = 0; i + 1 < cuts.length; i++) {
    const res = await patch(reg, location, streamOf(bytes.slice(cuts[i], cuts[i + 1]), 3000));
    await res.body?.cancel();
    assert.equal(res.status, 202);
    assert.equal(res.headers.get("Range"), `0-${cuts[i + 1]! - 1}`);
    assert.equal(res.headers.get("Location"), location);
  }
  const digest = sha256(bytes);
  await putOk(reg, "app", location, digest);
  await assertBlob(reg, "app", digest, bytes);
});

Deno.test("end-5: a streamed PATCH reaches the disk while it arrives, it is not buffered", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const bytes = randomBytes(3 * 1024 * 1024, 59);
  const first = 2 * 1024 * 1024;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent === first) await gate;
      if (sent >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(sent, sent + 64 * 1024));
      sent += 64 * 1024;
    },
  }, { highWaterMark: 0 });
  const pending = patch(reg, location, body);
  // No event says "the server wrote"; poll the session's files, bounded.
  let onDisk = 0;
  for (let i = 0; i < 500 && onDisk < 1024 * 1024; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    const sizes = await Promise.all(
      (await uploadFiles(reg)).map(async (f) => (await Deno.stat(f)).size),
    );
    onDisk = sizes.reduce((a, b) => a + b, 0);
  }
  assert.ok(onDisk >= 1024 * 1024, `only ${onDisk} bytes on disk while the body is held open`);
  release();
  const res = await pending;
  await res.body?.cancel();
  assert.equal(res.status, 202);
  assert.equal(res.headers.get("Range"), `0-${bytes.length - 1}`);
  await putOk(reg, "app", location, sha256(bytes));
  await assertBlob(reg, "app", sha256(bytes), bytes);
});

Deno.test("end-5: a blob of a few MiB streamed in many PATCHes arrives intact", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "big/blob");
  const bytes = randomBytes(4 * 1024 * 1024 + 123, 56);
  const chunk = 96 * 1024;
  let offset = 0;
  for (let i = 0; offset < bytes.length; i++) {
    const piece = bytes.slice(offset, offset + chunk);
    // Alternate between conformance-style (Content-Range) and Docker-style (none).
    const res = await patch(
      reg,
      location,
      streamOf(piece, 16 * 1024),
      i % 2 ? offset : undefined,
      piece.length,
    );
    await res.body?.cancel();
    assert.equal(res.status, 202, `chunk ${i}`);
    offset += piece.length;
    assert.equal(res.headers.get("Range"), `0-${offset - 1}`);
  }
  const digest = sha256(bytes);
  await putOk(reg, "big/blob", location, digest);
  await assertBlob(reg, "big/blob", digest, bytes);
  assert.deepEqual(await uploadFiles(reg), []);
});

Deno.test("end-5: PATCH to an unknown session answers 404 BLOB_UPLOAD_UNKNOWN", async () => {
  await using reg = await startRegistry();
  await startUpload(reg, "app");
  for (const id of [crypto.randomUUID(), "not-a-uuid"]) {
    await assertError(
      await patch(reg, `/v2/app/blobs/uploads/${id}`, randomBytes(10), 0),
      404,
      "BLOB_UPLOAD_UNKNOWN",
    );
  }
  assert.deepEqual(await uploadFiles(reg), []);
});

Deno.test("end-5: two PATCHes racing on one session with Content-Range 0-...: one 202, the other 416", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const half = 64 * 1024;
  const bodies = [randomBytes(2 * half, 57), randomBytes(2 * half, 58)];
  // Each body sends its first half, then waits until both requests have sent
  // theirs, so both are in flight at once.
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let waiting = 0;
  const gated = (bytes: Uint8Array) => {
    let step = 0;
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        step++;
        if (step === 1) controller.enqueue(bytes.slice(0, half));
        else if (step === 2) {
          if (++waiting === 2) release();
          await gate;
          controller.enqueue(bytes.slice(half));
        } else controller.close();
      },
    }, { highWaterMark: 0 });
  };
  const responses = await Promise.all(
    bodies.map((bytes) => patch(reg, location, gated(bytes), 0, bytes.length)),
  );
  const statuses = responses.map((r) => r.status).sort();
  assert.deepEqual(statuses, [202, 416]);
  const winner = responses[0]!.status === 202 ? 0 : 1;
  await responses[winner]!.body?.cancel();
  assert.equal(responses[winner]!.headers.get("Range"), `0-${2 * half - 1}`);
  await assertError(responses[1 - winner]!, 416, "BLOB_UPLOAD_INVALID");
  assert.equal(await statusRange(reg, location), `0-${2 * half - 1}`);
  const digest = sha256(bodies[winner]!);
  await putOk(reg, "app", location, digest);
  await assertBlob(reg, "app", digest, bodies[winner]!);
  assert.deepEqual(await uploadFiles(reg), []);
});

// ---- end-6: closing PUT --------------------------------------------------

Deno.test("end-6: the last chunk may arrive in the closing PUT", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const bytes = randomBytes(5000, 61);
  await patchOk(reg, location, bytes.slice(0, 3000), 0);
  const digest = sha256(bytes);
  const res = await put(reg, location, digest, bytes.slice(3000), {
    "Content-Range": "3000-4999",
  });
  await res.body?.cancel();
  assert.equal(res.status, 201);
  assert.equal(res.headers.get("Location"), `/v2/app/blobs/${digest}`);
  await assertBlob(reg, "app", digest, bytes);
  // Without Content-Range too.
  const again = await startUpload(reg, "app");
  const other = randomBytes(5000, 62);
  await patchOk(reg, again, other.slice(0, 1234));
  await putOk(reg, "app", again, sha256(other), other.slice(1234));
  await assertBlob(reg, "app", sha256(other), other);
});

Deno.test("end-6: an out-of-order final chunk in the PUT gets 416 and the session stays", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const bytes = randomBytes(5000, 63);
  await patchOk(reg, location, bytes.slice(0, 3000), 0);
  const digest = sha256(bytes);
  const res = await put(reg, location, digest, bytes.slice(2000), {
    "Content-Range": "2000-4999",
  });
  assert.equal(res.headers.get("Range"), "0-2999");
  await assertError(res, 416, "BLOB_UPLOAD_INVALID");
  assert.equal(await reg.blobs.stat(digest as Digest), null);
  assert.equal(await statusRange(reg, location), "0-2999");
  const fixed = await put(reg, location, digest, bytes.slice(3000), {
    "Content-Range": "3000-4999",
  });
  await fixed.body?.cancel();
  assert.equal(fixed.status, 201);
  await assertBlob(reg, "app", digest, bytes);
});

Deno.test("end-6: PUT without ?digest answers 400 DIGEST_INVALID and stores nothing", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const bytes = randomBytes(100, 64);
  await assertError(
    await reg.fetch(location, { method: "PUT", headers: OCTET, body: bytes }),
    400,
    "DIGEST_INVALID",
  );
  assert.equal(await reg.blobs.stat(sha256(bytes) as Digest), null);
  assert.equal(await reg.meta.getBlobLink("app", sha256(bytes) as Digest), null);
});

Deno.test("end-6: PUT with a malformed digest answers 400 DIGEST_INVALID", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  await patchOk(reg, location, randomBytes(100, 65), 0);
  for (const bad of ["sha256:xyz", "md5:" + "a".repeat(32)]) {
    await assertError(await put(reg, location, bad), 400, "DIGEST_INVALID");
  }
});

Deno.test("end-6: PUT with a digest that does not match answers 400 DIGEST_INVALID; the session and its files are gone", async () => {
  await using reg = await startRegistry();
  await pushBlob(reg, "app", "keeps the repository alive");
  const location = await startUpload(reg, "app");
  const bytes = randomBytes(4000, 66);
  await patchOk(reg, location, bytes.slice(0, 2000), 0);
  await patchOk(reg, location, bytes.slice(2000), 2000);
  const wrong = sha256("not these bytes");
  await assertError(await put(reg, location, wrong), 400, "DIGEST_INVALID");
  await assertError(await reg.fetch(location), 404, "BLOB_UPLOAD_UNKNOWN");
  await assertError(await reg.fetch(`/v2/app/blobs/${wrong}`), 404, "BLOB_UNKNOWN");
  await assertError(await reg.fetch(`/v2/app/blobs/${sha256(bytes)}`), 404, "BLOB_UNKNOWN");
  assert.equal(await reg.blobs.stat(sha256(bytes) as Digest), null);
  assert.deepEqual(await uploadFiles(reg), []);
  assert.deepEqual(await reg.meta.countUploads("app"), { repo: 0, total: 0 });
});

Deno.test("end-6: a mismatched digest on a single-chunk PUT also stores nothing", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const bytes = randomBytes(4000, 67);
  const wrong = sha256("not these bytes");
  await assertError(await put(reg, location, wrong, bytes), 400, "DIGEST_INVALID");
  await assertError(await reg.fetch(location), 404, "BLOB_UPLOAD_UNKNOWN");
  assert.equal(await reg.blobs.stat(sha256(bytes) as Digest), null);
  assert.equal(await reg.blobs.stat(wrong as Digest), null);
  assert.deepEqual(await uploadFiles(reg), []);
});

Deno.test("end-6: after a successful PUT the session is gone", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const bytes = randomBytes(1000, 68);
  await patchOk(reg, location, bytes, 0);
  await putOk(reg, "app", location, sha256(bytes));
  await assertError(await reg.fetch(location), 404, "BLOB_UPLOAD_UNKNOWN");
  await assertError(await patch(reg, location, bytes, 1000), 404, "BLOB_UPLOAD_UNKNOWN");
  await assertError(await put(reg, location, sha256(bytes)), 404, "BLOB_UPLOAD_UNKNOWN");
  assert.deepEqual(await uploadFiles(reg), []);
  assert.deepEqual(await reg.meta.countUploads("app"), { repo: 0, total: 0 });
});

Deno.test("end-6: PUT to an unknown session answers 404 BLOB_UPLOAD_UNKNOWN", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(100, 69);
  await assertError(
    await put(reg, `/v2/app/blobs/uploads/${crypto.randomUUID()}`, sha256(bytes), bytes),
    404,
    "BLOB_UPLOAD_UNKNOWN",
  );
  assert.equal(await reg.blobs.stat(sha256(bytes) as Digest), null);
});

Deno.test("end-6: a sha512 upload in chunks works end to end", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(700_000, 70);
  const digest = sha512(bytes);
  const location = await startUpload(reg, "app", "?digest-algorithm=sha512");
  await patchOk(reg, location, bytes.slice(0, 300_000), 0);
  await patchOk(reg, location, bytes.slice(300_000, 600_000));
  await putOk(reg, "app", location, digest, bytes.slice(600_000));
  await assertBlob(reg, "app", digest, bytes);
  // A session opened without digest-algorithm may still close with a sha512 digest.
  const other = randomBytes(5000, 71);
  const plain = await startUpload(reg, "app");
  await patchOk(reg, plain, other.slice(0, 2000), 0);
  await patchOk(reg, plain, other.slice(2000), 2000);
  await putOk(reg, "app", plain, sha512(other));
  await assertBlob(reg, "app", sha512(other), other);
});

Deno.test("A5: the empty blob and the 2-byte empty config {} complete through a session", async () => {
  await using reg = await startRegistry();
  const empty = await startUpload(reg, "app");
  await putOk(reg, "app", empty, EMPTY);
  await assertBlob(reg, "app", EMPTY, new Uint8Array(0));

  const config = new TextEncoder().encode("{}");
  const chunked = await startUpload(reg, "app");
  const headers = await patchOk(reg, chunked, config, 0);
  assert.equal(headers.get("Range"), "0-1");
  await putOk(reg, "app", chunked, EMPTY_CONFIG);
  await assertBlob(reg, "app", EMPTY_CONFIG, config);

  // Also in a single POST, in another repository.
  await pushBlob(reg, "other", "{}");
  await assertBlob(reg, "other", EMPTY_CONFIG, config);
  assert.deepEqual(await uploadFiles(reg), []);
});

// ---- end-13: upload status -----------------------------------------------

Deno.test("end-13: GET on an active session answers 204 with Range, Location and Docker-Upload-UUID", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "library/app");
  const uuid = UUID_REGEXP.exec(location)![0];
  let res = await reg.fetch(location);
  await res.body?.cancel();
  assert.equal(res.status, 204);
  assert.equal(res.headers.get("Range"), "0-0");
  assert.equal(res.headers.get("Location"), location);
  assert.equal(res.headers.get("Docker-Upload-UUID"), uuid);
  await patchOk(reg, location, randomBytes(777, 81), 0);
  res = await reg.fetch(location);
  await res.body?.cancel();
  assert.equal(res.status, 204);
  assert.equal(res.headers.get("Range"), "0-776");
  assert.equal(res.headers.get("Location"), location);
});

Deno.test("end-13: the status of an unknown session answers 404 BLOB_UPLOAD_UNKNOWN", async () => {
  await using reg = await startRegistry();
  await startUpload(reg, "app");
  for (const id of [crypto.randomUUID(), "nonsense", "..%2F..%2Fetc"]) {
    await assertError(
      await reg.fetch(`/v2/app/blobs/uploads/${id}`),
      404,
      "BLOB_UPLOAD_UNKNOWN",
    );
  }
});

Deno.test("end-13: a session of repository A addressed through repository B answers 404", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "team/a");
  await startUpload(reg, "team/b");
  const bytes = randomBytes(500, 82);
  await patchOk(reg, location, bytes.slice(0, 200), 0);
  const viaB = location.replace("/v2/team/a/", "/v2/team/b/");
  assert.notEqual(viaB, location);
  await assertError(await reg.fetch(viaB), 404, "BLOB_UPLOAD_UNKNOWN");
  await assertError(await patch(reg, viaB, bytes.slice(200), 200), 404, "BLOB_UPLOAD_UNKNOWN");
  await assertError(await put(reg, viaB, sha256(bytes)), 404, "BLOB_UPLOAD_UNKNOWN");
  await assertError(await reg.fetch(viaB, { method: "DELETE" }), 404, "BLOB_UPLOAD_UNKNOWN");
  // The session in A is untouched and still completes there.
  assert.equal(await statusRange(reg, location), "0-199");
  await patchOk(reg, location, bytes.slice(200), 200);
  await putOk(reg, "team/a", location, sha256(bytes));
  await assertError(await reg.fetch(`/v2/team/b/blobs/${sha256(bytes)}`), 404, "NAME_UNKNOWN");
});

// ---- end-14: cancel ------------------------------------------------------

Deno.test("end-14: DELETE of a session answers 204; its status then answers 404 and its files are gone", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const bytes = randomBytes(3000, 91);
  await patchOk(reg, location, bytes, 0);
  assert.notDeepEqual(await uploadFiles(reg), []);
  const res = await reg.fetch(location, { method: "DELETE" });
  await res.body?.cancel();
  assert.equal(res.status, 204);
  await assertError(await reg.fetch(location), 404, "BLOB_UPLOAD_UNKNOWN");
  await assertError(await put(reg, location, sha256(bytes)), 404, "BLOB_UPLOAD_UNKNOWN");
  assert.equal(await reg.blobs.stat(sha256(bytes) as Digest), null);
  assert.deepEqual(await uploadFiles(reg), []);
  assert.deepEqual(await reg.meta.countUploads("app"), { repo: 0, total: 0 });
});

Deno.test("end-14: DELETE of an unknown or already cancelled session answers 404 BLOB_UPLOAD_UNKNOWN", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const first = await reg.fetch(location, { method: "DELETE" });
  await first.body?.cancel();
  assert.equal(first.status, 204);
  await assertError(await reg.fetch(location, { method: "DELETE" }), 404, "BLOB_UPLOAD_UNKNOWN");
  await assertError(
    await reg.fetch(`/v2/app/blobs/uploads/${crypto.randomUUID()}`, { method: "DELETE" }),
    404,
    "BLOB_UPLOAD_UNKNOWN",
  );
});

Deno.test("end-14: a cancel racing a PATCH always cancels (204), the PATCH gets 202 or 404, no files remain", async () => {
  await using reg = await startRegistry({ maxUploadsPerRepo: 1000, maxUploads: 1000 });
  // The window is narrow (a part file created while the session's directory is
  // being removed), so run many pairs, ten at a time.
  const outcomes: Record<string, number> = {};
  await Promise.all(Array.from({ length: 10 }, async (_, worker) => {
    for (let i = 0; i < 20; i++) {
      const location = await startUpload(reg, "app");
      const [patched, cancelled] = await Promise.all([
        patch(reg, location, randomBytes(10_000, worker * 100 + i + 1)),
        reg.fetch(location, { method: "DELETE" }),
      ]);
      const detail = `${await patched.text()} / ${await cancelled.text()}`;
      const key = `${patched.status}/${cancelled.status}`;
      outcomes[key] = (outcomes[key] ?? 0) + 1;
      assert.equal(cancelled.status, 204, `cancel: ${key} ${detail}`);
      assert.ok([202, 404].includes(patched.status), `PATCH: ${key} ${detail}`);
      await assertError(await reg.fetch(location), 404, "BLOB_UPLOAD_UNKNOWN");
    }
  }));
  const left = [...Deno.readDirSync(join(reg.dataDir, "uploads"))].map((e) => e.name);
  assert.deepEqual(left, [], `upload directories left (${JSON.stringify(outcomes)})`);
  assert.deepEqual(await reg.meta.countUploads("app"), { repo: 0, total: 0 });
});

// ---- end-11: mount -------------------------------------------------------

Deno.test("end-11: mount with from answers 201 with Location and Docker-Content-Digest; the blob is readable in the target", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(2000, 101);
  const digest = await pushBlob(reg, "source/repo", bytes);
  const res = await reg.fetch(
    `/v2/target/repo/blobs/uploads/?mount=${digest}&from=source/repo`,
    { method: "POST", headers: { "Content-Length": "0" } },
  );
  await res.body?.cancel();
  assert.equal(res.status, 201);
  assert.equal(res.headers.get("Location"), `/v2/target/repo/blobs/${digest}`);
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
  await assertBlob(reg, "target/repo", digest, bytes);
  assert.deepEqual(await reg.meta.countUploads("target/repo"), { repo: 0, total: 0 });
});

Deno.test("end-11: mount with a from that lacks the blob answers 202 and a usable session", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(2000, 102);
  // Another repository has it, but not the one named in from.
  const digest = await pushBlob(reg, "elsewhere", bytes);
  await pushBlob(reg, "source", "not the blob");
  const res = await reg.fetch(`/v2/target/blobs/uploads/?mount=${digest}&from=source`, {
    method: "POST",
  });
  await res.body?.cancel();
  assert.equal(res.status, 202);
  const location = res.headers.get("Location") ?? "";
  assert.match(location, UUID_REGEXP);
  assert.equal(res.headers.get("Docker-Upload-UUID"), UUID_REGEXP.exec(location)![0]);
  await assertError(await reg.fetch(`/v2/target/blobs/${digest}`), 404, "NAME_UNKNOWN");
  await putOk(reg, "target", location, digest, bytes);
  await assertBlob(reg, "target", digest, bytes);
});

Deno.test("end-11: mount with from a repository that does not exist answers 202", async () => {
  await using reg = await startRegistry();
  const digest = await pushBlob(reg, "elsewhere", randomBytes(100, 103));
  const location = await startUpload(reg, "target", `?mount=${digest}&from=nowhere`);
  assert.match(location, UUID_REGEXP);
});

Deno.test("end-11: mount without from answers 201 when some repository has the blob", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(1500, 104);
  const digest = await pushBlob(reg, "somewhere", bytes);
  const res = await reg.fetch(`/v2/target/blobs/uploads/?mount=${digest}`, { method: "POST" });
  await res.body?.cancel();
  assert.equal(res.status, 201);
  assert.equal(res.headers.get("Location"), `/v2/target/blobs/${digest}`);
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
  await assertBlob(reg, "target", digest, bytes);
});

Deno.test("end-11: with autoMount off, mount without from answers 202 and mounts nothing", async () => {
  await using reg = await startRegistry({ autoMount: false });
  const digest = await pushBlob(reg, "somewhere", randomBytes(1500, 105));
  await pushBlob(reg, "target", "keeps target alive");
  const location = await startUpload(reg, "target", `?mount=${digest}`);
  assert.match(location, UUID_REGEXP);
  await assertError(await reg.fetch(`/v2/target/blobs/${digest}`), 404, "BLOB_UNKNOWN");
});

Deno.test("end-11: mount of a nonexistent digest without from answers 202 (conformance)", async () => {
  await using reg = await startRegistry();
  const digest = sha256("exists nowhere");
  const res = await reg.fetch(`/v2/app/blobs/uploads/?mount=${digest}`, { method: "POST" });
  await res.body?.cancel();
  assert.equal(res.status, 202);
  assert.match(res.headers.get("Location") ?? "", UUID_REGEXP);
  assert.equal(res.headers.get("Range"), "0-0");
});

Deno.test("end-11: mount with a malformed digest or from answers 400 DIGEST_INVALID or NAME_INVALID", async () => {
  await using reg = await startRegistry();
  await pushBlob(reg, "source", "x");
  await assertError(
    await reg.fetch(`/v2/target/blobs/uploads/?mount=sha256:short&from=source`, {
      method: "POST",
    }),
    400,
    "DIGEST_INVALID",
  );
  const digest = await pushBlob(reg, "source", "y");
  await assertError(
    await reg.fetch(`/v2/target/blobs/uploads/?mount=${digest}&from=Not/Valid!`, {
      method: "POST",
    }),
    400,
    "NAME_INVALID",
  );
  assert.deepEqual(await reg.meta.countUploads("target"), { repo: 0, total: 0 });
  assert.equal(await reg.meta.repoExists("target"), false);
});

// ---- A5: session caps ----------------------------------------------------

Deno.test("A5: open sessions are capped per repository: 429 TOOMANYREQUESTS with Retry-After; a cancel frees a slot", async () => {
  await using reg = await startRegistry({ maxUploadsPerRepo: 2 });
  const first = await startUpload(reg, "app");
  const second = await startUpload(reg, "app");
  const over = await reg.fetch("/v2/app/blobs/uploads/", { method: "POST" });
  assert.ok(over.headers.get("Retry-After"), "429 without Retry-After");
  await assertError(over, 429, "TOOMANYREQUESTS");
  // Other repositories have their own allowance.
  await startUpload(reg, "other");
  // Cancelling one frees a slot.
  const cancel = await reg.fetch(first, { method: "DELETE" });
  await cancel.body?.cancel();
  assert.equal(cancel.status, 204);
  await startUpload(reg, "app");
  // So does finishing one.
  await assertError(
    await reg.fetch("/v2/app/blobs/uploads/", { method: "POST" }),
    429,
    "TOOMANYREQUESTS",
  );
  await putOk(reg, "app", second, sha256("done"), new TextEncoder().encode("done"));
  await startUpload(reg, "app");
});

Deno.test("A5: open sessions are capped in total across repositories", async () => {
  await using reg = await startRegistry({ maxUploads: 2 });
  await startUpload(reg, "a");
  const b = await startUpload(reg, "b");
  const over = await reg.fetch("/v2/c/blobs/uploads/", { method: "POST" });
  assert.ok(over.headers.get("Retry-After"), "429 without Retry-After");
  await assertError(over, 429, "TOOMANYREQUESTS");
  const cancel = await reg.fetch(b, { method: "DELETE" });
  await cancel.body?.cancel();
  assert.equal(cancel.status, 204);
  await startUpload(reg, "c");
});

/** Reads one HTTP/1.1 response (status and Content-Length body) from a raw connection. */
async function readResponse(conn: Deno.Conn, pending: Uint8Array[]): Promise<number> {
  const decoder = new TextDecoder();
  let data = pending.splice(0).reduce((all, c) => all + decoder.decode(c), "");
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    const end = data.indexOf("\r\n\r\n");
    if (end !== -1) {
      const head = data.slice(0, end);
      const length = Number(/content-length: *([0-9]+)/i.exec(head)?.[1] ?? 0);
      while (data.length < end + 4 + length) {
        const n = await conn.read(buffer);
        if (n === null) throw new Error("connection closed mid-response");
        data += decoder.decode(buffer.subarray(0, n));
      }
      const rest = data.slice(end + 4 + length);
      if (rest) pending.push(new TextEncoder().encode(rest));
      return Number(head.split(" ")[1]);
    }
    const n = await conn.read(buffer);
    if (n === null) throw new Error("connection closed before a response");
    data += decoder.decode(buffer.subarray(0, n));
  }
}

Deno.test("a large chunk refused before it is read (unknown session, bad Content-Range) is still drained: the connection serves on", async () => {
  await using reg = await startRegistry();
  const location = await startUpload(reg, "app");
  const big = new Uint8Array(16 * 1024 * 1024);
  const cases: [string, string, string, number][] = [
    ["PATCH", `/v2/app/blobs/uploads/${crypto.randomUUID()}`, "", 404],
    ["PATCH", `/v2/other/${location.slice("/v2/app/".length)}`, "", 404],
    ["PATCH", location, "Content-Range: nonsense\r\n", 400],
    ["PUT", `${location}?digest=${EMPTY}`, "Content-Range: 5-1\r\n", 400],
  ];
  // One connection for every request: a body the server stopped reading would block the next.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(reg.url).port) });
  const timer = setTimeout(() => conn.close(), 20_000);
  try {
    const pending: Uint8Array[] = [];
    for (const [method, path, extra, status] of cases) {
      const head =
        `${method} ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n` +
        `${extra}Content-Length: ${big.length}\r\n\r\n`;
      const sending = (async () => {
        await conn.write(new TextEncoder().encode(head));
        for (let sent = 0; sent < big.length;) sent += await conn.write(big.subarray(sent));
      })();
      assert.equal(await readResponse(conn, pending), status, `${method} ${path}`);
      await sending;
    }
    await conn.write(new TextEncoder().encode("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert.equal(await readResponse(conn, pending), 200);
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
});
