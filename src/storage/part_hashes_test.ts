/**
 * Unit tests of the hashes an upload part is written through.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { PartHashes } from "./part_hashes.ts";

const bytes = new TextEncoder().encode("part bytes");
const hex = (algorithm: string) => createHash(algorithm).update(bytes).digest("hex");

Deno.test("PartHashes hashes with the session's algorithm and, when it differs, the client's", () => {
  const both = new PartHashes({ algorithm: "sha256", alsoHash: "sha512" });
  assert.equal(both.hashes.length, 2);
  for (const h of both.hashes) h.update(bytes);
  assert.deepEqual(both.part("p-1", bytes.length), {
    file: "p-1",
    size: bytes.length,
    digest: `sha256:${hex("sha256")}`,
    expected: `sha512:${hex("sha512")}`,
  });
  const one = new PartHashes({ algorithm: "sha512", alsoHash: "sha512" });
  assert.equal(one.hashes.length, 1);
  for (const h of one.hashes) h.update(bytes);
  assert.deepEqual(one.part("p-2", 10), {
    file: "p-2",
    size: 10,
    digest: `sha512:${hex("sha512")}`,
  });
});
