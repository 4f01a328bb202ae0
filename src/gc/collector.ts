/**
 * The server's background collector: a collection every `--gc-interval`
 * (which also sweeps uploads), and between collections the upload sweep on
 * its own shorter interval. Never more than one run at a time in a process;
 * several processes may collect at once (every step is checked). No request
 * waits on it.
 *
 * Its runs, their duration and what they freed are reported to
 * {@linkcode metrics}.
 *
 * @module
 */
import { metrics } from "../metrics/registry.ts";
import type { MetadataStore } from "../meta/metadata_store.ts";
import type { Storage } from "../storage/blob_store.ts";
import { sweep, type SweepReport } from "../sweeper.ts";
import { collect, type CollectOptions, type CollectReport } from "./collect.ts";

const RUNS = "berth_gc_runs_total";
const RUNS_HELP = "Background garbage collections, by result";
const gcMetrics = {
  ok: metrics.counter(RUNS, RUNS_HELP, { result: "ok" }),
  failed: metrics.counter(RUNS, RUNS_HELP, { result: "failed" }),
  lastSeconds: metrics.gauge(
    "berth_gc_last_run_duration_seconds",
    "How long the last background collection took",
  ),
  lastEnd: metrics.gauge(
    "berth_gc_last_run_timestamp_seconds",
    "When the last background collection ended (Unix time)",
  ),
  bytes: metrics.counter("berth_gc_freed_bytes_total", "Blob bytes removed by collections"),
  blobs: metrics.counter("berth_gc_freed_blobs_total", "Blobs removed by collections"),
  manifests: metrics.counter(
    "berth_gc_removed_manifests_total",
    "Manifests removed by collections",
  ),
  tags: metrics.counter("berth_gc_removed_tags_total", "Tags removed by retention policies"),
  sweeps: metrics.counter(
    "berth_upload_sweeps_total",
    "Sweeps of expired upload sessions between collections",
  ),
  expired: metrics.counter(
    "berth_uploads_expired_total",
    "Upload sessions removed because they were idle too long",
  ),
};

/** Counts one collection's report. */
function recordCollect(report: CollectReport): void {
  gcMetrics.ok.inc();
  gcMetrics.lastSeconds.set(report.ms / 1000);
  gcMetrics.lastEnd.set(Date.now() / 1000);
  gcMetrics.bytes.inc(report.reclaimedBytes);
  gcMetrics.blobs.inc(report.blobs);
  gcMetrics.manifests.inc(report.manifests);
  gcMetrics.tags.inc(report.tags);
  if (report.uploads) gcMetrics.expired.inc(report.uploads.expiredSessions);
}

/** Starts the background collector; the returned function stops it (awaiting a run). */
export function startCollector(
  meta: MetadataStore,
  storage: Storage,
  options: {
    gcIntervalMs: number;
    sweepIntervalMs: number;
    collect: Omit<CollectOptions, "now" | "dryRun">;
    onError: (error: unknown) => void;
    onCollect?: (report: CollectReport) => void;
    onSweep?: (report: SweepReport) => void;
  },
): () => Promise<void> {
  let running: Promise<void> | null = null;
  let lastCollect = Date.now();
  const run = () => {
    if (running) return;
    const due = options.gcIntervalMs > 0 && Date.now() - lastCollect >= options.gcIntervalMs;
    const work = due
      ? collect(meta, storage, options.collect).then((r) => {
        lastCollect = Date.now();
        recordCollect(r);
        options.onCollect?.(r);
      }, (error) => {
        gcMetrics.failed.inc();
        throw error;
      })
      : options.collect.uploadTtlMs === undefined
      ? Promise.resolve()
      : sweep(meta, storage, { ttlMs: options.collect.uploadTtlMs }).then((r) => {
        gcMetrics.sweeps.inc();
        gcMetrics.expired.inc(r.expiredSessions);
        options.onSweep?.(r);
      });
    running = work.catch(options.onError).finally(() => (running = null));
  };
  const every = options.gcIntervalMs > 0
    ? Math.min(options.sweepIntervalMs, options.gcIntervalMs)
    : options.sweepIntervalMs;
  const timer = setInterval(run, every);
  return async () => {
    clearInterval(timer);
    await running;
  };
}
