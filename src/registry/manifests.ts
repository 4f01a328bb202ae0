/**
 * Manifests: resolve a tag or digest, read the bytes, push (parse, validate,
 * check references, record), delete. Every rule about manifests lives here;
 * the HTTP handlers, and later the mirror, the UI's API and GC, call it.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { type Digest, digestAlgorithm, makeDigest } from "../oci/digest.ts";
import { OciError } from "../oci/errors.ts";
import { parseManifest } from "../oci/manifest.ts";
import { isTag } from "../oci/name.ts";
import { parseReference, type Reference } from "../oci/reference.ts";
import { type ManifestRecord, MAX_REFS_PER_MANIFEST } from "../meta/keys.ts";
import { MAX_TAGS_PER_PUT } from "../meta/metadata_store.ts";
import { ByteCache } from "../storage/byte_cache.ts";
import { readLimited } from "../storage/streams.ts";
import { settledBytes } from "../gc/bytes.ts";
import type { RegistryContext } from "./context.ts";
import { manifestUnknown, requireDeletes } from "./errors.ts";
import { readCacheOf, readThrough, type RepoReadCache, stringBytes } from "./read_cache.ts";

/** Largest referrer entry (annotations included) that fits a KV value with room to spare. */
const MAX_REFERRER_BYTES = 48 * 1024;

/** What a GET or HEAD needs of a manifest. */
export interface ResolvedManifest {
  digest: Digest;
  mediaType: string;
  size: number;
}

/** A manifest to push. */
export interface ManifestPush {
  name: string;
  reference: Reference;
  /** Tags besides the reference's own (`?tag=`). */
  tags: string[];
  /** The body; read up to the manifest size limit. */
  body: ReadableStream<Uint8Array> | null;
  /** The body's declared length, if any: over the limit is refused before reading. */
  declaredLength: number | null;
  contentType: string | null;
}

/** What a push recorded. */
export interface PushedManifest {
  digest: Digest;
  subject?: Digest;
  /** Every tag set, the reference's own included. */
  tags: string[];
}

/** Commit rounds a manifest PUT may lose to removals in its repository before it answers 503. */
export const MAX_PUSH_ROUNDS = 50;

/** The manifest operations of the registry. */
export class Manifests {
  readonly #ctx: RegistryContext;
  // Manifest bytes by digest: immutable, so safe to keep (32 MiB, entries up to 1 MiB).
  readonly #cache = new ByteCache(32 * 1024 * 1024, 1024 * 1024);
  // Tags and manifest records, re-checked against the repository's version on each use.
  readonly #reads: RepoReadCache;

  constructor(ctx: RegistryContext) {
    this.#ctx = ctx;
    this.#reads = readCacheOf(ctx.meta);
  }

  /**
   * Resolves a reference as a pull sees it: the tag (which repeats media type
   * and size) or the manifest record, from the read cache when the
   * repository's version still matches (a version read shared with concurrent
   * pulls), else one KV read of it with the version. A reference that is neither a
   * digest nor a valid tag names no manifest, so it is a 404 (as Distribution
   * answers, and the conformance suite's `.INVALID_MANIFEST_NAME` expects).
   */
  async resolve(name: string, rawReference: string): Promise<ResolvedManifest> {
    const { meta } = this.#ctx;
    if (!rawReference.includes(":") && !isTag(rawReference)) {
      return await manifestUnknown(meta, name, rawReference.slice(0, 200));
    }
    const reference = parseReference(rawReference);
    if (reference.kind === "tag") {
      const { tag } = reference;
      const found = await readThrough(
        this.#reads,
        name,
        `t\0${name}\0${tag}`,
        async () => {
          const read = await meta.getTagVersioned(name, tag);
          const value = read.value &&
            { digest: read.value.digest, mediaType: read.value.mediaType, size: read.value.size };
          return { version: read.version, value };
        },
        (v) => v ? stringBytes(name, tag, v.digest, v.mediaType) : stringBytes(name, tag),
      );
      return found ?? await manifestUnknown(meta, name, tag);
    }
    const { digest } = reference;
    const found = await readThrough(
      this.#reads,
      name,
      `m\0${name}\0${digest}`,
      async () => {
        const read = await meta.getManifestVersioned(name, digest);
        const value = read.value &&
          { digest, mediaType: read.value.mediaType, size: read.value.size };
        return { version: read.version, value };
      },
      (v) => v ? stringBytes(name, digest, v.mediaType) : stringBytes(name, digest),
    );
    return found ?? await manifestUnknown(meta, name, digest);
  }

