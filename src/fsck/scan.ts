/**
 * Reads everything fsck judges, once, through the interfaces: every entry of
 * every metadata family (through {@linkcode MetadataAudit}), the hash of every
 * stored blob (streamed through `BlobStore.open`), what each manifest's bytes
 * parse to, the files of every upload session, and the store's debris.
 * Nothing is judged here; the invariants work on the result.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { AuditEntry, AuditFamily, MetadataAudit } from "../meta/audit.ts";
import { FAMILIES } from "../meta/keys.ts";
import { type Algorithm, type Digest, digestAlgorithm, makeDigest } from "../oci/digest.ts";
import { type ParsedManifest, parseManifest } from "../oci/manifest.ts";
import type { Debris, Storage } from "../storage/blob_store.ts";
import { readLimited } from "../storage/streams.ts";
import { type Progress } from "./progress.ts";
import { bytesText, id, isObject } from "./values.ts";

/** The largest manifest Berth accepts (`--max-manifest-bytes` at most); larger bytes do not parse. */
const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

/** The families scanned, in this order. */
export const SCANNED: readonly AuditFamily[] = [...FAMILIES, "manifest_epochs"];

/** A stored blob and what its bytes hash to. */
export interface BlobScan {
  digest: Digest;
  size: number;
  actual: Digest;
}

/** Every entry of every family. */
export type Entries = { [F in AuditFamily]: AuditEntry<F>[] };

/** Something in the store that is neither a blob nor part of a session. */
export type StoreDebris = Debris & { kind: "problem" | "leftover" };

/** Everything one fsck run judges. */
export interface Scan {
  /** Every blob the store lists (and could still open), with the digest its bytes hash to. */
  blobs: BlobScan[];
  debris: StoreDebris[];
  meta: Entries;
  /**
   * What the bytes of each manifest record parse to, by {@linkcode contentId}
   * (only for records over bytes that hash to their digest), or why they do not.
   */
  contents: Map<string, ParsedManifest | string>;
  /** Files of every session folder the store has: uploadId → file → size. */
  sessionFiles: Map<string, Map<string, number>>;
  /** What each stored part hashes to, with its session's algorithm: uploadId → file → digest. */
  partDigests: Map<string, Map<string, Digest>>;
}

/** The key of {@linkcode Scan.contents}: the bytes of `digest` parsed as `mediaType`. */
export function contentId(digest: Digest, mediaType: string): string {
  return id(digest, mediaType);
}

/** Reads every store of a data directory for fsck. */
export async function scanStores(
  audit: MetadataAudit,
  storage: Storage,
  progress: Progress,
): Promise<Scan> {
  const debris: StoreDebris[] = [];
  for await (const one of storage.debris()) debris.push(one);
  const blobs = await hashBlobs(storage, progress);
  const meta = {} as Record<AuditFamily, AuditEntry[]>;
  for (const family of SCANNED) {
    const entries: AuditEntry[] = [];
    for await (const entry of audit.scan(family)) {
      entries.push(entry);
      progress.tick(() => `${family}: ${entries.length} read`);
    }
    meta[family] = entries;
  }
  const good = new Set(blobs.filter((b) => b.actual === b.digest).map((b) => b.digest));
  const contents = await readManifests(storage, meta as Entries, good, progress);
  const algorithms = new Map<string, Algorithm>();
  for (const entry of (meta as Entries).uploads) {
    const algorithm = (entry.value as { algorithm?: unknown } | null)?.algorithm;
    if (entry.key && (algorithm === "sha256" || algorithm === "sha512")) {
      algorithms.set(entry.key.uploadId, algorithm);
    }
  }
  // Parts appended to one session file (`through`) are hashed as that file's first
  // bytes up to the furthest of them: their running digest.
  const throughs = new Map<string, Map<string, number>>();
  for (const entry of (meta as Entries).upload_parts) {
    const value = entry.value as { file?: unknown; through?: unknown } | null;
    const uploadId = entry.parts[0];
    if (typeof uploadId !== "string" || typeof value?.file !== "string") continue;
    if (typeof value.through !== "number") continue;
    const files = throughs.get(uploadId) ?? new Map<string, number>();
    files.set(value.file, Math.max(files.get(value.file) ?? 0, value.through));
    throughs.set(uploadId, files);
  }
  const sessionFiles = new Map<string, Map<string, number>>();
  const partDigests = new Map<string, Map<string, Digest>>();
  for await (const { uploadId } of storage.listUploads()) {
    const files = new Map<string, number>();
    const digests = new Map<string, Digest>();
    const algorithm = algorithms.get(uploadId);
    for await (const part of storage.listParts(uploadId)) {
      files.set(part.file, part.size);
      const through = throughs.get(uploadId)?.get(part.file);
      const stream = algorithm ? await storage.openPart(uploadId, part.file, through) : null;
      if (!stream || !algorithm) continue;
      const hash = createHash(algorithm);
      for await (const chunk of stream) hash.update(chunk);
      digests.set(part.file, makeDigest(algorithm, hash.digest("hex")));
    }
    sessionFiles.set(uploadId, files);
    partDigests.set(uploadId, digests);
    progress.tick(() => `uploads: ${sessionFiles.size} sessions read`);
  }
  return { blobs, debris, meta: meta as Entries, contents, sessionFiles, partDigests };
}

/** Hashes every listed blob by streaming it. */
async function hashBlobs(storage: Storage, progress: Progress): Promise<BlobScan[]> {
  const blobs: BlobScan[] = [];
  let total = 0;
  const status = (bytes: number) => `blobs: ${blobs.length} checked (${bytesText(total + bytes)})`;
  for await (const digest of storage.list()) {
    const read = await storage.open(digest);
    if (!read) continue; // gone since it was listed
    const algorithm = digestAlgorithm(digest);
    const hash = createHash(algorithm);
    let size = 0;
    for await (const chunk of read.stream) {
      hash.update(chunk);
      size += chunk.length;
      progress.tick(() => status(size));
    }
    blobs.push({ digest, size, actual: makeDigest(algorithm, hash.digest("hex")) });
    total += size;
  }
  progress.done(status(0));
  return blobs;
}

/** Parses the bytes of every manifest record whose blob is good. */
async function readManifests(
  storage: Storage,
  meta: Entries,
  good: Set<Digest>,
  progress: Progress,
): Promise<Map<string, ParsedManifest | string>> {
  const contents = new Map<string, ParsedManifest | string>();
  let checked = 0;
  for (const entry of meta.manifests) {
    checked++;
    progress.tick(() => `manifests: ${checked} checked`);
    const digest = entry.key?.digest;
    const mediaType = isObject(entry.value) ? entry.value.mediaType : undefined;
    if (!digest || typeof mediaType !== "string" || !good.has(digest)) continue;
    const at = contentId(digest, mediaType);
    if (contents.has(at)) continue;
    try {
      const read = await storage.open(digest);
      if (!read) throw new Error("the blob is gone");
      contents.set(
        at,
        parseManifest(await readLimited(read.stream, MAX_MANIFEST_BYTES), mediaType),
      );
    } catch (error) {
      contents.set(at, error instanceof Error ? error.message : String(error));
    }
  }
  progress.done(`manifests: ${checked} checked`);
  return contents;
}
