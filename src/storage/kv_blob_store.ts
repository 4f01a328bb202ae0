/**
 * The blob store inside Deno KV (`--blobs kv`), for hosts with KV and no
 * durable disk (Deno Deploy). Bytes are split into chunks under KV's 64 KiB
 * value limit; a blob is an index record over runs of chunks:
 *
 * ```
 * ["store_runs", run]              ChunkRun: state (staging, part, blob, dying), size, its session part or blob
 * ["store_unsettled", run]         present while the run is staging or dying
 * ["store_chunks", run, index]     ≤ 63 KiB of bytes each, in order
 * ["store_blobs", digest]          StoredBlob: size and the runs, in order
 * ["store_sessions", uploadId]     a session with parts (rewritten by every change to them)
 * ["store_parts", uploadId, file]  a part of a session: its run
 * ```
 *
 * A write commits its chunks under a `staging` run, a dozen at a time (each
 * commit within KV's limits: {@linkcode KV_LIMITS}), hashing as it goes; the
 * run becomes visible in one last commit that publishes it as a part, or as
 * a blob's index once the digest is verified. A crash leaves a `staging` run
 * that {@linkcode KvBlobStore.debris} reports as a leftover (the collector
 * removes it once old). A multi-part session is finished without copying:
 * the blob's index names the parts' runs, which change owner in the same
 * commit. Commits that change a session's parts rewrite its session record,
 * and `finish` checks it, so a part cannot be removed while it becomes a blob.
 * Reads stream the chunks a batch at a time: no blob is ever whole in memory.
 *
 * @module
 */
import { PartHashes } from "./part_hashes.ts";
import { createHash, type Hash } from "node:crypto";
import { type Algorithm, type Digest, digestAlgorithm, makeDigest } from "../oci/digest.ts";
import type { ByteRange } from "../oci/range.ts";
import {
  type ChunkRun,
  storeBlobKey,
  storeBlobsPrefix,
  storeChunkKey,
  type StoredBlob,
  type StoredPart,
  storePartKey,
  storePartsPrefix,
  storeRunKey,
  storeRunsPrefix,
  storeSessionKey,
  storeSessionsPrefix,
  storeUnsettledKey,
  storeUnsettledPrefix,
} from "../meta/keys.ts";
import { Kv, KV_LIMITS, RETRY } from "../meta/kv.ts";
import {
  type BlobInfo,
  type BlobRead,
  type Debris,
  type FinishResult,
  type Storage,
  UPLOAD_ID_REGEXP,
  type WrittenPart,
} from "./blob_store.ts";
import { TooLargeError } from "./streams.ts";

/** The largest blob kept unless configured otherwise (`--kv-max-blob-bytes`). */
export const DEFAULT_MAX_BLOB_BYTES = 1024 ** 3;
/** Bytes per chunk value (KV allows 64 KiB per value, serialization included). */
export const CHUNK_BYTES = 63 * 1024;
/** Chunks per commit: as many as fit in a commit's bytes, with room for keys and the run record. */
export const CHUNKS_PER_COMMIT = Math.floor((KV_LIMITS.bytes - 8 * 1024) / (CHUNK_BYTES + 256));
/** Runs one blob's index may name (parts finished without copying); more are copied into one. */
export const MAX_RUNS_PER_BLOB = 400;
/** Chunks read per KV list while serving. */
const CHUNKS_PER_READ = 8;
/** Entries changed per commit when removing (keys only: far under the byte limit). */
const DELETES_PER_COMMIT = KV_LIMITS.mutations;
/** Parts of a session ended per commit by `removeUpload` (up to three mutations each). */
const PARTS_PER_REMOVE = 200;
const PART_FILE_REGEXP = /^p-[a-f0-9]{16}$/;

