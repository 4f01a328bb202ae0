/**
 * Unit tests of manifest references (checklist A3: a reference is a tag or a
 * digest, nothing else).
 *
 * @module
 */
import assert from "node:assert/strict";
import { OciError } from "./errors.ts";
import { parseReference } from "./reference.ts";

const HEX64 = "ab".repeat(32);

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof OciError);
    assert.equal(error.status, 400);
    return error.code;
  }
  assert.fail("expected an OciError");
}

Deno.test("parseReference() reads a tag", () => {
  assert.deepEqual(parseReference("latest"), { kind: "tag", tag: "latest" });
  assert.deepEqual(parseReference("v1.2.3-rc_1"), { kind: "tag", tag: "v1.2.3-rc_1" });
});

Deno.test("parseReference() reads a tag that looks like a referrers fallback tag", () => {
  const tag = `sha256-${HEX64}`;
  assert.deepEqual(parseReference(tag), { kind: "tag", tag });
});

Deno.test("parseReference() reads sha256 and sha512 digests", () => {
  assert.deepEqual(parseReference(`sha256:${HEX64}`), {
    kind: "digest",
    digest: `sha256:${HEX64}`,
  });
  const sha512 = `sha512:${"cd".repeat(64)}`;
  assert.deepEqual(parseReference(sha512), { kind: "digest", digest: sha512 });
});

Deno.test("parseReference() treats anything with a colon as a digest", () => {
  assert.equal(codeOf(() => parseReference("sha256:totallywrong")), "DIGEST_INVALID");
  assert.equal(codeOf(() => parseReference("latest:")), "DIGEST_INVALID");
  assert.equal(codeOf(() => parseReference(":latest")), "DIGEST_INVALID");
  assert.equal(codeOf(() => parseReference(`md5:${"a".repeat(32)}`)), "DIGEST_INVALID");
  assert.equal(codeOf(() => parseReference(`sha256:${HEX64.toUpperCase()}`)), "DIGEST_INVALID");
});

Deno.test("parseReference() rejects an invalid tag with TAG_INVALID", () => {
  assert.equal(codeOf(() => parseReference("")), "TAG_INVALID");
  assert.equal(codeOf(() => parseReference(".x")), "TAG_INVALID");
  assert.equal(codeOf(() => parseReference("-x")), "TAG_INVALID");
  assert.equal(codeOf(() => parseReference("x".repeat(129))), "TAG_INVALID");
  assert.equal(codeOf(() => parseReference("a/b")), "TAG_INVALID");
});
