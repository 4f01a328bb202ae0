/**
 * Every Deno KV key Berth writes, built here and nowhere else.
 *
 * | key | value | used by |
 * | --- | --- | --- |
 * | `["repos", name]` | `{ createdAt }` | catalog (prefix scan in byte order); NAME_UNKNOWN |
 * | `["manifests", name, digest]` | {@linkcode ManifestRecord} | end-3, end-7, end-9; bytes are blob `digest` |
 * | `["tags", name, tag]` | `{ digest, mediaType, size, updatedAt }` | end-3 by tag, end-8 (prefix scan) |
 * | `["tags_by_digest", name, digest, tag]` | `true` | end-9: deleting a digest removes its tags |
 * | `["manifest_refs", name, digest, page]` | {@linkcode ManifestRefs} | what a manifest references (blobs, child manifests, subject), written with its record; GC, usage, fsck |
 * | `["tag_clock", name]` | `Deno.KvU64` | bumped by every commit that changes a tag of `name`; such commits check it (one check for any number of tags) |
 * | `["repo_version", name]` | `number` (when last set) | set, unchecked, by every commit that changes a tag, manifest record or referrer of `name`: its versionstamp says whether a process's read cache of `name` is current; absent: no version yet |
 * | `["blob_links", name, digest]` | `{ size, linkedAt }` | end-2, end-10, end-11: a blob is visible in a repo only through a link |
 * | `["blob_repos", digest, name]` | `true` | end-11 mount without `from`; GC later |
 * | `["referrers", name, subject, artifactType, digest]` | descriptor | end-12 (prefix scan; filter is a longer prefix) |
 * | `["uploads", uploadId]` | {@linkcode UploadRecord} | end-5, end-6, end-13, end-14 |
 * | `["upload_parts", uploadId, index]` | {@linkcode UploadPart} | the committed chunks of a session, in order |
 * | `["upload_counts", name]` | `Deno.KvU64` | open sessions in `name` (cap per repository) |
 * | `["upload_total"]` | `Deno.KvU64` | open sessions in all (total cap) |
 * | `["gc_refs", name, digest]` | `Deno.KvU64` | manifest records in `name` that reference `digest` (blob or child), plus pending releases and intents |
 * | `["blob_holders", digest]` | `Deno.KvU64` | links and manifest records of `digest` in all repositories; present while its bytes are counted |
 * | `["blob_gone", digest]` | {@linkcode GoneRecord} | the bytes are being removed, or were: checked by every commit that links `digest` |
 * | `["gc_epoch", name]` | `Deno.KvU64` | bumped by every commit that removes a link or manifest of `name`; manifest PUTs check it |
 * | `["gc_due", kind, at, name, digest]` | `true` | collection candidates (`blob`, `manifest`, `subject`), keyed by when they became candidates |
 * | `["gc_untagged", name, digest]` | `number` | when the manifest last became a candidate: an older `gc_due` entry of it is stale |
 * | `["gc_bytes", at, digest]` | `true` | digests whose holders may have reached zero (bytes candidates) |
 * | `["gc_release", at, token, page]` | {@linkcode ReleasePage} | references of a removed manifest still to be uncounted |
 * | `["gc_intents", token, index]` | {@linkcode IntentChunk} | references counted ahead of a large manifest's record commit |
 * | `["usage", name]` | `Deno.KvU64` | bytes `name` holds: its links and manifest records |
 * | `["usage_total"]` | `Deno.KvU64` | bytes of every digest with holders, each once |
 * | `["store_blobs", digest]` | {@linkcode StoredBlob} | the KV blob store (`--blobs kv`): a blob, published once its chunks are written and verified |
 * | `["store_runs", run]` | {@linkcode ChunkRun} | the KV blob store: a run of chunks, its state and owner (staging, part, blob, dying) |
 * | `["store_unsettled", run]` | `true` | the KV blob store: a run being written or removed (what the collector looks at) |
 * | `["store_chunks", run, index]` | `Uint8Array` (≤ 63 KiB) | the KV blob store: the bytes, in order |
 * | `["store_sessions", uploadId]` | `{ modifiedAt }` | the KV blob store: a session with parts; commits that change its parts rewrite it |
 * | `["store_parts", uploadId, file]` | `{ run, size, modifiedAt }` | the KV blob store: a part of a session (a run) |
 * | `["secrets", name]` | bytes | keys Berth generates once and shares between processes: the catalog cursor seal, a token signing key (deploy mode) |
 * | `["schema"]` | {@linkcode SchemaRecord} | the layout version of this KV; start-up migrates older ones |
 * | `["schema_migration"]` | {@linkcode MigrationRecord} | a migration in progress: where to resume after a crash |
 *
 * Keys sort by their parts in byte order, which is the spec's lexical order
 * for tags and repositories.
 *
 * @module
 */
