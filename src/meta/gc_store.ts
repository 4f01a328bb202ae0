/**
 * The collector's side of the metadata (see the README's "Garbage collection
 * and retention"): the due queue, releases and intents, and the checked
 * commits that remove a link, a manifest record, or claim and finish the
 * removal of a digest's bytes. Each removal is one atomic commit that checks
 * everything its decision read (the link or record, its reference count, the
 * tag clock, the subject), bumps the repository's `gc_epoch` (so manifest
 * PUTs that validated before it go round again), and is safe to repeat.
 *
 * @module
 */
import type { Digest } from "../oci/digest.ts";
import type { Revision } from "./audit.ts";
import {
  addUsage,
  bumpEpoch,
  enqueue,
  releaseBytes,
  touchRepo,
  uncountRefs,
} from "./bookkeeping.ts";
import {
  blobGoneKey,
  blobHoldersKey,
  type BlobLink,
  blobLinkKey,
  blobReposKey,
  type DueKind,
  gcBytesKey,
  gcBytesPrefix,
  gcDueKey,
  gcDuePrefix,
  gcIntentsPrefix,
  gcRefsKey,
  gcReleasePrefix,
  gcUntaggedKey,
  type GoneRecord,
  type IntentChunk,
  manifestKey,
  type ManifestRecord,
  type ManifestRefs,
  manifestRefsPrefix,
  referrerKey,
  referrersPrefix,
  type ReleasePage,
  tagClockKey,
  tagsByDigestPrefix,
  usagePrefix,
  usageTotalKey,
} from "./keys.ts";
import { type Kv, RETRY } from "./kv.ts";
import { releaseRecord } from "./metadata_store.ts";

/** References one release or intent commit uncounts (keeps keys under KV's 80 KiB). */
const UNCOUNT_BATCH = 64;
/** Referrers one commit queues when their subject went. */
const REFERRER_BATCH = 300;

/** A candidate in the due queue. */
export interface DueEntry {
  kind: DueKind;
  at: number;
  name: string;
  digest: Digest;
  /** The entry as listed: dropping it is checked against it (it may have been queued again). */
  revision?: Revision;
}

/** A digest whose bytes may have lost their last holder. */
export interface BytesEntry {
  at: number;
  digest: Digest;
  revision?: Revision;
}

/** What examining a candidate found. */
export type Outcome =
  | { action: "keep" }
  | { action: "later"; at: number }
  | { action: "remove"; size: number }
  | { action: "changed" };

/** What examining a bytes candidate found. */
export type BytesOutcome =
  | { action: "keep" }
  | { action: "claim"; counted: boolean; holders: Revision | null; gone: Revision | null }
  | { action: "busy"; gone: GoneRecord; revision: Revision }
  | { action: "forget"; gone: Revision };

const counter = (value: unknown) => (value instanceof Deno.KvU64 ? value.value : 0n);

function check(entry: Deno.KvEntryMaybe<unknown>): Deno.AtomicCheck {
  return { key: entry.key, versionstamp: entry.versionstamp };
}

/** The collector's metadata operations over Deno KV. */
export class KvGcStore {
  readonly #kv: Kv;

  constructor(kv: Kv) {
    this.#kv = kv;
  }

  /**
   * Up to `limit` candidates of `kind` queued at or before `cutoff`, oldest
   * first, after `after` (a candidate left in place by the previous page).
   */
  async due(kind: DueKind, cutoff: number, limit: number, after?: DueEntry): Promise<DueEntry[]> {
    if (cutoff < 0) return [];
    const prefix = gcDuePrefix(kind);
    const end = [...prefix, Math.floor(cutoff) + 1];
    const start = after ? gcDueKey(kind, after.at, after.name, after.digest) : undefined;
    const entries = await this.#kv.list<true>(start ? { start, end } : { prefix, end }, limit + 1);
    return entries.map((e) => {
      const [, , at, name, digest] = e.key as [string, DueKind, number, string, Digest];
      return { kind, at, name, digest, revision: e.versionstamp as Revision };
    }).filter((e) =>
      !after || e.at !== after.at || e.name !== after.name || e.digest !== after.digest
    ).slice(0, limit);
  }

