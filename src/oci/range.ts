/**
 * Byte ranges: the upload `Content-Range` of a PATCH (spec §Pushing a blob in
 * chunks) and the download `Range` of a blob GET (RFC 9110 §14).
 *
 * @module
 */
import { OciError } from "./errors.ts";

/** An inclusive byte range. */
export interface ByteRange {
  start: number;
  end: number;
}

const CONTENT_RANGE_REGEXP = /^(?:bytes[ =])?([0-9]{1,16})-([0-9]{1,16})(?:\/(?:[0-9]{1,16}|\*))?$/;

/**
 * Parses a chunk's `Content-Range: <start>-<end>` (inclusive). Also accepts the
 * RFC 9110 spelling `bytes <start>-<end>/<total>` some clients send.
 * Throws `BLOB_UPLOAD_INVALID` (400) when malformed.
 */
export function parseContentRange(header: string): ByteRange {
  const match = CONTENT_RANGE_REGEXP.exec(header.trim());
  const start = Number(match?.[1]);
  const end = Number(match?.[2]);
  if (!match || !Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) {
    throw new OciError(
      "BLOB_UPLOAD_INVALID",
      `Invalid Content-Range "${header.slice(0, 100)}": expected "<start>-<end>" with start <= end`,
    );
  }
  return { start, end };
}

/** `Range: 0-<last byte>` as upload responses send it (`0-0` when nothing is written yet). */
export function uploadRangeHeader(offset: number): string {
  return `0-${Math.max(offset - 1, 0)}`;
}

const RANGE_REGEXP = /^bytes=([0-9]{0,40})-([0-9]{0,40})$/i; // the unit is case-insensitive (RFC 9110 §14.1)

/**
 * Parses a `Range` request header against a blob of `size` bytes.
 * Returns `null` to serve the whole blob: no header, another unit, several
 * ranges or a malformed header (RFC 9110 lets a server ignore those).
 * Throws 416 `RANGE_INVALID` with `Content-Range: bytes *\/size` when unsatisfiable
 * or reversed (`bytes=500-0`, which the conformance suite expects to be 416).
 */
export function parseRange(header: string | null, size: number): ByteRange | null {
  if (header === null) return null;
  const match = RANGE_REGEXP.exec(header.trim());
  if (!match || (match[1] === "" && match[2] === "")) return null;
  const unsatisfiable = () =>
    new OciError("RANGE_INVALID", `Range "${header.slice(0, 100)}" cannot be satisfied`, {
      headers: { "Content-Range": `bytes */${size}` },
    });
  if (match[1] === "") {
    const suffix = Number(match[2]);
    if (suffix === 0 || size === 0) throw unsatisfiable();
    return { start: Math.max(size - suffix, 0), end: size - 1 };
  }
  const start = Number(match[1]);
  const end = match[2] === "" ? size - 1 : Math.min(Number(match[2]), size - 1);
  if (match[2] !== "" && Number(match[2]) < start) throw unsatisfiable();
  if (start >= size) throw unsatisfiable();
  return { start, end };
}