import type { Algorithm, Digest } from "../oci/digest.ts";
import type { WrittenPart } from "../storage/blob_store.ts";

/** What KV keeps of a manifest; its bytes live in the blob store under its digest. */
export interface ManifestRecord {
  mediaType: string;
  size: number;
  artifactType?: string;
  subject?: Digest;
  createdAt: number;
}

/**
 * A tag: a pointer to a manifest digest. It repeats the manifest's media type
 * and size (a tag exists only while its manifest record does: they change in
 * one commit), so a GET or HEAD by tag costs one KV read.
 */
export interface TagRecord {
  digest: Digest;
  mediaType: string;
  size: number;
  updatedAt: number;
}

/** A blob's presence in one repository. */
export interface BlobLink {
  size: number;
  linkedAt: number;
}

/** An upload session (chunks are {@linkcode UploadPart} entries). */
export interface UploadRecord {
  name: string;
  /** Bytes acknowledged so far. */
  offset: number;
  /** Number of committed parts. */
  parts: number;
  algorithm: Algorithm;
  startedAt: number;
  updatedAt: number;
}

/** One committed chunk of an upload: what the blob store said it wrote, recorded as is. */
export type UploadPart = WrittenPart;

/**
 * One page of what a manifest references. A manifest's references are split
 * into pages of at most {@linkcode REFS_PER_PAGE} digests so that each value
 * stays far under Deno KV's 64 KiB; page 0 always exists and carries the
 * subject.
 */
export interface ManifestRefs {
  /** Blobs it references (config and layers; not foreign layers with `urls`). */
  blobs: Digest[];
  /** Child manifests (an index's `manifests`). */
  manifests: Digest[];
  /** The manifest it refers to (`subject`), page 0 only. */
  subject?: Digest;
}

/** Digests one {@linkcode ManifestRefs} page holds at most (sha512 digests: ~35 KiB). */
export const REFS_PER_PAGE = 256;
/** Distinct digests one manifest may reference, so that its commit stays within KV's limits. */
export const MAX_REFS_PER_MANIFEST = 16 * REFS_PER_PAGE;

/** The bytes of a digest are being removed (`removing`, under a lease) or were (`removed`). */
export interface GoneRecord {
  state: "removing" | "removed";
  /** When the state was entered (ms since epoch); a `removing` lease runs from here. */
  at: number;
}

/** References of a large manifest counted ahead of its record (see `putManifest`). */
export interface IntentChunk {
  name: string;
  digest: Digest;
  at: number;
  blobs: Digest[];
  manifests: Digest[];
}

/** One page of a removed manifest's references, still counted in `gc_refs`. */
export interface ReleasePage {
  name: string;
  digest: Digest;
  blobs: Digest[];
  manifests: Digest[];
}

/** The kinds of collection candidates in `gc_due`. */
export type DueKind = "blob" | "manifest" | "subject";

/** The KV layout version. */
export interface SchemaRecord {
  version: number;
  /** When this version was reached (ms since epoch). */
  migratedAt: number;
}

/** A migration under way: the step it is at and the cursor within that step. */
export interface MigrationRecord {
  from: number;
  to: number;
  step: string;
  cursor?: string;
}

