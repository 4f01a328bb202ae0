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
  const work: CollectorWork = { meta, storage, ...options };
  const run = () => {
    if (running) return;
    const due = options.gcIntervalMs > 0 && Date.now() - lastCollect >= options.gcIntervalMs;
    const job = due
      ? collectOnce(work).then(() => void (lastCollect = Date.now()))
      : sweepOnce(work);
    running = job.catch(options.onError).finally(() => (running = null));
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

/** What the collector does on each run, once the stores are open (deploy mode). */
export interface CollectorWork {
  meta: MetadataStore;
  storage: Storage;
  collect: Omit<CollectOptions, "now" | "dryRun">;
  onError: (error: unknown) => void;
  onCollect?: (report: CollectReport) => void;
  onSweep?: (report: SweepReport) => void;
}

/** One collection, counted in the metrics and reported to `onCollect` (timers and crons alike). */
async function collectOnce(work: CollectorWork): Promise<void> {
  let report: CollectReport;
  try {
    report = await collect(work.meta, work.storage, work.collect);
  } catch (error) {
    gcMetrics.failed.inc();
    throw error;
  }
  recordCollect(report);
  work.onCollect?.(report);
}

/** One sweep of expired upload sessions, counted and reported to `onSweep`. */
async function sweepOnce(work: CollectorWork): Promise<void> {
  if (work.collect.uploadTtlMs === undefined) return;
  const report = await sweep(work.meta, work.storage, { ttlMs: work.collect.uploadTtlMs });
  gcMetrics.sweeps.inc();
  gcMetrics.expired.inc(report.expiredSessions);
  work.onSweep?.(report);
}

/** `Deno.cron`, present with `--unstable-cron` and on Deno Deploy. */
type CronFn = (name: string, schedule: string, handler: () => Promise<void>) => Promise<void>;

/**
 * The cron schedule nearest to every `intervalMs` (cron's smallest step is a
 * minute): every N minutes below an hour, every N hours below a day, else
 * every N days.
 */
export function cronSchedule(intervalMs: number): string {
  const minutes = Math.max(1, Math.round(intervalMs / 60_000));
  if (minutes < 60) return minutes === 1 ? "* * * * *" : `*/${minutes} * * * *`;
  const hours = Math.round(intervalMs / 3_600_000);
  if (hours < 24) return hours === 1 ? "0 * * * *" : `0 */${hours} * * *`;
  const days = Math.min(Math.round(intervalMs / 86_400_000), 31);
  return days === 1 ? "0 0 * * *" : `0 0 */${days} * *`;
}

/**
 * The collector of deploy mode: `Deno.cron` jobs instead of timers (Deno
 * Deploy runs them even when no request keeps an instance up, and only
 * knows jobs registered while the main module's top level runs, so this is
 * called there, before the stores are open). A collection every
 * `--gc-interval` (none when 0), and the upload sweep every tenth of
 * `--upload-ttl` (a minute to an hour). A job that fires before
 * {@linkcode CollectorCrons.start} waits for it. Throws when `Deno.cron` is
 * missing (run with `--unstable-cron`).
 */
export function scheduleCollectorCrons(
  options: { gcIntervalMs: number; uploadTtlMs: number },
  cron: CronFn | null | undefined = (Deno as unknown as { cron?: CronFn }).cron,
): CollectorCrons {
  if (typeof cron !== "function") {
    throw new Error("Deploy mode runs its collector with Deno.cron: run with --unstable-cron");
  }
  let attach: (work: CollectorWork) => void = () => {};
  const ready = new Promise<CollectorWork>((resolve) => (attach = resolve));
  let running: Promise<void> | null = null;
  const once = (job: (work: CollectorWork) => Promise<void>) => async () => {
    const work = await ready;
    if (running) return;
    running = job(work).catch(work.onError).finally(() => (running = null));
    await running;
  };
  const jobs = [];
  if (options.gcIntervalMs > 0) {
    jobs.push(cron(
      "berth-gc",
      cronSchedule(options.gcIntervalMs),
      once(collectOnce),
    ));
  }
  const sweepMs = Math.min(Math.max(options.uploadTtlMs / 10, 60_000), 3_600_000);
  jobs.push(cron(
    "berth-upload-sweep",
    cronSchedule(sweepMs),
    once(sweepOnce),
  ));
  for (const job of jobs) job.catch(() => {});
  return {
    start(work) {
      attach(work);
      return async () => {
        await running;
      };
    },
  };
}

/** Cron jobs registered early, given their stores by {@linkcode CollectorCrons.start}. */
export interface CollectorCrons {
  /** Lets the jobs run against `work`; the returned function awaits a run in flight. */
  start(work: CollectorWork): () => Promise<void>;
}
