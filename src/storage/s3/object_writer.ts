/**
 * Writes a stream of bytes to one S3 key with bounded memory: bytes gather
 * in a part buffer; a body that fits in one part is one PutObject, a longer
 * one becomes a multipart upload with one part in flight while the next
 * fills (two buffers per writer, whatever the size). Hashes see every byte
 * on the way.
 *
 * Nothing becomes visible before {@linkcode ObjectWriter.finish} says so:
 * the single PutObject happens there, and a multipart upload is completed
 * there, only when `visible()` agrees (the digest matched); otherwise, and
 * on any failure, the upload is aborted and the key is untouched.
 *
 * @module
 */
import type { Hash } from "node:crypto";
import { type S3Client, S3Error } from "./client.ts";
import { TooLargeError } from "../streams.ts";

/** Largest object part S3 allows besides the last is at least this. */
export const MIN_PART_BYTES = 5 * 1024 * 1024;
/** Size of the parts Berth uploads (and of each of a writer's two buffers). */
export const PART_BYTES = 8 * 1024 * 1024;
/** Most parts one multipart upload may have. */
export const MAX_PARTS = 10_000;
/** Bytes hashed at a time (hashing 64 KiB pieces costs much more). */
const HASH_SLICE = 1024 * 1024;

/** One part of a multipart upload, as CompleteMultipartUpload wants it. */
export interface UploadedPart {
  partNumber: number;
  etag: string;
}

/** Streams bytes to `key`; see the module doc. */
export class ObjectWriter {
  readonly #client: S3Client;
  readonly #key: string;
  readonly #hashes: Hash[];
  #buffer: Uint8Array;
  #spare: Uint8Array | null = null;
  #used = 0;
  #hashed = 0;
  #uploadId: string | null = null;
  #parts: UploadedPart[] = [];
  #inFlight: Promise<void> | null = null;
  /** Bytes written so far. */
  size = 0;

  constructor(client: S3Client, key: string, hashes: Hash[]) {
    this.#client = client;
    this.#key = key;
    this.#hashes = hashes;
    this.#buffer = new Uint8Array(PART_BYTES);
  }

  /** Appends `bytes`, uploading a part whenever the buffer is full. */
  async write(bytes: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < bytes.length) {
      const n = Math.min(bytes.length - offset, this.#buffer.length - this.#used);
      this.#buffer.set(bytes.subarray(offset, offset + n), this.#used);
      this.#used += n;
      offset += n;
      this.size += n;
      while (this.#used - this.#hashed >= HASH_SLICE) {
        this.#hash(this.#buffer.subarray(this.#hashed, this.#hashed + HASH_SLICE));
        this.#hashed += HASH_SLICE;
      }
      if (this.#used === this.#buffer.length) await this.#flush();
    }
  }

  /** Server-side copies `source` (whole, at least {@linkcode MIN_PART_BYTES}) as the next part. */
  async copyPart(source: string, range?: { start: number; end: number }): Promise<void> {
    if (this.#used !== 0) throw new Error("copyPart() needs an empty buffer");
    const uploadId = await this.#upload();
    const partNumber = this.#nextPartNumber();
    const etag = await this.#client.uploadPartCopy(this.#key, uploadId, partNumber, source, range);
    this.#parts.push({ partNumber, etag });
  }

  /** Whether nothing waits in the buffer (a part may be copied next). */
  get empty(): boolean {
    return this.#used === 0;
  }

  #hash(bytes: Uint8Array): void {
    for (const hash of this.#hashes) hash.update(bytes);
  }

  #nextPartNumber(): number {
    const partNumber = this.#parts.length + 1;
    if (partNumber > MAX_PARTS) {
      // S3 allows 10,000 parts: a larger body is refused (413), never a 500.
      throw new TooLargeError(MAX_PARTS * PART_BYTES);
    }
    return partNumber;
  }

  async #upload(): Promise<string> {
    if (this.#inFlight) await this.#inFlight;
    this.#uploadId ??= await this.#client.createUpload(this.#key);
    return this.#uploadId;
  }

  async #flush(): Promise<void> {
    this.#hash(this.#buffer.subarray(this.#hashed, this.#used));
    const uploadId = await this.#upload();
    const bytes = this.#buffer.subarray(0, this.#used);
    const partNumber = this.#nextPartNumber();
    const slot = { partNumber, etag: "" };
    this.#parts.push(slot);
    this.#inFlight = this.#client.uploadPart(this.#key, uploadId, partNumber, bytes)
      .then((etag) => {
        slot.etag = etag;
      });
    this.#inFlight.catch(() => {}); // awaited before the next part and in finish()
    // The part in flight keeps its buffer until the next flush has awaited it.
    const full = this.#buffer;
    this.#buffer = this.#spare ?? new Uint8Array(PART_BYTES);
    this.#spare = full;
    this.#used = 0;
    this.#hashed = 0;
  }

  /** Hashes what is left in the buffer (call before reading the hashes). */
  seal(): void {
    this.#hash(this.#buffer.subarray(this.#hashed, this.#used));
    this.#hashed = this.#used;
  }

  /**
   * Makes the object visible: the rest as the last part (or the whole body
   * as one PutObject). Call {@linkcode seal} and check the hashes first.
   */
  async finish(): Promise<void> {
    if (this.#inFlight) await this.#inFlight;
    const rest = this.#buffer.subarray(0, this.#used);
    if (this.#uploadId === null) return await this.#client.put(this.#key, rest);
    if (rest.length > 0 || this.#parts.length === 0) {
      const partNumber = this.#nextPartNumber();
      const etag = await this.#client.uploadPart(this.#key, this.#uploadId, partNumber, rest);
      this.#parts.push({ partNumber, etag });
    }
    try {
      await this.#client.completeUpload(this.#key, this.#uploadId, this.#parts);
    } catch (error) {
      // A completion retried after its answer was lost finds the upload already completed:
      // the object is there, with this size, and it is what was written.
      const done = error instanceof S3Error && error.code === "NoSuchUpload" &&
        (await this.#client.head(this.#key))?.size === this.size;
      if (!done) throw error;
    }
    this.#uploadId = null;
  }

  /** Abandons what was uploaded; the key is left as it was. */
  async abort(): Promise<void> {
    if (this.#inFlight) await this.#inFlight.catch(() => {});
    const uploadId = this.#uploadId;
    this.#uploadId = null;
    if (uploadId) await this.#client.abortUpload(this.#key, uploadId).catch(() => {});
  }
}
