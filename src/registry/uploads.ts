/**
 * The upload session protocol: start (with caps), append a chunk, finish,
 * cancel, status.
 *
 * Each chunk is written as a part, then acknowledged by one KV commit that
 * checks the session is as the request found it; a request that loses a race
 * gets 416 and its part is removed. So two racing PATCHes can never mix their
 * bytes, and any process sharing the stores can take the next chunk.
 *
 * When the store has a session lock (`lockUpload`), a chunk is written and
 * committed under it, after the session is read again: the store may then
 * append chunks to one file at the acknowledged offset (`at`) with a running
 * digest, and a racing chunk waits for the lock and gets its 416 from the
 * offset it then reads.
 *
 * @module
 */
import { type Algorithm, type Digest, digestAlgorithm } from "../oci/digest.ts";
import { OciError } from "../oci/errors.ts";
import { parseContentRange, uploadRangeHeader } from "../oci/range.ts";
import type { UploadSession } from "../meta/metadata_store.ts";
import { UPLOAD_ID_REGEXP, type UploadLock, type WrittenPart } from "../storage/blob_store.ts";
import type { RegistryContext } from "./context.ts";
import { uploadUnknown } from "./errors.ts";
import { settledBytes } from "../gc/bytes.ts";

/** A chunk as the client sent it. */
export interface Chunk {
  body: ReadableStream<Uint8Array> | null;
  /** The `Content-Range` header, if any. */
  contentRange: string | null;
  /** The `Content-Length` header, if any. */
  contentLength: string | null;
}

/** Where a session stands. */
export interface UploadState {
  name: string;
  uploadId: string;
  /** Bytes acknowledged so far. */
  offset: number;
  /**
   * The smallest chunk the blob store takes without gathering (S3: 5 MiB), told to
   * the client as `OCI-Chunk-Min-Length` when the session opens; smaller chunks work too.
   */
  minChunkBytes?: number;
}

/** The `Location`, `Range` and id a client is told of a session. */
export function uploadLocation(state: UploadState): Record<string, string> {
  const headers: Record<string, string> = {
    Location: `/v2/${state.name}/blobs/uploads/${state.uploadId}`,
    Range: uploadRangeHeader(state.offset),
    "Docker-Upload-UUID": state.uploadId,
  };
  if (state.minChunkBytes) headers["OCI-Chunk-Min-Length"] = String(state.minChunkBytes);
  return headers;
}

function stateOf(name: string, session: UploadSession): UploadState {
  return { name, uploadId: session.uploadId, offset: session.record.offset };
}

/** 416 for a chunk that does not start where the session is (or lost a race to it). */
function outOfOrder(state: UploadState, message: string): OciError {
  return new OciError("BLOB_UPLOAD_INVALID", message, {
    status: 416,
    headers: uploadLocation(state),
    detail: { offset: state.offset },
  });
}

/** A chunk whose length disagrees with what the client declared (400, nothing kept). */
function sizeInvalid(message: string): OciError {
  return new OciError("SIZE_INVALID", message);
}

function ended(): OciError {
  return uploadUnknown("The upload was finished or cancelled by another request");
}

/** The upload operations of the registry. */
export class Uploads {
  readonly #ctx: RegistryContext;

  constructor(ctx: RegistryContext) {
    this.#ctx = ctx;
  }

  /** Opens a session in `name` hashing with `algorithm`, within the session caps. */
  async start(name: string, algorithm: Algorithm): Promise<UploadState> {
    const { meta, config } = this.#ctx;
    const open = await meta.countUploads(name);
    if (open.repo >= config.maxUploadsPerRepo || open.total >= config.maxUploads) {
      throw new OciError(
        "TOOMANYREQUESTS",
        "Too many open upload sessions; finish or cancel some first",
        { headers: { "Retry-After": "10" }, detail: { open } },
      );
    }
    const uploadId = crypto.randomUUID();
    await meta.createUpload(uploadId, name, algorithm);
    const minChunkBytes = this.#ctx.blobs.minChunkBytes;
    return minChunkBytes
      ? { name, uploadId, offset: 0, minChunkBytes }
      : { name, uploadId, offset: 0 };
  }

