/**
 * The metadata seam: {@linkcode MetadataStore}, every read and write of the
 * registry's records, and {@linkcode KvMetadataStore}, its implementation over
 * Deno KV. Each logical change is one atomic commit that checks what it read
 * and is retried (in `Kv.transact`, the one retry loop) when another writer got
 * there first. Methods return `null`/`false` for "not there" and never throw
 * HTTP errors: the registry service layer decides what the client hears.
 *
 * Nothing outside `src/meta/` sees `Deno.Kv` or versionstamps: an upload
 * session carries an opaque {@linkcode Revision} instead.
 *
 * @module
 */
import type { Algorithm, Digest } from "../oci/digest.ts";
import { KvMetadataAudit, type MetadataAudit, type Revision } from "./audit.ts";
import { Kv, KV_LIMITS, RETRY } from "./kv.ts";
import {
  addUsage,
  bumpEpoch,
  countRefs,
  enqueue,
  holdBytes,
  MINUS_ONE,
  ONE,
  refsKeyBytes,
  releaseBytes,
  touchRepo,
} from "./bookkeeping.ts";
import { KvGcStore } from "./gc_store.ts";
import { migrate } from "./schema.ts";
import type { BlobStore } from "../storage/blob_store.ts";
import {
  allUploadParts,
  blobGoneKey,
  blobHoldersKey,
  type BlobLink,
  blobLinkKey,
  blobReposKey,
  blobReposPrefix,
  gcEpochKey,
  gcIntentKey,
  gcReleaseKey,
  gcUntaggedKey,
  type GoneRecord,
  type IntentChunk,
  joinRefs,
  manifestKey,
  type ManifestRecord,
  type ManifestRefs,
  manifestRefsKey,
  manifestRefsPrefix,
  MAX_REFS_PER_MANIFEST,
  type ReferrerDescriptor,
  referrerKey,
  referrersPrefix,
  refsPages,
  repoKey,
  reposPrefix,
  repoVersionKey,
  secretKey,
  tagClockKey,
  tagKey,
  type TagRecord,
  tagsByDigestKey,
  tagsByDigestPrefix,
  tagsPrefix,
  uploadCountKey,
  uploadKey,
  type UploadPart,
  uploadPartKey,
  uploadPartsPrefix,
  type UploadRecord,
  uploadsPrefix,
  uploadTotalKey,
} from "./keys.ts";

/**
 * Tags one manifest PUT may set (path tag plus `?tag=`). Tag changes check
 * one key per repository (`tag_clock`) whatever their number, so this bounds
 * the work of one request, not the checks of its commit.
 */
export const MAX_TAGS_PER_PUT = 10;
const MAX_MUTATIONS = KV_LIMITS.mutations;
/**
 * Tags one delete commit removes: two mutations each, and the last commit also
 * releases the record (its reference pages, up to 64, are deleted and queued
 * for release: about 140 more), all within `KV_LIMITS.mutations`.
 */
const MAX_TAGS_PER_COMMIT = 350;
/** References a manifest PUT counts in its own commit; more are counted ahead (intents). */
const INLINE_REFS = 200;
/** Most key bytes of reference counts a manifest PUT commit adds itself (KV: 80 KiB of keys). */
const INLINE_KEY_BYTES = 40 * 1024;
/** Digests one intent chunk counts. */
const INTENT_CHUNK = 64;

/** One page of a listing. */
export interface Page<T> {
  items: T[];
  /** The cursor for the next page, if more remain. */
  next?: string;
}

/** A manifest to record at PUT. */
export interface ManifestWrite {
  name: string;
  digest: Digest;
  record: ManifestRecord;
  tags: string[];
  /** The manifest's annotations, copied into its referrer entry. */
  annotations?: Record<string, string>;
  /** What the manifest references; recorded in the same commit. */
  refs: { blobs: Digest[]; manifests: Digest[]; subject?: Digest };
  /**
   * What the references were validated against ({@linkcode MetadataStore.pushGuard});
   * without one, nothing was validated and the commit takes things as they are.
   */
  guard?: PushGuard;
}

/**
 * What a push read before it validated its references and placed its bytes:
 * the repository's `gc_epoch` and the digest's `blob_gone` entry. Its commit
 * checks both, so a removal in between makes it validate and place again.
 */
export interface PushGuard {
  readonly epoch: Revision | null;
  readonly bytes: Revision | null;
}

/** The state of a digest's bytes, as a linking commit must see it. */
export interface BytesState {
  /** The `blob_gone` entry's revision (null when there is none). */
  readonly revision: Revision | null;
  readonly gone: GoneRecord | null;
}

export type { Revision } from "./audit.ts";

/**
 * A value read together with its repository's version (the revision of
 * `repo_version`, null while it has none) in one consistent read: the value
 * is what the repository showed at that version.
 */
export interface Versioned<T> {
  readonly version: Revision | null;
  readonly value: T;
}

