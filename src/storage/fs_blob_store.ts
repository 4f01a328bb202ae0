/**
 * The filesystem blob and upload store.
 *
 * ```
 * <root>/
 *   blobs/<algorithm>/<first 2 hex>/<hex>   immutable, verified blob bytes (layers, configs, manifests)
 *   uploads/<uploadId>/p-<random>           one file per acknowledged chunk of a session
 *   uploads/<uploadId>/a-<random>           a blob being assembled from several parts
 *   tmp/<random>                            manifests being written
 * ```
 *
 * Everything is on one filesystem so that `rename` moves a verified file into
 * place atomically. Every file is fsynced before it is renamed, and the
 * directory after, so a blob that is visible is complete and durable.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import { join } from "node:path";
import {
  type Algorithm,
  type Digest,
  digestAlgorithm,
  digestHex,
  makeDigest,
} from "../oci/digest.ts";
import type { ByteRange } from "../oci/range.ts";
import type { BlobRead, BlobStore, FinishResult, UploadStore, WrittenPart } from "./blob_store.ts";
import { fileStream, READ_BUFFER_BYTES, writeBody } from "./streams.ts";

const UPLOAD_ID_REGEXP = /^[A-Za-z0-9-]{1,64}$/;
const PART_FILE_REGEXP = /^p-[a-f0-9]{16}$/;

function randomName(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function removeQuietly(path: string, recursive = false): Promise<void> {
  try {
    await Deno.remove(path, { recursive });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

async function syncDir(path: string): Promise<void> {
  const dir = await Deno.open(path, { read: true });
  try {
    await dir.sync();
  } finally {
    dir.close();
  }
}

/** Blob and upload storage in a directory. */
export class FsBlobStore implements BlobStore, UploadStore {
  readonly root: string;

  private constructor(root: string) {
    this.root = root;
  }

  /** Opens (creating if needed) a store in `root`. */
  static async open(root: string): Promise<FsBlobStore> {
    for (const dir of ["blobs/sha256", "blobs/sha512", "uploads", "tmp"]) {
      await Deno.mkdir(join(root, dir), { recursive: true });
    }
    return new FsBlobStore(root);
  }

  blobPath(digest: Digest): string {
    const hex = digestHex(digest);
    return join(this.root, "blobs", digestAlgorithm(digest), hex.slice(0, 2), hex);
  }

