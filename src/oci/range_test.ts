/**
 * Unit tests of byte ranges: the chunk `Content-Range` of a PATCH (checklist
 * A5 "Chunked", end-5) and the `Range` of a blob GET (A4, RFC 9110 §14).
 *
 * @module
 */
import assert from "node:assert/strict";
import { OciError } from "./errors.ts";
import { parseContentRange, parseRange, uploadRangeHeader } from "./range.ts";

function catchOci(fn: () => unknown): OciError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof OciError, `expected an OciError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected an OciError");
}

Deno.test("parseContentRange() reads the spec's <start>-<end>", () => {
  assert.deepEqual(parseContentRange("0-9"), { start: 0, end: 9 });
  assert.deepEqual(parseContentRange("10-19"), { start: 10, end: 19 });
  assert.deepEqual(parseContentRange("5-5"), { start: 5, end: 5 });
  assert.deepEqual(parseContentRange(" 0-0 "), { start: 0, end: 0 });
});

Deno.test("parseContentRange() reads the RFC 9110 spelling bytes 0-9/10", () => {
  assert.deepEqual(parseContentRange("bytes 0-9/10"), { start: 0, end: 9 });
  assert.deepEqual(parseContentRange("bytes 0-9/*"), { start: 0, end: 9 });
  assert.deepEqual(parseContentRange("bytes=100-199"), { start: 100, end: 199 });
  assert.deepEqual(parseContentRange("0-9/10"), { start: 0, end: 9 });
});

Deno.test("parseContentRange() rejects a reversed range", () => {
  const error = catchOci(() => parseContentRange("10-9"));
  assert.equal(error.code, "BLOB_UPLOAD_INVALID");
  assert.equal(error.status, 400);
  assert.match(error.message, /"10-9"/);
});

Deno.test("parseContentRange() rejects numbers beyond 2^53", () => {
  // 16 digits but above Number.MAX_SAFE_INTEGER (9007199254740991).
  for (const header of ["0-9007199254740992", "9999999999999999-9999999999999999"]) {
    assert.equal(catchOci(() => parseContentRange(header)).code, "BLOB_UPLOAD_INVALID", header);
  }
  // 17 digits.
  assert.equal(
    catchOci(() => parseContentRange("0-12345678901234567")).code,
    "BLOB_UPLOAD_INVALID",
  );
  assert.deepEqual(parseContentRange("0-9007199254740991"), { start: 0, end: 9007199254740991 });
});

Deno.test("parseContentRange() rejects garbage", () => {
  for (
    const header of [
      "",
      "-",
      "0-",
      "-9",
      "a-b",
      "0 - 9",
      "0-9-10",
      "+0-9",
      "0x0-0x9",
      "1e3-2e3",
      "bytes 0-9/abc",
      "items 0-9",
      "0-9,10-19",
      "x".repeat(10_000),
    ]
  ) {
    const error = catchOci(() => parseContentRange(header));
    assert.equal(error.code, "BLOB_UPLOAD_INVALID", JSON.stringify(header));
    assert.ok(error.message.length < 250);
  }
});

Deno.test("uploadRangeHeader() gives 0-<last byte>, and 0-0 when empty", () => {
  assert.equal(uploadRangeHeader(0), "0-0");
  assert.equal(uploadRangeHeader(1), "0-0");
  assert.equal(uploadRangeHeader(10), "0-9");
  assert.equal(uploadRangeHeader(3 * 1024 ** 3), `0-${3 * 1024 ** 3 - 1}`);
});

Deno.test("parseRange() returns null without a header", () => {
  assert.equal(parseRange(null, 100), null);
});

Deno.test("parseRange() reads bytes=a-b", () => {
  assert.deepEqual(parseRange("bytes=0-9", 100), { start: 0, end: 9 });
  assert.deepEqual(parseRange("bytes=10-10", 100), { start: 10, end: 10 });
  assert.deepEqual(parseRange("bytes=0-99", 100), { start: 0, end: 99 });
});

Deno.test("parseRange() reads an open-ended bytes=a-", () => {
  assert.deepEqual(parseRange("bytes=10-", 100), { start: 10, end: 99 });
  assert.deepEqual(parseRange("bytes=99-", 100), { start: 99, end: 99 });
  assert.deepEqual(parseRange("bytes=0-", 1), { start: 0, end: 0 });
});

Deno.test("parseRange() reads a suffix bytes=-n", () => {
  assert.deepEqual(parseRange("bytes=-10", 100), { start: 90, end: 99 });
  assert.deepEqual(parseRange("bytes=-1", 100), { start: 99, end: 99 });
});

Deno.test("parseRange() serves the whole blob for a suffix larger than it", () => {
  assert.deepEqual(parseRange("bytes=-500", 100), { start: 0, end: 99 });
});

Deno.test("parseRange() clamps an end beyond the size", () => {
  assert.deepEqual(parseRange("bytes=50-1000", 100), { start: 50, end: 99 });
  assert.deepEqual(parseRange("bytes=0-9999999999999999", 100), { start: 0, end: 99 });
});

Deno.test("parseRange() throws 416 with bytes */size for a start beyond the size", () => {
  for (const header of ["bytes=100-", "bytes=100-200", "bytes=1000-"]) {
    const error = catchOci(() => parseRange(header, 100));
    assert.equal(error.code, "RANGE_INVALID", header);
    assert.equal(error.status, 416);
    assert.deepEqual(error.options.headers, { "Content-Range": "bytes */100" });
  }
});

Deno.test("parseRange() throws 416 for a zero-length suffix", () => {
  const error = catchOci(() => parseRange("bytes=-0", 100));
  assert.equal(error.status, 416);
  assert.deepEqual(error.options.headers, { "Content-Range": "bytes */100" });
});

Deno.test("parseRange() throws 416 for any range of a zero-length blob", () => {
  for (const header of ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-10"]) {
    const error = catchOci(() => parseRange(header, 0));
    assert.equal(error.code, "RANGE_INVALID", header);
    assert.deepEqual(error.options.headers, { "Content-Range": "bytes */0" });
  }
});

Deno.test("parseRange() ignores several ranges, other units and malformed headers", () => {
  for (
    const header of [
      "bytes=0-1,5-6",
      "bytes=0-1, 5-6",
      "items=0-9",
      "bytes=",
      "bytes=-",
      "bytes=a-b",
      "bytes 0-9",
      "0-9",
      "",
    ]
  ) {
    assert.equal(parseRange(header, 100), null, JSON.stringify(header));
  }
});

Deno.test("parseRange() answers 416 for a reversed range (the conformance suite's bytes=500-0)", () => {
  for (const header of ["bytes=9-0", "bytes=500-0", "bytes=500-400"]) {
    assert.throws(
      () => parseRange(header, 1000),
      (e: unknown) =>
        e instanceof OciError && e.status === 416 &&
        e.options.headers?.["Content-Range"] === "bytes */1000",
      header,
    );
  }
});

Deno.test("parseRange() takes the unit case-insensitively (RFC 9110 §14.1)", () => {
  assert.deepEqual(parseRange("Bytes=2-5", 10), { start: 2, end: 5 });
  assert.deepEqual(parseRange("BYTES=-3", 10), { start: 7, end: 9 });
});

Deno.test("parseRange() answers 416 for a start of more than 16 digits (beyond any blob)", () => {
  assert.throws(
    () => parseRange("bytes=99999999999999999999-", 1000),
    (e: unknown) => e instanceof OciError && e.status === 416,
  );
  assert.deepEqual(parseRange("bytes=0-99999999999999999999", 1000), { start: 0, end: 999 });
  assert.deepEqual(parseRange("bytes=-99999999999999999999", 1000), { start: 0, end: 999 });
});
