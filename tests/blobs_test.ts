/**
 * Blob pull and delete, black-box: end-2 (GET/HEAD a blob, checklist A2 and
 * A4) and end-10 (DELETE a blob, A2 and A9).
 *
 * @module
 */
import assert from "node:assert/strict";
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

const EMPTY_CONFIG = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
const UNKNOWN = sha256("never pushed");

/** GETs a blob and returns its status, headers and bytes. */
async function getBlob(
  reg: TestRegistry,
  name: string,
  digest: string,
  headers: HeadersInit = {},
): Promise<{ res: Response; bytes: Uint8Array }> {
  const res = await reg.fetch(`/v2/${name}/blobs/${digest}`, { headers });
  return { res, bytes: new Uint8Array(await res.arrayBuffer()) };
}

/**
 * HEADs `path`. There is no body to check: fetch() exposes none after HEAD,
 * and Deno sends none whatever the handler returns.
 */
async function head(reg: TestRegistry, path: string): Promise<Response> {
  const res = await reg.fetch(path, { method: "HEAD" });
  await res.body?.cancel();
  return res;
}

// ---- end-2: GET and HEAD --------------------------------------------------

Deno.test("end-2: GET of a blob answers 200 with its exact bytes, type, length and digest", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(70_000, 7);
  const digest = await pushBlob(reg, "library/app", bytes);
  const { res, bytes: got } = await getBlob(reg, "library/app", digest);
  assert.equal(res.status, 200);
  assert.deepEqual(got, bytes);
  assert.equal(res.headers.get("Content-Type"), "application/octet-stream");
  assert.equal(res.headers.get("Content-Length"), String(bytes.length));
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
  assert.equal(sha256(got), digest);
});

Deno.test("end-2: HEAD of a blob answers 200 with the real Content-Length, type and digest", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(12_345, 3);
  const digest = await pushBlob(reg, "app", bytes);
  const res = await head(reg, `/v2/app/blobs/${digest}`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("Content-Length"), "12345");
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
  assert.equal(res.headers.get("Content-Type"), "application/octet-stream");
});

Deno.test("end-2: GET and HEAD of an unknown blob in a known repository answer 404 BLOB_UNKNOWN", async () => {
  await using reg = await startRegistry();
  await pushBlob(reg, "app", "something");
  await assertError(await reg.fetch(`/v2/app/blobs/${UNKNOWN}`), 404, "BLOB_UNKNOWN");
  const res = await head(reg, `/v2/app/blobs/${UNKNOWN}`);
  assert.equal(res.status, 404);
});

Deno.test("end-2: GET and HEAD of a blob in an unknown repository answer 404 NAME_UNKNOWN", async () => {
  await using reg = await startRegistry();
  await assertError(await reg.fetch(`/v2/nobody/here/blobs/${UNKNOWN}`), 404, "NAME_UNKNOWN");
  const res = await head(reg, `/v2/nobody/here/blobs/${UNKNOWN}`);
  assert.equal(res.status, 404);
});

Deno.test("A5: GET of a blob by a malformed or unsupported digest answers 400 DIGEST_INVALID", async () => {
  await using reg = await startRegistry();
  await pushBlob(reg, "app", "x");
  for (
    const bad of [
      "sha256:abc",
      "sha256:" + "A".repeat(64),
      "md5:" + "a".repeat(32),
      "sha512:" + "a".repeat(64),
      "notadigest",
    ]
  ) {
    await assertError(await reg.fetch(`/v2/app/blobs/${bad}`), 400, "DIGEST_INVALID");
  }
});

Deno.test("A4: a blob pushed to one repository is not visible in another", async () => {
  await using reg = await startRegistry();
  const digest = await pushBlob(reg, "team/a", randomBytes(500, 11));
  await pushBlob(reg, "team/b", "b's own blob");
  await assertError(await reg.fetch(`/v2/team/b/blobs/${digest}`), 404, "BLOB_UNKNOWN");
  const res = await head(reg, `/v2/team/b/blobs/${digest}`);
  assert.equal(res.status, 404);
  // A repository that does not exist at all says so.
  await assertError(await reg.fetch(`/v2/team/c/blobs/${digest}`), 404, "NAME_UNKNOWN");
  // Still there in its own repository.
  const { res: own } = await getBlob(reg, "team/a", digest);
  assert.equal(own.status, 200);
});

