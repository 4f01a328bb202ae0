/**
 * The storage seam: everything about bytes goes through these interfaces
 * (handlers through the registry service layer, and the sweeper, fsck and
 * start-up too), so that another backend (S3, Deno KV) slots in by
 * implementing them. Implementations return `null` for "not there" and never
 * throw HTTP errors.
 *
 * Small interfaces, grouped by who needs them: {@linkcode BlobStore} (the
 * content-addressed bytes), {@linkcode UploadStore} (upload sessions' parts)
 * and {@linkcode StoreAudit} (what fsck and the sweeper need to find debris).
 *
 * @module
 */
import type { Algorithm, Digest } from "../oci/digest.ts";
import type { ByteRange } from "../oci/range.ts";

/**
 * What an upload session id may look like: Berth issues UUIDs; a store
 * accepts nothing else that could escape its folder or key space.
 */
export const UPLOAD_ID_REGEXP = /^[A-Za-z0-9-]{1,64}$/;

/** A readable blob: its whole size and a stream of the requested bytes. */
export interface BlobRead {
  size: number;
  stream: ReadableStream<Uint8Array>;
}

/** What a store knows of a stored blob without reading it. */
export interface BlobInfo {
  size: number;
  /** Last modification (ms since epoch). */
  modifiedAt: number;
}

/**
 * A part written to an upload session. The metadata store records it as is
 * and hands it back to {@linkcode UploadStore.finish}; only the store that
 * wrote it interprets `file`.
 */
export interface WrittenPart {
  /** The store's own name for the part. */
  file: string;
  size: number;
  /** Digest of this part alone, with the session's algorithm. */
  digest: Digest;
  /** Digest of this part with the algorithm of the digest the client gave, when it differs. */
  expected?: Digest;
  /**
   * Set only by a store that appends a session's chunks to one file (given
   * `at` under {@linkcode UploadStore.lockUpload}): the part is the bytes of
   * `file` from `through - size` to `through`, and `digest` is then the
   * running digest of the session's bytes `0..through`, not of this part alone.
   */
  through?: number;
}

/** A session's writer lock (see {@linkcode UploadStore.lockUpload}). */
export interface UploadLock {
  /** Lets the next writer in. Idempotent. */
  release(): Promise<void>;
}

/** The result of storing or assembling a blob. */
export type FinishResult = { ok: true; size: number } | { ok: false; actual: Digest; size: number };

/** Content-addressed, immutable blob bytes. */
export interface BlobStore {
  /** Where the bytes live, for start-up lines and logs (`file:/srv/berth`). */
  readonly location: string;
  /** Size and modification time of a stored blob, or null. */
  stat(digest: Digest): Promise<BlobInfo | null>;
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
  /**
   * A short-lived URL a client may GET the blob's bytes from directly (blob
   * GETs then answer 307 to it). Only stores configured to redirect have it.
   */
  presign?(digest: Digest): Promise<string>;
  /** Releases what the store holds open. */
  close(): Promise<void>;
}

/**
 * Upload sessions: each chunk is written as a part, acknowledged by the
 * metadata store, then the parts are assembled.
 *
 * The optional members are hints a store may ignore (it then keeps one file
 * per part and stays correct): {@linkcode lockUpload} with `at` lets it
 * append chunks to one session file and keep a running digest, and
 * {@linkcode acknowledgePart} tells it which part was committed.
 */
export interface UploadStore {
  /**
   * The smallest chunk this store assembles without copying it through
   * Berth (a session's `OCI-Chunk-Min-Length`); smaller ones still work.
   */
  readonly minChunkBytes?: number;
  /**
   * Writes `body` as a new, durable part of session `uploadId`, hashing it
   * with `algorithm` (and with `alsoHash` when given). Throws `TooLargeError`
   * past `limit` bytes; on any failure nothing is left behind (except, with
   * `at`, bytes past `at` that the session's next writer cuts off).
   *
   * `at` (optional) is the session's acknowledged offset, given only while
   * the caller holds {@linkcode lockUpload}'s lock, re-read under it. A store
   * may then append the part at `at`, dropping whatever a lost or killed
   * request left after it, and return a part with `through`.
   */
  writePart(
    uploadId: string,
    body: ReadableStream<Uint8Array> | null,
    options: { algorithm: Algorithm; alsoHash?: Algorithm; limit?: number; at?: number },
  ): Promise<WrittenPart>;
  /**
   * Optional. Takes session `uploadId`'s writer lock, shared by every process
   * using the store, waiting while another request holds it. The caller holds
   * it from before it re-reads the session until its commit of the part (or
   * the session's end) is done, so at most one request appends to a session
   * at a time. Only called for a session that exists.
   */
  lockUpload?(uploadId: string): Promise<UploadLock>;
  /**
   * Optional. Tells the store that `part` (just written by it) was committed,
   * so it may keep its running digest for the session's next chunk. Never
   * called for a part that lost its race.
   */
  acknowledgePart?(uploadId: string, part: WrittenPart): void;
  /** Removes a part that lost the race to be committed (or was refused). */
  removePart(uploadId: string, file: string): Promise<void>;
  /**
   * Verifies the concatenated parts against `digest` and moves the blob into
   * place durably. A single part already hashed to `digest` is not copied.
   */
  finish(uploadId: string, parts: WrittenPart[], digest: Digest): Promise<FinishResult>;
  /** Removes everything of a session. */
  removeUpload(uploadId: string): Promise<void>;
  /**
   * Sessions that have anything stored, with the newest change to anything in
   * them (the sweeper removes those no record points at once they are old).
   */
  listUploads(): AsyncIterable<{ uploadId: string; modifiedAt: number }>;
  /** The parts stored for a session, by the names {@linkcode WrittenPart.file} uses. */
  listParts(uploadId: string): AsyncIterable<{ file: string; size: number }>;
  /**
   * Reads a stored part (fsck hashes it against its record), or null. With
   * `length` (optional; fsck passes the largest `through` of the parts in the
   * file), only that many bytes from its start.
   */
  openPart(
    uploadId: string,
    file: string,
    length?: number,
  ): Promise<ReadableStream<Uint8Array> | null>;
}

/** Something in a store that is neither a blob nor part of a session. */
export interface Debris {
  /** Where it is, relative to the store (`tmp/1a2b…`, `blobs/md5`). */
  where: string;
  /** What it is (`temporary file`, `not a blob file`). */
  what: string;
  size: number;
  modifiedAt: number;
  /** Removes it. */
  remove(): Promise<void>;
}

/** What fsck and the sweeper need beyond blobs and sessions. */
export interface StoreAudit {
  /**
   * Entries that do not belong: misplaced or misnamed files in the blob area
   * (`problem`), and temporary files left by a crash (`leftover`). With
   * `leftoversOnly` (the collector), only the latter: the blob area is not walked.
   */
  debris(
    options?: { leftoversOnly?: boolean },
  ): AsyncIterable<Debris & { kind: "problem" | "leftover" }>;
}

/** Everything a backend provides. */
export type Storage = BlobStore & UploadStore & StoreAudit;
