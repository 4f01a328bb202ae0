/**
 * The filesystem blob and upload store.
 *
 * ```
 * <root>/
 *   blobs/<algorithm>/<first 2 hex>/<hex>   immutable, verified blob bytes (layers, configs, manifests)
 *   uploads/<uploadId>/data                 a session's acknowledged chunks, appended in order
 *   uploads/<uploadId>/lock                 empty; its flock is the session's writer lock
 *   uploads/<uploadId>/p-<random>           one file per part: a monolithic push (`put-<uuid>`), or an older Berth's chunks
 *   uploads/<uploadId>/a-<random>           a blob being assembled from one-file parts
 *   tmp/<random>                            manifests (and put() bodies) being written
 * ```
 *
 * A chunk is appended to `data` under the session's lock (`lockUpload`),
 * which its writer holds until the metadata commit acknowledging it is done:
 * the writer cuts `data` back to the acknowledged offset (what a killed or
 * losing request left), appends, fsyncs, commits. A running digest per
 * session is kept in memory while chunks arrive in order at this process; a
 * session that moved here from another process (or a restart) re-hashes its
 * acknowledged bytes once. Closing hard-links `data` into place: no copy.
 * Once linked, `data` is never written again (a chunk after a finish that
 * was killed before its commit first copies it).
 *
 * Everything is on one filesystem so that `rename` moves a verified file into
 * place atomically. Every file is fsynced before it is renamed, and the
 * directory after, so a blob that is visible is complete and durable.
 *
 * @module
 */
import { PartHashes } from "./part_hashes.ts";
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
  type UploadLock,
  type WrittenPart,
} from "./blob_store.ts";
import { fileStream, READ_BUFFER_BYTES, writeBody } from "./streams.ts";

/** The file a session's chunks are appended to, and the one whose flock is its writer lock. */
const DATA_FILE = "data";
const LOCK_FILE = "lock";
/** Running digests kept for at most this many sessions (the oldest go first). */
const MAX_RUNNING = 1024;

