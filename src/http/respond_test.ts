/**
 * Unit tests of the one place that turns errors into responses.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ContentionError } from "../meta/kv.ts";
import { errorResponse, toOciError } from "./respond.ts";

Deno.test("toOciError() answers writers that kept losing races, or KV busy past its retries, with 503 and Retry-After", async () => {
  const logged: unknown[] = [];
  const error = toOciError(new ContentionError("putManifest"), (e) => logged.push(e));
  assert.equal(error.status, 503);
  assert.equal(error.code, "UNAVAILABLE");
  assert.deepEqual(logged, []);
  assert.equal(toOciError(new TypeError("database is locked"), () => {}).status, 503);
  const res = errorResponse(error);
  assert.equal(res.headers.get("Retry-After"), "1");
  assert.equal((await res.json()).errors[0].code, "UNAVAILABLE");
});

Deno.test("toOciError() logs an unknown error once and answers 500 UNKNOWN", () => {
  const logged: unknown[] = [];
  const error = toOciError(new Error("boom"), (e) => logged.push(e));
  assert.equal(error.status, 500);
  assert.equal(logged.length, 1);
});