/** A blob of the KV blob store: its bytes are the chunks of `runs`, in order. */
export interface StoredBlob {
  size: number;
  createdAt: number;
  runs: { run: string; size: number }[];
}

/**
 * A run of chunks of the KV blob store. `staging`: being written (its chunks
 * are invisible; left by a crash when old); `part`: part `file` of session
 * `uploadId`; `blob`: bytes of blob `digest`; `dying`: being removed.
 * `size` counts the bytes of every chunk committed.
 */
export interface ChunkRun {
  state: "staging" | "part" | "blob" | "dying";
  size: number;
  modifiedAt: number;
  uploadId?: string;
  file?: string;
  digest?: Digest;
}

/** A part of a session of the KV blob store. */
export interface StoredPart {
  run: string;
  size: number;
  modifiedAt: number;
}

/** A descriptor in the referrers index (end-12). */
export interface ReferrerDescriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export const repoKey = (name: string) => ["repos", name] as const;
export const reposPrefix = () => ["repos"] as const;
export const manifestKey = (name: string, digest: Digest) => ["manifests", name, digest] as const;
export const tagKey = (name: string, tag: string) => ["tags", name, tag] as const;
export const tagsPrefix = (name: string) => ["tags", name] as const;
export const tagsByDigestKey = (name: string, digest: Digest, tag: string) =>
  ["tags_by_digest", name, digest, tag] as const;
export const tagsByDigestPrefix = (name: string, digest: Digest) =>
  ["tags_by_digest", name, digest] as const;
export const manifestRefsKey = (name: string, digest: Digest, page: number) =>
  ["manifest_refs", name, digest, page] as const;
export const manifestRefsPrefix = (name: string, digest: Digest) =>
  ["manifest_refs", name, digest] as const;
export const tagClockKey = (name: string) => ["tag_clock", name] as const;
export const repoVersionKey = (name: string) => ["repo_version", name] as const;
export const blobLinkKey = (name: string, digest: Digest) => ["blob_links", name, digest] as const;
export const blobReposKey = (digest: Digest, name: string) => ["blob_repos", digest, name] as const;
export const blobReposPrefix = (digest: Digest) => ["blob_repos", digest] as const;
export const referrerKey = (name: string, subject: Digest, artifactType: string, digest: Digest) =>
  ["referrers", name, subject, artifactType, digest] as const;
export const referrersPrefix = (name: string, subject: Digest) =>
  ["referrers", name, subject] as const;
export const uploadKey = (uploadId: string) => ["uploads", uploadId] as const;
export const uploadsPrefix = () => ["uploads"] as const;
export const uploadPartKey = (uploadId: string, index: number) =>
  ["upload_parts", uploadId, index] as const;
export const uploadPartsPrefix = (uploadId: string) => ["upload_parts", uploadId] as const;
export const allUploadParts = () => ["upload_parts"] as const;
export const uploadCountKey = (name: string) => ["upload_counts", name] as const;
export const uploadTotalKey = () => ["upload_total"] as const;
export const secretKey = (name: string) => ["secrets", name] as const;
export const storeBlobKey = (digest: Digest) => ["store_blobs", digest] as const;
export const storeBlobsPrefix = () => ["store_blobs"] as const;
export const storeRunKey = (run: string) => ["store_runs", run] as const;
export const storeRunsPrefix = () => ["store_runs"] as const;
export const storeUnsettledKey = (run: string) => ["store_unsettled", run] as const;
export const storeUnsettledPrefix = () => ["store_unsettled"] as const;
export const storeChunkKey = (run: string, index: number) => ["store_chunks", run, index] as const;
export const storeChunksPrefix = (run: string) => ["store_chunks", run] as const;
export const storeSessionKey = (uploadId: string) => ["store_sessions", uploadId] as const;
export const storeSessionsPrefix = () => ["store_sessions"] as const;
export const storePartKey = (uploadId: string, file: string) =>
  ["store_parts", uploadId, file] as const;
