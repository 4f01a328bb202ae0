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
import {
  type BlobInfo,
  type BlobRead,
  type Debris,
  type FinishResult,
  type Storage,
  UPLOAD_ID_REGEXP,
  type WrittenPart,
} from "./blob_store.ts";
import { fileStream, READ_BUFFER_BYTES, writeBody } from "./streams.ts";

/** A file of a session directory: parts (`p-…`), assemblies (`a-…`), or debris to remove. */
const SESSION_FILE_REGEXP = /^(?!\.\.?$)[A-Za-z0-9._-]{1,100}$/;
const ALGORITHMS = ["sha256", "sha512"] as const;
const HEX_REGEXP = { sha256: /^[a-f0-9]{64}$/, sha512: /^[a-f0-9]{128}$/ } as const;

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

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.lstat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

async function readDirSorted(path: string): Promise<Deno.DirEntry[]> {
  const entries: Deno.DirEntry[] = [];
  try {
    for await (const entry of Deno.readDir(path)) entries.push(entry);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Size of a file, or of the files directly inside a directory. */
async function sizeOf(path: string, info: Deno.FileInfo): Promise<number> {
  if (!info.isDirectory) return info.size;
  let size = 0;
  for (const entry of await readDirSorted(path)) {
    size += (await statOrNull(join(path, entry.name)))?.size ?? 0;
  }
  return size;
}

/** Newest modification of a directory or anything directly inside it. */
async function newestMtime(dir: string): Promise<number> {
  let newest = (await statOrNull(dir))?.mtime?.getTime() ?? 0;
  for (const entry of await readDirSorted(dir)) {
    const info = await statOrNull(join(dir, entry.name));
    newest = Math.max(newest, info?.mtime?.getTime() ?? 0);
  }
  return newest;
}

/** Blob and upload storage in a directory. */
export class FsBlobStore implements Storage {
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

  get location(): string {
    return `file:${this.root}`;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  /** The file of a blob (benchmarks serve it with another server; nothing else needs it). */
  blobPath(digest: Digest): string {
    const hex = digestHex(digest);
    return join(this.root, "blobs", digestAlgorithm(digest), hex.slice(0, 2), hex);
  }

  #uploadDir(uploadId: string): string {
    if (!UPLOAD_ID_REGEXP.test(uploadId)) throw new Error(`Unsafe upload id "${uploadId}"`);
    return join(this.root, "uploads", uploadId);
  }

  #partPath(uploadId: string, file: string): string {
    if (!SESSION_FILE_REGEXP.test(file)) throw new Error(`Unsafe part name "${file}"`);
    return join(this.#uploadDir(uploadId), file);
  }

  async stat(digest: Digest): Promise<BlobInfo | null> {
    try {
      const info = await Deno.stat(this.blobPath(digest));
      return { size: info.size, modifiedAt: info.mtime?.getTime() ?? 0 };
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

  /** Every well-formed blob file, in order; anything else is {@linkcode debris}. */
  async *list(): AsyncIterable<Digest> {
    for (const algorithm of ALGORITHMS) {
      const base = join(this.root, "blobs", algorithm);
      for (const prefix of await readDirSorted(base)) {
        if (!prefix.isDirectory || !/^[a-f0-9]{2}$/.test(prefix.name)) continue;
        for (const entry of await readDirSorted(join(base, prefix.name))) {
          if (this.#isBlobFile(algorithm, prefix.name, entry)) {
            yield makeDigest(algorithm, entry.name);
          }
        }
      }
    }
  }

  #isBlobFile(algorithm: Algorithm, prefix: string, entry: Deno.DirEntry): boolean {
    return entry.isFile && HEX_REGEXP[algorithm].test(entry.name) && entry.name.startsWith(prefix);
  }

  async *debris(
    options: { leftoversOnly?: boolean } = {},
  ): AsyncIterable<Debris & { kind: "problem" | "leftover" }> {
    const item = async (where: string, what: string, kind: "problem" | "leftover") => {
      const path = join(this.root, where);
      const info = await statOrNull(path);
      if (!info) return null;
      return {
        where,
        what,
        kind,
        size: await sizeOf(path, info),
        modifiedAt: info.mtime?.getTime() ?? 0,
        remove: () => removeQuietly(path, true),
      };
    };
    const found: (Debris & { kind: "problem" | "leftover" } | null)[] = [];
    // Only the algorithms' folders belong directly under blobs/.
    for (
      const entry of options.leftoversOnly ? [] : await readDirSorted(join(this.root, "blobs"))
    ) {
      if (entry.isDirectory && (ALGORITHMS as readonly string[]).includes(entry.name)) continue;
      found.push(await item(`blobs/${entry.name}`, "does not belong in the blob store", "problem"));
    }
    for (const algorithm of options.leftoversOnly ? [] : ALGORITHMS) {
      for (const prefix of await readDirSorted(join(this.root, "blobs", algorithm))) {
        const dir = `blobs/${algorithm}/${prefix.name}`;
        if (!prefix.isDirectory || !/^[a-f0-9]{2}$/.test(prefix.name)) {
          found.push(await item(dir, "does not belong in the blob store", "problem"));
          continue;
        }
        for (const entry of await readDirSorted(join(this.root, dir))) {
          if (this.#isBlobFile(algorithm, prefix.name, entry)) continue;
          found.push(await item(`${dir}/${entry.name}`, "is not a blob file", "problem"));
        }
      }
    }
    for (const entry of await readDirSorted(join(this.root, "tmp"))) {
      found.push(await item(`tmp/${entry.name}`, "temporary file", "leftover"));
    }
    for (const entry of await readDirSorted(join(this.root, "uploads"))) {
      if (entry.isDirectory && UPLOAD_ID_REGEXP.test(entry.name)) continue;
      found.push(await item(`uploads/${entry.name}`, "not an upload session", "leftover"));
    }
    for (const one of found) if (one) yield one;
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
    for (const entry of await readDirSorted(base)) {
      if (!entry.isDirectory || !UPLOAD_ID_REGEXP.test(entry.name)) continue;
      const modifiedAt = await newestMtime(join(base, entry.name));
      if (modifiedAt !== 0) yield { uploadId: entry.name, modifiedAt };
    }
  }

  async openPart(uploadId: string, file: string): Promise<ReadableStream<Uint8Array> | null> {
    let handle: Deno.FsFile;
    try {
      handle = await Deno.open(this.#partPath(uploadId, file), { read: true });
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null;
      throw error;
    }
    try {
      return fileStream(handle, 0, (await handle.stat()).size);
    } catch (error) {
      handle.close();
      throw error;
    }
  }

  async *listParts(uploadId: string): AsyncIterable<{ file: string; size: number }> {
    const dir = this.#uploadDir(uploadId);
    for (const entry of await readDirSorted(dir)) {
      const info = await statOrNull(join(dir, entry.name));
      if (info) yield { file: entry.name, size: info.isFile ? info.size : 0 };
    }
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
