/**
 * The S3-compatible blob and upload store (`--blobs s3://BUCKET[/PREFIX]`).
 *
 * ```
 * <prefix>blobs/<algorithm>/<hex>        verified blob bytes, immutable
 * <prefix>uploads/<uploadId>/p-<random>  one object per acknowledged chunk of a session
 * ```
 *
 * Nothing unverified becomes visible under a digest key, and nothing can
 * shadow a good object: bytes bound for `blobs/…` go there only through a
 * multipart upload that is completed *after* the digest matched (or, for a
 * body of one part, a PutObject made after it matched). A mismatch aborts
 * the upload, which S3 never shows; a good object already under that key
 * stays as it was. Completing over an existing object writes the same bytes.
 *
 * Each chunk of a session is its own object under a random name, so two
 * racing PATCHes never write to the same place; their part numbers in S3
 * are the finisher's own (a new multipart upload per `finish`). Finishing
 * reads the parts once to hash them while S3 copies every part of at least
 * 5 MiB server-side (UploadPartCopy); smaller chunks are gathered into
 * 8 MiB parts on the way. A session of one part already hashed to the
 * digest is copied server-side without reading it.
 *
 * Multipart uploads a crash left behind show as the session's (under
 * `uploads/`) or as leftovers of {@linkcode S3BlobStore.debris} (under
 * `blobs/`), so the collector aborts them once they are old.
 *
 * @module
 */
import { PartHashes } from "../part_hashes.ts";
import { createHash, type Hash } from "node:crypto";
import {
  type Algorithm,
  type Digest,
  digestAlgorithm,
  digestHex,
  makeDigest,
} from "../../oci/digest.ts";
import type { ByteRange } from "../../oci/range.ts";
import {
  type BlobInfo,
  type BlobRead,
  type Debris,
  type FinishResult,
  type Storage,
  UPLOAD_ID_REGEXP,
  type WrittenPart,
} from "../blob_store.ts";
import { TooLargeError } from "../streams.ts";
import { S3Client, type S3ClientOptions, S3Error } from "./client.ts";
import { MIN_PART_BYTES, ObjectWriter } from "./object_writer.ts";

const PART_NAME_REGEXP = /^p-[a-f0-9]{16}$/;
const HEX_REGEXP: Record<string, RegExp> = { sha256: /^[a-f0-9]{64}$/, sha512: /^[a-f0-9]{128}$/ };
/** Largest object one CopyObject or UploadPartCopy may copy. */
const MAX_COPY_BYTES = 5 * 1024 ** 3;
/** Range copied by each UploadPartCopy of an object too large for one. */
const COPY_RANGE_BYTES = 1024 ** 3;

function randomHex(bytes = 8): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

function emptyDigest(algorithm: Algorithm): Digest {
  return makeDigest(algorithm, createHash(algorithm).digest("hex"));
}

/** Blob and upload storage in an S3 bucket. */
export class S3BlobStore implements Storage {
  readonly client: S3Client;
  readonly prefix: string;
  readonly #redirectSeconds: number;

  private constructor(client: S3Client, prefix: string, redirectSeconds: number) {
    this.client = client;
    this.prefix = prefix;
    this.#redirectSeconds = redirectSeconds;
    if (redirectSeconds > 0) {
      this.presign = (digest) => this.client.presign(this.blobKey(digest), this.#redirectSeconds);
    }
  }

  /**
   * Opens the store, checking that the bucket is there and the credentials
   * work (an Error that says which, otherwise). `redirectMs` > 0 makes
   * {@linkcode presign} hand out URLs valid that long.
   */
  static async open(
    options: S3ClientOptions & { prefix: string; redirectMs?: number },
  ): Promise<S3BlobStore> {
    const client = new S3Client(options);
    await client.check(options.prefix);
    return new S3BlobStore(client, options.prefix, Math.ceil((options.redirectMs ?? 0) / 1000));
  }

  get location(): string {
    return `s3://${this.client.bucket}/${this.prefix}`;
  }

  /** Defined when redirects are on: a short-lived URL for GETting the blob's bytes. */
  presign?: (digest: Digest) => Promise<string>;

  /** Chunks this large are copied server-side when a session is finished. */
  readonly minChunkBytes = MIN_PART_BYTES;

  close(): Promise<void> {
    return Promise.resolve();
  }

  /** The key of a blob. */
  blobKey(digest: Digest): string {
    return `${this.prefix}blobs/${digestAlgorithm(digest)}/${digestHex(digest)}`;
  }

  #uploadPrefix(uploadId: string): string {
    if (!UPLOAD_ID_REGEXP.test(uploadId)) throw new Error(`Unsafe upload id "${uploadId}"`);
    return `${this.prefix}uploads/${uploadId}/`;
  }