  /** Where a session of `name` stands; 404 when there is no such session there. */
  async status(name: string, uploadId: string): Promise<UploadState> {
    return stateOf(name, await this.#load(name, uploadId));
  }

  /** Appends a chunk and acknowledges it; where the session stands after it. */
  async append(name: string, uploadId: string, chunk: Chunk): Promise<UploadState> {
    const { lock, seen } = await this.#lock(name, uploadId, chunk);
    try {
      const session = await this.#loadLocked(name, uploadId, lock, seen, chunk);
      const part = await this.#writeChunk(name, session, chunk, undefined, lock);
      if (!part) return stateOf(name, session);
      const next = await this.#ctx.meta.commitPart(session, part);
      if (next) {
        this.#ctx.blobs.acknowledgePart?.(uploadId, part);
        return stateOf(name, next);
      }
      await this.#ctx.blobs.removePart(uploadId, part.file);
      return await this.#lostRace(name, session);
    } finally {
      await lock?.release();
    }
  }

  /**
   * Takes the session's writer lock when the store has one, after checking
   * the session exists and the chunk starts where it stands (so a chunk that
   * is plainly out of order gets its 416 without waiting). Null without.
   */
  async #lock(
    name: string,
    uploadId: string,
    chunk: Chunk,
  ): Promise<{ lock: UploadLock | null; seen: UploadSession }> {
    const session = await this.#load(name, uploadId);
    const blobs = this.#ctx.blobs;
    if (!blobs.lockUpload) return { lock: null, seen: session };
    if (chunk.contentRange !== null) {
      const range = parseContentRange(chunk.contentRange);
      if (range.start !== session.record.offset) {
        await chunk.body?.cancel().catch(() => {});
        const state = stateOf(name, session);
        throw outOfOrder(
          state,
          `Chunk starts at ${range.start}, but the upload is at ${state.offset}`,
        );
      }
    }
    const lock = await this.#onSessionFiles(uploadId, () => blobs.lockUpload!(uploadId));
    return { lock, seen: session };
  }

