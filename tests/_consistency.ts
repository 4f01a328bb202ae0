/**
 * A test-side consistency check of a quiescent data directory: every KV
 * family against the others and against the files on disk. It is written
 * independently of `src/fsck.ts` so that the two check each other.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import assert from "node:assert/strict";
import {
  type BlobLink,
  type ManifestRecord,
  type ReferrerDescriptor,
  type TagRecord,
  type UploadPart,
  type UploadRecord,
} from "../src/meta/keys.ts";
import type { KvMetadataStore } from "../src/meta/metadata_store.ts";
import type { FsBlobStore } from "../src/storage/fs_blob_store.ts";
import type { Digest } from "../src/oci/digest.ts";

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
  /** Digests with bytes on disk. */
  blobFiles: Set<string>;
  /** Files that nothing refers to in `uploads/` and `tmp/` (harmless; the sweeper removes them). */
  strayFiles: string[];
}

/** `a\0b\0…`, the key shape of the snapshot's maps. */
export const k = (...parts: string[]) => parts.join("\0");

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

async function listDir(path: string): Promise<Deno.DirEntry[]> {
  const entries: Deno.DirEntry[] = [];
  try {
    for await (const entry of Deno.readDir(path)) entries.push(entry);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return entries;
}

/**
 * Checks every invariant Berth's metadata promises and throws one assertion
 * error listing every violation. Returns what it saw.
 */
export async function checkConsistency(
  meta: KvMetadataStore,
  blobs: FsBlobStore,
): Promise<Snapshot> {
  const s: Snapshot = {
    repos: new Set(),
    manifests: new Map(),
    tags: new Map(),
    tagsByDigest: new Set(),
    referrers: new Set(),
    links: new Map(),
    blobRepos: new Set(),
    uploads: new Map(),
    blobFiles: new Set(),
    strayFiles: [],
  };
  const problems: string[] = [];
  const kv = meta.kv;
  for await (const e of kv.scan(["repos"])) s.repos.add(e.key[1] as string);
  for await (const e of kv.scan<ManifestRecord>(["manifests"])) {
    s.manifests.set(k(e.key[1] as string, e.key[2] as string), e.value);
  }
  for await (const e of kv.scan<TagRecord>(["tags"])) {
    s.tags.set(k(e.key[1] as string, e.key[2] as string), e.value.digest);
  }
  for await (const e of kv.scan(["tags_by_digest"])) {
    s.tagsByDigest.add(k(...(e.key.slice(1) as string[])));
  }
  const referrerValues = new Map<string, ReferrerDescriptor>();
  for await (const e of kv.scan<ReferrerDescriptor>(["referrers"])) {
    const key = k(...(e.key.slice(1) as string[]));
    s.referrers.add(key);
    referrerValues.set(key, e.value);
  }
  for await (const e of kv.scan<BlobLink>(["blob_links"])) {
    s.links.set(k(e.key[1] as string, e.key[2] as string), e.value.size);
  }
  for await (const e of kv.scan(["blob_repos"])) {
    s.blobRepos.add(k(e.key[1] as string, e.key[2] as string));
  }
  for await (const e of kv.scan<UploadRecord>(["uploads"])) {
    s.uploads.set(e.key[1] as string, e.value);
  }
  const parts = new Map<string, Map<number, UploadPart>>();
  for await (const e of kv.scan<UploadPart>(["upload_parts"])) {
    const id = e.key[1] as string;
    if (!parts.has(id)) parts.set(id, new Map());
    parts.get(id)!.set(e.key[2] as number, e.value);
  }
  const counts = new Map<string, bigint>();
  for await (const e of kv.scan<Deno.KvU64>(["upload_counts"])) {
    counts.set(e.key[1] as string, e.value.value);
  }
  const total = (await kv.get<Deno.KvU64>(["upload_total"])).value?.value ?? 0n;

  // Blob files: each hashes to its name; one file per digest.
  for (const algorithm of ["sha256", "sha512"]) {
    const base = join(blobs.root, "blobs", algorithm);
    for (const prefix of await listDir(base)) {
      for (const entry of await listDir(join(base, prefix.name))) {
        const path = join(base, prefix.name, entry.name);
        const digest = `${algorithm}:${entry.name}`;
        if (!entry.isFile || !entry.name.startsWith(prefix.name)) {
          problems.push(`unexpected entry ${path}`);
          continue;
        }
        const { hex } = await hashFile(path, algorithm);
        if (hex !== entry.name) problems.push(`blob file ${digest} hashes to ${hex}`);
        const info = await Deno.stat(path);
        if (info.nlink !== null && info.nlink !== 1) {
          problems.push(`blob file ${digest} has ${info.nlink} links (an upload part kept?)`);
        }
        s.blobFiles.add(digest);
      }
    }
  }
  const sizeOnDisk = async (digest: string) =>
    (await blobs.stat(digest as Digest).catch(() => null))?.size ?? null;

  const named = new Set<string>();
  for (const [key, record] of s.manifests) {
    const [name, digest] = key.split("\0") as [string, string];
    named.add(name);
    const size = await sizeOnDisk(digest);
    if (size === null) problems.push(`manifest ${name}@${digest} has no bytes`);
    else if (size !== record.size) {
      problems.push(`manifest ${name}@${digest}: record size ${record.size}, file ${size}`);
    }
    if (record.subject !== undefined) {
      const ref = k(name, record.subject, record.artifactType ?? "", digest);
      if (!s.referrers.has(ref)) problems.push(`manifest ${name}@${digest}: no referrer entry`);
    }
  }
  for (const [key, digest] of s.tags) {
    const [name, tag] = key.split("\0") as [string, string];
    named.add(name);
    if (!s.manifests.has(k(name, digest))) {
      problems.push(`tag ${name}:${tag} points at ${digest}, which has no record`);
    }
    if (!s.tagsByDigest.has(k(name, digest, tag))) {
      problems.push(`tag ${name}:${tag} → ${digest} has no tags_by_digest entry`);
    }
  }
  for (const key of s.tagsByDigest) {
    const [name, digest, tag] = key.split("\0") as [string, string, string];
    if (s.tags.get(k(name, tag)) !== digest) {
      problems.push(
        `tags_by_digest ${name} ${digest} ${tag}, but the tag is ${s.tags.get(k(name, tag))}`,
      );
    }
  }
  for (const key of s.referrers) {
    const [name, subject, artifactType, digest] = key.split("\0") as [
      string,
      string,
      string,
      string,
    ];
    const record = s.manifests.get(k(name, digest));
    if (!record) problems.push(`referrer ${name} ${subject} → ${digest} has no record`);
    else if (record.subject !== subject || (record.artifactType ?? "") !== artifactType) {
      problems.push(`referrer ${name} ${subject} → ${digest} disagrees with the record`);
    } else if (referrerValues.get(key)!.digest !== digest) {
      problems.push(`referrer ${key} names ${referrerValues.get(key)!.digest}`);
    }
  }
  for (const [key, size] of s.links) {
    const [name, digest] = key.split("\0") as [string, string];
    named.add(name);
    const onDisk = await sizeOnDisk(digest);
    if (onDisk === null) problems.push(`blob link ${name}@${digest} has no bytes`);
    else if (onDisk !== size) problems.push(`blob link ${name}@${digest}: ${size} vs ${onDisk}`);
    if (!s.blobRepos.has(k(digest, name))) problems.push(`blob link ${key} has no blob_repos`);
  }
  for (const key of s.blobRepos) {
    const [digest, name] = key.split("\0") as [string, string];
    if (!s.links.has(k(name, digest))) problems.push(`blob_repos ${digest} ${name} has no link`);
  }
  for (const name of named) {
    if (!s.repos.has(name)) problems.push(`repository ${name} has content but no repos entry`);
  }

  // Upload sessions: counters, parts and part files agree.
  const perRepo = new Map<string, bigint>();
  for (const [id, record] of s.uploads) {
    perRepo.set(record.name, (perRepo.get(record.name) ?? 0n) + 1n);
    const own = parts.get(id) ?? new Map<number, UploadPart>();
    let sum = 0;
    const files = new Set((await listDir(join(blobs.root, "uploads", id))).map((e) => e.name));
    for (let i = 0; i < record.parts; i++) {
      const part = own.get(i);
      if (!part) {
        problems.push(`upload ${id}: part ${i} missing`);
        continue;
      }
      sum += part.size;
      if (!files.delete(part.file)) problems.push(`upload ${id}: part file ${part.file} missing`);
      else {
        const { hex, size } = await hashFile(
          join(blobs.root, "uploads", id, part.file),
          record.algorithm,
        );
        if (size !== part.size || `${record.algorithm}:${hex}` !== part.digest) {
          problems.push(`upload ${id}: part ${i} does not match its file`);
        }
      }
    }
    for (const index of own.keys()) {
      if (index >= record.parts) problems.push(`upload ${id}: extra part ${index}`);
    }
    if (sum !== record.offset) {
      problems.push(`upload ${id}: parts sum ${sum}, offset ${record.offset}`);
    }
    for (const file of files) s.strayFiles.push(join("uploads", id, file));
  }
  for (const id of parts.keys()) {
    if (!s.uploads.has(id)) problems.push(`upload_parts of unknown session ${id}`);
  }
  for (const name of new Set([...perRepo.keys(), ...counts.keys()])) {
    if ((counts.get(name) ?? 0n) !== (perRepo.get(name) ?? 0n)) {
      problems.push(
        `upload_counts ${name} = ${counts.get(name)}, sessions ${perRepo.get(name) ?? 0n}`,
      );
    }
  }
  if (total !== BigInt(s.uploads.size)) {
    problems.push(`upload_total = ${total}, sessions ${s.uploads.size}`);
  }
  for (const entry of await listDir(join(blobs.root, "uploads"))) {
    if (s.uploads.has(entry.name)) continue;
    const inside = await listDir(join(blobs.root, "uploads", entry.name));
    s.strayFiles.push(
      join("uploads", entry.name) + (inside.length ? ` (${inside.length} files)` : ""),
    );
  }
  for (const entry of await listDir(join(blobs.root, "tmp"))) {
    s.strayFiles.push(join("tmp", entry.name));
  }
  assert.deepEqual(problems, [], `inconsistent data directory:\n${problems.join("\n")}`);
  return s;
}