  /** How many links and manifest records hold the bytes of `digest` (dry runs, du). */
  async holders(digest: Digest): Promise<number> {
    return Number(counter((await this.#kv.get(blobHoldersKey(digest))).value));
  }

  /** Up to `limit` bytes candidates queued at or before `cutoff`. */
  async bytesDue(cutoff: number, limit: number): Promise<BytesEntry[]> {
    const prefix = gcBytesPrefix();
    const entries = await this.#kv.list<true>(
      { prefix, end: [...prefix, Math.floor(cutoff) + 1] },
      limit,
    );
    return entries.map((e) => ({
      at: e.key[1] as number,
      digest: e.key[2] as Digest,
      revision: e.versionstamp as Revision,
    }));
  }

  /** Drops a candidate (examined: nothing to do), unless it was queued again meanwhile. */
  async drop(entry: DueEntry): Promise<void> {
    const key = gcDueKey(entry.kind, entry.at, entry.name, entry.digest);
    await this.#kv.commit((op) =>
      op.check({ key, versionstamp: entry.revision ?? null }).delete(key)
    );
  }

  /** Moves a candidate to `at` (not collectable before), unless it was queued again meanwhile. */
  async reschedule(entry: DueEntry, at: number): Promise<void> {
    const key = gcDueKey(entry.kind, entry.at, entry.name, entry.digest);
    await this.#kv.commit((op) =>
      op.check({ key, versionstamp: entry.revision ?? null }).delete(key)
        .set(gcDueKey(entry.kind, at, entry.name, entry.digest), true)
    );
  }