/** An upload session as read, with the revision a change must match. */
export interface UploadSession {
  readonly uploadId: string;
  readonly record: UploadRecord;
  readonly revision: Revision;
}

/** Every read and write of the registry's metadata. */
export interface MetadataStore {
  // ---- repositories
  repoExists(name: string): Promise<boolean>;
  /** One page of repository names, in byte order, strictly after `last`. */
  listRepos(n: number, last?: string): Promise<Page<string>>;

  // ---- manifests and tags
  getManifest(name: string, digest: Digest): Promise<ManifestRecord | null>;
  /** What a manifest references, or null when it has no record of that. */
  getManifestRefs(name: string, digest: Digest): Promise<ManifestRefs | null>;
  getTag(name: string, tag: string): Promise<TagRecord | null>;
  /**
   * The version of what `name` shows (tags, manifest records, referrers):
   * every commit that changes one of them changes it. Null: no version yet.
   */
  repoVersion(name: string): Promise<Revision | null>;
  /** A tag with its repository's version, read at once. */
  getTagVersioned(name: string, tag: string): Promise<Versioned<TagRecord | null>>;
  /** A manifest record with its repository's version, read at once. */
  getManifestVersioned(name: string, digest: Digest): Promise<Versioned<ManifestRecord | null>>;
  /**
   * Records a manifest whose bytes are already durable: its record, its
   * references, its tags (moving them if they pointed elsewhere), the tag
   * reverse index, its referrer entry and the repository, in one commit.
   */
  putManifest(write: ManifestWrite): Promise<boolean>;
  /** What a manifest push must read before validating (see {@linkcode PushGuard}). */
  pushGuard(name: string, digest: Digest): Promise<PushGuard>;
  /** Whether the bytes of `digest` are being removed, or were, by a collection. */
  bytesState(digest: Digest): Promise<BytesState>;
  /**
   * Removes a tag (only the pointer). False if there was no such tag, or
   * (with `expected`) when it was pushed again since.
   */
  deleteTag(name: string, tag: string, expected?: TagRecord): Promise<boolean>;
  /** Removes a manifest with its tags, references and referrer entry. False if absent. */
  deleteManifest(name: string, digest: Digest): Promise<boolean>;
  /** One page of the tags of `name`, in byte order, strictly after `last`. */
  listTags(name: string, n: number, last?: string): Promise<Page<string>>;
  /** One page of the referrers of `subject` in `name`, optionally of one `artifactType`. */
  listReferrers(
    name: string,
    subject: Digest,
    options: { artifactType?: string; n: number; last?: string },
  ): Promise<Page<ReferrerDescriptor>>;
  /** Which of `digests` are not manifests in `name`, in their order. */
  missingManifests(name: string, digests: Digest[]): Promise<Digest[]>;

  // ---- blobs
  getBlobLink(name: string, digest: Digest): Promise<BlobLink | null>;
  /** Which of `digests` are not linked in `name`, in their order. */
  missingBlobs(name: string, digests: Digest[]): Promise<Digest[]>;
  /**
   * Makes a durable, verified blob visible in `name`, unless a collection
   * touched its bytes since `bytes` was read (false: place them and retry).
   */
  linkBlob(name: string, digest: Digest, size: number, bytes?: Revision | null): Promise<boolean>;
  /** Removes a blob from `name` (the bytes stay for other repositories). False if absent. */
  unlinkBlob(name: string, digest: Digest): Promise<boolean>;
  /**
   * Links `digest` into `name` from `from` if `from` still has it (checked in
   * the same commit). The size, or null.
   */
  mountBlob(name: string, digest: Digest, from: string): Promise<number | null>;
  /** Up to `n` repositories that link `digest`, in name order (automatic mounts). */
  reposLinking(digest: Digest, n: number): Promise<string[]>;

  // ---- upload sessions
  createUpload(uploadId: string, name: string, algorithm: Algorithm): Promise<void>;
  getUpload(uploadId: string): Promise<UploadSession | null>;
  /** The acknowledged parts of a session, in order. */
  listUploadParts(session: UploadSession): Promise<UploadPart[]>;
  /** Acknowledges a chunk if the session is unchanged; the session after it, or null. */
  commitPart(session: UploadSession, part: UploadPart): Promise<UploadSession | null>;
  /**
   * Ends a session if unchanged (only one finisher wins); with `link`, links
   * the finished blob in the same commit. False when another request won;
   * "stale" when a collection touched the blob's bytes since `link.bytes` was read.
   */
  endUpload(
    session: UploadSession,
    link?: { digest: Digest; size: number; bytes?: Revision | null },
  ): Promise<boolean | "stale">;
  /** Open sessions in `name` and in all (the caps are soft). */
  countUploads(name: string): Promise<{ repo: number; total: number }>;
  /** Every open session (the sweeper, fsck). */
  scanUploads(): AsyncIterable<UploadSession>;
  /** Removes acknowledged-part records whose session is gone; how many sessions' worth. */
  sweepOrphanParts(): Promise<number>;

