/**
 * A request acts only on the repository its raw target names: dot segments
 * (`.`, `..`, percent-encoded in any case) and backslashes are refused with
 * 400 `NAME_INVALID` in every position of every endpoint family, never
 * resolved, and nothing is written.
 *
 * @module
 */
import assert from "node:assert/strict";
import { pushBlob, pushImage, sha256, startRegistry, type TestRegistry } from "./_registry.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Sends `method target` exactly as written (no client-side normalization); status and body. */
async function rawRequest(
  reg: TestRegistry,
  method: string,
  target: string,
  body = "",
): Promise<{ status: number; body: string }> {
  const port = Number(new URL(reg.url).port);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const head = `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
      `Content-Length: ${encoder.encode(body).length}\r\nConnection: close\r\n\r\n`;
    await conn.write(encoder.encode(head + body));
    const chunks: Uint8Array[] = [];
    const buffer = new Uint8Array(16 * 1024);
    for (let n; (n = await conn.read(buffer)) !== null;) chunks.push(buffer.slice(0, n));
    const text = decoder.decode(new Uint8Array(chunks.flatMap((c) => [...c])));
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
    return { status, body: text.slice(text.indexOf("\r\n\r\n") + 4) };
  } finally {
    conn.close();
  }
}

/** The dot segments and escapes a URL parser would resolve. */
const DOTS = ["..", ".", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%2e", "%2E"];

/** Every KV entry, key and value: what a refused request must leave unchanged. */
async function snapshot(reg: TestRegistry): Promise<string[]> {
  const entries: string[] = [];
  for await (const entry of reg.kv.list({ prefix: [] })) {
    entries.push(Deno.inspect([entry.key, entry.value, entry.versionstamp], { depth: 10 }));
  }
  return entries.sort();
}

Deno.test("dot segments in every position of every endpoint family are refused with NAME_INVALID and write nothing", async () => {
  await using reg = await startRegistry();
  const image = await pushImage(reg, "h/r", "v1");
  const blob = sha256("payload");
  const d = image.digest;
  // Each family with a `*` where a dot segment is put; every slash position is tried.
  const families: [string, string][] = [
    ["GET", "/v2/h/r/tags/list"],
    ["GET", `/v2/h/r/manifests/v1`],
    ["HEAD", `/v2/h/r/manifests/${d}`],
    ["PUT", `/v2/h/r/manifests/v2`],
    ["DELETE", `/v2/h/r/manifests/${d}`],
    ["GET", `/v2/h/r/blobs/${image.layer}`],
    ["HEAD", `/v2/h/r/blobs/${image.layer}`],
    ["DELETE", `/v2/h/r/blobs/${image.layer}`],
    ["POST", `/v2/h/r/blobs/uploads/?digest=${blob}`],
    ["POST", `/v2/h/r/blobs/uploads/`],
    ["GET", `/v2/h/r/referrers/${d}`],
    ["GET", "/v2/_catalog"],
    ["GET", "/v2/"],
  ];
  const before = await snapshot(reg);
  for (const [method, path] of families) {
    const [pathname, query] = path.split("?") as [string, string | undefined];
    const segments = pathname.split("/");
    for (let at = 1; at < segments.length; at++) {
      for (const dot of DOTS) {
        const target = [...segments.slice(0, at), dot, ...segments.slice(at)].join("/") +
          (query === undefined ? "" : `?${query}`);
        const res = await rawRequest(reg, method, target, method === "PUT" ? image.body : "");
        assert.equal(res.status, 400, `${method} ${target}`);
        if (method !== "HEAD") {
          assert.equal(JSON.parse(res.body).errors[0].code, "NAME_INVALID", `${method} ${target}`);
        }
      }
    }
  }
  assert.deepEqual(await snapshot(reg), before);
});

Deno.test("the literal path tricks act on no repository: ../, %2e%2e, ./ and backslashes", async () => {
  await using reg = await startRegistry();
  const image = await pushImage(reg, "r", "v1");
  await pushImage(reg, "h/r", "v1", { seed: 2 });
  const blob = "smuggled";
  const digest = sha256(blob);
  const tricks: [string, string, string][] = [
    ["POST", `/v2/h/../q/blobs/uploads/?digest=${digest}`, blob],
    ["POST", `/v2/h/%2e%2e/r/blobs/uploads/?digest=${digest}`, blob],
    ["POST", `/v2/h/./s/blobs/uploads/?digest=${digest}`, blob],
    ["POST", `/v2/h\\..\\q/blobs/uploads/?digest=${digest}`, blob],
    ["POST", `/v2/h%5c..%5cq/blobs/uploads/?digest=${digest}`, blob],
    ["DELETE", `/v2/h/./r/manifests/${image.digest}`, ""],
    ["DELETE", `/v2/h/../r/manifests/${image.digest}`, ""],
    ["GET", `/v2/h/..%2fr/manifests/v1`, ""],
    ["GET", `/v2/h%2f..%2fr/manifests/v1`, ""],
  ];
  for (const [method, target, body] of tricks) {
    const res = await rawRequest(reg, method, target, body);
    assert.equal(res.status, 400, `${method} ${target}: ${res.body}`);
  }
  for (const name of ["q", "s", "h/s"]) {
    const res = await reg.fetch(`/v2/${name}/blobs/${digest}`, { method: "HEAD" });
    assert.equal(res.status, 404, name);
  }
  const still = await reg.fetch(`/v2/r/manifests/${image.digest}`, { method: "HEAD" });
  assert.equal(still.status, 200);
});

Deno.test("a plain path with dots inside names, tags and queries is served as before", async () => {
  await using reg = await startRegistry();
  await pushBlob(reg, "a.b/c-d", "x");
  const image = await pushImage(reg, "a.b/c.d", "v1.0..2");
  const res = await rawRequest(reg, "GET", "/v2/a.b/c.d/manifests/v1.0..2");
  assert.equal(res.status, 200);
  const tags = await rawRequest(reg, "GET", "/v2/a.b/c.d/tags/list?last=..&n=1");
  assert.equal(tags.status, 200, tags.body);
  assert.ok(image.digest);
});