  /**
   * The session once its lock is held. A chunk that waited for the lock while
   * another request's chunk was acknowledged lost the race (416), as it would
   * have without a lock: it was sent for where the session stood before.
   */
  async #loadLocked(
    name: string,
    uploadId: string,
    lock: UploadLock | null,
    seen: UploadSession,
    chunk: Chunk,
  ): Promise<UploadSession> {
    const session = await this.#load(name, uploadId, lock);
    if (lock && chunk.body !== null && session.record.offset !== seen.record.offset) {
      await chunk.body.cancel().catch(() => {});
      return await this.#lostRace(name, session);
    }
    return session;
  }

  /**
   * Finishes a session as blob `digest`, with an optional last chunk. The
   * last chunk is never acknowledged on its own: if the blob cannot be
   * finished (disk full, bad digest) the session is as it was. A digest
   * mismatch ends the session, as Distribution does: its bytes are not that blob.
   */
  async finish(name: string, uploadId: string, digest: Digest, chunk: Chunk): Promise<void> {
    const { lock, seen } = await this.#lock(name, uploadId, chunk);
    try {
      await this.#finish(name, uploadId, digest, chunk, lock, seen);
    } finally {
      await lock?.release();
    }
  }

  async #finish(
    name: string,
    uploadId: string,
    digest: Digest,
    chunk: Chunk,
    lock: UploadLock | null,
    seen: UploadSession,
  ): Promise<void> {
    const { meta, blobs } = this.#ctx;
    const session = await this.#loadLocked(name, uploadId, lock, seen, chunk);
    const part = await this.#writeChunk(name, session, chunk, digest, lock);
    const parts = [...await meta.listUploadParts(session), ...(part ? [part] : [])];
    // The parts stay until the session's commit: if a collection removed the same bytes
    // meanwhile (the commit says "stale"), they are placed again (where the store kept them).
    for (;;) {
      const bytes = await settledBytes(meta, blobs, digest);
      const result = await this.#onSessionFiles(
        uploadId,
        () => blobs.finish(uploadId, parts, digest),
      )
        .catch(async (error) => {
          if (part) await blobs.removePart(uploadId, part.file).catch(() => {});
          if (error instanceof Deno.errors.NotFound) {
            // The session's bytes are gone while its record is not (a collection took the blob
            // its parts had become, in a store that does not keep them): it can never finish.
            if (await meta.endUpload(session)) await blobs.removeUpload(uploadId).catch(() => {});
            throw ended();
          }
          throw error;
        });
      if (!result.ok) {
        if (!(await meta.endUpload(session))) return await this.#lostRace(name, session);
        await blobs.removeUpload(uploadId);
        throw new OciError("DIGEST_INVALID", `Upload hashes to ${result.actual}, not ${digest}`, {
          detail: { expected: digest, actual: result.actual },
        });
      }
      const outcome = await meta.endUpload(session, { digest, size: result.size, bytes });
      if (outcome === "stale") continue;
      if (!outcome) {
        if (part) await blobs.removePart(uploadId, part.file);
        return await this.#lostRace(name, session);
      }
      break;
    }
    await blobs.removeUpload(uploadId);
  }

  /** Cancels a session: its record and its files go. */
  async cancel(name: string, uploadId: string): Promise<void> {
    let session = await this.#load(name, uploadId);
    // A chunk acknowledged meanwhile changes the record: cancel the session as it is now
    // (#load answers 404 once another request has really ended it).
    while (!(await this.#ctx.meta.endUpload(session))) session = await this.#load(name, uploadId);
    await this.#ctx.blobs.removeUpload(uploadId);
  }

  /**
   * The session `uploadId` of `name`, or 404. Read under a `lock` (taken for
   * a session that existed), a session gone meanwhile had its files removed
   * before the lock was let go, and taking it may have made its folder
   * again: that goes too.
   */
  async #load(name: string, uploadId: string, lock?: UploadLock | null): Promise<UploadSession> {
    const session = UPLOAD_ID_REGEXP.test(uploadId)
      ? await this.#ctx.meta.getUpload(uploadId)
      : null;
    if (!session || session.record.name !== name) {
      if (lock && !session) await this.#ctx.blobs.removeUpload(uploadId);
      throw uploadUnknown(`Upload "${uploadId.slice(0, 100)}" is not known in "${name}"`);
    }
    return session;
  }

  /**
   * Runs file work of a session. A file that vanished because another request
   * ended the session meanwhile (its files go after its record) means this
   * request lost the race: 404, not 500.
   */
  async #onSessionFiles<T>(uploadId: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      if (await this.#ctx.meta.getUpload(uploadId)) throw error;
      throw ended();
    }
  }

  /**
   * Writes a chunk as the session's next part (checking `Content-Range`
   * against the acknowledged offset) without acknowledging it. Null for an
   * empty body.
   */
  async #writeChunk(
    name: string,
    session: UploadSession,
    chunk: Chunk,
    alsoHash?: Digest,
    lock?: UploadLock | null,
  ): Promise<WrittenPart | null> {
    const { uploadId } = session;
    const state = stateOf(name, session);
    const range = chunk.contentRange === null ? null : parseContentRange(chunk.contentRange);
    const expected = range ? range.end - range.start + 1 : undefined;
    const declared = chunk.contentLength;
    if (range && range.start !== state.offset) {
      await chunk.body?.cancel().catch(() => {});
      throw outOfOrder(
        state,
        `Chunk starts at ${range.start}, but the upload is at ${state.offset}`,
      );
    }
    if (range && declared !== null && Number(declared) !== expected) {
      await chunk.body?.cancel().catch(() => {});
      throw sizeInvalid(`Content-Range covers ${expected} bytes but Content-Length is ${declared}`);
    }
    if (chunk.body === null || declared === "0") {
      await chunk.body?.cancel().catch(() => {});
      if (range) throw outOfOrder(state, "Content-Range given for an empty body");
      return null;
    }
    const body = chunk.body;
    const options = {
      algorithm: session.record.algorithm,
      ...(expected === undefined ? {} : { limit: expected }),
      ...(alsoHash ? { alsoHash: digestAlgorithm(alsoHash) } : {}),
      ...(lock ? { at: state.offset } : {}),
    };
    const blobs = this.#ctx.blobs;
    const part = await this.#onSessionFiles(
      uploadId,
      () => blobs.writePart(uploadId, body, options),
    );
    if ((expected !== undefined && part.size !== expected) || part.size === 0) {
      await blobs.removePart(uploadId, part.file);
      if (part.size === 0 && expected === undefined) return null;
      throw sizeInvalid(`Content-Range covers ${expected} bytes but the body had ${part.size}`);
    }
    return part;
  }

  /** The answer to a request that another one beat to the session: 416, or 404 if it ended. */
  async #lostRace(name: string, session: UploadSession): Promise<never> {
    const now = await this.#ctx.meta.getUpload(session.uploadId);
    if (!now) {
      // Finished or cancelled meanwhile: writePart may have re-created its directory.
      await this.#ctx.blobs.removeUpload(session.uploadId);
      throw ended();
    }
    throw outOfOrder(stateOf(name, now), "Another request changed this upload first");
  }
}
