/**
 * Housekeeping that keeps the data directory bounded: abandoned upload
 * sessions expire (record and files), and files no record points at (a crash
 * between writing and committing) are removed once they are older than the
 * upload TTL. Safe to run in several processes at once.
 *
 * @module
 */
import { join } from "node:path";
import type { UploadRecord } from "./meta/keys.ts";
import { allUploadParts, uploadsPrefix } from "./meta/keys.ts";
import type { MetadataStore } from "./meta/metadata_store.ts";
import type { FsBlobStore } from "./storage/fs_blob_store.ts";

/** What one sweep removed. */
export interface SweepReport {
  expiredSessions: number;
  orphanUploads: number;
  tempFiles: number;
  orphanParts: number;
}

async function newestMtime(dir: string): Promise<number> {
  let newest = 0;
  try {
    newest = (await Deno.stat(dir)).mtime?.getTime() ?? 0;
    for await (const entry of Deno.readDir(dir)) {
      const info = await Deno.stat(join(dir, entry.name)).catch(() => null);
      newest = Math.max(newest, info?.mtime?.getTime() ?? 0);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return newest;
}

/** Runs one sweep: sessions idle for `ttlMs` expire; unreferenced files older than `ttlMs` go. */
export async function sweep(
  meta: MetadataStore,
  blobs: FsBlobStore,
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
  for await (const entry of meta.kv.scan<UploadRecord>(uploadsPrefix())) {
    if (entry.value.updatedAt >= cutoff) continue;
    const uploadId = entry.key[1] as string;
    if (await meta.endUpload(uploadId, entry)) {
      await blobs.removeUpload(uploadId);
      report.expiredSessions++;
    }
  }
  for await (const { uploadId } of blobs.listUploads()) {
    if ((await meta.getUpload(uploadId)).value) continue;
    if (await newestMtime(join(blobs.root, "uploads", uploadId)) >= cutoff) continue;
    await blobs.removeUpload(uploadId);
    report.orphanUploads++;
  }
  report.tempFiles = await blobs.sweepTemp(cutoff);
  let previous = "";
  for await (const entry of meta.kv.scan(allUploadParts())) {
    const uploadId = entry.key[1] as string;
    if (uploadId === previous) continue;
    previous = uploadId;
    if (!(await meta.getUpload(uploadId)).value) {
      await meta.deleteParts(uploadId);
      report.orphanParts++;
    }
  }
  return report;
}

/** Sweeps every `intervalMs` until the returned function is called. */
export function startSweeper(
  meta: MetadataStore,
  blobs: FsBlobStore,
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
