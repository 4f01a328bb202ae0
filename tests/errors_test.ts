/**
 * Black-box tests of error responses (A10): the `{"errors":[…]}` body, its
 * codes and statuses, and HEAD errors without a body.
 *
 * @module
 */
import assert from "node:assert/strict";
import { imageManifest, pushImage, sha256, startRegistry, type TestRegistry } from "./_registry.ts";
import { concat, encoder, isComplete, parseRawResponse, type RawResponse } from "./_observed.ts";
import { OCI_MANIFEST } from "../src/oci/media_type.ts";

/** The spec's fourteen codes. */
const SPEC_CODES = new Set([
  "BLOB_UNKNOWN",
  "BLOB_UPLOAD_INVALID",
  "BLOB_UPLOAD_UNKNOWN",
  "DIGEST_INVALID",
  "MANIFEST_BLOB_UNKNOWN",
  "MANIFEST_INVALID",
  "MANIFEST_UNKNOWN",
  "NAME_INVALID",
  "NAME_UNKNOWN",
  "SIZE_INVALID",
  "UNAUTHORIZED",
  "DENIED",
  "UNSUPPORTED",
  "TOOMANYREQUESTS",
]);
/** Distribution's extras, which clients know, and the extensions spec's EXTENSION_UNKNOWN. */
const EXTRA_CODES = new Set([
  "UNKNOWN",
  "EXTENSION_UNKNOWN",
  "UNAVAILABLE",
  "RANGE_INVALID",
  "TAG_INVALID",
  "MANIFEST_UNVERIFIED",
  "PAGINATION_NUMBER_INVALID",
]);

interface Case {
  label: string;
  path: string;
  init?: RequestInit;
  status: number;
  code: string;
  /** Registry options for this case. */
  options?: Parameters<typeof startRegistry>[0];
}

/** Asserts the A10 error body shape; returns the parsed errors. */
async function assertErrorBody(res: Response, status: number, code: string) {
  const text = await res.text();
  assert.equal(res.status, status, `expected ${status} ${code}: ${text}`);
  assert.match(res.headers.get("Content-Type") ?? "", /^application\/json/);
  const body = JSON.parse(text) as { errors: unknown };
  assert.deepEqual(Object.keys(body), ["errors"], text);
  assert.ok(Array.isArray(body.errors) && body.errors.length > 0, text);
  for (const error of body.errors as Record<string, unknown>[]) {
    assert.equal(typeof error, "object");
    assert.equal(typeof error.code, "string", text);
    assert.match(error.code as string, /^[A-Z_]+$/);
    assert.ok(
      SPEC_CODES.has(error.code as string) || EXTRA_CODES.has(error.code as string),
      `unknown code ${error.code}`,
    );
    assert.equal(typeof error.message, "string", text);
    assert.ok((error.message as string).length > 0, "message is not empty");
    for (const key of Object.keys(error)) {
      assert.ok(["code", "message", "detail"].includes(key), `unexpected field ${key}`);
    }
  }
  assert.equal((body.errors as { code: string }[])[0]!.code, code, text);
  return body.errors as { code: string; message: string; detail?: unknown }[];
}

async function seed(reg: TestRegistry) {
  return await pushImage(reg, "repo", "v1");
}

function cases(image: { digest: string; config: string; layer: string }): Case[] {
  const missing = sha256("missing");
  const put = (body: string, contentType = OCI_MANIFEST): RequestInit => ({
    method: "PUT",
    headers: { "Content-Type": contentType },
    body,
  });
  const size = { digest: image.config, size: 1 };
  return [
    {
      label: "unknown manifest",
      path: "/v2/repo/manifests/nope",
      status: 404,
      code: "MANIFEST_UNKNOWN",
    },
    {
      label: "unknown repository",
      path: "/v2/nothere/manifests/v1",
      status: 404,
      code: "NAME_UNKNOWN",
    },
    { label: "unknown blob", path: `/v2/repo/blobs/${missing}`, status: 404, code: "BLOB_UNKNOWN" },
    {
      label: "unknown upload",
      path: "/v2/repo/blobs/uploads/00000000-0000-4000-8000-000000000000",
      status: 404,
      code: "BLOB_UPLOAD_UNKNOWN",
    },
    {
      label: "invalid digest",
      path: "/v2/repo/manifests/sha256:totallywrong",
      status: 400,
      code: "DIGEST_INVALID",
    },
    { label: "invalid name", path: "/v2/UPPER/manifests/v1", status: 400, code: "NAME_INVALID" },
    { label: "invalid tag", path: "/v2/repo/manifests/-x", status: 404, code: "MANIFEST_UNKNOWN" },
    {
      label: "invalid n",
      path: "/v2/repo/tags/list?n=-1",
      status: 400,
      code: "PAGINATION_NUMBER_INVALID",
    },
    {
      label: "invalid manifest",
      path: "/v2/repo/manifests/bad",
      init: put("not json"),
      status: 400,
      code: "MANIFEST_INVALID",
    },
    {
      label: "manifest with a missing blob",
      path: "/v2/repo/manifests/bad",
      init: put(imageManifest(size, [{ digest: missing, size: 7 }])),
      status: 400,
      code: "MANIFEST_BLOB_UNKNOWN",
    },
    {
      label: "manifest PUT by a wrong digest",
      path: `/v2/repo/manifests/${missing}`,
      init: put(imageManifest(size, [])),
      status: 400,
      code: "DIGEST_INVALID",
    },
    {
      label: "manifest over the size limit",
      path: "/v2/repo/manifests/big",
      init: put(imageManifest(size, [], { annotations: { pad: "x".repeat(3000) } })),
      status: 413,
      code: "SIZE_INVALID",
      options: { maxManifestBytes: 2048 },
    },
    {
      label: "method not allowed",
      path: "/v2/repo/tags/list",
      init: { method: "DELETE" },
      status: 405,
      code: "UNSUPPORTED",
    },
    {
      label: "deletes disabled",
      path: "/v2/repo/manifests/v1",
      init: { method: "DELETE" },
      status: 405,
      code: "UNSUPPORTED",
      options: { deleteEnabled: false },
    },
    { label: "unknown endpoint", path: "/v2/repo/nothing/here", status: 404, code: "UNSUPPORTED" },
    {
      label: "unknown extension",
      path: "/v2/_oci/ext/discover",
      status: 404,
      code: "EXTENSION_UNKNOWN",
    },
  ];
}