  /**
   * A random 32-byte secret of this store named `name`, made on first use
   * and the same for every process sharing the store (sealed cursors).
   */
  secret(name: string): Promise<Uint8Array>;

  /** Scans and checked repairs of every key family, for fsck: see `audit.ts`. */
  audit(): MetadataAudit;
  /** The collector's side of the metadata: see `gc_store.ts`. */
  gc(): KvGcStore;

  close(): void;
}

function toSession(entry: Deno.KvEntry<UploadRecord>): UploadSession {
  return {
    uploadId: entry.key[1] as string,
    record: entry.value,
    revision: entry.versionstamp as Revision,
  };
}

function sessionCheck(s: UploadSession): Deno.AtomicCheck {
  return { key: uploadKey(s.uploadId), versionstamp: s.revision };
}

/** The referrers-index descriptor of a manifest (end-12). */
export function referrerEntry(
  digest: Digest,
  record: ManifestRecord,
  annotations?: Record<string, string>,
): ReferrerDescriptor {
  const entry: ReferrerDescriptor = { mediaType: record.mediaType, digest, size: record.size };
  if (record.artifactType !== undefined) entry.artifactType = record.artifactType;
  if (annotations !== undefined) entry.annotations = annotations;
  return entry;
}

/**
 * Links `digest` into `name` (checked against the link as read): a new link
 * holds the bytes and counts in the repository's usage; every link (new or
 * renewed) is a candidate once its grace period is over.
 */
function addLink(
  op: Deno.AtomicOperation,
  name: string,
  digest: Digest,
  size: number,
  link: Deno.KvEntryMaybe<BlobLink>,
  holders: Deno.KvEntryMaybe<unknown>,
): Deno.AtomicOperation {
  const now = Date.now();
  op.check(link)
    .set(blobLinkKey(name, digest), { size, linkedAt: now } satisfies BlobLink)
    .set(blobReposKey(digest, name), true);
  if (link.value === null) {
    holdBytes(op, digest, holders, size);
    addUsage(op, name, size);
  }
  enqueue(op, "blob", now, name, digest);
  return op;
}

/**
 * The bookkeeping of a manifest record's removal: its bytes lose a holder,
 * its repository the usage, its references move to release pages (uncounted
 * by the next collection; counting too much meanwhile only keeps things
 * longer), its referrers become candidates, and the repository's epoch moves.
 */
export function releaseRecord(
  op: Deno.AtomicOperation,
  name: string,
  digest: Digest,
  record: ManifestRecord,
  pages: ManifestRefs[],
  now: number,
): void {
  releaseBytes(op, digest, now);
  addUsage(op, name, -record.size);
  bumpEpoch(op, name);
  const token = crypto.randomUUID();
  pages.forEach((page, i) => {
    if (page.blobs.length + page.manifests.length === 0) return;
    op.set(gcReleaseKey(now, token, i), {
      name,
      digest,
      blobs: page.blobs,
      manifests: page.manifests,
    });
  });
  enqueue(op, "subject", now, name, digest);
}

/** {@linkcode MetadataStore} over Deno KV. */
export class KvMetadataStore implements MetadataStore {
  readonly kv: Kv;

  constructor(kv: Deno.Kv | Kv) {
    this.kv = kv instanceof Kv ? kv : new Kv(kv);
  }

  /** Opens the KV at `location` (a SQLite file path, a KV Connect URL or `:memory:`). */
  static async open(location: string): Promise<KvMetadataStore> {
    return new KvMetadataStore(await Deno.openKv(location));
  }

  /**
   * Brings the KV layout to {@linkcode SCHEMA_VERSION} (see `schema.ts`):
   * resumable, crash-safe steps; throws `SchemaError` for a newer layout.
   */
  migrate(
    blobs: Pick<BlobStore, "open" | "stat">,
    options: { onProgress?: (line: string) => void } = {},
  ): Promise<{ from: number; to: number }> {
    return migrate(this.kv, blobs, options.onProgress ? { onProgress: options.onProgress } : {});
  }

  close(): void {
    this.kv.close();
  }

  /** Scans and checked repairs of every key family, for fsck. */
  audit(): MetadataAudit {
    return new KvMetadataAudit(this.kv);
  }

  gc(): KvGcStore {
    return new KvGcStore(this.kv);
  }

  async pushGuard(name: string, digest: Digest): Promise<PushGuard> {
    const [epoch, gone] = await this.kv.getMany<[unknown, unknown]>([
      gcEpochKey(name),
      blobGoneKey(digest),
    ]);
    return {
      epoch: epoch.versionstamp as Revision | null,
      bytes: gone.versionstamp as Revision | null,
    };
  }

