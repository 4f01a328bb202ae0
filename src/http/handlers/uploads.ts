/**
 * Blob uploads: end-4a/4b/4c (POST), end-5 (PATCH), end-6 (PUT), end-11
 * (mount), end-13 (status), end-14 (cancel).
 *
 * Each chunk is written to its own file, then acknowledged by one KV commit
 * that checks the session is as the request found it; a request that loses a
 * race gets 416 and its file is removed. So two racing PATCHes can never mix
 * their bytes, and any process sharing the data directory can take the next
 * chunk.
 *
 * @module
 */
import { type Digest, digestAlgorithm, parseAlgorithm, parseDigest } from "../../oci/digest.ts";
import { OciError } from "../../oci/errors.ts";
import { parseName } from "../../oci/name.ts";
import { parseContentRange } from "../../oci/range.ts";
import type { UploadPart, UploadRecord } from "../../meta/keys.ts";
import { requestBody } from "../body.ts";
import type { Deps } from "../deps.ts";
import { blobLocation, discardBody, singleParam, uploadHeaders } from "../headers.ts";
import { type Params, type Route, route } from "../router.ts";

const UPLOAD_ID_REGEXP = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

type Session = { name: string; uploadId: string; entry: Deno.KvEntry<UploadRecord> };

function created(name: string, digest: Digest): Response {
  return new Response(null, {
    status: 201,
    headers: {
      Location: blobLocation(name, digest),
      "Docker-Content-Digest": digest,
      "Content-Length": "0",
    },
  });
}

function outOfOrder(session: Session, offset: number, message: string): OciError {
  const headers = uploadHeaders(session.name, session.uploadId, offset);
  delete headers["Content-Length"];
  return new OciError("BLOB_UPLOAD_INVALID", message, { status: 416, headers, detail: { offset } });
}

/** A chunk whose length disagrees with what the client declared (400, nothing kept). */
function sizeInvalid(message: string): OciError {
  return new OciError("SIZE_INVALID", message);
}

