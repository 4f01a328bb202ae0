import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { TestBlob } from "./client.ts";

Deno.test("TestBlob() pieces hash to its digest and differ between blobs", () => {
  const a = new TestBlob(3 * 1024 * 1024);
  const b = new TestBlob(3 * 1024 * 1024);
  const hash = createHash("sha256");
  let length = 0;
  for (const piece of a.pieces(0, a.size)) {
    hash.update(piece);
    length += piece.length;
  }
  assert.equal(length, a.size);
  assert.equal(`sha256:${hash.digest("hex")}`, a.digest);
  assert.notEqual(a.digest, b.digest);
});

Deno.test("TestBlob() pieces of a range cover only that range", () => {
  const blob = new TestBlob(4 * 1024 * 1024);
  const whole = new Uint8Array(blob.size);
  let at = 0;
  for (const piece of blob.pieces(0, blob.size)) {
    whole.set(piece, (at += piece.length) - piece.length);
  }
  const range = new Uint8Array(2 * 1024 * 1024);
  at = 0;
  for (const piece of blob.pieces(2 * 1024 * 1024, range.length)) {
    range.set(piece, at);
    at += piece.length;
  }
  assert.deepEqual(range, whole.subarray(2 * 1024 * 1024));
});
