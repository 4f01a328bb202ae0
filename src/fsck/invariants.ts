/**
 * Every invariant of a data directory, in one list: what `berth fsck` checks
 * (and repairs), and what the tests' consistency check asserts after every
 * scenario. Each is a small named rule in `checks/`; they run in this order,
 * which is the order of the report.
 *
 * @module
 */
import type { MetadataAudit } from "../meta/audit.ts";
import type { Storage } from "../storage/blob_store.ts";
import { blobAreaDebris, blobHashes } from "./checks/blobs.ts";
import { tagClocks, uploadCounters } from "./checks/counters.ts";
import { bookkeepingCounters, bookkeepingQueues } from "./checks/bookkeeping.ts";
import { leftovers } from "./checks/leftovers.ts";
import { blobLinks, blobRepos, linksIndexed } from "./checks/links.ts";
import { manifestRecords, manifestRefs, strayManifestRefs } from "./checks/manifests.ts";
import { pullableImages } from "./checks/references.ts";
import { referrers, subjectsIndexed } from "./checks/referrers.ts";
import { repositories } from "./checks/repos.ts";
import { secrets } from "./checks/secrets.ts";
import { legacyEpochs, schemaMigration, schemaVersion } from "./checks/schema.ts";
import { taggedManifestsIndexed, tagReverseEntries, tags } from "./checks/tags.ts";
import { orphanParts, uploadSessions } from "./checks/uploads.ts";
import { judge } from "./facts.ts";
import type { CheckContext, Finding, Invariant } from "./finding.ts";
import { NO_PROGRESS, type Progress } from "./progress.ts";
import { scanStores } from "./scan.ts";

/** The invariants, in report order. */
export const INVARIANTS: readonly Invariant[] = [
  schemaVersion,
  schemaMigration,
  legacyEpochs,
  blobAreaDebris,
  blobHashes,
  manifestRecords,
  manifestRefs,
  strayManifestRefs,
  tags,
  tagReverseEntries,
  taggedManifestsIndexed,
  blobLinks,
  blobRepos,
  linksIndexed,
  pullableImages,
  referrers,
  subjectsIndexed,
  uploadSessions,
  orphanParts,
  uploadCounters,
  tagClocks,
  repositories,
  secrets,
  bookkeepingQueues,
  bookkeepingCounters,
  leftovers,
];

/** Scans the stores and judges what they hold: the context the invariants check. */
export async function examine(
  audit: MetadataAudit,
  storage: Storage,
  progress: Progress = NO_PROGRESS,
): Promise<CheckContext> {
  const scan = await scanStores(audit, storage, progress);
  return { scan, facts: judge(scan), audit, storage };
}

/** Every finding of every invariant, in report order, with the invariant that made it. */
export function* findings(ctx: CheckContext): Iterable<Finding & { invariant: string }> {
  for (const invariant of INVARIANTS) {
    for (const finding of invariant.check(ctx)) yield { ...finding, invariant: invariant.name };
  }
}
