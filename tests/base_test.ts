/**
 * end-1 and the health endpoints (checklist A1, A4 "GET /v2/", A11).
 *
 * @module
 */
import assert from "node:assert/strict";
import { assertError, startRegistry } from "./_registry.ts";

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