export const storePartsPrefix = (uploadId: string) => ["store_parts", uploadId] as const;
export const schemaKey = () => ["schema"] as const;
export const migrationKey = () => ["schema_migration"] as const;
export const gcRefsKey = (name: string, digest: Digest) => ["gc_refs", name, digest] as const;
export const blobHoldersKey = (digest: Digest) => ["blob_holders", digest] as const;
export const blobGoneKey = (digest: Digest) => ["blob_gone", digest] as const;
export const gcEpochKey = (name: string) => ["gc_epoch", name] as const;
export const gcDueKey = (kind: DueKind, at: number, name: string, digest: Digest) =>
  ["gc_due", kind, at, name, digest] as const;
export const gcDuePrefix = (kind: DueKind) => ["gc_due", kind] as const;
export const gcUntaggedKey = (name: string, digest: Digest) =>
  ["gc_untagged", name, digest] as const;
export const gcBytesKey = (at: number, digest: Digest) => ["gc_bytes", at, digest] as const;
export const gcBytesPrefix = () => ["gc_bytes"] as const;
export const gcReleaseKey = (at: number, token: string, page: number) =>
  ["gc_release", at, token, page] as const;
export const gcReleasePrefix = () => ["gc_release"] as const;
export const gcIntentKey = (token: string, index: number) => ["gc_intents", token, index] as const;
export const gcIntentsPrefix = (token?: string) =>
  (token === undefined ? ["gc_intents"] : ["gc_intents", token]) as Deno.KvKey;
export const usageKey = (name: string) => ["usage", name] as const;
export const usagePrefix = () => ["usage"] as const;
export const usageTotalKey = () => ["usage_total"] as const;
/** Schema version 1 only (removed by the migration to 2): bumped when a tag left a manifest. */
export const legacyManifestEpochsPrefix = () => ["manifest_epochs"] as const;

/** Top-level key families, for fsck. */
export const FAMILIES = [
  "repos",
  "manifests",
  "tags",
  "tags_by_digest",
  "manifest_refs",
  "tag_clock",
  "repo_version",
  "blob_links",
  "blob_repos",
  "referrers",
  "uploads",
  "upload_parts",
  "upload_counts",
  "upload_total",
  "secrets",
  "gc_refs",
  "blob_holders",
  "blob_gone",
  "gc_epoch",
  "gc_due",
  "gc_untagged",
  "gc_bytes",
  "gc_release",
  "gc_intents",
  "usage",
  "usage_total",
  "schema",
  "schema_migration",
] as const;

/**
 * Splits what a manifest references into {@linkcode ManifestRefs} pages
 * (duplicates removed, order kept). Page 0 always exists.
 */
export function refsPages(
  refs: { blobs: Digest[]; manifests: Digest[]; subject?: Digest },
): ManifestRefs[] {
  const items = [
    ...[...new Set(refs.blobs)].map((digest) => ({ kind: "blobs" as const, digest })),
    ...[...new Set(refs.manifests)].map((digest) => ({ kind: "manifests" as const, digest })),
  ];
  const pages: ManifestRefs[] = [];
  for (let i = 0; i === 0 || i < items.length; i += REFS_PER_PAGE) {
    const page: ManifestRefs = { blobs: [], manifests: [] };
    for (const item of items.slice(i, i + REFS_PER_PAGE)) page[item.kind].push(item.digest);
    pages.push(page);
  }
  if (refs.subject !== undefined) pages[0]!.subject = refs.subject;
  return pages;
}

/** Joins {@linkcode ManifestRefs} pages back into one. */
export function joinRefs(pages: ManifestRefs[]): ManifestRefs {
  const refs: ManifestRefs = {
    blobs: pages.flatMap((p) => p.blobs),
    manifests: pages.flatMap((p) => p.manifests),
  };
  const subject = pages[0]?.subject;
  if (subject !== undefined) refs.subject = subject;
  return refs;
}