Deno.test('A10: every error body is {"errors":[{code,message,detail?}]} with an uppercase code', async (t) => {
  await using plain = await startRegistry();
  const image = await seed(plain);
  for (const c of cases(image)) {
    await t.step(`${c.label}: ${c.status} ${c.code}`, async () => {
      if (!c.options) {
        await assertErrorBody(await plain.fetch(c.path, c.init), c.status, c.code);
        return;
      }
      await using reg = await startRegistry(c.options);
      await seed(reg);
      await assertErrorBody(await reg.fetch(c.path, c.init), c.status, c.code);
    });
  }
});

Deno.test("A10: too many ?tag= values get 414 with an OCI error body", async () => {
  await using reg = await startRegistry();
  const { body, digest } = await seed(reg);
  const query = Array.from({ length: 11 }, (_, i) => `tag=t${i}`).join("&");
  const res = await reg.fetch(`/v2/repo/manifests/${digest}?${query}`, {
    method: "PUT",
    headers: { "Content-Type": OCI_MANIFEST },
    body,
  });
  await assertErrorBody(res, 414, "TAG_INVALID");
});

Deno.test("A10: the message and the detail of an error name the offending value", async () => {
  await using reg = await startRegistry();
  await seed(reg);
  const [error] = await assertErrorBody(
    await reg.fetch("/v2/repo/manifests/sha256:totallywrong"),
    400,
    "DIGEST_INVALID",
  );
  assert.match(error!.message, /sha256:totallywrong/);
  assert.match(JSON.stringify(error!.detail), /sha256:totallywrong/);
  const [unknown] = await assertErrorBody(
    await reg.fetch("/v2/repo/manifests/gone"),
    404,
    "MANIFEST_UNKNOWN",
  );
  assert.match(unknown!.message, /gone/);
  assert.match(JSON.stringify(unknown!.detail), /gone/);
});

Deno.test("A10: HEAD errors carry the status and announce no body (Content-Length 0, no Content-Type)", async (t) => {
  await using reg = await startRegistry();
  await seed(reg);
  const missing = sha256("missing");
  const heads: [string, number][] = [
    ["/v2/repo/manifests/nope", 404],
    [`/v2/repo/manifests/${missing}`, 404],
    ["/v2/nothere/manifests/v1", 404],
    ["/v2/repo/manifests/sha256:totallywrong", 400],
    ["/v2/UPPER/manifests/v1", 400],
    ["/v2/repo/manifests/-x", 404],
    [`/v2/repo/blobs/${missing}`, 404],
    [`/v2/nothere/blobs/${missing}`, 404],
    ["/v2/repo/blobs/sha256:short", 400],
  ];
  for (const [path, status] of heads) {
    await t.step(path, async () => {
      // fetch() never reads a body after HEAD, so the headers are what tell.
      const res = await reg.fetch(path, { method: "HEAD" });
      await res.body?.cancel();
      assert.equal(res.status, status);
      assert.equal(res.headers.get("Content-Length"), "0");
      assert.equal(res.headers.get("Content-Type"), null);
    });
  }
});

/** Writes all of `bytes` to `conn`. */
async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

/** Reads one whole response off `conn`; null status when the server closed first. */
async function readResponse(conn: Deno.Conn): Promise<RawResponse> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  while (!isComplete(concat(...chunks))) {
    const n = await conn.read(buffer);
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
  }
  return parseRawResponse(concat(...chunks));
}

Deno.test("A10: an error answered before the request body is read leaves the connection usable", async () => {
  await using reg = await startRegistry();
  const { body } = await seed(reg);
  const payload = encoder.encode(body + " ".repeat(100_000));
  const head = "PUT /v2/Bad/manifests/v1 HTTP/1.1\r\nHost: registry\r\n" +
    `Content-Type: ${OCI_MANIFEST}\r\nContent-Length: ${payload.length}\r\n\r\n`;
  // One connection throughout: each request goes out only after the answer
  // to the one before, so a closed connection fails the next read.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(reg.url).port) });
  try {
    for (let i = 0; i < 3; i++) {
      await writeAll(conn, concat(encoder.encode(head), payload));
      const res = await readResponse(conn);
      assert.equal(res.status, 400, `request ${i + 1} on the connection: ${res.body}`);
      assert.equal(JSON.parse(res.body).errors[0].code, "NAME_INVALID");
    }
    await writeAll(
      conn,
      encoder.encode("GET /v2/repo/manifests/v1 HTTP/1.1\r\nHost: registry\r\n\r\n"),
    );
    const ok = await readResponse(conn);
    assert.equal(ok.status, 200, "GET on the same connection afterwards");
    assert.equal(ok.body, body);
  } finally {
    conn.close();
  }
});