  async bytesState(digest: Digest): Promise<BytesState> {
    const entry = await this.kv.get<GoneRecord>(blobGoneKey(digest));
    return { revision: entry.versionstamp as Revision | null, gone: entry.value };
  }

  async repoExists(name: string): Promise<boolean> {
    return (await this.kv.get(repoKey(name))).versionstamp !== null;
  }

  // ---- manifests and tags -------------------------------------------------

  async getManifest(name: string, digest: Digest): Promise<ManifestRecord | null> {
    return (await this.kv.get<ManifestRecord>(manifestKey(name, digest))).value;
  }

  async getTag(name: string, tag: string): Promise<TagRecord | null> {
    return (await this.kv.get<TagRecord>(tagKey(name, tag))).value;
  }

  async repoVersion(name: string): Promise<Revision | null> {
    return (await this.kv.get(repoVersionKey(name))).versionstamp as Revision | null;
  }

  getTagVersioned(name: string, tag: string): Promise<Versioned<TagRecord | null>> {
    return this.#versioned<TagRecord>(name, tagKey(name, tag));
  }

  getManifestVersioned(name: string, digest: Digest): Promise<Versioned<ManifestRecord | null>> {
    return this.#versioned<ManifestRecord>(name, manifestKey(name, digest));
  }

  async #versioned<T>(name: string, key: Deno.KvKey): Promise<Versioned<T | null>> {
    const [version, entry] = await this.kv.getMany<[unknown, T]>([repoVersionKey(name), key]);
    return { version: version.versionstamp as Revision | null, value: entry.value };
  }

  /**
   * Records a manifest whose bytes are already durable: its record, its tags
   * (moving them if they pointed elsewhere), the tag reverse index, its
   * referrer entry and the repository, in one commit.
   */
  putManifest(write: ManifestWrite): Promise<boolean> {
    const { name, digest, tags, annotations, guard } = write;
    if (tags.length > MAX_TAGS_PER_PUT) {
      throw new RangeError(`At most ${MAX_TAGS_PER_PUT} tags per PUT`);
    }
    const pages = refsPages(write.refs);
    const refCount = pages.reduce((n, p) => n + p.blobs.length + p.manifests.length, 0);
    if (refCount > MAX_REFS_PER_MANIFEST) {
      throw new RangeError(`At most ${MAX_REFS_PER_MANIFEST} references per manifest`);
    }
    const refs = joinRefs(pages);
    const counted = [...refs.blobs, ...refs.manifests];
    return this.kv.transact("putManifest", async () => {
      // The clock is read before the tags (getMany takes at most 10 keys, so they cannot be one
      // read): a tag that changes after the clock was read bumps it, and the commit fails.
      const [repo, existing, clock, epoch, gone, holders] = await this.kv.getMany<
        [unknown, ManifestRecord, Deno.KvU64, unknown, unknown, unknown]
      >([
        repoKey(name),
        manifestKey(name, digest),
        tagClockKey(name),
        gcEpochKey(name),
        blobGoneKey(digest),
        blobHoldersKey(digest),
      ]);
      // Something was removed since the references were validated, or the bytes placed.
      if (guard && (epoch.versionstamp !== guard.epoch || gone.versionstamp !== guard.bytes)) {
        return false;
      }
      const current = tags.length
        ? await this.kv.getMany<unknown[]>(tags.map((tag) => tagKey(name, tag)))
        : [];
      // The same bytes pushed again keep the media type they were first stored with
      // (only a body without `mediaType` can be claimed as two types), so that every
      // tag of a digest repeats the same type.
      const record: ManifestRecord = existing.value
        ? {
          ...write.record,
          mediaType: existing.value.mediaType,
          createdAt: existing.value.createdAt,
        }
        : write.record;
      const fresh = existing.value === null;
      // A large manifest's references are counted ahead, in commits of their own.
      // (By count, and by key bytes: long names and sha512 digests reach KV's 80 KiB of keys
      // per commit sooner.)
      const inline = counted.length <= INLINE_REFS &&
        refsKeyBytes(name, counted) <= INLINE_KEY_BYTES;
      const ahead = fresh && !inline ? await this.#countAhead(name, digest, refs) : null;
      const now = Date.now();
      const ok = await this.kv.commit((op) => {
        op.check(existing, epoch, gone);
        touchRepo(op, name, now);
        if (repo.versionstamp === null) op.set(repoKey(name), { createdAt: now });
        // Always rewritten, even unchanged: a concurrent deleteManifest checks it.
        op.set(manifestKey(name, digest), record);
        // The same digest always has the same bytes, so the same references.
        pages.forEach((page, i) => op.set(manifestRefsKey(name, digest, i), page));
        if (fresh) {
          holdBytes(op, digest, holders, record.size);
          addUsage(op, name, record.size);
          if (ahead) {
            op.check({ key: gcIntentKey(ahead.token, 0), versionstamp: ahead.first });
            for (let i = 0; i < ahead.chunks; i++) op.delete(gcIntentKey(ahead.token, i));
          } else {
            countRefs(op, name, counted);
          }
          if (tags.length === 0) enqueue(op, "manifest", now, name, digest);
        }
        if (tags.length) {
          // One check covers every tag of the repository: a tag that moved since it was
          // read bumped the clock.
          op.check(clock).sum(tagClockKey(name), ONE);
        }
        tags.forEach((tag, i) => {
          const entry = current[i] as Deno.KvEntryMaybe<TagRecord>;
          if (entry.value && entry.value.digest !== digest) {
            op.delete(tagsByDigestKey(name, entry.value.digest, tag));
            enqueue(op, "manifest", now, name, entry.value.digest);
          }
          const tagRecord: TagRecord = {
            digest,
            mediaType: record.mediaType,
            size: record.size,
            updatedAt: now,
          };
          op.set(tagKey(name, tag), tagRecord).set(tagsByDigestKey(name, digest, tag), true);
        });
        if (record.subject) {
          op.set(
            referrerKey(name, record.subject, record.artifactType ?? "", digest),
            referrerEntry(digest, record, annotations),
          );
        }
        return op;
      });
      if (ok) return true;
      if (ahead) await this.gc().undoIntent(ahead.token);
      return RETRY;
    });
  }

  /**
   * Counts a large manifest's references before its record commit, in chunks
   * of {@linkcode INTENT_CHUNK}, each recorded as an intent (counting too much
   * only keeps things longer). The record commit checks the first chunk and
   * deletes them all; a push that fails undoes them, and a collection undoes
   * those a crashed push left (`gc_store.ts`).
   */
  async #countAhead(
    name: string,
    digest: Digest,
    refs: { blobs: Digest[]; manifests: Digest[] },
  ): Promise<{ token: string; first: string; chunks: number }> {
    const token = crypto.randomUUID();
    const items = [
      ...refs.blobs.map((d) => ["blobs", d] as const),
      ...refs.manifests.map((d) => ["manifests", d] as const),
    ];
    let first = "";
    let index = 0;
    for (let i = 0; i < items.length; i += INTENT_CHUNK, index++) {
      const chunk: IntentChunk = { name, digest, at: Date.now(), blobs: [], manifests: [] };
      for (const [kind, d] of items.slice(i, i + INTENT_CHUNK)) chunk[kind].push(d);
      const stamp = await this.kv.commit((op) => {
        countRefs(op, name, [...chunk.blobs, ...chunk.manifests]);
        return op.set(gcIntentKey(token, index), chunk);
      });
      if (index === 0) first = stamp!;
    }
    return { token, first, chunks: index };
  }

  /** What a manifest references, or null when there is no such manifest (or no record of it). */
  async getManifestRefs(name: string, digest: Digest): Promise<ManifestRefs | null> {
    const pages = await this.kv.list<ManifestRefs>(
      { prefix: manifestRefsPrefix(name, digest) },
      MAX_REFS_PER_MANIFEST,
    );
    return pages.length ? joinRefs(pages.map((e) => e.value)) : null;
  }

  /** Removes a tag (only the pointer). Returns false if there was no such tag. */
  deleteTag(name: string, tag: string, expected?: TagRecord): Promise<boolean> {
    return this.kv.transact("deleteTag", async () => {
      const [entry, clock] = await this.kv.getMany<[TagRecord, Deno.KvU64]>([
        tagKey(name, tag),
        tagClockKey(name),
      ]);
      if (!entry.value) return false;
      if (
        expected &&
        (entry.value.digest !== expected.digest || entry.value.updatedAt !== expected.updatedAt)
      ) {
        return false;
      }
      const digest = entry.value.digest;
      const ok = await this.kv.commit((op) => {
        op.check(entry).check(clock).sum(tagClockKey(name), ONE)
          .delete(tagKey(name, tag)).delete(tagsByDigestKey(name, digest, tag));
        touchRepo(op, name);
        enqueue(op, "manifest", Date.now(), name, digest);
        return op;
      });
      return ok ? true : RETRY;
    });
  }

  /**
   * Removes a manifest, every tag that points at it, their reverse entries,
   * its references and its referrer entry, in one commit checked against the
   * record (which every PUT of the digest rewrites) and the repository's tag
   * clock (which every tag change bumps), so no tag is missed and no moved tag
   * is removed: two checks, whatever the number of tags. A manifest with more
   * tags than one commit can hold first loses them in batches, each checked
   * the same way.
   */
  async deleteManifest(name: string, digest: Digest): Promise<boolean> {
    for (;;) {
      const done = await this.kv.transact(
        "deleteManifest",
        () => this.#deleteManifestRound(name, digest),
      );
      if (done !== "more") return done;
    }
  }

  /** One commit of a manifest delete: true when done, "more" after a batch of tags. */
  async #deleteManifestRound(
    name: string,
    digest: Digest,
  ): Promise<boolean | "more" | typeof RETRY> {
    {
      const [entry, clock] = await this.kv.getMany<[ManifestRecord, Deno.KvU64]>([
        manifestKey(name, digest),
        tagClockKey(name),
      ]);
      if (!entry.value) return false;
      const record = entry.value;
      const [tagged, refPages] = await Promise.all([
        this.kv.list<true>({ prefix: tagsByDigestPrefix(name, digest) }, MAX_TAGS_PER_COMMIT + 1),
        this.kv.list<ManifestRefs>({ prefix: manifestRefsPrefix(name, digest) }, 64),
      ]);
      const tags = tagged.slice(0, MAX_TAGS_PER_COMMIT).map((e) => e.key.at(-1) as string);
      const last = tagged.length <= MAX_TAGS_PER_COMMIT;
      // Read the tags too: a reverse entry left stale by damage must not take a tag that
      // points elsewhere with it.
      const pointing = new Set<string>();
      for (let i = 0; i < tags.length; i += 10) {
        const batch = tags.slice(i, i + 10);
        const values = await this.kv.getMany<TagRecord[]>(batch.map((tag) => tagKey(name, tag)));
        values.forEach((v, j) => v.value?.digest === digest && pointing.add(batch[j]!));
      }
      const now = Date.now();
      const ok = await this.kv.commit((op) => {
        op.check(entry).check(clock);
        touchRepo(op, name, now);
        if (tags.length) op.sum(tagClockKey(name), ONE);
        for (const tag of tags) {
          op.delete(tagsByDigestKey(name, digest, tag));
          if (pointing.has(tag)) op.delete(tagKey(name, tag));
        }
        if (!last) return op; // a batch: go round again
        op.delete(manifestKey(name, digest)).delete(gcUntaggedKey(name, digest));
        releaseRecord(op, name, digest, record, refPages.map((p) => p.value), now);
        for (const page of refPages) op.delete(page.key);
        if (record.subject) {
          op.delete(referrerKey(name, record.subject, record.artifactType ?? "", digest));
        }
        return op;
      });
      if (!ok) return RETRY;
      return last ? true : "more";
    }
  }

  /** One page of a repository's tags, in byte order, strictly after `last`. */
  listTags(name: string, n: number, last?: string): Promise<Page<string>> {
    return this.#page(tagsPrefix(name), n, last);
  }

  /** One page of repository names, in byte order, strictly after `last`. */
  listRepos(n: number, last?: string): Promise<Page<string>> {
    return this.#page(reposPrefix(), n, last);
  }

  async #page(prefix: readonly string[], n: number, last?: string): Promise<Page<string>> {
    if (n === 0) return { items: [] };
    const selector: Deno.KvListSelector = last === undefined
      ? { prefix }
      : { prefix, start: [...prefix, last] };
    const entries = await this.kv.list(selector, n + 2);
    const items = entries.map((e) => e.key.at(-1) as string).filter((key) => key !== last);
    const page: Page<string> = { items: items.slice(0, n) };
    if (items.length > n) page.next = page.items.at(-1)!;
    return page;
  }

  /**
   * One page of the referrers of `subject` in `name`, optionally only those of
   * `artifactType`. The cursor is the last entry's `artifactType@digest`.
   */
  async listReferrers(
    name: string,
    subject: Digest,
    options: { artifactType?: string; n: number; last?: string },
  ): Promise<Page<ReferrerDescriptor>> {
    if (options.n === 0) return { items: [] };
    const base = referrersPrefix(name, subject);
    const prefix = options.artifactType === undefined ? base : [...base, options.artifactType];
    let selector: Deno.KvListSelector = { prefix };
    const at = options.last?.lastIndexOf("@") ?? -1;
    const lastType = options.last?.slice(0, at);
    if (options.last !== undefined && at !== -1) {
      // A cursor of another type than the filter lies outside `prefix` (KV throws on such a
      // start): one before the filter's type starts at the beginning, one after ends the list.
      if (options.artifactType !== undefined && lastType !== options.artifactType) {
        if (lastType! > options.artifactType) return { items: [] };
      } else {
        selector = { prefix, start: [...base, lastType!, options.last.slice(at + 1)] };
      }
    }
    const entries = await this.kv.list<ReferrerDescriptor>(selector, options.n + 2);
    const cursorOf = (key: Deno.KvKey) => `${String(key.at(-2))}@${String(key.at(-1))}`;
    const items = entries.filter((e) => cursorOf(e.key) !== options.last);
    const page: Page<ReferrerDescriptor> = { items: items.slice(0, options.n).map((e) => e.value) };
    if (items.length > options.n) {
      page.next = cursorOf(items[options.n - 1]!.key);
    }
    return page;
  }

  // ---- blobs --------------------------------------------------------------

  async getBlobLink(name: string, digest: Digest): Promise<BlobLink | null> {
    return (await this.kv.get<BlobLink>(blobLinkKey(name, digest))).value;
  }

  /** Which of `digests` are not linked in `name` (manifest PUT checks; batches of 10). */
  missingBlobs(name: string, digests: Digest[]): Promise<Digest[]> {
    return this.#missing(digests, (d) => blobLinkKey(name, d));
  }

  /** Which of `digests` are not manifests in `name`. */
  missingManifests(name: string, digests: Digest[]): Promise<Digest[]> {
    return this.#missing(digests, (d) => manifestKey(name, d));
  }

  async #missing(digests: Digest[], key: (d: Digest) => Deno.KvKey): Promise<Digest[]> {
    const unique = [...new Set(digests)];
    const batches: Digest[][] = [];
    for (let i = 0; i < unique.length; i += 10) batches.push(unique.slice(i, i + 10));
    // getMany reads 10 keys at most; keep 8 of them in flight for manifests with many layers.
    const missing = new Set<Digest>();
    let next = 0;
    await Promise.all(Array.from({ length: Math.min(8, batches.length) }, async () => {
      while (next < batches.length) {
        const batch = batches[next++]!;
        const entries = await this.kv.getMany<unknown[]>(batch.map(key));
        entries.forEach((e, j) => e.versionstamp === null && missing.add(batch[j]!));
      }
    }));
    return unique.filter((d) => missing.has(d)); // in the manifest's order
  }

  /** Makes a durable, verified blob visible in `name`, unless its bytes were touched since. */
  linkBlob(name: string, digest: Digest, size: number, bytes?: Revision | null): Promise<boolean> {
    return this.kv.transact("linkBlob", async () => {
      const [repo, link, holders, gone] = await this.kv.getMany<
        [unknown, BlobLink, unknown, unknown]
      >([repoKey(name), blobLinkKey(name, digest), blobHoldersKey(digest), blobGoneKey(digest)]);
      if (bytes !== undefined && gone.versionstamp !== bytes) return false;
      const ok = await this.kv.commit((op) => {
        op.check(gone);
        if (repo.versionstamp === null) op.set(repoKey(name), { createdAt: Date.now() });
        return addLink(op, name, digest, size, link, holders);
      });
      return ok ? true : RETRY;
    });
  }

  /** Removes a blob from `name` (the bytes stay while other repositories hold them). */
  unlinkBlob(name: string, digest: Digest): Promise<boolean> {
    return this.kv.transact("unlinkBlob", async () => {
      const entry = await this.kv.get<BlobLink>(blobLinkKey(name, digest));
      if (!entry.value) return false;
      const size = entry.value.size;
      const ok = await this.kv.commit((op) => {
        op.check(entry).delete(blobLinkKey(name, digest)).delete(blobReposKey(digest, name));
        releaseBytes(op, digest, Date.now());
        addUsage(op, name, -size);
        bumpEpoch(op, name);
        return op;
      });
      return ok ? true : RETRY;
    });
  }

  /**
   * Links `digest` into `name` from `from`, checking in the same commit that
   * the source link still exists. Returns the size, or null when there is
   * nothing to mount.
   */
  mountBlob(name: string, digest: Digest, from: string): Promise<number | null> {
    return this.kv.transact("mountBlob", async () => {
      const source = from;
      const [link, repo, mine, holders] = await this.kv.getMany<
        [BlobLink, unknown, BlobLink, unknown]
      >([
        blobLinkKey(source, digest),
        repoKey(name),
        blobLinkKey(name, digest),
        blobHoldersKey(digest),
      ]);
      if (!link.value) return null;
      const now = Date.now();
      const size = link.value.size;
      // The source's link holds the bytes, so no collection can be removing them.
      const ok = await this.kv.commit((op) => {
        if (repo.versionstamp === null) op.set(repoKey(name), { createdAt: now });
        return addLink(op.check(link), name, digest, size, mine, holders);
      });
      return ok ? size : RETRY;
    });
  }

  secret(name: string): Promise<Uint8Array> {
    return this.kv.transact("secret", async () => {
      const entry = await this.kv.get<Uint8Array>(secretKey(name));
      if (entry.value !== null) return entry.value;
      const value = crypto.getRandomValues(new Uint8Array(32));
      const ok = await this.kv.commit((op) => op.check(entry).set(secretKey(name), value));
      return ok ? value : RETRY;
    });
  }

  async reposLinking(digest: Digest, n: number): Promise<string[]> {
    const entries = await this.kv.list<true>({ prefix: blobReposPrefix(digest) }, n);
    return entries.map((entry) => entry.key.at(-1) as string);
  }

  // ---- upload sessions ----------------------------------------------------

  async createUpload(uploadId: string, name: string, algorithm: Algorithm): Promise<void> {
    const now = Date.now();
    const record: UploadRecord = {
      name,
      offset: 0,
      parts: 0,
      algorithm,
      startedAt: now,
      updatedAt: now,
    };
    await this.kv.commit((op) =>
      op.check({ key: uploadKey(uploadId), versionstamp: null })
        .set(uploadKey(uploadId), record)
        .sum(uploadCountKey(name), ONE)
        .sum(uploadTotalKey(), ONE)
    );
  }

  async getUpload(uploadId: string): Promise<UploadSession | null> {
    const entry = await this.kv.get<UploadRecord>(uploadKey(uploadId));
    return entry.value ? toSession(entry as Deno.KvEntry<UploadRecord>) : null;
  }

  async commitPart(session: UploadSession, part: UploadPart): Promise<UploadSession | null> {
    const record = session.record;
    const next: UploadRecord = {
      ...record,
      offset: record.offset + part.size,
      parts: record.parts + 1,
      updatedAt: Date.now(),
    };
    const versionstamp = await this.kv.commit((op) =>
      op.check(sessionCheck(session))
        .set(uploadKey(session.uploadId), next)
        .set(uploadPartKey(session.uploadId, record.parts), part)
    );
    if (versionstamp === null) return null;
    return { uploadId: session.uploadId, record: next, revision: versionstamp as Revision };
  }

  async listUploadParts(session: UploadSession): Promise<UploadPart[]> {
    const count = session.record.parts;
    if (count === 0) return [];
    const entries = await this.kv.list<UploadPart>(
      { prefix: uploadPartsPrefix(session.uploadId) },
      count,
    );
    return entries.map((e) => e.value);
  }

  async endUpload(
    session: UploadSession,
    link?: { digest: Digest; size: number; bytes?: Revision | null },
  ): Promise<boolean | "stale"> {
    const { uploadId } = session;
    const { name, parts } = session.record;
    const inline = Math.min(parts, MAX_MUTATIONS - 20);
    const ended = await this.kv.transact("endUpload", async () => {
      const now = Date.now();
      const [repo, existing, holders, gone] = link
        ? await this.kv.getMany<[unknown, BlobLink, unknown, unknown]>([
          repoKey(name),
          blobLinkKey(name, link.digest),
          blobHoldersKey(link.digest),
          blobGoneKey(link.digest),
        ])
        : [null, null, null, null];
      if (link?.bytes !== undefined && gone?.versionstamp !== link.bytes) return "stale" as const;
      const ok = await this.kv.commit((op) => {
        op.check(sessionCheck(session)).delete(uploadKey(uploadId))
          .sum(uploadCountKey(name), MINUS_ONE)
          .sum(uploadTotalKey(), MINUS_ONE);
        for (let i = 0; i < inline; i++) op.delete(uploadPartKey(uploadId, i));
        if (link && existing && holders && gone) {
          if (repo?.versionstamp === null) op.set(repoKey(name), { createdAt: now });
          addLink(op.check(gone), name, link.digest, link.size, existing, holders);
        }
        return op;
      });
      if (ok !== null) return true;
      // Another request changed the session: it won. Else the link changed meanwhile: again.
      const current = await this.kv.get(uploadKey(uploadId));
      return current.versionstamp === session.revision ? RETRY : false;
    });
    if (ended === true && parts > inline) await this.#deleteParts(uploadId, inline);
    return ended;
  }

  /** Deletes part records of a session from `from` on (sessions with very many chunks). */
  async #deleteParts(uploadId: string, from = 0): Promise<void> {
    for (;;) {
      const batch = await this.kv.list({
        prefix: uploadPartsPrefix(uploadId),
        start: uploadPartKey(uploadId, from),
      }, MAX_MUTATIONS);
      if (batch.length === 0) return;
      await this.kv.commit((op) => {
        for (const e of batch) op.delete(e.key);
        return op;
      });
    }
  }

  async *scanUploads(): AsyncIterable<UploadSession> {
    for await (const entry of this.kv.scan<UploadRecord>(uploadsPrefix())) {
      yield toSession(entry);
    }
  }

  async sweepOrphanParts(): Promise<number> {
    let removed = 0;
    let previous = "";
    for await (const entry of this.kv.scan(allUploadParts())) {
      const uploadId = entry.key[1] as string;
      if (uploadId === previous) continue;
      previous = uploadId;
      if ((await this.kv.get(uploadKey(uploadId))).versionstamp === null) {
        await this.#deleteParts(uploadId);
        removed++;
      }
    }
    return removed;
  }

  /**
   * Open sessions in `name` and in all. The counters change in the same
   * commits that create and end sessions, so they are exact; the caps built
   * on them are soft (concurrent POSTs may pass a cap by their number).
   */
  async countUploads(name: string): Promise<{ repo: number; total: number }> {
    const [repo, total] = await this.kv.getMany<[Deno.KvU64, Deno.KvU64]>([
      uploadCountKey(name),
      uploadTotalKey(),
    ]);
    return { repo: Number(repo.value?.value ?? 0n), total: Number(total.value?.value ?? 0n) };
  }
}