function randomRun(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function checkUploadId(uploadId: string): void {
  if (!UPLOAD_ID_REGEXP.test(uploadId)) throw new Error(`Unsafe upload id "${uploadId}"`);
}

function checkFile(file: string): void {
  if (!PART_FILE_REGEXP.test(file)) throw new Error(`Unsafe part name "${file}"`);
}

function emptyDigest(algorithm: Algorithm): Digest {
  return makeDigest(algorithm, createHash(algorithm).digest("hex"));
}

/** Options of {@linkcode KvBlobStore}. */
export interface KvBlobStoreOptions {
  /** Largest blob (and session) stored; beyond it writes throw `TooLargeError`. */
  maxBlobBytes: number;
  /** Where the bytes live, for start-up lines (`kv`: the metadata KV). */
  location?: string;
  /** Close the KV with the store (a KV of its own). */
  ownsKv?: boolean;
}

/** What a finished write of chunks left: its run, size and the last commit's versionstamp. */
interface WrittenRun {
  run: string;
  size: number;
  /** Versionstamp of the run record after the last chunk commit; null when nothing was committed. */
  versionstamp: string | null;
}

/** Blob and upload storage in Deno KV. */
export class KvBlobStore implements Storage {
  readonly #kv: Kv;
  readonly #options: KvBlobStoreOptions;

  constructor(kv: Deno.Kv | Kv, options: KvBlobStoreOptions) {
    this.#kv = kv instanceof Kv ? kv : new Kv(kv);
    this.#options = options;
  }

  get location(): string {
    return this.#options.location ?? "kv";
  }

  /** The largest blob this store keeps. */
  get maxBlobBytes(): number {
    return this.#options.maxBlobBytes;
  }

  close(): Promise<void> {
    if (this.#options.ownsKv) this.#kv.close();
    return Promise.resolve();
  }

  // ---- blobs ---------------------------------------------------------------

  async stat(digest: Digest): Promise<BlobInfo | null> {
    const entry = await this.#kv.get<StoredBlob>(storeBlobKey(digest));
    return entry.value ? { size: entry.value.size, modifiedAt: entry.value.createdAt } : null;
  }

  async open(digest: Digest, range?: ByteRange): Promise<BlobRead | null> {
    const entry = await this.#kv.get<StoredBlob>(storeBlobKey(digest));
    if (!entry.value) return null;
    const { size, runs } = entry.value;
    const start = range?.start ?? 0;
    const end = range ? Math.min(range.end, size - 1) : size - 1;
    return { size, stream: this.#stream(runs, start, Math.max(end - start + 1, 0)) };
  }

  async putBytes(digest: Digest, bytes: Uint8Array): Promise<void> {
    if (await this.stat(digest)) return;
    if (bytes.length > this.maxBlobBytes) throw new TooLargeError(this.maxBlobBytes);
    const written = await this.#writeRun(bodyFrom(bytes), { hashes: [] });
    try {
      await this.#publish(digest, [{ run: written.run, size: written.size }], {
        staging: written,
      });
    } catch (error) {
      await this.#removeRun(written.run);
      throw error;
    }
  }

  async put(digest: Digest, body: ReadableStream<Uint8Array> | null): Promise<FinishResult> {
    const scratch = `put-${crypto.randomUUID()}`;
    try {
      const part = await this.writePart(scratch, body, { algorithm: digestAlgorithm(digest) });
      return await this.finish(scratch, [part], digest);
    } finally {
      await this.removeUpload(scratch);
    }
  }

  async delete(digest: Digest): Promise<boolean> {
    const dying = await this.#kv.transact("delete blob", async () => {
      const entry = await this.#kv.get<StoredBlob>(storeBlobKey(digest));
      if (!entry.value) return null;
      const owned = await this.#runsOwnedBy(entry.value.runs.map((r) => r.run), digest);
      const now = Date.now();
      const ok = await this.#kv.commit((op) => {
        op.check(entry).delete(storeBlobKey(digest));
        for (const [run, record] of owned) {
          op.set(storeRunKey(run), { ...record, state: "dying", modifiedAt: now })
            .set(storeUnsettledKey(run), true);
        }
        return op;
      });
      return ok ? [...owned.keys()] : RETRY;
    });
    if (dying === null) return false;
    for (const run of dying) await this.#removeRun(run);
    return true;
  }

  async *list(): AsyncIterable<Digest> {
    for await (const entry of this.#kv.scan<StoredBlob>(storeBlobsPrefix())) {
      const digest = entry.key[1];
      if (typeof digest === "string") yield digest as Digest;
    }
  }

  // ---- upload sessions -------------------------------------------------------

  async writePart(
    uploadId: string,
    body: ReadableStream<Uint8Array> | null,
    options: { algorithm: Algorithm; alsoHash?: Algorithm; limit?: number },
  ): Promise<WrittenPart> {
    checkUploadId(uploadId);
    // A session holds at most one blob's bytes.
    let stored = 0;
    for await (const part of this.listParts(uploadId)) stored += part.size;
    const room = Math.max(this.maxBlobBytes - stored, 0);
    const limit = options.limit === undefined ? room : Math.min(options.limit, room);
    const tooLarge = options.limit !== undefined && options.limit <= room
      ? options.limit
      : this.maxBlobBytes;
    const hashes = new PartHashes(options);
    const written = await this.#writeRun(body, {
      hashes: hashes.hashes,
      limit,
      tooLarge,
      uploadId,
    });
    const file = `p-${written.run}`;
    const now = Date.now();
    const record: ChunkRun = {
      state: "part",
      size: written.size,
      modifiedAt: now,
      uploadId,
      file,
    };
    const ok = await this.#kv.commit((op) =>
      op.check({ key: storeRunKey(written.run), versionstamp: written.versionstamp })
        .set(storeRunKey(written.run), record)
        .delete(storeUnsettledKey(written.run))
        .set(storePartKey(uploadId, file), {
          run: written.run,
          size: written.size,
          modifiedAt: now,
        })
        .set(storeSessionKey(uploadId), { modifiedAt: now })
    );
    if (!ok) {
      // Taken for a leftover meanwhile (a write stalled longer than the upload TTL).
      await this.#removeRun(written.run);
      throw new Error(`Part of upload ${uploadId} was removed while it was written`);
    }
    return hashes.part(file, written.size);
  }

  async removePart(uploadId: string, file: string): Promise<void> {
    checkUploadId(uploadId);
    checkFile(file);
    const dying = await this.#kv.transact("remove part", async () => {
      const [part, session] = await this.#kv.getMany<[StoredPart, unknown]>([
        storePartKey(uploadId, file),
        storeSessionKey(uploadId),
      ]);
      if (!part.value) return null;
      const run = await this.#kv.get<ChunkRun>(storeRunKey(part.value.run));
      const mine = run.value?.state === "part" && run.value.uploadId === uploadId;
      const now = Date.now();
      const ok = await this.#kv.commit((op) => {
        op.check(part, session).delete(storePartKey(uploadId, file))
          .set(storeSessionKey(uploadId), { modifiedAt: now });
        if (mine) {
          op.set(storeRunKey(part.value!.run), { ...run.value!, state: "dying", modifiedAt: now })
            .set(storeUnsettledKey(part.value!.run), true);
        }
        return op;
      });
      if (!ok) return RETRY;
      return mine ? part.value.run : null;
    });
    if (dying !== null) await this.#removeRun(dying);
  }

  async finish(uploadId: string, parts: WrittenPart[], digest: Digest): Promise<FinishResult> {
    checkUploadId(uploadId);
    for (const part of parts) checkFile(part.file);
    const algorithm = digestAlgorithm(digest);
    const [only] = parts;
    if (parts.length === 0) {
      const empty = emptyDigest(algorithm);
      if (empty !== digest) return { ok: false, actual: empty, size: 0 };
      await this.#publish(digest, [], {});
      return { ok: true, size: 0 };
    }
    if (parts.length === 1 && only && digestAlgorithm(only.digest) === algorithm) {
      // Already hashed with this algorithm: no need to read it again.
      if (only.digest !== digest) return { ok: false, actual: only.digest, size: only.size };
    } else if (!(parts.length === 1 && only && only.expected === digest)) {
      const read = await this.#hashParts(uploadId, parts, algorithm);
      if (read.actual !== digest) return { ok: false, actual: read.actual, size: read.size };
    }
    const size = parts.reduce((n, p) => n + p.size, 0);
    const taken = await this.#publish(digest, [], { session: { uploadId, parts } });
    if (taken) return { ok: true, size };
    // The parts cannot become the blob as they are (too many, or some already are
    // another blob's): copy them into one run.
    const written = await this.#writeRun(this.#partsStream(uploadId, parts), { hashes: [] });
    try {
      await this.#publish(digest, [{ run: written.run, size: written.size }], { staging: written });
    } catch (error) {
      await this.#removeRun(written.run);
      throw error;
    }
    return { ok: true, size: written.size };
  }

  async removeUpload(uploadId: string): Promise<void> {
    checkUploadId(uploadId);
    for (;;) {
      const dying = await this.#kv.transact("remove upload", async () => {
        const session = await this.#kv.get<unknown>(storeSessionKey(uploadId));
        const parts = await this.#kv.list<StoredPart>(
          { prefix: storePartsPrefix(uploadId) },
          PARTS_PER_REMOVE,
        );
        if (parts.length === 0) {
          if (session.versionstamp === null) return "done" as const;
          const ok = await this.#kv.commit((op) =>
            op.check(session).delete(storeSessionKey(uploadId))
          );
          return ok ? "done" as const : RETRY;
        }
        const runs = await this.#getRuns(parts.map((p) => p.value.run));
        const now = Date.now();
        const mine: string[] = [];
        const ok = await this.#kv.commit((op) => {
          // Rewriting the session makes a finish() that read these parts go round again.
          op.check(session).set(storeSessionKey(uploadId), { modifiedAt: now });
          for (const part of parts) {
            op.delete(part.key);
            const run = runs.get(part.value.run);
            if (run?.state === "part" && run.uploadId === uploadId) {
              op.set(storeRunKey(part.value.run), { ...run, state: "dying", modifiedAt: now })
                .set(storeUnsettledKey(part.value.run), true);
              mine.push(part.value.run);
            }
          }
          return op;
        });
        return ok ? mine : RETRY;
      });
      if (dying === "done") return;
      for (const run of dying) await this.#removeRun(run);
    }
  }

  async *listUploads(): AsyncIterable<{ uploadId: string; modifiedAt: number }> {
    for await (
      const entry of this.#kv.scan<{ modifiedAt: number }>(storeSessionsPrefix())
    ) {
      const uploadId = entry.key[1];
      if (typeof uploadId === "string" && UPLOAD_ID_REGEXP.test(uploadId)) {
        yield { uploadId, modifiedAt: entry.value?.modifiedAt ?? 0 };
      }
    }
  }

  async *listParts(uploadId: string): AsyncIterable<{ file: string; size: number }> {
    checkUploadId(uploadId);
    for await (const entry of this.#kv.scan<StoredPart>(storePartsPrefix(uploadId))) {
      yield { file: String(entry.key[2]), size: entry.value.size };
    }
  }

  async openPart(uploadId: string, file: string): Promise<ReadableStream<Uint8Array> | null> {
    checkUploadId(uploadId);
    checkFile(file);
    const part = await this.#kv.get<StoredPart>(storePartKey(uploadId, file));
    if (!part.value) return null;
    return this.#stream([{ run: part.value.run, size: part.value.size }], 0, part.value.size);
  }

  // ---- debris ----------------------------------------------------------------

  async *debris(
    options: { leftoversOnly?: boolean } = {},
  ): AsyncIterable<Debris & { kind: "problem" | "leftover" }> {
    // The collector looks only at runs being written or removed; fsck at every run.
    const runs = options.leftoversOnly
      ? this.#unsettledRuns()
      : this.#kv.scan<ChunkRun>(storeRunsPrefix());
    for await (const entry of runs) {
      const run = String(entry.key[1]);
      const record = entry.value;
      const item = (what: string, kind: "problem" | "leftover") => ({
        where: `runs/${run}`,
        what,
        kind,
        size: record.size ?? 0,
        modifiedAt: record.modifiedAt ?? 0,
        remove: () => this.#removeIfUnchanged(entry),
      });
      if (record.state === "staging") {
        yield item("chunks of a write that never finished", "leftover");
      } else if (record.state === "dying") {
        yield item("chunks of a removal that never finished", "leftover");
      } else if (!options.leftoversOnly && !(await this.#owned(run, record))) {
        yield item(`chunks of a ${record.state} nothing points at`, "problem");
      }
    }
  }

  /** The run records of the `store_unsettled` entries (one without a record is dropped). */
  async *#unsettledRuns(): AsyncIterable<Deno.KvEntry<ChunkRun>> {
    for await (const entry of this.#kv.scan<true>(storeUnsettledPrefix())) {
      const run = String(entry.key[1]);
      const record = await this.#kv.get<ChunkRun>(storeRunKey(run));
      if (record.versionstamp !== null) yield record as Deno.KvEntry<ChunkRun>;
      else await this.#kv.commit((op) => op.check(entry).delete(entry.key));
    }
  }

  /** Whether a `part` or `blob` run is named by its part entry or blob index. */
  async #owned(run: string, record: ChunkRun): Promise<boolean> {
    if (record.state === "part" && record.uploadId && record.file) {
      const part = await this.#kv.get<StoredPart>(storePartKey(record.uploadId, record.file));
      return part.value?.run === run;
    }
    if (record.state === "blob" && record.digest) {
      const blob = await this.#kv.get<StoredBlob>(storeBlobKey(record.digest));
      return blob.value?.runs.some((r) => r.run === run) ?? false;
    }
    return false;
  }

  /** Removes a run found as debris, unless it changed since (a write went on). */
  async #removeIfUnchanged(entry: Deno.KvEntry<ChunkRun>): Promise<void> {
    const ok = await this.#kv.commit((op) =>
      op.check(entry).set(entry.key, { ...entry.value, state: "dying", modifiedAt: Date.now() })
        .set(storeUnsettledKey(String(entry.key[1])), true)
    );
    if (ok) await this.#removeRun(String(entry.key[1]));
  }

  // ---- runs ------------------------------------------------------------------

  /**
   * Writes `body` as the chunks of a new `staging` run, committing
   * {@linkcode CHUNKS_PER_COMMIT} chunks at a time (the next ones are gathered
   * while a commit is in flight), hashing every byte. On failure what was
   * committed is removed.
   */
  async #writeRun(
    body: ReadableStream<Uint8Array> | null,
    options: { hashes: Hash[]; limit?: number; tooLarge?: number; uploadId?: string },
  ): Promise<WrittenRun> {
    const run = randomRun();
    const limit = options.limit ?? this.maxBlobBytes;
    const tooLarge = options.tooLarge ?? this.maxBlobBytes;
    let versionstamp: string | null = null;
    let size = 0;
    let chunks = 0;
    let inFlight: Promise<void> | null = null;
    const commit = async (batch: Uint8Array[]) => {
      for (const chunk of batch) for (const hash of options.hashes) hash.update(chunk);
      if (inFlight) await inFlight;
      const first = chunks;
      chunks += batch.length;
      size += batch.reduce((n, c) => n + c.length, 0);
      const record: ChunkRun = { state: "staging", size, modifiedAt: Date.now() };
      if (options.uploadId !== undefined) record.uploadId = options.uploadId;
      const expected = versionstamp;
      inFlight = this.#kv.commit((op) => {
        op.check({ key: storeRunKey(run), versionstamp: expected }).set(storeRunKey(run), record)
          .set(storeUnsettledKey(run), true);
        batch.forEach((chunk, i) => op.set(storeChunkKey(run, first + i), chunk));
        return op;
      }).then((stamp) => {
        if (stamp === null) throw new Error(`Chunk run ${run} was removed while it was written`);
        versionstamp = stamp;
      });
      inFlight.catch(() => {}); // awaited below; this only avoids an unhandled rejection meanwhile
    };
    const reader = body?.getReader();
    try {
      let batch: Uint8Array[] = [];
      let chunk = new Uint8Array(CHUNK_BYTES);
      let used = 0;
      let total = 0;
      while (reader) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.length;
        if (total > limit) throw new TooLargeError(tooLarge);
        let offset = 0;
        while (offset < value.length) {
          const n = Math.min(value.length - offset, CHUNK_BYTES - used);
          chunk.set(value.subarray(offset, offset + n), used);
          used += n;
          offset += n;
          if (used === CHUNK_BYTES) {
            batch.push(chunk);
            chunk = new Uint8Array(CHUNK_BYTES);
            used = 0;
            if (batch.length === CHUNKS_PER_COMMIT) {
              await commit(batch);
              batch = [];
            }
          }
        }
      }
      if (used > 0) batch.push(chunk.subarray(0, used));
      if (batch.length > 0) await commit(batch);
      if (inFlight) await inFlight;
      return { run, size, versionstamp };
    } catch (error) {
      await reader?.cancel().catch(() => {});
      if (inFlight) await (inFlight as Promise<void>).catch(() => {});
      // What cannot be removed now stays a leftover for the collector.
      if (versionstamp !== null) {
        await this.#markDying(run).then(() => this.#removeRun(run)).catch(() => {});
      }
      throw error;
    } finally {
      reader?.releaseLock();
    }
  }

  async #markDying(run: string): Promise<void> {
    const entry = await this.#kv.get<ChunkRun>(storeRunKey(run));
    if (!entry.value) return;
    await this.#kv.commit((op) =>
      op.check(entry).set(storeRunKey(run), {
        ...entry.value!,
        state: "dying",
        modifiedAt: Date.now(),
      }).set(storeUnsettledKey(run), true)
    );
  }

  /** Deletes a run's chunks (their keys follow from its size), then its record. */
  async #removeRun(run: string): Promise<void> {
    const entry = await this.#kv.get<ChunkRun>(storeRunKey(run));
    if (!entry.value) {
      await this.#kv.commit((op) => op.delete(storeUnsettledKey(run)));
      return;
    }
    const chunks = Math.ceil((entry.value.size ?? 0) / CHUNK_BYTES);
    for (let first = 0; first < chunks; first += DELETES_PER_COMMIT) {
      const last = Math.min(first + DELETES_PER_COMMIT, chunks);
      await this.#kv.commit((op) => {
        for (let i = first; i < last; i++) op.delete(storeChunkKey(run, i));
        return op;
      });
    }
    await this.#kv.commit((op) =>
      op.check(entry).delete(storeRunKey(run)).delete(storeUnsettledKey(run))
    );
  }

  async #getRuns(runs: string[]): Promise<Map<string, ChunkRun>> {
    const out = new Map<string, ChunkRun>();
    for (let i = 0; i < runs.length; i += 10) {
      const keys = runs.slice(i, i + 10).map((run) => storeRunKey(run));
      const entries = await this.#kv.getMany<ChunkRun[]>(keys);
      for (const entry of entries) {
        if (entry.value) out.set(String(entry.key[1]), entry.value);
      }
    }
    return out;
  }

  /** The runs of `runs` that are blob `digest`'s. */
  async #runsOwnedBy(runs: string[], digest: Digest): Promise<Map<string, ChunkRun>> {
    const records = await this.#getRuns(runs);
    for (const [run, record] of records) {
      if (record.state !== "blob" || record.digest !== digest) records.delete(run);
    }
    return records;
  }

  /**
   * Publishes blob `digest` in one commit: over the `staging` run just written,
   * over no run (the empty blob), or over the runs of a session's parts (false
   * when they cannot be taken as they are). A blob already there is kept (its
   * bytes are the same), and what was written for it is removed.
   */
  async #publish(
    digest: Digest,
    runs: StoredBlob["runs"],
    from: { staging?: WrittenRun; session?: { uploadId: string; parts: WrittenPart[] } },
  ): Promise<boolean> {
    const outcome = await this.#kv.transact("publish blob", async () => {
      const now = Date.now();
      const index = await this.#kv.get<StoredBlob>(storeBlobKey(digest));
      if (index.value) return "exists" as const;
      const blob: StoredBlob = { size: 0, createdAt: now, runs };
      const owned = (size: number): ChunkRun => ({
        state: "blob",
        size,
        modifiedAt: now,
        digest,
      });
      if (from.session) {
        const { uploadId, parts } = from.session;
        if (parts.length > MAX_RUNS_PER_BLOB) return "copy" as const;
        const session = await this.#kv.get<unknown>(storeSessionKey(uploadId));
        const entries = await this.#getParts(uploadId, parts.map((p) => p.file));
        const records = await this.#getRuns([...entries.values()].map((p) => p.run));
        const taken: [string, ChunkRun][] = [];
        for (const part of parts) {
          const entry = entries.get(part.file);
          if (!entry) {
            throw new Deno.errors.NotFound(`Part ${part.file} of upload ${uploadId} is gone`);
          }
          const record = records.get(entry.run);
          if (record?.state !== "part" || record.uploadId !== uploadId) return "copy" as const;
          if (taken.some(([run]) => run === entry.run)) return "copy" as const;
          taken.push([entry.run, owned(entry.size)]);
          blob.runs.push({ run: entry.run, size: entry.size });
        }
        blob.size = blob.runs.reduce((n, r) => n + r.size, 0);
        const ok = await this.#kv.commit((op) => {
          op.check(index, session).set(storeBlobKey(digest), blob)
            .set(storeSessionKey(uploadId), { modifiedAt: now });
          for (const [run, record] of taken) op.set(storeRunKey(run), record);
          return op;
        });
        return ok ? "published" as const : RETRY;
      }
      blob.size = runs.reduce((n, r) => n + r.size, 0);
      const staging = from.staging;
      const ok = await this.#kv.commit((op) => {
        op.check(index).set(storeBlobKey(digest), blob);
        if (staging) {
          op.check({ key: storeRunKey(staging.run), versionstamp: staging.versionstamp })
            .set(storeRunKey(staging.run), owned(staging.size))
            .delete(storeUnsettledKey(staging.run));
        }
        return op;
      });
      if (ok) return "published" as const;
      if (staging) {
        const run = await this.#kv.get<ChunkRun>(storeRunKey(staging.run));
        if (run.versionstamp !== staging.versionstamp) {
          throw new Error(`Chunk run ${staging.run} was removed before it was published`);
        }
      }
      return RETRY;
    });
    if (outcome === "exists" && from.staging) await this.#removeRun(from.staging.run);
    return outcome !== "copy";
  }

  async #getParts(uploadId: string, files: string[]): Promise<Map<string, StoredPart>> {
    const out = new Map<string, StoredPart>();
    for (let i = 0; i < files.length; i += 10) {
      const keys = files.slice(i, i + 10).map((file) => storePartKey(uploadId, file));
      const entries = await this.#kv.getMany<StoredPart[]>(keys);
      for (const entry of entries) if (entry.value) out.set(String(entry.key[2]), entry.value);
    }
    return out;
  }

  /** Hashes the concatenated parts (read from KV, a batch of chunks at a time). */
  async #hashParts(
    uploadId: string,
    parts: WrittenPart[],
    algorithm: Algorithm,
  ): Promise<{ actual: Digest; size: number }> {
    const hash = createHash(algorithm);
    let size = 0;
    const reader = this.#partsStream(uploadId, parts).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      hash.update(value);
      size += value.length;
    }
    return { actual: makeDigest(algorithm, hash.digest("hex")), size };
  }

  /** The bytes of `parts`, in order; errors if one is gone. */
  #partsStream(uploadId: string, parts: WrittenPart[]): ReadableStream<Uint8Array> {
    let index = 0;
    let current: ReadableStreamDefaultReader<Uint8Array> | null = null;
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        for (;;) {
          if (!current) {
            const part = parts[index++];
            if (!part) return controller.close();
            const entry = await this.#kv.get<StoredPart>(storePartKey(uploadId, part.file));
            if (!entry.value) {
              throw new Deno.errors.NotFound(`Part ${part.file} of upload ${uploadId} is gone`);
            }
            // A run a collection removed after it became a blob: the session's bytes are gone.
            const run = await this.#kv.get<ChunkRun>(storeRunKey(entry.value.run));
            if (!run.value || run.value.state === "dying") {
              throw new Deno.errors.NotFound(`Part ${part.file} of upload ${uploadId} is gone`);
            }
            current = this.#stream(
              [{ run: entry.value.run, size: entry.value.size }],
              0,
              entry.value.size,
            ).getReader();
          }
          const { done, value } = await current.read();
          if (!done) return controller.enqueue(value);
          current = null;
        }
      },
      cancel: async () => {
        await current?.cancel();
      },
    });
  }

  /** A stream of `length` bytes from `start` of the concatenated `runs`, a few chunks per read. */
  #stream(runs: StoredBlob["runs"], start: number, length: number): ReadableStream<Uint8Array> {
    // Where each run starts in the blob.
    const plan: { run: string; size: number; offset: number }[] = [];
    let offset = 0;
    for (const r of runs) {
      plan.push({ ...r, offset });
      offset += r.size;
    }
    let position = start;
    const end = start + length;
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        if (position >= end) return controller.close();
        const at = plan.find((r) => position >= r.offset && position < r.offset + r.size);
        if (!at) throw new Error("Blob index does not cover its size");
        const local = position - at.offset;
        const first = Math.floor(local / CHUNK_BYTES);
        const chunksInRun = Math.ceil(at.size / CHUNK_BYTES);
        const last = Math.min(first + CHUNKS_PER_READ, chunksInRun);
        const entries = await this.#kv.list<Uint8Array>({
          start: storeChunkKey(at.run, first),
          end: storeChunkKey(at.run, last),
        }, last - first);
        for (let i = first; i < last && position < end; i++) {
          const entry = entries[i - first];
          const expected = Math.min(CHUNK_BYTES, at.size - i * CHUNK_BYTES);
          if (
            !entry || entry.key[2] !== i || !(entry.value instanceof Uint8Array) ||
            entry.value.length !== expected
          ) {
            throw new Error(`Chunk ${i} of run ${at.run} is missing or has the wrong size`);
          }
          const from = position - at.offset - i * CHUNK_BYTES;
          const to = Math.min(expected, end - at.offset - i * CHUNK_BYTES);
          controller.enqueue(
            from === 0 && to === expected ? entry.value : entry.value.subarray(from, to),
          );
          position += to - from;
        }
      },
    });
  }
}

/** A stream of one byte array. */
function bodyFrom(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      if (bytes.length > 0) controller.enqueue(bytes);
      controller.close();
    },
  });
}

/** Parses the `kv` blob location: `kv` (the metadata KV) or `kv:LOCATION` (a KV of its own). */
export function kvBlobLocation(location: string): { shared: true } | { shared: false; kv: string } {
  const rest = location.replace(/^kv:?/, "");
  return rest === "" ? { shared: true } : { shared: false, kv: rest };
}
