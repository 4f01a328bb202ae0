/**
 * A test-side consistency check of a quiescent data directory: it runs the
 * very invariants `fsck` runs (`src/fsck/invariants.ts`, over one scan of the
 * stores) and asserts that none finds a problem, plus a few assertions only
 * tests make (a blob file has one link; a part file's bytes hash as
 * recorded). It returns what the scan saw, for scenario-specific assertions.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import assert from "node:assert/strict";
import type { MetadataAudit } from "../src/meta/audit.ts";
import type { ManifestRecord, UploadPart, UploadRecord } from "../src/meta/keys.ts";
import type { Storage } from "../src/storage/blob_store.ts";
import { FsBlobStore } from "../src/storage/fs_blob_store.ts";
import { examine, findings } from "../src/fsck/invariants.ts";
import type { CheckContext } from "../src/fsck/finding.ts";
import { isObject } from "../src/fsck/values.ts";

/** What the check saw, for scenario-specific assertions. */
export interface Snapshot {
  repos: Set<string>;
  /** `name\0digest` → record. */
  manifests: Map<string, ManifestRecord>;
  /** `name\0tag` → digest. */
  tags: Map<string, string>;
  /** `name\0digest\0tag`. */
  tagsByDigest: Set<string>;
  /** `name\0subject\0artifactType\0digest`. */
  referrers: Set<string>;
  /** `name\0digest` → size. */
  links: Map<string, number>;
  /** `digest\0name`. */
  blobRepos: Set<string>;
  uploads: Map<string, UploadRecord>;
  /** Digests with bytes in the store. */
  blobFiles: Set<string>;
  /** Files that nothing refers to in `uploads/` and `tmp/` (harmless; the sweeper removes them). */
  strayFiles: string[];
}

/** `a\0b\0…`, the key shape of the snapshot's maps. */
export const k = (...parts: string[]) => parts.join("\0");

/** The snapshot of what one scan saw (well-formed keys only; anything else is a problem). */
function snapshot({ scan }: CheckContext, strayFiles: string[]): Snapshot {
  const { meta } = scan;
  const s: Snapshot = {
    repos: new Set(),
    manifests: new Map(),
    tags: new Map(),
    tagsByDigest: new Set(),
    referrers: new Set(),
    links: new Map(),
    blobRepos: new Set(),
    uploads: new Map(),
    blobFiles: new Set(scan.blobs.map((b) => b.digest)),
    strayFiles,
  };
  for (const { key } of meta.repos) if (key) s.repos.add(key.name);
  for (const { key, value } of meta.manifests) {
    if (key) s.manifests.set(k(key.name, key.digest), value as ManifestRecord);
  }
  for (const { key, value } of meta.tags) {
    if (key && isObject(value)) s.tags.set(k(key.name, key.tag), String(value.digest));
  }
  for (const { key } of meta.tags_by_digest) {
    if (key) s.tagsByDigest.add(k(key.name, key.digest, key.tag));
  }
  for (const { key } of meta.referrers) {
    if (key) s.referrers.add(k(key.name, key.subject, key.artifactType, key.digest));
  }
  for (const { key, value } of meta.blob_links) {
    if (key && isObject(value)) s.links.set(k(key.name, key.digest), value.size as number);
  }
  for (const { key } of meta.blob_repos) if (key) s.blobRepos.add(k(key.digest, key.name));
  for (const { key, value } of meta.uploads) {
    if (key) s.uploads.set(key.uploadId, value as UploadRecord);
  }
  return s;
}

async function hashFile(path: string, algorithm: string): Promise<{ hex: string; size: number }> {
  const hash = createHash(algorithm);
  let size = 0;
  using file = await Deno.open(path, { read: true });
  for await (const chunk of file.readable) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { hex: hash.digest("hex"), size };
}

/**
 * What only tests assert, of the filesystem store: every blob file has one
 * link (a hard-linked upload part was not kept), and every part file of a
 * session hashes to what its record says.
 */
async function fileProblems(ctx: CheckContext, store: FsBlobStore): Promise<string[]> {
  const problems: string[] = [];
  for (const { digest } of ctx.scan.blobs) {
    const info = await Deno.stat(store.blobPath(digest));
    if (info.nlink !== null && info.nlink !== 1) {
      problems.push(`blob file ${digest} has ${info.nlink} links (an upload part kept?)`);
    }
  }
  for (const session of ctx.facts.sessions) {
    if (!session.record || session.faults.length) continue; // an fsck problem already
    const uploadId = session.entry.key!.uploadId;
    for (const part of session.parts) {
      if (!part.key || part.key.index >= session.record.parts) continue;
      const { file, digest } = part.value as UploadPart;
      const { hex } = await hashFile(
        join(store.root, "uploads", uploadId, file),
        session.record.algorithm,
      );
      if (`${session.record.algorithm}:${hex}` !== digest) {
        problems.push(`upload ${uploadId}: part ${part.key.index} does not match its file`);
      }
    }
  }
  return problems;
}

/**
 * Runs every invariant of `fsck` over the stores (and the test-only ones)
 * and throws one assertion error listing every problem. Returns what it saw.
 */
export async function checkConsistency(
  meta: { audit(): MetadataAudit },
  blobs: Storage,
): Promise<Snapshot> {
  const ctx = await examine(meta.audit(), blobs);
  const problems: string[] = [];
  const strayFiles: string[] = [];
  for (const finding of findings(ctx)) {
    if (finding.kind === "problem") problems.push(`${finding.invariant}: ${finding.message}`);
    if (finding.kind === "leftover") strayFiles.push(finding.where ?? finding.message);
  }
  if (blobs instanceof FsBlobStore) problems.push(...await fileProblems(ctx, blobs));
  assert.deepEqual(problems, [], `inconsistent data directory:\n${problems.join("\n")}`);
  return snapshot(ctx, strayFiles);
}
