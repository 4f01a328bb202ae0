/**
 * Every Deno KV key Berth writes, built here and nowhere else.
 *
 * | key | value | used by |
 * | --- | --- | --- |
 * | `["repos", name]` | `{ createdAt }` | catalog (prefix scan in byte order); NAME_UNKNOWN |
 * | `["manifests", name, digest]` | {@linkcode ManifestRecord} | end-3, end-7, end-9; bytes are blob `digest` |
 * | `["tags", name, tag]` | `{ digest, mediaType, size, updatedAt }` | end-3 by tag, end-8 (prefix scan) |
 * | `["tags_by_digest", name, digest, tag]` | `true` | end-9: deleting a digest removes its tags |
 * | `["manifest_epochs", name, digest]` | `Deno.KvU64` | bumped when a tag leaves the manifest; end-9 checks it |
 * | `["blob_links", name, digest]` | `{ size, linkedAt }` | end-2, end-10, end-11: a blob is visible in a repo only through a link |
 * | `["blob_repos", digest, name]` | `true` | end-11 mount without `from`; GC later |
 * | `["referrers", name, subject, artifactType, digest]` | descriptor | end-12 (prefix scan; filter is a longer prefix) |
 * | `["uploads", uploadId]` | {@linkcode UploadRecord} | end-5, end-6, end-13, end-14 |
 * | `["upload_parts", uploadId, index]` | {@linkcode UploadPart} | the committed chunks of a session, in order |
 * | `["upload_counts", name]` | `Deno.KvU64` | open sessions in `name` (cap per repository) |
 * | `["upload_total"]` | `Deno.KvU64` | open sessions in all (total cap) |
 *
 * Keys sort by their parts in byte order, which is the spec's lexical order
 * for tags and repositories.
 *
 * @module
 */
import type { Algorithm, Digest } from "../oci/digest.ts";

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

/** One committed chunk of an upload, stored as its own file. */
export interface UploadPart {
  file: string;
  size: number;
  /** Digest of this part alone, with the session's algorithm. */
  digest: Digest;
  /** Digest of this part with the algorithm of the digest the client gave, when it differs. */
  expected?: Digest;
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
export const manifestEpochKey = (name: string, digest: Digest) =>
  ["manifest_epochs", name, digest] as const;
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

/** Top-level key families, for fsck. */
export const FAMILIES = [
  "repos",
  "manifests",
  "tags",
  "tags_by_digest",
  "manifest_epochs",
  "blob_links",
  "blob_repos",
  "referrers",
  "uploads",
  "upload_parts",
  "upload_counts",
  "upload_total",
] as const;