  #uploadDir(uploadId: string): string {
    if (!UPLOAD_ID_REGEXP.test(uploadId)) throw new Error(`Unsafe upload id "${uploadId}"`);
    return join(this.root, "uploads", uploadId);
  }

  #partPath(uploadId: string, file: string): string {
    if (!PART_FILE_REGEXP.test(file)) throw new Error(`Unsafe part name "${file}"`);
    return join(this.#uploadDir(uploadId), file);
  }

  async stat(digest: Digest): Promise<{ size: number } | null> {
    try {
      return { size: (await Deno.stat(this.blobPath(digest))).size };
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null;
      throw error;
    }
  }

  async open(digest: Digest, range?: ByteRange): Promise<BlobRead | null> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(this.blobPath(digest), { read: true });
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null;
      throw error;
    }
    try {
      const { size } = await file.stat();
      const start = range?.start ?? 0;
      const end = range ? Math.min(range.end, size - 1) : size - 1;
      return { size, stream: fileStream(file, start, Math.max(end - start + 1, 0)) };
    } catch (error) {
      file.close();
      throw error;
    }
  }

  async putBytes(digest: Digest, bytes: Uint8Array): Promise<void> {
    if (await this.stat(digest)) return;
    const temp = join(this.root, "tmp", randomName());
    try {
      const file = await Deno.open(temp, { createNew: true, write: true });
      try {
        let written = 0;
        while (written < bytes.length) written += await file.write(bytes.subarray(written));
        await file.sync();
      } finally {
        file.close();
      }
      await this.#moveIntoPlace(temp, digest);
    } finally {
      await removeQuietly(temp);
    }
  }

  async delete(digest: Digest): Promise<boolean> {
    try {
      await Deno.remove(this.blobPath(digest));
      return true;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return false;
      throw error;
    }
  }

  async *list(): AsyncIterable<Digest> {
    for (const algorithm of ["sha256", "sha512"] as const) {
      const base = join(this.root, "blobs", algorithm);
      for await (const prefix of Deno.readDir(base)) {
        if (!prefix.isDirectory) continue;
        for await (const entry of Deno.readDir(join(base, prefix.name))) {
          if (entry.isFile) yield makeDigest(algorithm, entry.name);
        }
      }
    }
  }

  async writePart(
    uploadId: string,
    body: ReadableStream<Uint8Array> | null,
    options: { algorithm: Algorithm; alsoHash?: Algorithm; limit?: number },
  ): Promise<WrittenPart> {
    const dir = this.#uploadDir(uploadId);
    await this.#makeDurableDir(dir);
    const name = `p-${randomName()}`;
    const path = join(dir, name);
    const hash = createHash(options.algorithm);
    const other = options.alsoHash && options.alsoHash !== options.algorithm
      ? createHash(options.alsoHash)
      : undefined;
    const file = await Deno.open(path, { createNew: true, write: true });
    let size = 0;
    try {
      if (body) {
        const hashes = other ? [hash, other] : [hash];
        size = await writeBody(
          body,
          file,
          options.limit === undefined ? { hashes } : { hashes, limit: options.limit },
        );
      }
      await file.sync();
    } catch (error) {
      file.close();
      await removeQuietly(path);
      throw error;
    }
    file.close();
    // The part's name must survive a crash once the chunk is acknowledged.
    await syncDir(dir);
    const part: WrittenPart = {
      file: name,
      size,
      digest: makeDigest(options.algorithm, hash.digest("hex")),
    };
    if (other) part.expected = makeDigest(options.alsoHash!, other.digest("hex"));
    return part;
  }

  /** Creates `dir` (a child of an existing directory) and makes its entry durable. */
  async #makeDurableDir(dir: string): Promise<void> {
    try {
      await Deno.mkdir(dir);
      await syncDir(join(dir, ".."));
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    }
  }

  async removePart(uploadId: string, file: string): Promise<void> {
    await removeQuietly(this.#partPath(uploadId, file));
  }

  async finish(uploadId: string, parts: WrittenPart[], digest: Digest): Promise<FinishResult> {
    const [only] = parts;
    if (parts.length === 1 && only && (only.digest === digest || only.expected === digest)) {
      // Hard-link, not rename: the part stays until the session's commit is
      // done, so a crash in between leaves a session that can still finish.
      await this.#moveIntoPlace(this.#partPath(uploadId, only.file), digest, "link");
      return { ok: true, size: only.size };
    }
    if (parts.length === 1 && only && digestAlgorithm(only.digest) === digestAlgorithm(digest)) {
      // Already hashed with this algorithm, and not to `digest`: no need to read it again.
      return { ok: false, actual: only.digest, size: only.size };
    }
    if (parts.length === 0) {
      const empty = makeDigest(
        digestAlgorithm(digest),
        createHash(digestAlgorithm(digest)).digest("hex"),
      );
      if (empty !== digest) return { ok: false, actual: empty, size: 0 };
    }
    return await this.#assemble(uploadId, parts, digest);
  }

  /** Concatenates parts into one file while hashing it, then verifies and moves it. */
  async #assemble(uploadId: string, parts: WrittenPart[], digest: Digest): Promise<FinishResult> {
    const algorithm = digestAlgorithm(digest);
    const hash = createHash(algorithm);
    const temp = join(this.#uploadDir(uploadId), `a-${randomName()}`);
    await Deno.mkdir(this.#uploadDir(uploadId), { recursive: true });
    const out = await Deno.open(temp, { createNew: true, write: true });
    let size = 0;
    try {
      const buffer = new Uint8Array(READ_BUFFER_BYTES);
      for (const part of parts) {
        using input = await Deno.open(this.#partPath(uploadId, part.file), { read: true });
        size += await copyHashing(input, out, hash, buffer);
      }
      await out.sync();
    } catch (error) {
      out.close();
      await removeQuietly(temp);
      throw error;
    }
    out.close();
    const actual = makeDigest(algorithm, hash.digest("hex"));
    if (actual !== digest) {
      await removeQuietly(temp);
      return { ok: false, actual, size };
    }
    await this.#moveIntoPlace(temp, digest);
    return { ok: true, size };
  }

  async #moveIntoPlace(
    path: string,
    digest: Digest,
    how: "rename" | "link" = "rename",
  ): Promise<void> {
    const target = this.blobPath(digest);
    const dir = join(target, "..");
    try {
      await Deno.mkdir(dir);
      await syncDir(join(dir, ".."));
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    }
    if (how === "rename") {
      await Deno.rename(path, target);
    } else {
      try {
        await Deno.link(path, target);
      } catch (error) {
        // Content-addressed: a blob already there has these very bytes.
        if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
      }
    }
    await syncDir(dir);
  }

  /**
   * Stores a whole body as blob `digest`, verified while it streams
   * (monolithic uploads). Nothing is left behind on failure or mismatch.
   */
  async put(digest: Digest, body: ReadableStream<Uint8Array> | null): Promise<FinishResult> {
    const scratch = `put-${crypto.randomUUID()}`;
    try {
      const part = await this.writePart(scratch, body, { algorithm: digestAlgorithm(digest) });
      return await this.finish(scratch, [part], digest);
    } finally {
      await this.removeUpload(scratch);
    }
  }

  async removeUpload(uploadId: string): Promise<void> {
    // A request that lost a race to end the session may still be creating a
    // part file in the directory; the recursive remove then fails with
    // ENOTEMPTY, so go round again.
    for (let attempt = 1;; attempt++) {
      try {
        return await removeQuietly(this.#uploadDir(uploadId), true);
      } catch (error) {
        if ((error as { code?: string }).code !== "ENOTEMPTY" || attempt >= 10) throw error;
      }
    }
  }

  async *listUploads(): AsyncIterable<{ uploadId: string; modifiedAt: number }> {
    const base = join(this.root, "uploads");
    for await (const entry of Deno.readDir(base)) {
      if (!entry.isDirectory || !UPLOAD_ID_REGEXP.test(entry.name)) continue;
      try {
        const info = await Deno.stat(join(base, entry.name));
        yield { uploadId: entry.name, modifiedAt: info.mtime?.getTime() ?? 0 };
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
    }
  }

  /** Temp files older than `before` (ms since epoch) in `tmp/`, removed. */
  async sweepTemp(before: number): Promise<number> {
    let removed = 0;
    const base = join(this.root, "tmp");
    for await (const entry of Deno.readDir(base)) {
      const path = join(base, entry.name);
      const info = await Deno.stat(path).catch(() => null);
      if (info && (info.mtime?.getTime() ?? 0) < before) {
        await removeQuietly(path, true);
        removed++;
      }
    }
    return removed;
  }
}

async function copyHashing(
  input: Deno.FsFile,
  out: Deno.FsFile,
  hash: Hash,
  buffer: Uint8Array,
): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await input.read(buffer);
    if (n === null) return total;
    const chunk = buffer.subarray(0, n);
    hash.update(chunk);
    let written = 0;
    while (written < n) written += await out.write(chunk.subarray(written));
    total += n;
  }
}