Deno.test("A4: the empty blob (0 bytes) and the empty config {} can be pushed and pulled", async () => {
  await using reg = await startRegistry();
  const empty = await pushBlob(reg, "app", new Uint8Array(0));
  assert.equal(empty, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const config = await pushBlob(reg, "app", "{}");
  assert.equal(config, EMPTY_CONFIG);

  const got = await getBlob(reg, "app", empty);
  assert.equal(got.res.status, 200);
  assert.equal(got.bytes.length, 0);
  assert.equal(got.res.headers.get("Content-Length"), "0");
  assert.equal(got.res.headers.get("Docker-Content-Digest"), empty);

  const gotConfig = await getBlob(reg, "app", EMPTY_CONFIG);
  assert.equal(gotConfig.res.status, 200);
  assert.equal(new TextDecoder().decode(gotConfig.bytes), "{}");
  assert.equal(gotConfig.res.headers.get("Content-Length"), "2");

  const res = await head(reg, `/v2/app/blobs/${empty}`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("Content-Length"), "0");
});

Deno.test("A4: a sha512 blob is served under its sha512 digest", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(3000, 5);
  const digest = sha512(bytes);
  const post = await reg.fetch(`/v2/app/blobs/uploads/?digest=${digest}`, {
    method: "POST",
    body: bytes,
  });
  await post.body?.cancel();
  assert.equal(post.status, 201);
  const { res, bytes: got } = await getBlob(reg, "app", digest);
  assert.equal(res.status, 200);
  assert.deepEqual(got, bytes);
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
});

// ---- A4: Range ------------------------------------------------------------

Deno.test("A4: Range bytes=a-b answers 206 with those bytes and Content-Range", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(1000, 21);
  const digest = await pushBlob(reg, "app", bytes);
  const { res, bytes: got } = await getBlob(reg, "app", digest, { Range: "bytes=100-199" });
  assert.equal(res.status, 206);
  assert.equal(res.headers.get("Content-Range"), "bytes 100-199/1000");
  assert.equal(res.headers.get("Content-Length"), "100");
  assert.deepEqual(got, bytes.subarray(100, 200));
  const one = await getBlob(reg, "app", digest, { Range: "bytes=999-999" });
  assert.equal(one.res.status, 206);
  assert.equal(one.res.headers.get("Content-Range"), "bytes 999-999/1000");
  assert.deepEqual(one.bytes, bytes.subarray(999));
});

Deno.test("A4: Range bytes=a-b past the end is cut at the last byte", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(1000, 22);
  const digest = await pushBlob(reg, "app", bytes);
  const { res, bytes: got } = await getBlob(reg, "app", digest, { Range: "bytes=990-5000" });
  assert.equal(res.status, 206);
  assert.equal(res.headers.get("Content-Range"), "bytes 990-999/1000");
  assert.deepEqual(got, bytes.subarray(990));
});

Deno.test("A4: Range bytes=a- answers 206 from a to the end", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(1000, 23);
  const digest = await pushBlob(reg, "app", bytes);
  const { res, bytes: got } = await getBlob(reg, "app", digest, { Range: "bytes=250-" });
  assert.equal(res.status, 206);
  assert.equal(res.headers.get("Content-Range"), "bytes 250-999/1000");
  assert.equal(res.headers.get("Content-Length"), "750");
  assert.deepEqual(got, bytes.subarray(250));
});

Deno.test("A4: Range bytes=-n answers 206 with the last n bytes", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(1000, 24);
  const digest = await pushBlob(reg, "app", bytes);
  const { res, bytes: got } = await getBlob(reg, "app", digest, { Range: "bytes=-10" });
  assert.equal(res.status, 206);
  assert.equal(res.headers.get("Content-Range"), "bytes 990-999/1000");
  assert.deepEqual(got, bytes.subarray(990));
  // A suffix longer than the blob is the whole blob.
  const all = await getBlob(reg, "app", digest, { Range: "bytes=-5000" });
  assert.equal(all.res.status, 206);
  assert.equal(all.res.headers.get("Content-Range"), "bytes 0-999/1000");
  assert.deepEqual(all.bytes, bytes);
});

Deno.test("A4: an unsatisfiable Range answers 416 RANGE_INVALID with Content-Range bytes */size", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(1000, 25);
  const digest = await pushBlob(reg, "app", bytes);
  for (const range of ["bytes=1000-", "bytes=5000-6000", "bytes=-0"]) {
    const res = await reg.fetch(`/v2/app/blobs/${digest}`, { headers: { Range: range } });
    assert.equal(res.headers.get("Content-Range"), "bytes */1000", range);
    await assertError(res, 416, "RANGE_INVALID");
  }
});

