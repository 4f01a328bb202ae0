/**
 * Housekeeping that keeps the data directory bounded: abandoned upload
 * sessions expire (record and files), and files no record points at (a crash
 * between writing and committing) are removed once they are older than the
 * upload TTL. Safe to run in several processes at once.
 *
 * @module
 */
import type { MetadataStore } from "./meta/metadata_store.ts";
import type { Storage } from "./storage/blob_store.ts";

/** What one sweep removed. */
export interface SweepReport {
  expiredSessions: number;
  orphanUploads: number;
  tempFiles: number;
  orphanParts: number;
}

/** Runs one sweep: sessions idle for `ttlMs` expire; unreferenced files older than `ttlMs` go. */
export async function sweep(
  meta: MetadataStore,
  blobs: Storage,
  options: { ttlMs: number; now?: number },
): Promise<SweepReport> {
  const now = options.now ?? Date.now();
  const cutoff = now - options.ttlMs;
  const report: SweepReport = {
    expiredSessions: 0,
    orphanUploads: 0,
    tempFiles: 0,
    orphanParts: 0,
  };
  for await (const session of meta.scanUploads()) {
    if (session.record.updatedAt >= cutoff) continue;
    if (await meta.endUpload(session)) {
      await blobs.removeUpload(session.uploadId);
      report.expiredSessions++;
    }
  }
  for await (const { uploadId, modifiedAt } of blobs.listUploads()) {
    if (modifiedAt >= cutoff || await meta.getUpload(uploadId)) continue;
    await blobs.removeUpload(uploadId);
    report.orphanUploads++;
  }
  for await (const item of blobs.debris({ leftoversOnly: true })) {
    if (item.kind !== "leftover" || item.modifiedAt >= cutoff) continue;
    await item.remove();
    report.tempFiles++;
  }
  report.orphanParts = await meta.sweepOrphanParts();
  return report;
}

/** Sweeps every `intervalMs` until the returned function is called. */
export function startSweeper(
  meta: MetadataStore,
  blobs: Storage,
  options: {
    ttlMs: number;
    intervalMs: number;
    onError: (error: unknown) => void;
    onSweep?: (r: SweepReport) => void;
  },
): () => Promise<void> {
  let running: Promise<void> | null = null;
  const timer = setInterval(() => {
    if (running) return;
    running = sweep(meta, blobs, { ttlMs: options.ttlMs })
      .then((report) => options.onSweep?.(report), options.onError)
      .finally(() => (running = null));
  }, options.intervalMs);
  return async () => {
    clearInterval(timer);
    await running;
  };
}
