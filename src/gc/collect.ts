/**
 * One collection (see the README's "Garbage collection and retention"):
 * retention policies remove tags, then the due candidates are examined, in
 * passes until nothing more comes due: releases of removed manifests are
 * uncounted, subjects' referrers queued, untagged manifests nothing holds
 * removed after their TTL, links nothing references removed after the grace
 * period, and the bytes of digests left without holders deleted. Expired
 * upload sessions and debris go too (the sweeper). Only due candidates are
 * read: the cost follows what changed, not the size of the store.
 *
 * Records go first and bytes after; every step is one checked commit or an
 * idempotent file removal, so a collection killed anywhere is finished by
 * the next one. `dryRun` examines the same candidates and changes nothing.
 *
 * @module
 */
import type { Digest } from "../oci/digest.ts";
import type { DueEntry, KvGcStore } from "../meta/gc_store.ts";
import type { MetadataStore } from "../meta/metadata_store.ts";
import type { Storage } from "../storage/blob_store.ts";
import { sweep, type SweepReport } from "../sweeper.ts";
import { DEFAULT_LEASE_MS, FORGET_MS, removeClaimed } from "./bytes.ts";
import { policyFor, type RetentionPolicy, tagsToRemove } from "./retention.ts";

/** Intents older than this belong to a push that died before its record commit. */
const INTENT_TTL_MS = 3600_000;
const PAGE = 500;
const MAX_PASSES = 20;

/** Options of {@linkcode collect}. */
export interface CollectOptions {
  /** Links younger than this stay (a layer pushed before its manifest). */
  graceMs: number;
  /** Untagged manifests nothing holds go after this long; null keeps them. */
  untaggedTtlMs: number | null;
  policies?: RetentionPolicy[];
  dryRun?: boolean;
  /** Also expire upload sessions idle this long and remove debris (the sweeper). */
  uploadTtlMs?: number;
  /**
   * Also walk the blob store and queue bytes nothing holds, by their file's
   * time (bytes a push placed and never linked: a crash, a refused manifest).
   * Costs a read per blob: on demand only (`berth gc --full`).
   */
  full?: boolean;
  /** A claim to remove bytes holds this long before others take it over. */
  leaseMs?: number;
  now?: number;
  onProgress?: (progress: CollectProgress) => void;
}

/** Where a collection is. */
export interface CollectProgress {
  examined: number;
  reclaimedBytes: number;
}

/** What a collection did (or, dry, would do). */
export interface CollectReport {
  dryRun: boolean;
  examined: number;
  tags: number;
  manifests: number;
  links: number;
  blobs: number;
  reclaimedBytes: number;
  /** References uncounted after manifests went. */
  released: number;
  intentsUndone: number;
  uploads: SweepReport | null;
  /** What was (or would be) removed: `tag name:tag`, `manifest name@digest`, `link name@digest`, `bytes digest`. */
  removed: string[];
  ms: number;
}