Deno.test("A4: several ranges in one Range header get the whole blob with 200", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(1000, 26);
  const digest = await pushBlob(reg, "app", bytes);
  const { res, bytes: got } = await getBlob(reg, "app", digest, { Range: "bytes=0-9,20-29" });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("Content-Range"), null);
  assert.deepEqual(got, bytes);
});

// ---- end-10: DELETE -------------------------------------------------------

/** DELETEs a blob and asserts 202 with an empty body. */
async function deleteBlob(reg: TestRegistry, name: string, digest: string): Promise<void> {
  const res = await reg.fetch(`/v2/${name}/blobs/${digest}`, { method: "DELETE" });
  const text = await res.text();
  assert.equal(res.status, 202, `DELETE of ${digest} in ${name}: ${text}`);
  assert.equal(text, "");
}

Deno.test("end-10: DELETE of a blob answers 202 with no body, after which GET and HEAD answer 404", async () => {
  await using reg = await startRegistry();
  const digest = await pushBlob(reg, "app", randomBytes(100, 31));
  await pushBlob(reg, "app", "keeps the repository alive");
  await deleteBlob(reg, "app", digest);
  await assertError(await reg.fetch(`/v2/app/blobs/${digest}`), 404, "BLOB_UNKNOWN");
  assert.equal((await head(reg, `/v2/app/blobs/${digest}`)).status, 404);
  assert.equal(await reg.meta.getBlobLink("app", digest as Digest), null);
});

Deno.test("end-10: deleting a blob twice answers 404 BLOB_UNKNOWN the second time", async () => {
  await using reg = await startRegistry();
  const digest = await pushBlob(reg, "app", randomBytes(100, 32));
  await pushBlob(reg, "app", "keeps the repository alive");
  await deleteBlob(reg, "app", digest);
  await assertError(
    await reg.fetch(`/v2/app/blobs/${digest}`, { method: "DELETE" }),
    404,
    "BLOB_UNKNOWN",
  );
});

Deno.test("end-10: DELETE of an unknown blob or in an unknown repository answers 404", async () => {
  await using reg = await startRegistry();
  await pushBlob(reg, "app", "x");
  await assertError(
    await reg.fetch(`/v2/app/blobs/${UNKNOWN}`, { method: "DELETE" }),
    404,
    "BLOB_UNKNOWN",
  );
  await assertError(
    await reg.fetch(`/v2/nobody/blobs/${UNKNOWN}`, { method: "DELETE" }),
    404,
    "NAME_UNKNOWN",
  );
});

Deno.test("end-10: DELETE of a blob by a malformed digest answers 400 DIGEST_INVALID", async () => {
  await using reg = await startRegistry();
  await pushBlob(reg, "app", "x");
  await assertError(
    await reg.fetch(`/v2/app/blobs/sha256:nothex`, { method: "DELETE" }),
    400,
    "DIGEST_INVALID",
  );
});

Deno.test("end-10: with deletes disabled, DELETE of a blob answers 405 UNSUPPORTED and keeps it", async () => {
  await using reg = await startRegistry({ deleteEnabled: false });
  const bytes = randomBytes(100, 33);
  const digest = await pushBlob(reg, "app", bytes);
  await assertError(
    await reg.fetch(`/v2/app/blobs/${digest}`, { method: "DELETE" }),
    405,
    "UNSUPPORTED",
  );
  const { res, bytes: got } = await getBlob(reg, "app", digest);
  assert.equal(res.status, 200);
  assert.deepEqual(got, bytes);
});

Deno.test("end-10: deleting a blob from one repository leaves it readable in another", async () => {
  await using reg = await startRegistry();
  const bytes = randomBytes(400, 34);
  const digest = await pushBlob(reg, "a", bytes);
  await pushBlob(reg, "a", "keeps a alive");
  await pushBlob(reg, "b", bytes);
  await deleteBlob(reg, "a", digest);
  await assertError(await reg.fetch(`/v2/a/blobs/${digest}`), 404, "BLOB_UNKNOWN");
  const { res: other, bytes: got } = await getBlob(reg, "b", digest);
  assert.equal(other.status, 200);
  assert.deepEqual(got, bytes);
});