/** A session's running digest: the hash state over its bytes `0..end`. */
interface Running {
  /** Where the part that brought it here began (pending states only). */
  start: number;
  end: number;
  algorithm: Algorithm;
  digest: Digest;
  hash: Hash;
}

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
  /** Session writer locks this process holds, by session. */
  readonly #held = new Map<string, Deno.FsFile>();
  /** Running digests of acknowledged bytes, by session. */
  readonly #running = new Map<string, Running>();
  /** The running digest after a written but not yet acknowledged part, by session. */
  readonly #pending = new Map<string, Running>();

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
    options: { algorithm: Algorithm; alsoHash?: Algorithm; limit?: number; at?: number },
  ): Promise<WrittenPart> {
    if (options.at !== undefined && this.#held.has(uploadId)) {
      const part = await this.#append(uploadId, body, { ...options, at: options.at });
      if (part) return part;
    }
    const dir = this.#uploadDir(uploadId);
    await this.#makeDurableDir(dir);
    const name = `p-${randomName()}`;
    const path = join(dir, name);
    const hashes = new PartHashes(options);
    const file = await Deno.open(path, { createNew: true, write: true });
    let size = 0;
    try {
      if (body) {
        size = await writeBody(
          body,
          file,
          this.#writeOptions(hashes.hashes, options.limit),
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
    return hashes.part(name, size);
  }

  #writeOptions(hashes: Hash[], limit: number | undefined) {
    return limit === undefined ? { hashes } : { hashes, limit };
  }

  /** Takes the session's writer lock (an exclusive flock on its `lock` file). */
  async lockUpload(uploadId: string): Promise<UploadLock> {
    const dir = this.#uploadDir(uploadId);
    await this.#makeDurableDir(dir);
    const file = await Deno.open(join(dir, LOCK_FILE), { read: true, write: true, create: true });
    try {
      await file.lock(true);
    } catch (error) {
      file.close();
      throw error;
    }
    // Another request of this process may hold it through another descriptor: wait for it.
    while (this.#held.has(uploadId)) await new Promise((resolve) => setTimeout(resolve, 1));
    this.#held.set(uploadId, file);
    let released = false;
    return {
      release: () => {
        if (!released) {
          released = true;
          if (this.#held.get(uploadId) === file) this.#held.delete(uploadId);
          file.close(); // closing the descriptor releases the flock
        }
        return Promise.resolve();
      },
    };
  }

  acknowledgePart(uploadId: string, part: WrittenPart): void {
    const pending = this.#pending.get(uploadId);
    this.#pending.delete(uploadId);
    if (!pending || part.through !== pending.end || part.digest !== pending.digest) return;
    this.#running.delete(uploadId);
    this.#running.set(uploadId, pending);
    if (this.#running.size > MAX_RUNNING) {
      this.#running.delete(this.#running.keys().next().value!);
    }
  }

  /**
   * Appends a chunk to the session's `data` at `at` (the lock is held), or
   * null when the session keeps one file per part (begun by an older Berth).
   */
  async #append(
    uploadId: string,
    body: ReadableStream<Uint8Array> | null,
    options: { algorithm: Algorithm; limit?: number; at: number },
  ): Promise<WrittenPart | null> {
    const { algorithm, at } = options;
    const dir = this.#uploadDir(uploadId);
    const path = join(dir, DATA_FILE);
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true, write: true });
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      if (at > 0) return null;
      await this.#makeDurableDir(dir);
      file = await Deno.open(path, { read: true, write: true, create: true });
      await syncDir(dir);
    }
    this.#pending.delete(uploadId);
    try {
      const info = await file.stat();
      if (info.size < at) {
        throw new Error(
          `Upload ${uploadId} holds ${info.size} bytes, fewer than its ${at} acknowledged`,
        );
      }
      if ((info.nlink ?? 1) > 1) {
        // Linked into place by a finish killed before its commit: that inode is a blob now.
        file.close();
        file = await this.#privateCopy(dir, path, at);
      } else if (info.size > at) {
        await file.truncate(at);
      }
      const running = this.#running.get(uploadId);
      const hash = running && running.end === at && running.algorithm === algorithm
        ? running.hash.copy()
        : await hashPrefix(file, at, algorithm);
      await file.seek(at, Deno.SeekMode.Start);
      let size = 0;
      try {
        if (body) size = await writeBody(body, file, this.#writeOptions([hash], options.limit));
        await file.syncData();
      } catch (error) {
        await file.truncate(at).catch(() => {}); // else the next writer cuts it off
        throw error;
      }
      const state = hash.copy();
      const digest = makeDigest(algorithm, hash.digest("hex"));
      const end = at + size;
      this.#pending.set(uploadId, { start: at, end, algorithm, digest, hash: state });
      return { file: DATA_FILE, size, digest, through: end };
    } finally {
      file.close();
    }
  }

  /** Replaces `data` by a private copy of its first `length` bytes; the copy, open. */
  async #privateCopy(dir: string, path: string, length: number): Promise<Deno.FsFile> {
    const temp = join(dir, `d-${randomName()}`);
    try {
      const out = await Deno.open(temp, { read: true, write: true, createNew: true });
      try {
        using input = await Deno.open(path, { read: true });
        await copyRange(input, out, 0, length, null, new Uint8Array(READ_BUFFER_BYTES));
        await out.sync();
        await Deno.rename(temp, path);
        await syncDir(dir);
        return out;
      } catch (error) {
        out.close();
        throw error;
      }
    } finally {
      await removeQuietly(temp);
    }
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
    if (file === DATA_FILE) {
      // Bytes past the acknowledged offset: cut off here while the lock is held,
      // else by the session's next writer.
      const pending = this.#pending.get(uploadId);
      this.#pending.delete(uploadId);
      if (pending && this.#held.has(uploadId)) {
        try {
          using file = await Deno.open(join(this.#uploadDir(uploadId), DATA_FILE), { write: true });
          // Linked into place by a finish (its commit then lost): that inode is a blob now,
          // never to be cut or written again.
          if (((await file.stat()).nlink ?? 1) === 1) await file.truncate(pending.start);
        } catch { /* the session's next writer cuts it off */ }
      }
      return;
    }
    await removeQuietly(this.#partPath(uploadId, file));
  }

  async finish(uploadId: string, parts: WrittenPart[], digest: Digest): Promise<FinishResult> {
    const appended = parts.length > 0 && parts.every((p) => p.through !== undefined) &&
      chained(parts);
    if (appended) {
      const lock = this.#held.has(uploadId) ? null : await this.lockUpload(uploadId);
      try {
        return await this.#finishAppended(uploadId, parts, digest);
      } finally {
        await lock?.release();
      }
    }
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

  /**
   * Finishes a session whose parts were appended to `data` (its lock held):
   * the last part's running digest says what the bytes hash to, so `data`
   * is cut to the acknowledged length and hard-linked into place, unread.
   */
  async #finishAppended(
    uploadId: string,
    parts: WrittenPart[],
    digest: Digest,
  ): Promise<FinishResult> {
    const last = parts.at(-1)!;
    const size = last.through!;
    const path = join(this.#uploadDir(uploadId), DATA_FILE);
    using file = await Deno.open(path, { read: true, write: true });
    const info = await file.stat();
    if (info.size < size) {
      throw new Error(
        `Upload ${uploadId} holds ${info.size} bytes, fewer than its ${size} acknowledged`,
      );
    }
    let actual = last.digest;
    if (digestAlgorithm(last.digest) !== digestAlgorithm(digest)) {
      actual = makeDigest(
        digestAlgorithm(digest),
        (await hashPrefix(file, size, digestAlgorithm(digest))).digest("hex"),
      );
    }
    if (actual !== digest) return { ok: false, actual, size };
    if (info.size > size) {
      if ((info.nlink ?? 1) > 1) {
        // Linked into place by a finish whose commit was lost: that inode is a longer blob
        // now, never to be cut. The acknowledged bytes become a file of their own.
        (await this.#privateCopy(this.#uploadDir(uploadId), path, size)).close();
      } else {
        await file.truncate(size);
        await file.syncData();
      }
    }
    this.#running.delete(uploadId);
    // Nothing of `data` is pending any more: once linked it is the blob's inode too.
    this.#pending.delete(uploadId);
    // Hard-link: `data` stays until the session's commit is done, so a crash in
    // between leaves a session that can still finish (and never writes to it again).
    await this.#moveIntoPlace(path, digest, "link");
    return { ok: true, size };
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
        const start = part.through === undefined ? 0 : part.through - part.size;
        size += await copyRange(input, out, start, part.size, hash, buffer);
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
   * Stores a whole body as blob `digest`, verified while it streams: written
   * to `tmp/`, fsynced, renamed into place. (The registry's monolithic pushes
   * go through a scratch upload session instead: see `Blobs.put`.)
   * Nothing is left behind on failure or mismatch.
   */
  async put(digest: Digest, body: ReadableStream<Uint8Array> | null): Promise<FinishResult> {
    const algorithm = digestAlgorithm(digest);
    const temp = join(this.root, "tmp", randomName());
    try {
      const hash = createHash(algorithm);
      let size = 0;
      {
        using file = await Deno.open(temp, { createNew: true, write: true });
        if (body) size = await writeBody(body, file, this.#writeOptions([hash], undefined));
        await file.sync();
      }
      const actual = makeDigest(algorithm, hash.digest("hex"));
      if (actual !== digest) return { ok: false, actual, size };
      await this.#moveIntoPlace(temp, digest);
      return { ok: true, size };
    } finally {
      await removeQuietly(temp);
    }
  }

  async removeUpload(uploadId: string): Promise<void> {
    this.#running.delete(uploadId);
    this.#pending.delete(uploadId);
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

  async openPart(
    uploadId: string,
    file: string,
    length?: number,
  ): Promise<ReadableStream<Uint8Array> | null> {
    let handle: Deno.FsFile;
    try {
      handle = await Deno.open(this.#partPath(uploadId, file), { read: true });
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null;
      throw error;
    }
    try {
      const size = (await handle.stat()).size;
      return fileStream(handle, 0, length === undefined ? size : Math.min(length, size));
    } catch (error) {
      handle.close();
      throw error;
    }
  }

  async *listParts(uploadId: string): AsyncIterable<{ file: string; size: number }> {
    const dir = this.#uploadDir(uploadId);
    for (const entry of await readDirSorted(dir)) {
      if (entry.name === LOCK_FILE) continue; // the writer lock, not a part
      const info = await statOrNull(join(dir, entry.name));
      if (info) yield { file: entry.name, size: info.isFile ? info.size : 0 };
    }
  }
}

/** Copies `length` bytes of `input` from `start` to `out` (at its position), hashing them. */
async function copyRange(
  input: Deno.FsFile,
  out: Deno.FsFile,
  start: number,
  length: number,
  hash: Hash | null,
  buffer: Uint8Array,
): Promise<number> {
  await input.seek(start, Deno.SeekMode.Start);
  let total = 0;
  while (total < length) {
    const n = await input.read(buffer.subarray(0, Math.min(buffer.length, length - total)));
    if (n === null) throw new Error(`File ended ${length - total} bytes early`);
    const chunk = buffer.subarray(0, n);
    hash?.update(chunk);
    let written = 0;
    while (written < n) written += await out.write(chunk.subarray(written));
    total += n;
  }
  return total;
}

/** A hash over the first `length` bytes of `file` (a session that moved between processes). */
async function hashPrefix(file: Deno.FsFile, length: number, algorithm: Algorithm): Promise<Hash> {
  const hash = createHash(algorithm);
  await file.seek(0, Deno.SeekMode.Start);
  const buffer = new Uint8Array(READ_BUFFER_BYTES);
  let total = 0;
  while (total < length) {
    const n = await file.read(buffer.subarray(0, Math.min(buffer.length, length - total)));
    if (n === null) throw new Error(`File ended ${length - total} bytes early`);
    hash.update(buffer.subarray(0, n));
    total += n;
  }
  return hash;
}

/** Whether appended parts follow each other from offset 0, in one file. */
function chained(parts: WrittenPart[]): boolean {
  let end = 0;
  for (const part of parts) {
    if (part.file !== DATA_FILE || part.through !== end + part.size) return false;
    end = part.through;
  }
  return true;
}