/** Upload routes. */
export function uploadRoutes({ meta, blobs, config }: Deps): Route[] {
  async function loadSession(p: Params): Promise<Session> {
    const name = parseName(p.name!);
    const uploadId = p.uploadId!;
    const entry = UPLOAD_ID_REGEXP.test(uploadId) ? await meta.getUpload(uploadId) : null;
    if (!entry?.value || entry.value.name !== name) {
      throw new OciError(
        "BLOB_UPLOAD_UNKNOWN",
        `Upload "${uploadId.slice(0, 100)}" is not known in "${name}"`,
      );
    }
    return { name, uploadId, entry: entry as Deno.KvEntry<UploadRecord> };
  }

  /**
   * Runs file work of a session. A file that vanished because another request
   * ended the session meanwhile (its files go after its record) means this
   * request lost the race: 404, not 500.
   */
  async function onSessionFiles<T>(uploadId: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      if ((await meta.getUpload(uploadId)).value) throw error;
      throw new OciError(
        "BLOB_UPLOAD_UNKNOWN",
        "The upload was finished or cancelled by another request",
      );
    }
  }

  /**
   * Writes the body as the session's next chunk (checking `Content-Range`
   * against the acknowledged offset) without acknowledging it. Null for an
   * empty body.
   */
  async function writeChunk(
    req: Request,
    session: Session,
    alsoHash?: Digest,
  ): Promise<UploadPart | null> {
    const { uploadId, entry } = session;
    const offset = entry.value.offset;
    const rangeHeader = req.headers.get("Content-Range");
    const range = rangeHeader === null ? null : parseContentRange(rangeHeader);
    const expected = range ? range.end - range.start + 1 : undefined;
    const declared = req.headers.get("Content-Length");
    if (range && range.start !== offset) {
      throw outOfOrder(
        session,
        offset,
        `Chunk starts at ${range.start}, but the upload is at ${offset}`,
      );
    }
    if (range && declared !== null && Number(declared) !== expected) {
      await discardBody(req);
      throw sizeInvalid(`Content-Range covers ${expected} bytes but Content-Length is ${declared}`);
    }
    if (req.body === null || declared === "0") {
      await discardBody(req);
      if (range) throw outOfOrder(session, offset, "Content-Range given for an empty body");
      return null;
    }
    const options = {
      algorithm: entry.value.algorithm,
      ...(expected === undefined ? {} : { limit: expected }),
    };
    const part = await onSessionFiles(uploadId, () =>
      blobs.writePart(
        uploadId,
        requestBody(req, config.bodyTimeoutMs),
        alsoHash ? { ...options, alsoHash: digestAlgorithm(alsoHash) } : options,
      ));
    if ((expected !== undefined && part.size !== expected) || part.size === 0) {
      await blobs.removePart(uploadId, part.file);
      if (part.size === 0 && expected === undefined) return null;
      throw sizeInvalid(`Content-Range covers ${expected} bytes but the body had ${part.size}`);
    }
    return part;
  }

  /** Acknowledges a written chunk: one commit, checked against the session as it was read. */
  async function acknowledge(
    session: Session,
    part: UploadPart,
  ): Promise<Deno.KvEntry<UploadRecord>> {
    const { uploadId, entry } = session;
    const next = await meta.commitPart(uploadId, entry, part);
    if (next) return next;
    await blobs.removePart(uploadId, part.file);
    return await lostRace(session);
  }

  /** The answer to a request that another one beat to the session: 416, or 404 if it ended. */
  async function lostRace(session: Session): Promise<never> {
    const now = await meta.getUpload(session.uploadId);
    if (!now.value) {
      // Finished or cancelled meanwhile: writePart may have re-created its directory.
      await blobs.removeUpload(session.uploadId);
      throw new OciError(
        "BLOB_UPLOAD_UNKNOWN",
        "The upload was finished or cancelled by another request",
      );
    }
    throw outOfOrder(session, now.value.offset, "Another request changed this upload first");
  }

  async function startSession(req: Request, name: string, url: URL): Promise<Response> {
    const algorithm = parseAlgorithm(
      singleParam(url, "digest-algorithm", "DIGEST_INVALID") ?? "sha256",
    );
    const open = await meta.countUploads(name);
    if (open.repo >= config.maxUploadsPerRepo || open.total >= config.maxUploads) {
      await discardBody(req);
      throw new OciError(
        "TOOMANYREQUESTS",
        "Too many open upload sessions; finish or cancel some first",
        {
          headers: { "Retry-After": "10" },
          detail: { open },
        },
      );
    }
    await discardBody(req);
    const uploadId = crypto.randomUUID();
    await meta.createUpload(uploadId, name, algorithm);
    return new Response(null, { status: 202, headers: uploadHeaders(name, uploadId, 0) });
  }

  const session = "/v2/:name+/blobs/uploads/:uploadId";
  return [
    route("POST", "/v2/:name+/blobs/uploads{/}?", async (req, p, url) => {
      const name = parseName(p.name!);
      const mount = singleParam(url, "mount", "DIGEST_INVALID");
      if (mount !== undefined) {
        const digest = parseDigest(mount);
        const from = singleParam(url, "from", "NAME_INVALID");
        if (from !== undefined || config.autoMount) {
          const size = await meta.mountBlob(
            name,
            digest,
            from === undefined ? undefined : parseName(from),
          );
          if (size !== null) {
            await discardBody(req);
            return created(name, digest);
          }
        }
      }
      const digestParam = singleParam(url, "digest", "DIGEST_INVALID");
      if (digestParam === undefined || mount !== undefined) return startSession(req, name, url);
      const digest = parseDigest(digestParam);
      const result = await blobs.put(digest, requestBody(req, config.bodyTimeoutMs));
      if (!result.ok) {
        throw new OciError("DIGEST_INVALID", `Body hashes to ${result.actual}, not ${digest}`, {
          detail: { expected: digest, actual: result.actual },
        });
      }
      await meta.linkBlob(name, digest, result.size);
      return created(name, digest);
    }),
    route("GET", session, async (_req, p) => {
      const { name, uploadId, entry } = await loadSession(p);
      return new Response(null, {
        status: 204,
        headers: uploadHeaders(name, uploadId, entry.value.offset),
      });
    }),
    route("PATCH", session, async (req, p) => {
      const current = await loadSession(p);
      const part = await writeChunk(req, current);
      const next = part ? await acknowledge(current, part) : current.entry;
      return new Response(null, {
        status: 202,
        headers: uploadHeaders(current.name, current.uploadId, next.value.offset),
      });
    }),
    route("PUT", session, async (req, p, url) => {
      const current = await loadSession(p);
      const digestParam = singleParam(url, "digest", "DIGEST_INVALID");
      if (digestParam === undefined) {
        await discardBody(req);
        throw new OciError(
          "DIGEST_INVALID",
          "Closing an upload needs ?digest=<digest of the whole blob>",
        );
      }
      const digest = parseDigest(digestParam);
      // A last chunk in the PUT is never acknowledged on its own: if the blob
      // cannot be finished (disk full, bad digest) the session is as it was.
      const part = await writeChunk(req, current, digest);
      const { uploadId, entry } = current;
      const parts = [...await meta.listParts(uploadId, entry.value.parts), ...(part ? [part] : [])];
      const result = await onSessionFiles(uploadId, () => blobs.finish(uploadId, parts, digest))
        .catch(async (error) => {
          if (part) await blobs.removePart(uploadId, part.file).catch(() => {});
          throw error;
        });
      if (!result.ok) {
        // As Distribution does, a mismatch ends the session: its bytes are not that blob.
        if (!(await meta.endUpload(uploadId, entry))) return await lostRace(current);
        await blobs.removeUpload(uploadId);
        throw new OciError("DIGEST_INVALID", `Upload hashes to ${result.actual}, not ${digest}`, {
          detail: { expected: digest, actual: result.actual },
        });
      }
      if (!(await meta.endUpload(uploadId, entry, { digest, size: result.size }))) {
        if (part) await blobs.removePart(uploadId, part.file);
        return await lostRace(current);
      }
      await blobs.removeUpload(uploadId);
      return created(current.name, digest);
    }),
    route("DELETE", session, async (_req, p) => {
      let { uploadId, entry } = await loadSession(p);
      // A chunk acknowledged meanwhile changes the record: cancel the session as it is now
      // (loadSession answers 404 once another request has really ended it).
      while (!(await meta.endUpload(uploadId, entry))) ({ uploadId, entry } = await loadSession(p));
      await blobs.removeUpload(uploadId);
      return new Response(null, { status: 204, headers: { "Content-Length": "0" } });
    }),
  ];
}
