/**
 * The storage seams: small interfaces so that an S3-compatible store can slot
 * in later. Implementations return `null` for "not there" and never throw HTTP
 * errors.
 *
 * @module
 */
import type { Algorithm, Digest } from "../oci/digest.ts";
import type { ByteRange } from "../oci/range.ts";
import type { UploadPart as WrittenPart } from "../meta/keys.ts";

/** A readable blob: its size and a stream of the requested bytes. */
export interface BlobRead {
  size: number;
  stream: ReadableStream<Uint8Array>;
}

/** A part written to an upload session (the same shape KV records). */
export type { UploadPart as WrittenPart } from "../meta/keys.ts";

/** The result of assembling an upload into a blob. */
export type FinishResult = { ok: true; size: number } | { ok: false; actual: Digest; size: number };

/** Content-addressed, immutable blob bytes. */
export interface BlobStore {
  /** Size of a stored blob, or null. */
  stat(digest: Digest): Promise<{ size: number } | null>;
  /** Opens a stored blob, whole or a range of it, or null. */
  open(digest: Digest, range?: ByteRange): Promise<BlobRead | null>;
  /** Stores a whole body as `digest`, verified while it streams; nothing stays on mismatch. */
  put(digest: Digest, body: ReadableStream<Uint8Array> | null): Promise<FinishResult>;
  /** Stores bytes already hashed by the caller to `digest` (manifests). */
  putBytes(digest: Digest, bytes: Uint8Array): Promise<void>;
  /** Removes a blob's bytes (fsck --repair, GC). */
  delete(digest: Digest): Promise<boolean>;
  /** Every stored digest (fsck, GC). */
  list(): AsyncIterable<Digest>;
}

/** Upload sessions: each chunk is written as its own part, then assembled. */
export interface UploadStore {
  /**
   * Writes `body` as a new, durable part of session `uploadId`, hashing it
   * with `algorithm` (and with `alsoHash` when given). Throws `TooLargeError`
   * past `limit` bytes; on any failure nothing is left behind.
   */
  writePart(
    uploadId: string,
    body: ReadableStream<Uint8Array> | null,
    options: { algorithm: Algorithm; alsoHash?: Algorithm; limit?: number },
  ): Promise<WrittenPart>;
  /** Removes a part that lost the race to be committed. */
  removePart(uploadId: string, file: string): Promise<void>;
  /**
   * Verifies the concatenated parts against `digest` and moves the blob into
   * place durably. A single part already hashed to `digest` is renamed, not copied.
   */
  finish(uploadId: string, parts: WrittenPart[], digest: Digest): Promise<FinishResult>;
  /** Removes everything of a session. */
  removeUpload(uploadId: string): Promise<void>;
  /** Session ids with files on disk and their last change (the sweeper, fsck). */
  listUploads(): AsyncIterable<{ uploadId: string; modifiedAt: number }>;
}