  #partKey(uploadId: string, file: string): string {
    if (!PART_NAME_REGEXP.test(file)) throw new Error(`Unsafe part name "${file}"`);
    return this.#uploadPrefix(uploadId) + file;
  }

  async stat(digest: Digest): Promise<BlobInfo | null> {
    const info = await this.client.head(this.blobKey(digest));
    return info && { size: info.size, modifiedAt: info.modifiedAt };
  }

  async open(digest: Digest, range?: ByteRange): Promise<BlobRead | null> {
    return await this.client.get(this.blobKey(digest), range);
  }

  async putBytes(digest: Digest, bytes: Uint8Array): Promise<void> {
    if (await this.stat(digest)) return;
    await this.client.put(this.blobKey(digest), bytes);
  }

  async delete(digest: Digest): Promise<boolean> {
    const key = this.blobKey(digest);
    if (!(await this.client.head(key))) return false;
    await this.client.delete(key);
    return true;
  }

  async *list(): AsyncIterable<Digest> {
    for (const algorithm of ["sha256", "sha512"] as const) {
      const base = `${this.prefix}blobs/${algorithm}/`;
      for await (const object of this.client.list(base)) {
        const hex = object.key.slice(base.length);
        if (HEX_REGEXP[algorithm]!.test(hex)) yield makeDigest(algorithm, hex);
      }
    }
  }

  /**
   * Stores a whole body as blob `digest`, verified while it streams, in
   * one PutObject or a multipart upload completed only if it matched.
   */
  async put(digest: Digest, body: ReadableStream<Uint8Array> | null): Promise<FinishResult> {
    return await this.#writeVerified(digest, (writer) => pump(body, writer));
  }

  async writePart(
    uploadId: string,
    body: ReadableStream<Uint8Array> | null,
    options: { algorithm: Algorithm; alsoHash?: Algorithm; limit?: number },
  ): Promise<WrittenPart> {
    const file = `p-${randomHex()}`;
    const hashes = new PartHashes(options);
    const writer = new ObjectWriter(this.client, this.#partKey(uploadId, file), hashes.hashes);
    try {
      await pump(body, writer, options.limit);
      writer.seal();
      await writer.finish();
    } catch (error) {
      await writer.abort();
      throw error;
    }
    return hashes.part(file, writer.size);
  }

  async removePart(uploadId: string, file: string): Promise<void> {
    await this.client.delete(this.#partKey(uploadId, file));
  }

  async finish(uploadId: string, parts: WrittenPart[], digest: Digest): Promise<FinishResult> {
    const [only] = parts;
    if (parts.length === 1 && only && (only.digest === digest || only.expected === digest)) {
      // Hashed to `digest` while it was written, and never rewritten (its name is random).
      try {
        await this.#copyIntoPlace(this.#partKey(uploadId, only.file), only.size, digest);
      } catch (error) {
        // The session was removed under this request (a DELETE, another finisher): gone.
        if (error instanceof S3Error && error.code === "NoSuchKey") {
          throw new Deno.errors.NotFound(`Part ${only.file} of upload ${uploadId} is missing`);
        }
        throw error;
      }
      return { ok: true, size: only.size };
    }
    if (parts.length === 1 && only && digestAlgorithm(only.digest) === digestAlgorithm(digest)) {
      return { ok: false, actual: only.digest, size: only.size };
    }
    if (parts.length === 0) {
      const empty = emptyDigest(digestAlgorithm(digest));
      if (empty !== digest) return { ok: false, actual: empty, size: 0 };
    }
    return await this.#assemble(uploadId, parts, digest);
  }

  /** Copies a verified object to blob `digest` server-side. */
  async #copyIntoPlace(source: string, size: number, digest: Digest): Promise<void> {
    const key = this.blobKey(digest);
    if (size <= MAX_COPY_BYTES) return await this.client.copy(source, key);
    const writer = new ObjectWriter(this.client, key, []);
    try {
      for (let start = 0; start < size; start += COPY_RANGE_BYTES) {
        // The last range takes the tail with it rather than be a part under 5 MiB.
        const last = size - start < COPY_RANGE_BYTES + MIN_PART_BYTES;
        const end = last ? size - 1 : start + COPY_RANGE_BYTES - 1;
        await writer.copyPart(source, { start, end });
        if (last) break;
      }
      writer.size = size; // copied, not streamed: what the object holds once completed
      await writer.finish();
    } catch (error) {
      await writer.abort();
      throw error;
    }
  }

  /**
   * Hashes the parts in order while they become parts of a multipart upload
   * to the blob's key (copied server-side when large, else gathered), and
   * completes it only when the digest matched.
   */
  async #assemble(uploadId: string, parts: WrittenPart[], digest: Digest): Promise<FinishResult> {
    return await this.#writeVerified(digest, async (writer, hash) => {
      for (const part of parts) {
        const key = this.#partKey(uploadId, part.file);
        const read = await this.client.get(key);
        if (!read) {
          throw new Deno.errors.NotFound(`Part ${part.file} of upload ${uploadId} is missing`);
        }
        if (writer.empty && read.size >= MIN_PART_BYTES && read.size <= MAX_COPY_BYTES) {
          // S3 copies it while Berth reads it for the hash.
          const copied = writer.copyPart(key);
          copied.catch(() => {});
          const hashed = hashStream(read.stream, hash);
          await Promise.all([copied, hashed]);
          writer.size += read.size;
        } else {
          await pump(read.stream, writer);
        }
      }
    });
  }

  /**
   * Writes blob `digest` through `write` into a multipart upload (or one
   * PutObject) to its key, completed only when the bytes hashed to `digest`;
   * aborted otherwise, so a good object under that key is never replaced.
   */
  async #writeVerified(
    digest: Digest,
    write: (writer: ObjectWriter, hash: Hash) => Promise<void>,
  ): Promise<FinishResult> {
    const algorithm = digestAlgorithm(digest);
    const hash = createHash(algorithm);
    const writer = new ObjectWriter(this.client, this.blobKey(digest), [hash]);
    try {
      await write(writer, hash);
      writer.seal();
      const actual = makeDigest(algorithm, hash.digest("hex"));
      if (actual !== digest) {
        await writer.abort();
        return { ok: false, actual, size: writer.size };
      }
      await writer.finish();
      return { ok: true, size: writer.size };
    } catch (error) {
      await writer.abort();
      throw error;
    }
  }

  async removeUpload(uploadId: string): Promise<void> {
    const prefix = this.#uploadPrefix(uploadId);
    for await (const upload of this.client.listUploads(prefix)) {
      await this.client.abortUpload(upload.key, upload.uploadId);
    }
    for await (const object of this.client.list(prefix)) await this.client.delete(object.key);
  }

  /** Sessions with objects or multipart uploads under `uploads/`, with their newest change. */
  async *listUploads(): AsyncIterable<{ uploadId: string; modifiedAt: number }> {
    const base = `${this.prefix}uploads/`;
    const newest = new Map<string, number>();
    const note = (key: string, at: number) => {
      const id = key.slice(base.length).split("/")[0]!;
      if (!UPLOAD_ID_REGEXP.test(id) || !key.slice(base.length).includes("/")) return;
      newest.set(id, Math.max(newest.get(id) ?? 0, at));
    };
    for await (const object of this.client.list(base)) note(object.key, object.modifiedAt);
    for await (const upload of this.client.listUploads(base)) note(upload.key, upload.initiatedAt);
    for (const [uploadId, modifiedAt] of [...newest].sort()) {
      yield { uploadId, modifiedAt: Math.max(modifiedAt, 1) };
    }
  }

  async *listParts(uploadId: string): AsyncIterable<{ file: string; size: number }> {
    const prefix = this.#uploadPrefix(uploadId);
    for await (const object of this.client.list(prefix)) {
      yield { file: object.key.slice(prefix.length), size: object.size };
    }
  }

  async openPart(uploadId: string, file: string): Promise<ReadableStream<Uint8Array> | null> {
    if (!PART_NAME_REGEXP.test(file)) return null;
    return (await this.client.get(this.#partKey(uploadId, file)))?.stream ?? null;
  }

  /**
   * Misnamed objects under `blobs/` (problems), and leftovers: objects
   * under `uploads/` that belong to no session, and multipart uploads a
   * crash left outside sessions. Keys outside `blobs/` and `uploads/` are
   * not Berth's (the bucket may be shared) and are never reported.
   */
  async *debris(
    options: { leftoversOnly?: boolean } = {},
  ): AsyncIterable<Debris & { kind: "problem" | "leftover" }> {
    const client = this.client;
    const object = (key: string, size: number, modifiedAt: number) => ({
      where: key.slice(this.prefix.length),
      size,
      modifiedAt,
      remove: () => client.delete(key),
    });
    if (!options.leftoversOnly) {
      const base = `${this.prefix}blobs/`;
      for await (const found of client.list(base)) {
        const [algorithm, hex, ...rest] = found.key.slice(base.length).split("/");
        if (rest.length === 0 && hex && HEX_REGEXP[algorithm!]?.test(hex)) continue;
        yield {
          ...object(found.key, found.size, found.modifiedAt),
          what: "is not a blob object",
          kind: "problem",
        };
      }
    }
    const uploads = `${this.prefix}uploads/`;
    for await (const found of client.list(uploads)) {
      const [id, file, ...rest] = found.key.slice(uploads.length).split("/");
      if (UPLOAD_ID_REGEXP.test(id!) && file !== undefined && rest.length === 0) continue;
      yield {
        ...object(found.key, found.size, found.modifiedAt),
        what: "not an upload session",
        kind: "leftover",
      };
    }
    for await (const upload of client.listUploads(this.prefix)) {
      if (upload.key.startsWith(uploads)) continue;
      yield {
        where: `${upload.key.slice(this.prefix.length)}?uploadId=${upload.uploadId}`,
        what: "unfinished multipart upload",
        kind: "leftover",
        size: 0,
        modifiedAt: upload.initiatedAt,
        remove: () => client.abortUpload(upload.key, upload.uploadId),
      };
    }
  }
}

/** Feeds `body` into `writer`; {@linkcode TooLargeError} past `limit` bytes. */
async function pump(
  body: ReadableStream<Uint8Array> | null,
  writer: ObjectWriter,
  limit = Number.MAX_SAFE_INTEGER,
): Promise<void> {
  if (!body) return;
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      if (writer.size + value.length > limit) throw new TooLargeError(limit);
      await writer.write(value);
    }
  } catch (error) {
    await reader.cancel().catch(() => {});
    throw error;
  } finally {
    reader.releaseLock();
  }
}

/** Hashes a whole stream in slices of about 1 MiB. */
async function hashStream(
  stream: ReadableStream<Uint8Array>,
  hash: ReturnType<typeof createHash>,
): Promise<void> {
  const slice = new Uint8Array(1024 * 1024);
  let used = 0;
  for await (const chunk of stream) {
    let offset = 0;
    while (offset < chunk.length) {
      const n = Math.min(chunk.length - offset, slice.length - used);
      slice.set(chunk.subarray(offset, offset + n), used);
      used += n;
      offset += n;
      if (used === slice.length) {
        hash.update(slice);
        used = 0;
      }
    }
  }
  hash.update(slice.subarray(0, used));
}
