/**
 * The server's background collector: a collection every `--gc-interval`
 * (which also sweeps uploads), and between collections the upload sweep on
 * its own shorter interval. Never more than one run at a time in a process;
 * several processes may collect at once (every step is checked). No request
 * waits on it.
 *
 * @module
 */
import type { MetadataStore } from "../meta/metadata_store.ts";
import type { Storage } from "../storage/blob_store.ts";
import { sweep, type SweepReport } from "../sweeper.ts";
import { collect, type CollectOptions, type CollectReport } from "./collect.ts";

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
        options.onCollect?.(r);
      })
      : options.collect.uploadTtlMs === undefined
      ? Promise.resolve()
      : sweep(meta, storage, { ttlMs: options.collect.uploadTtlMs }).then((r) =>
        options.onSweep?.(r)
      );
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