/** Runs one collection. */
export async function collect(
  meta: MetadataStore,
  storage: Storage,
  options: CollectOptions,
): Promise<CollectReport> {
  const started = performance.now();
  let now = options.now ?? Date.now();
  const dryRun = options.dryRun ?? false;
  const policies = options.policies ?? [];
  const leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
  const gc = meta.gc();
  const report: CollectReport = {
    dryRun,
    examined: 0,
    tags: 0,
    manifests: 0,
    links: 0,
    blobs: 0,
    reclaimedBytes: 0,
    released: 0,
    intentsUndone: 0,
    uploads: null,
    removed: [],
    ms: 0,
  };
  let lastShown = 0;
  const tick = () => {
    report.examined++;
    if (options.onProgress && report.examined - lastShown >= 100) {
      lastShown = report.examined;
      options.onProgress({ examined: report.examined, reclaimedBytes: report.reclaimedBytes });
    }
  };
  const ttlOf = (name: string): number | null =>
    policyFor(policies, name)?.untaggedMs ?? options.untaggedTtlMs;
  const ttls = [options.untaggedTtlMs, ...policies.map((p) => p.untaggedMs ?? null)]
    .filter((t): t is number => t !== null);
  const minTtl = ttls.length ? Math.min(...ttls) : null;
  // Dry runs: what the planned removals would take from each digest's holders.
  const planned = new Map<Digest, { count: number; size: number }>();
  const plan = (digest: Digest, size: number) => {
    const p = planned.get(digest) ?? { count: 0, size };
    p.count++;
    planned.set(digest, p);
  };
  const plannedLinks = new Set<string>();
  const plannedManifests = new Set<string>();
  const releasedRefs = new Map<string, number>();
  /** Dry runs: what removing a manifest would release, followed as a collection would. */
  const cascade = async (name: string, digest: Digest) => {
    const refs = await meta.getManifestRefs(name, digest);
    if (refs) await releaseDry(name, refs);
  };
  const planManifest = async (name: string, digest: Digest, size: number) => {
    const id = `${name}\0${digest}`;
    if (plannedManifests.has(id)) return;
    plannedManifests.add(id);
    report.manifests++;
    report.removed.push(`manifest ${name}@${digest}`);
    plan(digest, size);
    await cascade(name, digest);
  };
  const releaseDry = async (name: string, refs: { blobs: Digest[]; manifests: Digest[] }) => {
    const items = [
      ...refs.blobs.map((d) => ["blob", d] as const),
      ...refs.manifests.map((d) => ["manifest", d] as const),
    ];
    for (const [kind, d] of items) {
      const id = `${name}\0${d}`;
      releasedRefs.set(id, (releasedRefs.get(id) ?? 0) + 1);
      if ((await gc.refCount(name, d)) > releasedRefs.get(id)!) continue;
      if (kind === "blob" && !plannedLinks.has(id)) {
        const link = await meta.getBlobLink(name, d);
        if (!link || link.linkedAt > now - options.graceMs) continue;
        plannedLinks.add(id);
        report.links++;
        report.removed.push(`link ${name}@${d}`);
        plan(d, link.size);
      } else if (kind === "manifest" && !plannedManifests.has(id)) {
        const record = await meta.getManifest(name, d);
        // Otherwise a later collection, once its TTL is over.
        if (ttlOf(name) !== 0 || !record || await isTagged(meta, name, d)) continue;
        await planManifest(name, d, record.size);
      }
    }
  };

  if (policies.length) {
    const untagged = await applyRetention(meta, policies, now, dryRun, report, tick);
    // A dry run follows what the tags' removal would make collectable now.
    for (const { name, digest } of dryRun ? untagged : []) {
      const record = await meta.getManifest(name, digest);
      if (ttlOf(name) !== 0 || !record || (await gc.refCount(name, digest)) > 0) continue;
      if (record.subject && await meta.getManifest(name, record.subject)) continue;
      await planManifest(name, digest, record.size);
    }
    // The tags it removed queued their manifests just now.
    if (options.now === undefined) now = Date.now();
  }
  if (!dryRun) {
    for (const token of await gc.staleIntents(now - INTENT_TTL_MS)) {
      await gc.undoIntent(token);
      report.intentsUndone++;
    }
  }

  if (options.full) {
    for await (const digest of storage.list()) {
      tick();
      const info = await storage.stat(digest);
      if (!info) continue;
      if (dryRun) {
        // A dry run cannot queue: it lists unheld bytes outside the grace period directly.
        if (info.modifiedAt <= now - options.graceMs && await gc.unheldBytes(digest)) {
          report.removed.push(`bytes ${digest}`);
          report.blobs++;
          report.reclaimedBytes += info.size;
        }
        continue;
      }
      // Due once the grace period has passed since they were written: a push may still link them.
      await gc.queueUnheldBytes(digest, info.modifiedAt + options.graceMs);
    }
    // The walk takes a while: what came due meanwhile is due now.
    if (options.now === undefined) now = Date.now();
  }

  if (dryRun) {
    // References of removed manifests not yet uncounted: what uncounting them would free.
    for (const page of await gc.pendingReleases(10_000)) await releaseDry(page.name, page);
  }

  for (let pass = 0; pass < MAX_PASSES; pass++) {
    // What the last pass queued (at the time of its commits) is due in this one.
    if (options.now === undefined && pass > 0) now = Date.now();
    const before = report.manifests + report.links + report.blobs + report.released;
    if (!dryRun) report.released += await gc.applyReleases();
    await eachDue(gc, "subject", now, async (entry) => {
      tick();
      await gc.expandSubject(entry, { now, dryRun });
    });
    if (minTtl !== null) {
      await eachDue(gc, "manifest", now - minTtl, async (entry) => {
        const ttl = ttlOf(entry.name);
        if (ttl === null || entry.at > now - ttl) return;
        tick();
        const outcome = await gc.collectManifest(entry, { now, dryRun });
        if (outcome.action === "keep" && !dryRun) await gc.drop(entry);
        if (outcome.action === "remove") {
          if (dryRun) {
            const id = `${entry.name}\0${entry.digest}`;
            if (plannedManifests.has(id)) return;
            plannedManifests.add(id);
            plan(entry.digest, outcome.size);
          }
          report.manifests++;
          report.removed.push(`manifest ${entry.name}@${entry.digest}`);
          if (dryRun) await cascade(entry.name, entry.digest);
        }
      });
    }
    await eachDue(gc, "blob", now - options.graceMs, async (entry) => {
      tick();
      const outcome = await gc.collectBlob(entry, { now, graceMs: options.graceMs, dryRun });
      if (dryRun) {
        const id = `${entry.name}\0${entry.digest}`;
        if (outcome.action === "remove" && !plannedLinks.has(id)) {
          plannedLinks.add(id);
          report.links++;
          report.removed.push(`link ${entry.name}@${entry.digest}`);
          plan(entry.digest, outcome.size);
        }
        return;
      }
      if (outcome.action === "keep") await gc.drop(entry);
      if (outcome.action === "later") await gc.reschedule(entry, outcome.at);
      if (outcome.action === "remove") {
        report.links++;
        report.removed.push(`link ${entry.name}@${entry.digest}`);
      }
    });
    if (dryRun) {
      for (const [digest, p] of planned) {
        if ((await gc.holders(digest)) <= p.count) {
          report.blobs++;
          report.reclaimedBytes += p.size;
          report.removed.push(`bytes ${digest}`);
        }
      }
      break;
    }
    await removeBytes(gc, storage, now, leaseMs, report, tick);
    const after = report.manifests + report.links + report.blobs + report.released;
    if (after === before) break;
  }
  if (options.uploadTtlMs !== undefined && !dryRun) {
    report.uploads = await sweep(meta, storage, { ttlMs: options.uploadTtlMs, now });
  }
  report.ms = Math.round(performance.now() - started);
  return report;
}

