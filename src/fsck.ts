/**
 * `berth fsck`: checks a data directory against every promise its metadata
 * makes, and with `--repair` removes (or fixes) what cannot be served.
 *
 * Passes, in order (each may rely on what the earlier ones found good):
 *
 * 1. blob files: each hashes to its name (1 MiB reads through `node:crypto`);
 * 2. `manifests`: bytes present with the recorded size, parse as a manifest,
 *    and agree with the record (media type, subject, artifactType);
 * 3. `tags` and `tags_by_digest`: each tag names a good manifest and has its
 *    reverse entry; each reverse entry agrees with its tag;
 * 4. `blob_links` and `blob_repos`: bytes of the linked size; both directions;
 * 5. `referrers`: each entry has a manifest whose subject and artifactType
 *    agree and the descriptor it would get at PUT; each manifest with a
 *    subject has its entry;
 * 6. `uploads`, `upload_parts`, `upload_counts`, `upload_total`: each
 *    session's parts exist in KV and on disk, hash as recorded and add up to
 *    its offset; no parts without a session; counters equal the sessions;
 * 7. `repos`: every repository that has content has its entry;
 * 7b. images that cannot be pulled whole (a referenced blob or child manifest
 *    is not in the repository): warnings, since a client may have deleted the
 *    blob on purpose; not repaired;
 * 8. leftovers: files in `uploads/` and `tmp/` that nothing refers to (crash
 *    debris, harmless and invisible; `--repair` removes them). They are
 *    listed but are not problems.
 *
 * A repair that removes a manifest also removes its referrer entry, as
 * DELETE does; its tags are then found pointing nowhere and removed in their
 * own pass. Counters and reverse indexes are fixed rather than removed.
 *
 * Run it on a stopped registry: requests in flight look like problems.
 *
 * Exit code: 0 clean, 1 problems found (with `--repair`, also when all were
 * repaired: run again to confirm), 2 the data directory does not exist.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import type { Config } from "./config.ts";
import {
  type BlobLink,
  blobReposKey,
  FAMILIES,
  type ManifestRecord,
  type ReferrerDescriptor,
  referrerKey,
  repoKey,
  tagsByDigestKey,
  uploadCountKey,
  type UploadPart,
  uploadPartsPrefix,
  type UploadRecord,
  uploadTotalKey,
} from "./meta/keys.ts";
import { type KvMetadataStore, referrerEntry, type Revision } from "./meta/metadata_store.ts";
import { type Algorithm, type Digest, HEX_LENGTH, parseDigest } from "./oci/digest.ts";
import { parseManifest } from "./oci/manifest.ts";
import { openStores } from "./open.ts";
import type { FsBlobStore } from "./storage/fs_blob_store.ts";
import { READ_BUFFER_BYTES } from "./storage/streams.ts";

/** How {@linkcode fsck} runs and where it writes. */
export interface FsckOptions {
  /** Remove or fix what cannot be served. */
  repair: boolean;
  /** Where report lines go (default: stdout). */
  out?: (line: string) => void;
  /** Where progress lines go (default: stderr). */
  progress?: (line: string) => void;
  /** Least time between two progress lines (default 1000 ms). */
  progressEveryMs?: number;
}

const UPLOAD_ID_REGEXP = /^[A-Za-z0-9-]{1,64}$/;
const ALGORITHMS: Algorithm[] = ["sha256", "sha512"];

/** The prefix of a whole key family of `keys.ts`. */
function family(name: typeof FAMILIES[number]): Deno.KvKey {
  return [name];
}