  /**
   * Uncounts every pending release page (removed manifests' references), a
   * batch per commit; returns how many references were uncounted.
   */
  async applyReleases(limit = 1000): Promise<number> {
    let done = 0;
    const entries = await this.#kv.list<ReleasePage>({ prefix: gcReleasePrefix() }, limit);
    for (const entry of entries) {
      let current: Deno.KvEntryMaybe<ReleasePage> = entry;
      while (current.value) {
        const page = current.value;
        const take = { blobs: page.blobs.slice(0, UNCOUNT_BATCH), manifests: [] as Digest[] };
        take.manifests = page.manifests.slice(0, UNCOUNT_BATCH - take.blobs.length);
        const rest: ReleasePage = {
          ...page,
          blobs: page.blobs.slice(take.blobs.length),
          manifests: page.manifests.slice(take.manifests.length),
        };
        const ok = await this.#kv.commit((op) => {
          op.check(check(current));
          // Queued at the time of the commit, not the run's start: a manifest untagged
          // meanwhile must not see its TTL counted from before that.
          uncountRefs(op, page.name, take, Date.now());
          return rest.blobs.length + rest.manifests.length
            ? op.set(current.key, rest)
            : op.delete(current.key);
        });
        if (ok) done += take.blobs.length + take.manifests.length;
        current = await this.#kv.get<ReleasePage>(entry.key);
      }
    }
    return done;
  }

  /** Pending release pages, read only (dry runs). */
  async pendingReleases(limit: number): Promise<ReleasePage[]> {
    const entries = await this.#kv.list<ReleasePage>({ prefix: gcReleasePrefix() }, limit);
    return entries.map((e) => e.value);
  }

  /** Tokens of intents older than `cutoff` (a push that crashed before its record commit). */
  async staleIntents(cutoff: number): Promise<string[]> {
    const tokens = new Set<string>();
    for await (const entry of this.#kv.scan<IntentChunk>(gcIntentsPrefix())) {
      if (entry.value.at < cutoff) tokens.add(entry.key[1] as string);
    }
    return [...tokens];
  }

  /**
   * Undoes an intent's counts, first chunk first (after which its push's
   * record commit, which checks that chunk, can no longer succeed).
   */
  async undoIntent(token: string): Promise<void> {
    const chunks = await this.#kv.list<IntentChunk>({ prefix: gcIntentsPrefix(token) }, 1000);
    for (const chunk of chunks) {
      const { name, blobs, manifests } = chunk.value;
      await this.#kv.commit((op) => {
        op.check(check(chunk)).delete(chunk.key);
        uncountRefs(op, name, { blobs, manifests }, Date.now());
        return op;
      });
    }
  }

  /**
   * A blob candidate: its link goes when no manifest record of the
   * repository references it and it was linked at least `graceMs` ago.
   */
  collectBlob(
    entry: DueEntry,
    options: { now: number; graceMs: number; dryRun: boolean },
  ): Promise<Outcome> {
    const { name, digest } = entry;
    return this.#kv.transact("collectBlob", async () => {
      const [link, refs] = await this.#kv.getMany<[BlobLink, Deno.KvU64]>([
        blobLinkKey(name, digest),
        gcRefsKey(name, digest),
      ]);
      if (!link.value || counter(refs.value) > 0n) return { action: "keep" } as const;
      if (link.value.linkedAt > options.now - options.graceMs) {
        return { action: "later", at: link.value.linkedAt } as const;
      }
      const size = link.value.size;
      if (options.dryRun) return { action: "remove", size } as const;
      const ok = await this.#kv.commit((op) => {
        op.check(check(link), check(refs))
          .delete(link.key).delete(blobReposKey(digest, name)).delete(refs.key)
          .delete(gcDueKey(entry.kind, entry.at, name, digest));
        releaseBytes(op, digest, options.now);
        addUsage(op, name, -size);
        bumpEpoch(op, name);
        return op;
      });
      return ok ? { action: "remove", size } as const : RETRY;
    });
  }

  /**
   * A manifest candidate: its record goes (with its references, released
   * for the next pass) when no tag points at it, no manifest record of the
   * repository references it, and its subject (if any) has no record there.
   */
  collectManifest(entry: DueEntry, options: { now: number; dryRun: boolean }): Promise<Outcome> {
    const { name, digest } = entry;
    return this.#kv.transact("collectManifest", async () => {
      const [record, refs, clock, since] = await this.#kv.getMany<
        [ManifestRecord, Deno.KvU64, Deno.KvU64, number]
      >([
        manifestKey(name, digest),
        gcRefsKey(name, digest),
        tagClockKey(name),
        gcUntaggedKey(name, digest),
      ]);
      if (!record.value || counter(refs.value) > 0n) return { action: "keep" } as const;
      // Queued again since this entry (tagged, then untagged anew): the newer entry decides.
      if (since.value !== null && since.value > entry.at) return { action: "keep" } as const;
      const [tagged, pages] = await Promise.all([
        this.#kv.list({ prefix: tagsByDigestPrefix(name, digest) }, 1),
        this.#kv.list<ManifestRefs>({ prefix: manifestRefsPrefix(name, digest) }, 64),
      ]);
      if (tagged.length) return { action: "keep" } as const;
      const { subject, artifactType } = record.value;
      const subjectKey = subject === undefined ? null : manifestKey(name, subject);
      if (subjectKey && (await this.#kv.get(subjectKey)).versionstamp !== null) {
        return { action: "keep" } as const;
      }
      const size = record.value.size;
      if (options.dryRun) return { action: "remove", size } as const;
      const value = record.value;
      const ok = await this.#kv.commit((op) => {
        op.check(check(record), check(refs), check(clock), check(since));
        if (subjectKey) op.check({ key: subjectKey, versionstamp: null });
        // A tag set meanwhile bumped the clock, so none points at it now.
        op.sum(tagClockKey(name), 1n);
        touchRepo(op, name, options.now);
        op.delete(record.key).delete(refs.key).delete(since.key)
          .delete(gcDueKey(entry.kind, entry.at, name, digest));
        releaseRecord(op, name, digest, value, pages.map((p) => p.value), options.now);
        for (const page of pages) op.delete(page.key);
        if (subject !== undefined) {
          op.delete(referrerKey(name, subject, artifactType ?? "", digest));
        }
        return op;
      });
      return ok ? { action: "remove", size } as const : RETRY;
    });
  }

  /**
   * A subject candidate: the manifest went, so its referrers in the
   * repository are queued as manifest candidates (unless it came back).
   */
  async expandSubject(entry: DueEntry, options: { now: number; dryRun: boolean }): Promise<number> {
    const { name, digest } = entry;
    if ((await this.#kv.get(manifestKey(name, digest))).versionstamp !== null) {
      if (!options.dryRun) await this.drop(entry);
      return 0;
    }
    let queued = 0;
    let start: Deno.KvKey | undefined;
    // Each referrer queued writes two keys holding the name and a digest: size the batch so a
    // commit stays well inside KV's 80 KiB of keys, whatever the name's length.
    const perReferrer = 2 * (new TextEncoder().encode(name).length + 2 * 140 + 48);
    const size = Math.max(1, Math.min(REFERRER_BATCH, Math.floor(40 * 1024 / perReferrer)));
    for (;;) {
      const prefix = referrersPrefix(name, digest);
      const page = await this.#kv.list(start ? { prefix, start } : { prefix }, size + 1);
      const batch = page.filter((e) => !start || e.key.join("\0") !== start.join("\0"))
        .slice(0, size);
      const last = page.length <= size;
      if (options.dryRun) return queued + batch.length;
      await this.#kv.commit((op) => {
        for (const e of batch) {
          enqueue(op, "manifest", Date.now(), name, e.key.at(-1) as Digest);
        }
        if (last) op.delete(gcDueKey(entry.kind, entry.at, name, digest));
        return op;
      });
      queued += batch.length;
      if (last) return queued;
      start = batch.at(-1)!.key;
    }
  }

  /**
   * What to do about a digest's bytes: wait for a claim under way (`busy`),
   * forget a `removed` marker older than `forgetMs` (then examine again),
   * keep them while they have holders, else claim their removal.
   */
  async examineBytes(entry: BytesEntry, now: number, forgetMs: number): Promise<BytesOutcome> {
    const [holders, gone] = await this.#kv.getMany<[Deno.KvU64, GoneRecord]>([
      blobHoldersKey(entry.digest),
      blobGoneKey(entry.digest),
    ]);
    if (gone.value?.state === "removing") {
      return { action: "busy", gone: gone.value, revision: gone.versionstamp as Revision };
    }
    if (gone.value?.state === "removed" && gone.value.at + forgetMs <= now) {
      return { action: "forget", gone: gone.versionstamp as Revision };
    }
    if (counter(holders.value) > 0n) return { action: "keep" };
    return {
      action: "claim",
      counted: holders.versionstamp !== null,
      holders: holders.versionstamp as Revision | null,
      gone: gone.versionstamp as Revision | null,
    };
  }

  /**
   * Claims the removal of a digest's bytes: checked against its holders (none)
   * and its `blob_gone` entry as examined; uncounts them from the total. The
   * revision of the claim, or null when something changed.
   */
  async claimBytes(
    digest: Digest,
    examined: { counted: boolean; holders: Revision | null; gone: Revision | null },
    size: number,
    now: number,
  ): Promise<Revision | null> {
    const record: GoneRecord = { state: "removing", at: now };
    const stamp = await this.#kv.commit((op) => {
      op.check(
        { key: blobHoldersKey(digest), versionstamp: examined.holders },
        { key: blobGoneKey(digest), versionstamp: examined.gone },
      ).set(blobGoneKey(digest), record);
      if (examined.counted) {
        op.delete(blobHoldersKey(digest));
        op.sum(usageTotalKey(), BigInt.asUintN(64, -BigInt(size)));
      }
      return op;
    });
    return stamp as Revision | null;
  }

  /** Whether nothing holds the bytes of `digest` and no removal is under way or done. */
  async unheldBytes(digest: Digest): Promise<boolean> {
    const [holders, gone] = await this.#kv.getMany<[Deno.KvU64, GoneRecord]>([
      blobHoldersKey(digest),
      blobGoneKey(digest),
    ]);
    return counter(holders.value) === 0n && gone.value === null;
  }

  /**
   * Queues the bytes of `digest` as a candidate at `at` if nothing holds them
   * and no removal is under way or done (bytes a crashed push left): true if queued.
   */
  async queueUnheldBytes(digest: Digest, at: number): Promise<boolean> {
    const [holders, gone] = await this.#kv.getMany<[Deno.KvU64, GoneRecord]>([
      blobHoldersKey(digest),
      blobGoneKey(digest),
    ]);
    if (counter(holders.value) > 0n || gone.value !== null) return false;
    await this.#kv.commit((op) => op.set(gcBytesKey(at, digest), true));
    return true;
  }

  /** Whether `claim` is still the claim on the bytes of `digest` (nobody took it over). */
  async holdsClaim(digest: Digest, claim: Revision): Promise<boolean> {
    return (await this.#kv.get(blobGoneKey(digest))).versionstamp === claim;
  }

  /** Takes over an expired claim (its collector died or stalled): the new claim, or null. */
  async reclaimBytes(digest: Digest, gone: Revision, now: number): Promise<Revision | null> {
    const record: GoneRecord = { state: "removing", at: now };
    const stamp = await this.#kv.commit((op) =>
      op.check({ key: blobGoneKey(digest), versionstamp: gone }).set(blobGoneKey(digest), record)
    );
    return stamp as Revision | null;
  }

  /**
   * The bytes are gone: the claim becomes `removed` (which linking commits
   * still see, so none that read before can succeed), and a candidate to
   * forget it after `forgetMs` replaces `entry` (when the collector has one).
   */
  async finishBytes(
    entry: BytesEntry | null,
    digest: Digest,
    claim: Revision,
    now: number,
    forgetMs: number,
  ): Promise<boolean> {
    const record: GoneRecord = { state: "removed", at: now };
    const ok = await this.#kv.commit((op) => {
      op.check({ key: blobGoneKey(digest), versionstamp: claim })
        .set(blobGoneKey(digest), record)
        .set(gcBytesKey(now + forgetMs, digest), true);
      if (entry) op.delete(gcBytesKey(entry.at, entry.digest));
      return op;
    });
    return ok !== null;
  }

  /** Removes a `removed` marker once no push can still hold a read of the state before it. */
  async forgetBytes(digest: Digest, gone: Revision): Promise<void> {
    await this.#kv.commit((op) =>
      op.check({ key: blobGoneKey(digest), versionstamp: gone }).delete(blobGoneKey(digest))
    );
  }

  /** Drops a bytes candidate that still has holders. */
  async dropBytes(entry: BytesEntry): Promise<void> {
    const key = gcBytesKey(entry.at, entry.digest);
    await this.#kv.commit((op) =>
      op.check({ key, versionstamp: entry.revision ?? null }).delete(key)
    );
  }

  /** Bytes each repository holds and the total, from the counters. */
  async usage(): Promise<{ repos: Map<string, number>; total: number }> {
    const repos = new Map<string, number>();
    for await (const e of this.#kv.scan<Deno.KvU64>(usagePrefix())) {
      const value = Number(counter(e.value));
      if (value !== 0) repos.set(e.key[1] as string, value);
    }
    const total = await this.#kv.get<Deno.KvU64>(usageTotalKey());
    return { repos, total: Number(counter(total.value)) };
  }

  /** How many references of `digest` the records of `name` hold (tests, du). */
  async refCount(name: string, digest: Digest): Promise<number> {
    return Number(counter((await this.#kv.get(gcRefsKey(name, digest))).value));
  }
}