/** Whether a tag of `name` points at `digest` (dry runs only: reads the tags). */
async function isTagged(meta: MetadataStore, name: string, digest: Digest): Promise<boolean> {
  let last: string | undefined;
  for (;;) {
    const page = await meta.listTags(name, 1000, last);
    for (const tag of page.items) {
      if ((await meta.getTag(name, tag))?.digest === digest) return true;
    }
    if (!page.next) return false;
    last = page.next;
  }
}

/** Visits the due candidates of `kind` up to `cutoff`, a page at a time. */
async function eachDue(
  gc: KvGcStore,
  kind: DueEntry["kind"],
  cutoff: number,
  visit: (entry: DueEntry) => Promise<void>,
): Promise<void> {
  let after: DueEntry | undefined;
  for (;;) {
    const page = await gc.due(kind, cutoff, PAGE, after);
    for (const entry of page) await visit(entry);
    if (page.length < PAGE) return;
    after = page.at(-1);
  }
}

/** The bytes step: claims, deletes and marks the bytes of digests without holders. */
async function removeBytes(
  gc: KvGcStore,
  storage: Storage,
  now: number,
  leaseMs: number,
  report: CollectReport,
  tick: () => void,
): Promise<void> {
  for (;;) {
    const page = await gc.bytesDue(now, PAGE);
    let progressed = 0;
    for (const entry of page) {
      tick();
      for (let round = 0; round < 3; round++) {
        const outcome = await gc.examineBytes(entry, now, FORGET_MS);
        if (outcome.action === "keep") {
          await gc.dropBytes(entry);
          progressed++;
        } else if (outcome.action === "forget") {
          await gc.forgetBytes(entry.digest, outcome.gone);
          continue; // examine again: it may have lost its holders since
        } else if (outcome.action === "busy") {
          // Another collection's claim: taken over once its lease ran out.
          if (Date.now() - outcome.gone.at <= leaseMs) break;
          const at = Date.now();
          const revision = await gc.reclaimBytes(entry.digest, outcome.revision, at);
          if (
            revision && await removeClaimed(gc, storage, entry.digest, { revision, at }, {
              leaseMs,
              entry,
            })
          ) progressed++;
        } else {
          const info = await storage.stat(entry.digest);
          if (!info && !outcome.counted) {
            await gc.dropBytes(entry); // never stored, or already gone
            progressed++;
            break;
          }
          const size = info?.size ?? 0;
          const at = Date.now();
          const revision = await gc.claimBytes(entry.digest, outcome, size, at);
          if (!revision) continue; // a holder appeared or another claim: examine again
          if (
            await removeClaimed(gc, storage, entry.digest, { revision, at }, { leaseMs, entry })
          ) {
            report.blobs++;
            report.reclaimedBytes += size;
            report.removed.push(`bytes ${entry.digest}`);
            progressed++;
          }
        }
        break;
      }
    }
    if (page.length < PAGE || progressed === 0) return;
  }
}

