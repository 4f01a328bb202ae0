/**
 * Usage figures: bytes per repository and in total from the counters that
 * the registry's own commits keep (no walk of the store), and what a
 * collection would reclaim now and once the grace period has passed (a dry
 * run, which reads only the due candidates).
 *
 * @module
 */
import type { Config } from "../config.ts";
import type { MetadataStore } from "../meta/metadata_store.ts";
import type { Storage } from "../storage/blob_store.ts";
import { collect } from "./collect.ts";

/** What `berth du` reports. */
export interface Usage {
  /** Bytes each repository holds (each blob and manifest once per repository), by name. */
  repositories: Map<string, number>;
  /** Bytes of every blob with holders, each once. */
  total: number;
  /** Bytes a collection would remove now. */
  reclaimableNow: number;
  /** Bytes it would remove once the grace period of recent uploads has passed. */
  reclaimableAfterGrace: number;
}

/** Reads the usage counters and dry-runs a collection with and without the grace period. */
export async function usage(
  meta: MetadataStore,
  storage: Storage,
  config: Pick<Config, "gcGraceMs" | "untaggedTtlMs" | "retention">,
): Promise<Usage> {
  const { repos, total } = await meta.gc().usage();
  const base = {
    untaggedTtlMs: config.untaggedTtlMs,
    policies: config.retention,
    dryRun: true,
  };
  const now = await collect(meta, storage, { ...base, graceMs: config.gcGraceMs });
  const later = await collect(meta, storage, { ...base, graceMs: 0 });
  return {
    repositories: new Map([...repos].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    total,
    reclaimableNow: now.reclaimedBytes,
    reclaimableAfterGrace: later.reclaimedBytes,
  };
}
