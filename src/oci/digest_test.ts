/**
 * Unit tests of the digest grammar (checklist A3, A5 "General", A10).
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  digestAlgorithm,
  digestHex,
  HEX_LENGTH,
  isAlgorithm,
  makeDigest,
  parseAlgorithm,
  parseDigest,
} from "./digest.ts";
import { OciError } from "./errors.ts";

const HEX64 = "0123456789abcdef".repeat(4);
const HEX128 = "fedcba9876543210".repeat(8);

/** Asserts that `fn` throws DIGEST_INVALID (400) and returns the error. */
function assertDigestInvalid(fn: () => unknown): OciError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof OciError, `expected an OciError, got ${String(caught)}`);
  assert.equal(caught.code, "DIGEST_INVALID");
  assert.equal(caught.status, 400);
  return caught;
}

Deno.test("parseDigest() accepts sha256 with 64 lowercase hex", () => {
  const value = `sha256:${HEX64}`;
  assert.equal(parseDigest(value), value);
});

Deno.test("parseDigest() accepts sha512 with 128 lowercase hex", () => {
  const value = `sha512:${HEX128}`;
  assert.equal(parseDigest(value), value);
});

Deno.test("parseDigest() accepts a real node:crypto digest of each algorithm", () => {
  for (const algorithm of ["sha256", "sha512"] as const) {
    const value = `${algorithm}:${createHash(algorithm).update("hello").digest("hex")}`;
    assert.equal(parseDigest(value), value);
  }
});

Deno.test("parseDigest() rejects uppercase hex", () => {
  assertDigestInvalid(() => parseDigest(`sha256:${HEX64.toUpperCase()}`));
  assertDigestInvalid(() => parseDigest(`sha256:${"A" + HEX64.slice(1)}`));
  const error = assertDigestInvalid(() => parseDigest(`sha512:${HEX128.toUpperCase()}`));
  assert.match(error.message, /sha512 needs 128 lowercase hex characters/);
});

Deno.test("parseDigest() rejects an uppercase algorithm", () => {
  assertDigestInvalid(() => parseDigest(`SHA256:${HEX64}`));
});

Deno.test("parseDigest() rejects hex that is one character short or long", () => {
  for (
    const value of [
      `sha256:${HEX64.slice(1)}`,
      `sha256:${HEX64}0`,
      `sha512:${HEX128.slice(1)}`,
      `sha512:${HEX128}0`,
      // The other algorithm's length.
      `sha256:${HEX128}`,
      `sha512:${HEX64}`,
    ]
  ) {
    const error = assertDigestInvalid(() => parseDigest(value));
    assert.match(error.message, /needs (64|128) lowercase hex characters/, value);
  }
});

Deno.test("parseDigest() rejects non-hex characters of the right length", () => {
  assertDigestInvalid(() => parseDigest(`sha256:${"g".repeat(64)}`));
  assertDigestInvalid(() => parseDigest(`sha256:${"=".repeat(64)}`));
});

Deno.test("parseDigest() rejects a well-formed digest of an unsupported algorithm", () => {
  for (
    const value of [
      `md5:${"a".repeat(32)}`,
      `sha384:${"a".repeat(96)}`,
      `blake3:${HEX64}`,
      `sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564`,
      `multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8`,
    ]
  ) {
    const error = assertDigestInvalid(() => parseDigest(value));
    assert.match(error.message, /unsupported algorithm/, value);
    assert.match(error.message, /sha256 and sha512 are supported/, value);
  }
});

Deno.test("parseDigest() rejects strings that break the digest grammar", () => {
  for (
    const value of [
      "sha256",
      "sha256:",
      ":abc",
      `sha256::${HEX64}`,
      `sha256 :${HEX64}`,
      `sha256: ${HEX64}`,
      ` sha256:${HEX64}`,
      `sha256:${HEX64} `,
      `sha256:${HEX64}\n`,
      `sha256-:${HEX64}`,
      `+sha256:${HEX64}`,
      `sha256:${HEX64.slice(0, 10)}/${HEX64.slice(11)}`,
      "totallywrong",
      "sha256:totally+wrong",
    ]
  ) {
    const error = assertDigestInvalid(() => parseDigest(value));
    assert.match(error.message, /^Cannot parse digest/, JSON.stringify(value));
  }
});

Deno.test("parseDigest() rejects the empty string", () => {
  const error = assertDigestInvalid(() => parseDigest(""));
  assert.equal(error.message, 'Cannot parse digest ""');
});

Deno.test("parseDigest() rejects huge input quickly and shortens it in the message", () => {
  for (
    const value of [
      "sha256:" + "a".repeat(1_000_000),
      "a".repeat(1_000_000),
      "a+".repeat(500_000) + ":" + "0".repeat(64),
    ]
  ) {
    const started = performance.now();
    const error = assertDigestInvalid(() => parseDigest(value));
    assert.ok(performance.now() - started < 1000, "parsing must be linear");
    assert.ok(error.message.length < 400, `message is ${error.message.length} characters`);
    const detail = error.options.detail as { digest: string };
    assert.ok(detail.digest.length <= 201);
    assert.ok(detail.digest.endsWith("…"));
  }
});

Deno.test("parseDigest() puts the digest in the error detail", () => {
  const error = assertDigestInvalid(() => parseDigest("sha256:xyz"));
  assert.deepEqual(error.options.detail, { digest: "sha256:xyz" });
  assert.match(error.message, /"sha256:xyz"/);
});

Deno.test("parseAlgorithm() accepts sha256 and sha512", () => {
  assert.equal(parseAlgorithm("sha256"), "sha256");
  assert.equal(parseAlgorithm("sha512"), "sha512");
});

Deno.test("parseAlgorithm() rejects other algorithms and other spellings", () => {
  for (const value of ["", "md5", "sha384", "SHA256", "sha-256", " sha256", "sha256 "]) {
    const error = assertDigestInvalid(() => parseAlgorithm(value));
    assert.match(error.message, /^Unsupported digest algorithm/);
    assert.deepEqual(error.options.detail, { algorithm: value });
  }
});

Deno.test("parseAlgorithm() shortens a huge value to 64 characters", () => {
  const error = assertDigestInvalid(() => parseAlgorithm("x".repeat(10_000)));
  assert.deepEqual(error.options.detail, { algorithm: "x".repeat(64) });
});

Deno.test("isAlgorithm() is true only for sha256 and sha512", () => {
  assert.equal(isAlgorithm("sha256"), true);
  assert.equal(isAlgorithm("sha512"), true);
  assert.equal(isAlgorithm("sha384"), false);
  assert.equal(isAlgorithm("SHA256"), false);
});

Deno.test("digestHex() and digestAlgorithm() split a digest", () => {
  const a = parseDigest(`sha256:${HEX64}`);
  assert.equal(digestAlgorithm(a), "sha256");
  assert.equal(digestHex(a), HEX64);
  assert.equal(digestHex(a).length, HEX_LENGTH.sha256);
  const b = parseDigest(`sha512:${HEX128}`);
  assert.equal(digestAlgorithm(b), "sha512");
  assert.equal(digestHex(b), HEX128);
  assert.equal(digestHex(b).length, HEX_LENGTH.sha512);
});

Deno.test("makeDigest() builds a digest that parseDigest() accepts", () => {
  const hex = createHash("sha512").update("x").digest("hex");
  const digest = makeDigest("sha512", hex);
  assert.equal(digest, `sha512:${hex}`);
  assert.equal(parseDigest(digest), digest);
});