/** Removes the tags the policies remove (recording them in a dry run). */
async function applyRetention(
  meta: MetadataStore,
  policies: RetentionPolicy[],
  now: number,
  dryRun: boolean,
  report: CollectReport,
  tick: () => void,
): Promise<{ name: string; digest: Digest }[]> {
  const untagged: { name: string; digest: Digest }[] = [];
  let last: string | undefined;
  for (;;) {
    const repos = await meta.listRepos(1000, last);
    for (const name of repos.items) {
      const policy = policyFor(policies, name);
      if (!policy || (policy.keepLast === undefined && policy.olderThanMs === undefined)) continue;
      const tags = [];
      let tagLast: string | undefined;
      for (;;) {
        const page = await meta.listTags(name, 1000, tagLast);
        for (const tag of page.items) {
          tick();
          const record = await meta.getTag(name, tag);
          if (record) tags.push({ tag, updatedAt: record.updatedAt, record });
        }
        if (!page.next) break;
        tagLast = page.next;
      }
      const removed = tagsToRemove(policy, tags, now) as typeof tags;
      for (const { tag, record } of removed) {
        if (dryRun || await meta.deleteTag(name, tag, record)) {
          report.tags++;
          report.removed.push(`tag ${name}:${tag}`);
        }
      }
      // Manifests that lose every tag (dry runs follow them).
      const left = new Set(tags.filter((t) => !removed.includes(t)).map((t) => t.record.digest));
      for (const digest of new Set(removed.map((t) => t.record.digest))) {
        if (!left.has(digest)) untagged.push({ name, digest });
      }
    }
    if (!repos.next) return untagged;
    last = repos.next;
  }
}
