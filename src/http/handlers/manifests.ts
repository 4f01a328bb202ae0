/**
 * end-3 (GET/HEAD a manifest), end-7 and end-7b (PUT, with `?tag=`) and
 * end-9 (DELETE by tag or digest).
 *
 * @module
 */
import { createHash } from "node:crypto";
import { type Digest, digestAlgorithm, makeDigest } from "../../oci/digest.ts";
import { OciError } from "../../oci/errors.ts";
import { parseManifest } from "../../oci/manifest.ts";
import { isTag, parseName, parseTag } from "../../oci/name.ts";
import { parseReference, type Reference } from "../../oci/reference.ts";
import type { ManifestRecord } from "../../meta/keys.ts";
import { MAX_TAGS_PER_PUT, type MetadataStore } from "../../meta/metadata_store.ts";
import { ByteCache } from "../../storage/byte_cache.ts";
import { readLimited } from "../../storage/streams.ts";
import { requestBody } from "../body.ts";
import type { Deps } from "../deps.ts";
import { discardBody, manifestLocation, notFound, requireDeletes } from "../headers.ts";
import { type Params, type Route, route } from "../router.ts";

/** Largest referrer entry (annotations included) that fits a KV value with room to spare. */
const MAX_REFERRER_BYTES = 48 * 1024;

function manifestUnknown(meta: MetadataStore, name: string, reference: string): Promise<never> {
  const message = `Manifest "${reference}" is not in repository "${name}"`;
  return notFound(meta, name, new OciError("MANIFEST_UNKNOWN", message, { detail: { reference } }));
}

/** What a GET or HEAD needs of a manifest. */
type Resolved = { digest: Digest; record: Pick<ManifestRecord, "mediaType" | "size"> };

/** Resolves a tag or digest to a manifest: one KV read (the tag repeats media type and size). */
async function resolve(meta: MetadataStore, name: string, reference: Reference): Promise<Resolved> {
  if (reference.kind === "tag") {
    const tag = await meta.getTag(name, reference.tag);
    if (tag) return { digest: tag.digest, record: tag };
    return await manifestUnknown(meta, name, reference.tag);
  }
  const record = await meta.getManifest(name, reference.digest);
  if (!record) return await manifestUnknown(meta, name, reference.digest);
  return { digest: reference.digest, record };
}

function manifestHeaders(digest: Digest, record: Resolved["record"]): Record<string, string> {
  return {
    "Content-Type": record.mediaType,
    "Content-Length": String(record.size),
    "Docker-Content-Digest": digest,
    ETag: `"${digest}"`,
  };
}

function parseParams(p: Params): { name: string; reference: Reference } {
  return { name: parseName(p.name!), reference: parseReference(p.reference!) };
}

/**
 * GET and HEAD: a reference that is neither a digest nor a valid tag names no
 * manifest, so it is a 404 (as Distribution answers, and the conformance
 * suite's `.INVALID_MANIFEST_NAME` expects); a PUT of one stays 400.
 */
async function resolveForPull(meta: MetadataStore, p: Params): Promise<Resolved> {
  const name = parseName(p.name!);
  const raw = p.reference!;
  if (!raw.includes(":") && !isTag(raw)) {
    return await manifestUnknown(meta, name, raw.slice(0, 200));
  }
  return await resolve(meta, name, parseReference(raw));
}

/** Tags a PUT sets: the path's tag and every `?tag=` (end-7b). */
function tagsOf(reference: Reference, url: URL): string[] {
  const tags = new Set(url.searchParams.getAll("tag").map(parseTag));
  if (reference.kind === "tag") tags.add(reference.tag);
  if (tags.size > MAX_TAGS_PER_PUT) {
    throw new OciError("TAG_INVALID", `At most ${MAX_TAGS_PER_PUT} tags per manifest PUT`, {
      status: 414,
    });
  }
  return [...tags];
}