/** A map/set key made of key parts, unambiguous whatever they contain. */
function id(...parts: unknown[]): string {
  return JSON.stringify(parts);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function asDigest(value: unknown): Digest | null {
  if (typeof value !== "string") return null;
  try {
    return parseDigest(value);
  } catch {
    return null;
  }
}

function isSize(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function bytesText(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

async function readDirSafe(path: string): Promise<Deno.DirEntry[]> {
  const entries: Deno.DirEntry[] = [];
  try {
    for await (const entry of Deno.readDir(path)) entries.push(entry);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

async function statSafe(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.lstat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

async function removeSafe(path: string): Promise<void> {
  try {
    await Deno.remove(path, { recursive: true });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/** Progress lines on a large store: at most one per `everyMs`, none on a small one. */
class Progress {
  #last = Date.now();
  #printed = false;
  constructor(readonly write: (line: string) => void, readonly everyMs: number) {}

  tick(text: () => string): void {
    const now = Date.now();
    if (now - this.#last < this.everyMs) return;
    this.#last = now;
    this.#printed = true;
    this.write(`fsck: ${text()}`);
  }

  /** A closing line for a pass, only if that pass printed progress. */
  done(text: string): void {
    if (this.#printed) this.write(`fsck: ${text}`);
    this.#printed = false;
  }
}

/** The state of one run. */
class Check {
  problems = 0;
  repaired = 0;
  leftovers = 0;
  warnings = 0;
  leftoverBytes = 0;
  readonly counts = {
    blobs: 0,
    blobBytes: 0,
    manifests: 0,
    tags: 0,
    blobLinks: 0,
    referrers: 0,
    uploads: 0,
    repos: 0,
  };
  /** Verified blob bytes: digest → size. */
  readonly blobs = new Map<Digest, number>();
  /** Manifests that can be served: id(name, digest) → the referrer entry it needs, if any. */
  readonly manifests = new Map<string, { key: Deno.KvKey; value: ReferrerDescriptor } | null>();
  /**
   * Manifests found bad → the id of the referrer key removed with them. In a
   * check-only run that entry is not reported again (a repair removes both).
   */
  readonly badManifests = new Map<string, string | null>();
  /** Manifests whose record a repair rewrites along with their referrer entry. */
  readonly rewritten = new Set<string>();
  /** What good manifests are: id(name, digest) → media type and size (tags repeat them). */
  readonly manifestShapes = new Map<string, { mediaType: string; size: number }>();
  /** Good tags: id(name, tag) → digest. */
  readonly tags = new Map<string, Digest>();
  /** Bad tags → the id of the tags_by_digest key removed with them. */
  readonly badTags = new Map<string, string | null>();
  /** Good links: id(name, digest). */
  readonly links = new Set<string>();
  /** What good manifests reference: id(name, digest) → blobs and child manifests. */
  readonly references = new Map<string, { blobs: Digest[]; manifests: Digest[] }>();
  /** Bad links (their blob_repos entry goes with them). */
  readonly badLinks = new Set<string>();
  /** Repositories that have content. */
  readonly names = new Set<string>();
  /** Sessions that remain: uploadId → the part files they own. */
  readonly sessions = new Map<string, Set<string>>();
  /** Open sessions per repository, and in all. */
  readonly sessionCounts = new Map<string, number>();

  constructor(
    readonly meta: KvMetadataStore,
    readonly blobStore: FsBlobStore,
    readonly repair: boolean,
    readonly out: (line: string) => void,
    readonly progress: Progress,
  ) {}

  get kv() {
    return this.meta.kv;
  }

  /**
   * Reports a problem; with `--repair`, runs `fix`, which returns what it did
   * (or null when the store changed under it and nothing was done).
   */
  async problem(message: string, fix: () => Promise<string | null>): Promise<void> {
    this.problems++;
    if (!this.repair) {
      this.out(`problem: ${message}`);
      return;
    }
    const done = await fix();
    if (done === null) {
      this.out(`problem: ${message} (changed meanwhile; not repaired)`);
    } else {
      this.repaired++;
      this.out(`problem: ${message} -> ${done}`);
    }
  }

  async leftover(path: string, what: string): Promise<void> {
    const info = await statSafe(path);
    if (!info) return;
    let size = info.isFile ? info.size : 0;
    if (info.isDirectory) {
      for (const entry of await readDirSafe(path)) {
        size += (await statSafe(join(path, entry.name)))?.size ?? 0;
      }
    }
    this.leftovers++;
    this.leftoverBytes += size;
    const shown = path.slice(this.blobStore.root.length + 1);
    if (this.repair) await removeSafe(path);
    this.out(`leftover: ${shown} (${what}, ${bytesText(size)})${this.repair ? " -> removed" : ""}`);
  }

  /** Commits `build`; the text `done` on success, null when a check failed. */
  async commit(
    build: (op: Deno.AtomicOperation) => Deno.AtomicOperation,
    done: string,
  ): Promise<string | null> {
    return (await this.kv.commit(build)) === null ? null : done;
  }

  /** Hashes a file with 1 MiB reads; its hex digest and size. `status` describes the pass. */
  async hashFile(
    path: string,
    algorithm: Algorithm,
    buffer: Uint8Array,
    status: (bytes: number) => string,
  ): Promise<{ hex: string; size: number }> {
    const hash = createHash(algorithm);
    let size = 0;
    using file = await Deno.open(path, { read: true });
    for (;;) {
      const n = await file.read(buffer);
      if (n === null) break;
      hash.update(buffer.subarray(0, n));
      size += n;
      this.progress.tick(() => status(size));
    }
    return { hex: hash.digest("hex"), size };
  }

  // ---- 1. blob files ------------------------------------------------------

  async checkBlobs(): Promise<void> {
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    // Only the algorithms' folders belong directly under blobs/.
    for (const entry of await readDirSafe(join(this.blobStore.root, "blobs"))) {
      if (entry.isDirectory && (ALGORITHMS as string[]).includes(entry.name)) continue;
      await this.problem(
        `blobs/${entry.name} does not belong in the blob store`,
        async () => (await removeSafe(join(this.blobStore.root, "blobs", entry.name)), "removed"),
      );
    }
    for (const algorithm of ALGORITHMS) {
      const base = join(this.blobStore.root, "blobs", algorithm);
      const hexRegexp = new RegExp(`^[a-f0-9]{${HEX_LENGTH[algorithm]}}$`);
      for (const prefix of await readDirSafe(base)) {
        const dir = join(base, prefix.name);
        if (!prefix.isDirectory || !/^[a-f0-9]{2}$/.test(prefix.name)) {
          await this.problem(
            `blobs/${algorithm}/${prefix.name} does not belong in the blob store`,
            async () => (await removeSafe(dir), "removed"),
          );
          continue;
        }
        for (const entry of await readDirSafe(dir)) {
          const path = join(dir, entry.name);
          const shown = `blobs/${algorithm}/${prefix.name}/${entry.name}`;
          if (
            !entry.isFile || !hexRegexp.test(entry.name) || !entry.name.startsWith(prefix.name)
          ) {
            await this.problem(
              `${shown} is not a blob file`,
              async () => (await removeSafe(path), "removed"),
            );
            continue;
          }
          const digest = `${algorithm}:${entry.name}` as Digest;
          const { hex, size } = await this.hashFile(
            path,
            algorithm,
            buffer,
            (bytes) =>
              `blobs: ${this.counts.blobs} checked (${bytesText(this.counts.blobBytes + bytes)})`,
          );
          this.counts.blobs++;
          this.counts.blobBytes += size;
          if (hex !== entry.name) {
            await this.problem(
              `blob ${digest}: its bytes hash to ${algorithm}:${hex}`,
              async () => (await removeSafe(path), "removed the file"),
            );
            continue;
          }
          this.blobs.set(digest, size);
        }
      }
    }
    this.progress.done(
      `blobs: ${this.counts.blobs} checked (${bytesText(this.counts.blobBytes)})`,
    );
  }

  // ---- 2. manifests -------------------------------------------------------

  async checkManifests(): Promise<void> {
    for await (const entry of this.kv.scan<unknown>(family("manifests"))) {
      this.counts.manifests++;
      this.progress.tick(() => `manifests: ${this.counts.manifests} checked`);
      const [, name, rawDigest] = entry.key;
      const digest = asDigest(rawDigest);
      const where = `manifest ${String(name)}@${String(rawDigest)}`;
      const record = entry.value;
      const self = id(name, rawDigest);
      // What a removal takes along: the referrer entry the record implies, as DELETE does.
      const referrer = typeof name === "string" && digest && isObject(record) &&
          typeof record.subject === "string"
        ? referrerKey(
          name,
          record.subject as Digest,
          typeof record.artifactType === "string" ? record.artifactType : "",
          digest,
        )
        : null;
      const remove = (why: string) => {
        this.badManifests.set(self, referrer && id(...referrer));
        return this.problem(`${where}: ${why}`, () =>
          this.commit((op) => {
            op.check(entry).delete(entry.key);
            if (referrer) op.delete(referrer);
            return op;
          }, "removed the record"));
      };
      if (typeof name !== "string" || !digest || entry.key.length !== 3) {
        await remove("malformed key");
        continue;
      }
      if (!isObject(record) || typeof record.mediaType !== "string" || !isSize(record.size)) {
        await remove("malformed record");
        continue;
      }
      const size = this.blobs.get(digest);
      if (size === undefined) {
        await remove("its bytes are missing or corrupt");
        continue;
      }
      let parsed;
      try {
        const bytes = await Deno.readFile(this.blobStore.blobPath(digest));
        parsed = parseManifest(bytes, record.mediaType);
      } catch (error) {
        await remove(`its bytes do not parse as a manifest: ${(error as Error).message}`);
        continue;
      }
      // The bytes are verified: the record must say what they say.
      const expected: ManifestRecord = {
        mediaType: parsed.mediaType,
        size,
        createdAt: typeof record.createdAt === "number" ? record.createdAt : Date.now(),
      };
      if (parsed.artifactType !== undefined) expected.artifactType = parsed.artifactType;
      if (parsed.subject !== undefined) expected.subject = parsed.subject;
      const needed = expected.subject === undefined ? null : {
        key: referrerKey(name, expected.subject, expected.artifactType ?? "", digest),
        value: referrerEntry(digest, expected, parsed.annotations),
      };
      const differences = (["mediaType", "size", "artifactType", "subject"] as const)
        .filter((field) => record[field] !== expected[field])
        .map((field) =>
          `${field} ${JSON.stringify(record[field])} (bytes say ${JSON.stringify(expected[field])})`
        );
      if (differences.length) {
        await this.problem(
          `${where}: record disagrees with its bytes: ${differences.join(", ")}`,
          () =>
            this.commit((op) => {
              // The referrer entry moves with the record, as a PUT would have written it.
              op.check(entry).set(entry.key, expected);
              if (referrer && (!needed || id(...referrer) !== id(...needed.key))) {
                op.delete(referrer);
              }
              if (needed) op.set(needed.key, needed.value);
              return op;
            }, "rewrote the record (and its referrer entry) from the bytes"),
        );
        this.rewritten.add(self);
      }
      this.names.add(name);
      this.manifests.set(self, needed);
      this.manifestShapes.set(self, { mediaType: expected.mediaType, size: expected.size });
      this.references.set(self, { blobs: parsed.blobs, manifests: parsed.manifests });
    }
  }

  // ---- 4b. what manifests reference ------------------------------------------

  /**
   * Images that cannot be pulled whole: a blob or child manifest they
   * reference is not in their repository. A client can cause that (a blob
   * DELETE is allowed while manifests use the blob), and so can a repair that
   * removed corrupt bytes; only the owner can choose between pushing the
   * content again and deleting the image, so these are warnings, never
   * repaired and not problems.
   */
  checkReferences(): void {
    for (const [self, refs] of this.references) {
      if (!this.manifests.has(self)) continue;
      const [name, digest] = JSON.parse(self) as [string, Digest];
      const missing = [
        ...refs.blobs.filter((d) => !this.links.has(id(name, d))),
        ...refs.manifests.filter((d) => !this.manifests.has(id(name, d))),
      ];
      if (missing.length === 0) continue;
      this.warnings++;
      this.out(
        `warning: image ${name}@${digest} cannot be pulled whole: ${missing.length} blob(s) or ` +
          `manifest(s) it references are not in the repository (${missing.slice(0, 3).join(", ")}${
            missing.length > 3 ? ", …" : ""
          }); push them again or delete the image`,
      );
    }
  }

  // ---- 3. tags ------------------------------------------------------------

  async checkTags(): Promise<void> {
    for await (const entry of this.kv.scan<unknown>(family("tags"))) {
      this.counts.tags++;
      this.progress.tick(() => `tags: ${this.counts.tags} checked`);
      const [, name, tag] = entry.key;
      const value = entry.value;
      const digest = isObject(value) ? asDigest(value.digest) : null;
      const where = `tag ${String(name)}:${String(tag)}`;
      const self = id(name, tag);
      const reverse = typeof name === "string" && typeof tag === "string" && digest
        ? tagsByDigestKey(name, digest, tag)
        : null;
      const remove = (why: string) => {
        this.badTags.set(self, reverse && id(...reverse));
        return this.problem(`${where}: ${why}`, () =>
          this.commit((op) => {
            op.check(entry).delete(entry.key);
            if (reverse) op.delete(reverse);
            return op;
          }, "removed the tag"));
      };
      if (typeof name !== "string" || typeof tag !== "string" || entry.key.length !== 3) {
        await remove("malformed key");
      } else if (!digest) {
        await remove("malformed record");
      } else if (!this.manifests.has(id(name, digest))) {
        const bad = this.badManifests.has(id(name, digest));
        await remove(
          `points at ${digest}, ${bad ? "a manifest that cannot be served" : "no manifest"}`,
        );
      } else {
        const shape = this.manifestShapes.get(id(name, digest));
        if (
          shape && isObject(value) &&
          (value.mediaType !== shape.mediaType || value.size !== shape.size)
        ) {
          await this.problem(
            `${where}: says ${JSON.stringify(value.mediaType)} ${JSON.stringify(value.size)}, ` +
              `its manifest is ${shape.mediaType} ${shape.size}`,
            () =>
              this.commit(
                (op) => op.check(entry).set(entry.key, { ...value, ...shape }),
                "rewrote the tag's media type and size from its manifest",
              ),
          );
        }
        this.tags.set(self, digest);
        this.names.add(name);
      }
    }
    const indexed = new Set<string>();
    for await (const entry of this.kv.scan<unknown>(family("tags_by_digest"))) {
      const [, name, digest, tag] = entry.key;
      const self = id(name, tag);
      // Reported with its tag (a repair removed both).
      if (!this.repair && this.badTags.get(self) === id(...entry.key)) continue;
      if (this.tags.get(self) === digest && entry.key.length === 4) {
        indexed.add(self);
        continue;
      }
      const current = this.tags.get(self);
      await this.problem(
        `tags_by_digest ${String(name)} ${String(digest)} ${String(tag)}: the tag ${
          current ? `points at ${current}` : "does not exist"
        }`,
        () => this.commit((op) => op.check(entry).delete(entry.key), "removed the entry"),
      );
    }
    for (const [self, digest] of this.tags) {
      if (indexed.has(self)) continue;
      const [name, tag] = JSON.parse(self) as [string, string];
      await this.problem(
        `tag ${name}:${tag} -> ${digest} has no tags_by_digest entry`,
        () =>
          this.commit(
            (op) =>
              op.check({ key: tagsByDigestKey(name, digest, tag), versionstamp: null })
                .set(tagsByDigestKey(name, digest, tag), true),
            "added it",
          ),
      );
    }
  }

  // ---- 4. blob links ------------------------------------------------------

  async checkBlobLinks(): Promise<void> {
    for await (const entry of this.kv.scan<unknown>(family("blob_links"))) {
      this.counts.blobLinks++;
      this.progress.tick(() => `blob links: ${this.counts.blobLinks} checked`);
      const [, name, rawDigest] = entry.key;
      const digest = asDigest(rawDigest);
      const link = entry.value;
      const where = `blob link ${String(name)}@${String(rawDigest)}`;
      const self = id(name, rawDigest);
      const remove = (why: string) => {
        this.badLinks.add(self);
        return this.problem(`${where}: ${why}`, () =>
          this.commit((op) => {
            op.check(entry).delete(entry.key);
            if (typeof name === "string" && digest) op.delete(blobReposKey(digest, name));
            return op;
          }, "removed the link"));
      };
      if (typeof name !== "string" || !digest || entry.key.length !== 3) {
        await remove("malformed key");
        continue;
      }
      const size = this.blobs.get(digest);
      if (size === undefined) {
        await remove("its bytes are missing or corrupt");
        continue;
      }
      if (!isObject(link) || link.size !== size) {
        const recorded = isObject(link) ? JSON.stringify(link.size) : "malformed";
        await this.problem(
          `${where}: recorded size ${recorded}, the verified bytes have ${size}`,
          () =>
            this.commit(
              (op) =>
                op.check(entry).set(
                  entry.key,
                  {
                    size,
                    linkedAt: isObject(link) && typeof link.linkedAt === "number"
                      ? link.linkedAt
                      : Date.now(),
                  } satisfies BlobLink,
                ),
              "recorded the real size",
            ),
        );
      }
      this.links.add(self);
      this.names.add(name);
    }
    const reverse = new Set<string>();
    for await (const entry of this.kv.scan<unknown>(family("blob_repos"))) {
      const [, digest, name] = entry.key;
      const self = id(name, digest);
      if (this.badLinks.has(self) && !this.repair) continue; // reported with its link
      if (this.links.has(self) && entry.key.length === 3) {
        reverse.add(self);
        continue;
      }
      await this.problem(
        `blob_repos ${String(digest)} ${String(name)}: no such blob link`,
        () => this.commit((op) => op.check(entry).delete(entry.key), "removed the entry"),
      );
    }
    for (const self of this.links) {
      if (reverse.has(self)) continue;
      const [name, digest] = JSON.parse(self) as [string, Digest];
      const key = blobReposKey(digest, name);
      await this.problem(
        `blob link ${name}@${digest} has no blob_repos entry`,
        () =>
          this.commit(
            (op) => op.check({ key, versionstamp: null }).set(key, true),
            "added it",
          ),
      );
    }
  }

  // ---- 5. referrers -------------------------------------------------------

  async checkReferrers(): Promise<void> {
    const found = new Set<string>();
    for await (const entry of this.kv.scan<unknown>(family("referrers"))) {
      this.counts.referrers++;
      this.progress.tick(() => `referrers: ${this.counts.referrers} checked`);
      const [, name, subject, artifactType, digest] = entry.key;
      const where = `referrer ${String(name)} ${String(subject)} ${JSON.stringify(artifactType)} ${
        String(digest)
      }`;
      const self = id(name, digest);
      // Reported with its manifest (a repair removed or rewrote both).
      if (!this.repair && this.badManifests.get(self) === id(...entry.key)) continue;
      if (!this.repair && this.rewritten.has(self)) continue;
      const expected = this.manifests.get(self);
      const remove = (why: string) =>
        this.problem(
          `${where}: ${why}`,
          () => this.commit((op) => op.check(entry).delete(entry.key), "removed the entry"),
        );
      if (expected === undefined) {
        await remove("no such manifest");
      } else if (expected === null || id(...expected.key) !== id(...entry.key)) {
        await remove("the manifest has another subject or artifactType");
      } else {
        found.add(self);
        if (JSON.stringify(entry.value) !== JSON.stringify(expected.value)) {
          await this.problem(
            `${where}: the descriptor disagrees with the manifest`,
            () =>
              this.commit(
                (op) => op.check(entry).set(entry.key, expected.value),
                "rewrote it",
              ),
          );
        }
      }
    }
    for (const [self, expected] of this.manifests) {
      if (expected === null || found.has(self)) continue;
      if (!this.repair && this.rewritten.has(self)) continue;
      const [name, digest] = JSON.parse(self) as [string, string];
      await this.problem(
        `manifest ${name}@${digest} has a subject but no referrers entry`,
        () =>
          this.commit(
            (op) =>
              op.check({ key: expected.key, versionstamp: null }).set(
                expected.key,
                expected.value,
              ),
            "added it",
          ),
      );
    }
  }

  // ---- 6. upload sessions -------------------------------------------------

  async checkUploads(): Promise<void> {
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    for await (const entry of this.kv.scan<unknown>(family("uploads"))) {
      this.counts.uploads++;
      this.progress.tick(() => `uploads: ${this.counts.uploads} checked`);
      const uploadId = entry.key[1];
      const record = entry.value;
      const where = `upload ${String(uploadId)}`;
      const valid = typeof uploadId === "string" && UPLOAD_ID_REGEXP.test(uploadId) &&
        entry.key.length === 2 && isObject(record) && typeof record.name === "string" &&
        isSize(record.offset) && isSize(record.parts) &&
        (record.algorithm === "sha256" || record.algorithm === "sha512");
      const faults: string[] = [];
      const files = new Set<string>();
      if (!valid) faults.push("malformed key or record");
      else {
        const r = record as unknown as UploadRecord;
        const dir = join(this.blobStore.root, "uploads", uploadId);
        let sum = 0;
        let index = 0;
        const extra: Deno.KvKey[] = [];
        for await (const part of this.kv.scan<unknown>(uploadPartsPrefix(uploadId))) {
          const at = part.key[2];
          if (typeof at !== "number" || at >= r.parts) {
            extra.push(part.key);
            continue;
          }
          if (at !== index) {
            faults.push(
              at === index + 1
                ? `part ${index} is missing`
                : `parts ${index}..${at - 1} are missing`,
            );
            index = at;
          }
          index++;
          const p = part.value as Partial<UploadPart>;
          if (
            !isObject(p) || typeof p.file !== "string" || !/^p-[a-f0-9]{16}$/.test(p.file) ||
            !isSize(p.size) || typeof p.digest !== "string"
          ) {
            faults.push(`part ${at} is malformed`);
            continue;
          }
          sum += p.size;
          files.add(p.file);
          const info = await statSafe(join(dir, p.file));
          if (!info?.isFile) {
            faults.push(`part ${at} file ${p.file} is missing`);
            continue;
          }
          const { hex, size } = await this.hashFile(
            join(dir, p.file),
            r.algorithm,
            buffer,
            () => `uploads: ${this.counts.uploads} checked`,
          );
          if (size !== p.size || `${r.algorithm}:${hex}` !== p.digest) {
            faults.push(`part ${at} file ${p.file} does not match its record`);
          }
        }
        if (index < r.parts) faults.push(`parts ${index}..${r.parts - 1} are missing`);
        if (sum !== r.offset) faults.push(`parts add up to ${sum}, offset is ${r.offset}`);
        if (extra.length && !faults.length) {
          // Only the surplus is wrong: the session itself can still be completed.
          await this.problem(
            `${where}: ${extra.length} upload_parts beyond its ${r.parts} parts`,
            () =>
              this.commit((op) => {
                for (const key of extra) op.delete(key);
                return op;
              }, "removed them"),
          );
        }
      }
      if (faults.length) {
        let removed = false;
        await this.problem(`${where} cannot be completed: ${faults.join("; ")}`, async () => {
          removed = valid
            ? await this.meta.endUpload({
              uploadId: uploadId as string,
              record: record as unknown as UploadRecord,
              revision: entry.versionstamp as Revision,
            })
            : (await this.kv.commit((op) => op.check(entry).delete(entry.key))) !== null;
          if (!removed) return null;
          if (typeof uploadId === "string") await this.meta.sweepOrphanParts();
          if (typeof uploadId === "string" && UPLOAD_ID_REGEXP.test(uploadId)) {
            await this.blobStore.removeUpload(uploadId);
          }
          return "removed the session";
        });
        if (removed) continue;
      }
      if (typeof uploadId === "string") this.sessions.set(uploadId, files);
      if (valid) {
        // A malformed record's share of the counters cannot be known; it counts for nothing.
        const name = (record as unknown as UploadRecord).name;
        this.sessionCounts.set(name, (this.sessionCounts.get(name) ?? 0) + 1);
      }
    }
    let previous: unknown = undefined;
    let orphans: Deno.KvKey[] = [];
    const flush = async () => {
      if (orphans.length === 0) return;
      const keys = orphans;
      await this.problem(
        `${keys.length} upload_parts of ${String(previous)}, which is not a session`,
        async () => {
          for (let i = 0; i < keys.length; i += 500) {
            await this.kv.commit((op) => {
              for (const key of keys.slice(i, i + 500)) op.delete(key);
              return op;
            });
          }
          return "removed them";
        },
      );
    };
    for await (const entry of this.kv.scan<unknown>(family("upload_parts"))) {
      const uploadId = entry.key[1];
      if (uploadId !== previous) {
        await flush();
        previous = uploadId;
        orphans = [];
      }
      if (typeof uploadId !== "string" || !this.sessions.has(uploadId)) orphans.push(entry.key);
    }
    await flush();
    this.progress.done(`uploads: ${this.counts.uploads} checked`);
  }

  async checkCounters(): Promise<void> {
    const seen = new Set<string>();
    for await (const entry of this.kv.scan<unknown>(family("upload_counts"))) {
      const name = entry.key[1];
      const expected = typeof name === "string" ? this.sessionCounts.get(name) ?? 0 : 0;
      if (typeof name === "string") seen.add(name);
      await this.checkCounter(entry, `upload_counts ${String(name)}`, expected);
    }
    for (const [name, count] of this.sessionCounts) {
      if (seen.has(name)) continue;
      await this.checkCounter(
        { key: uploadCountKey(name), value: null, versionstamp: null },
        `upload_counts ${name}`,
        count,
      );
    }
    const total = [...this.sessionCounts.values()].reduce((a, b) => a + b, 0);
    await this.checkCounter(await this.kv.get(uploadTotalKey()), "upload_total", total);
  }

  async checkCounter(
    entry: Deno.KvEntryMaybe<unknown>,
    where: string,
    expected: number,
  ): Promise<void> {
    const value = entry.value;
    const actual = value instanceof Deno.KvU64 ? value.value : value === null ? 0n : null;
    if (actual === BigInt(expected)) return;
    await this.problem(
      `${where} is ${actual === null ? "malformed" : actual}, but ${expected} ${
        expected === 1 ? "session is" : "sessions are"
      } open`,
      () =>
        this.commit(
          (op) =>
            expected === 0
              ? op.check(entry).delete(entry.key)
              : op.check(entry).set(entry.key, new Deno.KvU64(BigInt(expected))),
          `set it to ${expected}`,
        ),
    );
  }

  // ---- 7. repositories ----------------------------------------------------

  async checkRepos(): Promise<void> {
    const known = new Set<string>();
    for await (const entry of this.kv.scan<unknown>(family("repos"))) {
      this.counts.repos++;
      if (typeof entry.key[1] === "string") known.add(entry.key[1]);
    }
    for (const name of [...this.names].sort()) {
      if (known.has(name)) continue;
      await this.problem(
        `repository ${name} has content but no repos entry`,
        () =>
          this.commit(
            (op) =>
              op.check({ key: repoKey(name), versionstamp: null })
                .set(repoKey(name), { createdAt: Date.now() }),
            "added it",
          ),
      );
    }
  }

  // ---- 8. leftovers -------------------------------------------------------

  async checkLeftovers(): Promise<void> {
    const uploads = join(this.blobStore.root, "uploads");
    for (const entry of await readDirSafe(uploads)) {
      const path = join(uploads, entry.name);
      const owned = entry.isDirectory ? this.sessions.get(entry.name) : undefined;
      if (!owned) {
        await this.leftover(path, "no upload session");
        continue;
      }
      for (const file of await readDirSafe(path)) {
        if (!owned.has(file.name)) {
          await this.leftover(join(path, file.name), "not a part of its session");
        }
      }
    }
    const tmp = join(this.blobStore.root, "tmp");
    for (const entry of await readDirSafe(tmp)) {
      await this.leftover(join(tmp, entry.name), "temporary file");
    }
  }
}

/**
 * Checks the stores of `config` and prints one line per problem and a
 * summary; with `repair`, removes or fixes what cannot be served.
 *
 * @returns the exit code: 0 clean, 1 problems found, 2 no data directory
 */
export async function fsck(
  config: Pick<Config, "data" | "kv"> & Partial<Pick<Config, "blobs">>,
  options: FsckOptions,
): Promise<number> {
  const out = options.out ?? ((line: string) => console.log(line));
  const progressWrite = options.progress ?? ((line: string) => console.error(line));
  const info = await statSafe(config.data);
  if (!info?.isDirectory) {
    out(`fsck: data directory "${config.data}" does not exist`);
    return 2;
  }
  const stores = await openStores({ blobs: "", ...config });
  try {
    const check = new Check(
      stores.meta,
      stores.blobs as FsBlobStore,
      options.repair,
      out,
      new Progress(progressWrite, options.progressEveryMs ?? 1000),
    );
    await check.checkBlobs();
    await check.checkManifests();
    await check.checkTags();
    await check.checkBlobLinks();
    check.checkReferences();
    await check.checkReferrers();
    await check.checkUploads();
    await check.checkCounters();
    await check.checkRepos();
    await check.checkLeftovers();
    const c = check.counts;
    const repaired = options.repair ? `, ${check.repaired} repaired` : "";
    const leftovers = check.leftovers
      ? `; ${check.leftovers} leftover file(s), ${bytesText(check.leftoverBytes)}${
        options.repair ? " removed" : ""
      }`
      : "";
    out(
      `fsck: ${c.blobs} blobs (${
        bytesText(c.blobBytes)
      }), ${c.manifests} manifests, ${c.tags} tags, ` +
        `${c.blobLinks} blob links, ${c.referrers} referrers, ${c.uploads} uploads, ` +
        `${c.repos} repositories checked; ${check.problems} problem${
          check.problems === 1 ? "" : "s"
        }${repaired}${leftovers}${check.warnings ? `; ${check.warnings} warning(s)` : ""}`,
    );
    return check.problems === 0 ? 0 : 1;
  } finally {
    await stores.close();
  }
}