  /** Resolves a reference and reads its bytes (from the cache when it can). */
  async get(
    name: string,
    rawReference: string,
  ): Promise<ResolvedManifest & { bytes: Uint8Array }> {
    const resolved = await this.resolve(name, rawReference);
    const cached = this.#cache.get(resolved.digest);
    if (cached) return { ...resolved, bytes: cached };
    const blob = await this.#ctx.blobs.open(resolved.digest);
    if (!blob) {
      throw new Error(`Manifest ${resolved.digest} of "${name}" has a record but no bytes`);
    }
    const limit = Math.max(resolved.size, this.#ctx.config.maxManifestBytes);
    const bytes = await readLimited(blob.stream, limit);
    this.#cache.set(resolved.digest, bytes);
    return { ...resolved, bytes };
  }

  /**
   * Pushes a manifest: reads and hashes the body, checks it against a digest
   * reference, parses and validates it, checks that what it references is in
   * the repository (blobs and child manifests at once), stores the bytes and
   * records it with its tags and references in one commit.
   */
  async push(push: ManifestPush): Promise<PushedManifest> {
    const { meta, blobs, config } = this.#ctx;
    const { name, reference } = push;
    const tags = [...new Set([...push.tags, ...(reference.kind === "tag" ? [reference.tag] : [])])];
    if (tags.length > MAX_TAGS_PER_PUT) {
      await push.body?.cancel().catch(() => {});
      throw new OciError("TAG_INVALID", `At most ${MAX_TAGS_PER_PUT} tags per manifest PUT`, {
        status: 414,
      });
    }
    if ((push.declaredLength ?? 0) > config.maxManifestBytes) {
      await push.body?.cancel().catch(() => {});
      throw new OciError("SIZE_INVALID", `Manifest larger than ${config.maxManifestBytes} bytes`, {
        status: 413,
      });
    }
    const bytes = await readLimited(push.body, config.maxManifestBytes);
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
    const parsed = parseManifest(bytes, push.contentType);
    // Its references are recorded in the commit that records it, which KV bounds in size.
    const distinct = new Set([...parsed.blobs, ...parsed.manifests]).size;
    if (distinct > MAX_REFS_PER_MANIFEST) {
      throw new OciError(
        "MANIFEST_INVALID",
        `A manifest may reference at most ${MAX_REFS_PER_MANIFEST} blobs and manifests`,
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
    // Validated against what a collection can change: one that removes a reference or the
    // bytes meanwhile makes the commit fail, and the push validates and places them again.
    // Bytes placed by a round that then loses for good hold nothing: queue them, or nothing
    // but `gc --full` would find them.
    let placed = false;
    const leave = async () => {
      if (placed) await meta.gc().queueUnheldBytes(digest, Date.now() + this.#ctx.config.gcGraceMs);
    };
    for (let round = 0;; round++) {
      // Each lost round means a collection removed something in this repository meanwhile:
      // back off, and past a bound tell the client to come back rather than wait on it.
      if (round >= MAX_PUSH_ROUNDS) {
        await leave();
        throw new OciError("UNAVAILABLE", "A collection is busy in this repository; try again", {
          status: 503,
          headers: { "Retry-After": "1" },
        });
      }
      if (round > 0) await new Promise((r) => setTimeout(r, Math.min(2 ** round, 100)));
      const guard = {
        bytes: await settledBytes(meta, blobs, digest),
        epoch: (await meta.pushGuard(name, digest)).epoch,
      };
      const [missingBlobs, missingManifests] = await Promise.all([
        meta.missingBlobs(name, parsed.blobs),
        meta.missingManifests(name, parsed.manifests),
      ]);
      const missing = [...missingBlobs, ...missingManifests];
      if (missing.length) {
        await leave();
        throw new OciError(
          "MANIFEST_BLOB_UNKNOWN",
          `Manifest references ${missing.length} unknown blob(s) or manifest(s)`,
          { detail: { missing: missing.slice(0, 50) } },
        );
      }
      await blobs.putBytes(digest, bytes);
      placed = true;
      this.#cache.set(digest, bytes);
      const recorded = await meta.putManifest({
        name,
        digest,
        record,
        tags,
        guard,
        refs: {
          blobs: parsed.blobs,
          manifests: parsed.manifests,
          ...(parsed.subject ? { subject: parsed.subject } : {}),
        },
        ...(parsed.annotations ? { annotations: parsed.annotations } : {}),
      });
      if (recorded) break;
    }
    return { digest, tags, ...(parsed.subject ? { subject: parsed.subject } : {}) };
  }

  /** Deletes a tag (the pointer only) or a manifest (with its tags and referrer entry). */
  async delete(name: string, reference: Reference): Promise<void> {
    const { meta, config } = this.#ctx;
    requireDeletes(config.deleteEnabled);
    const deleted = reference.kind === "tag"
      ? await meta.deleteTag(name, reference.tag)
      : await meta.deleteManifest(name, reference.digest);
    if (!deleted) {
      const shown = reference.kind === "tag" ? reference.tag : reference.digest;
      await manifestUnknown(meta, name, shown);
    }
  }
}