/** Manifest routes. */
export function manifestRoutes({ meta, blobs, config }: Deps): Route[] {
  const path = "/v2/:name+/manifests/:reference";
  // Manifest bytes by digest: immutable, so safe to keep (32 MiB, entries up to 1 MiB).
  const cache = new ByteCache(32 * 1024 * 1024, 1024 * 1024);
  const bytesOf = async (name: string, digest: Digest, size: number): Promise<Uint8Array> => {
    const cached = cache.get(digest);
    if (cached) return cached;
    const blob = await blobs.open(digest);
    if (!blob) throw new Error(`Manifest ${digest} of "${name}" has a record but no bytes`);
    const bytes = await readLimited(blob.stream, Math.max(size, config.maxManifestBytes));
    cache.set(digest, bytes);
    return bytes;
  };
  return [
    route("HEAD", path, async (_req, p) => {
      const { digest, record } = await resolveForPull(meta, p);
      return new Response(null, { headers: manifestHeaders(digest, record) });
    }),
    route("GET", path, async (_req, p) => {
      const { digest, record } = await resolveForPull(meta, p);
      const bytes = await bytesOf(p.name!, digest, record.size);
      return new Response(bytes as Uint8Array<ArrayBuffer>, {
        headers: manifestHeaders(digest, record),
      });
    }),
    route("PUT", path, async (req, p, url) => {
      const { name, reference } = parseParams(p);
      const tags = tagsOf(reference, url);
      const declared = Number(req.headers.get("Content-Length") ?? 0);
      if (declared > config.maxManifestBytes) {
        await discardBody(req);
        throw new OciError(
          "SIZE_INVALID",
          `Manifest larger than ${config.maxManifestBytes} bytes`,
          { status: 413 },
        );
      }
      const bytes = await readLimited(
        requestBody(req, config.bodyTimeoutMs),
        config.maxManifestBytes,
      );
      const algorithm = reference.kind === "digest" ? digestAlgorithm(reference.digest) : "sha256";
      const digest = makeDigest(algorithm, createHash(algorithm).update(bytes).digest("hex"));
      if (reference.kind === "digest" && reference.digest !== digest) {
        throw new OciError(
          "DIGEST_INVALID",
          `Manifest hashes to ${digest}, not ${reference.digest}`,
          {
            detail: { expected: reference.digest, actual: digest },
          },
        );
      }
      const parsed = parseManifest(bytes, req.headers.get("Content-Type"));
      const missing = [
        ...await meta.missingBlobs(name, parsed.blobs),
        ...await meta.missingManifests(name, parsed.manifests),
      ];
      if (missing.length) {
        throw new OciError(
          "MANIFEST_BLOB_UNKNOWN",
          `Manifest references ${missing.length} unknown blob(s) or manifest(s)`,
          {
            detail: { missing: missing.slice(0, 50) },
          },
        );
      }
      const annotationBytes =
        new TextEncoder().encode(JSON.stringify(parsed.annotations ?? {})).length;
      if (parsed.subject && annotationBytes > MAX_REFERRER_BYTES) {
        throw new OciError(
          "MANIFEST_INVALID",
          `Annotations of a manifest with a subject may take ${MAX_REFERRER_BYTES} bytes`,
        );
      }
      const record: ManifestRecord = {
        mediaType: parsed.mediaType,
        size: bytes.length,
        createdAt: Date.now(),
      };
      if (parsed.artifactType !== undefined) record.artifactType = parsed.artifactType;
      if (parsed.subject !== undefined) record.subject = parsed.subject;
      await blobs.putBytes(digest, bytes);
      cache.set(digest, bytes);
      await meta.putManifest({
        name,
        digest,
        record,
        tags,
        refs: {
          blobs: parsed.blobs,
          manifests: parsed.manifests,
          ...(parsed.subject ? { subject: parsed.subject } : {}),
        },
        ...(parsed.annotations ? { annotations: parsed.annotations } : {}),
      });
      const headers: Record<string, string> = {
        Location: manifestLocation(name, digest),
        "Docker-Content-Digest": digest,
        "Content-Length": "0",
      };
      if (parsed.subject) headers["OCI-Subject"] = parsed.subject;
      if (url.searchParams.has("tag")) headers["OCI-Tag"] = tags.join(", ");
      return new Response(null, { status: 201, headers });
    }),
    route("DELETE", path, async (_req, p) => {
      requireDeletes(config.deleteEnabled);
      const { name, reference } = parseParams(p);
      const deleted = reference.kind === "tag"
        ? await meta.deleteTag(name, reference.tag)
        : await meta.deleteManifest(name, reference.digest);
      if (!deleted) {
        await manifestUnknown(
          meta,
          name,
          reference.kind === "tag" ? reference.tag : reference.digest,
        );
      }
      return new Response(null, { status: 202, headers: { "Content-Length": "0" } });
    }),
  ];
}
