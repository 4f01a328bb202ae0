/**
 * end-1 and the health endpoints (checklist A1, A4 "GET /v2/", A11).
 *
 * @module
 */
import assert from "node:assert/strict";
import { assertError, runMain, startRegistry } from "./_registry.ts";

Deno.test("end-1: GET /v2/ answers 200 with Docker-Distribution-API-Version", async () => {
  await using reg = await startRegistry();
  const res = await reg.fetch("/v2/");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("Docker-Distribution-API-Version"), "registry/2.0");
  assert.deepEqual(await res.json(), {});
});

Deno.test("end-1: GET /v2 without the slash also answers 200", async () => {
  await using reg = await startRegistry();
  const res = await reg.fetch("/v2");
  await res.body?.cancel();
  assert.equal(res.status, 200);
});

Deno.test("healthz and readyz answer 200", async () => {
  await using reg = await startRegistry();
  for (const path of ["/healthz", "/readyz"]) {
    const res = await reg.fetch(path);
    await res.body?.cancel();
    assert.equal(res.status, 200, path);
  }
});

Deno.test("A11: an unknown path answers a JSON 404, a wrong method a JSON 405 with Allow", async () => {
  await using reg = await startRegistry();
  await assertError(await reg.fetch("/v2/foo/nothing-here"), 404, "UNSUPPORTED");
  await assertError(await reg.fetch("/v2/_oci/ext/discover"), 404, "EXTENSION_UNKNOWN");
  await assertError(await reg.fetch("/v2/foo/_oci/x"), 404, "EXTENSION_UNKNOWN");
  const res = await reg.fetch("/v2/foo/tags/list", { method: "POST" });
  assert.equal(res.headers.get("Allow"), "GET");
  await assertError(res, 405, "UNSUPPORTED");
});

Deno.test("A11: a Host header that is not a host gets 400, never a 500 or another path", async () => {
  await using reg = await startRegistry();
  const { port } = new URL(reg.url);
  for (const host of ["x:99999", "a b", "[::zz", "%", "x/v2/r"]) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
    await conn.write(
      new TextEncoder().encode(`GET /v2/ HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
    );
    const buffer = new Uint8Array(4096);
    let text = "";
    for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    conn.close();
    const status = Number(text.split(" ")[1]);
    assert.ok(status === 400, `Host ${host}: ${text.split("\r\n")[0]}`);
  }
  const ok = await reg.fetch("/v2/");
  await ok.body?.cancel();
  assert.equal(ok.status, 200);
});

Deno.test("main.ts serve: a data directory that cannot be used stops start-up with one clear line", async () => {
  const file = await Deno.makeTempFile();
  try {
    const out = await runMain(["serve", "--data", file]);
    const stderr = out.stderr;
    assert.equal(out.code, 2, stderr);
    assert.match(stderr, /^berth: Cannot open the data directory ".*"/);
    assert.equal(stderr.trim().split("\n").length, 1, stderr);
  } finally {
    await Deno.remove(file);
  }
});
