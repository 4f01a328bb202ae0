import assert from "node:assert/strict";
import { KvMetadataStore } from "../meta/metadata_store.ts";
import { KvBlobStore } from "../storage/kv_blob_store.ts";
import { cronSchedule, scheduleCollectorCrons } from "./collector.ts";
import { metrics } from "../metrics/registry.ts";

/** One sample of the process's metrics (0 when absent). */
function metricValue(line: string): number {
  const found = metrics.render().split("\n").find((l) => l.startsWith(line + " "));
  return found === undefined ? 0 : Number(found.slice(line.length + 1));
}

Deno.test("cronSchedule() gives the nearest cron schedule to an interval", () => {
  const cases: [number, string][] = [
    [30_000, "* * * * *"],
    [60_000, "* * * * *"],
    [15 * 60_000, "*/15 * * * *"],
    [3_600_000, "0 * * * *"],
    [6 * 3_600_000, "0 */6 * * *"],
    [86_400_000, "0 0 * * *"],
    [7 * 86_400_000, "0 0 */7 * *"],
  ];
  for (const [ms, schedule] of cases) assert.equal(cronSchedule(ms), schedule, `${ms}`);
});

Deno.test("scheduleCollectorCrons() registers its jobs at once, and they wait for the stores", async () => {
  const jobs = new Map<string, { schedule: string; handler: () => Promise<void> }>();
  const cron = (name: string, schedule: string, handler: () => Promise<void>) => {
    jobs.set(name, { schedule, handler });
    return new Promise<void>(() => {});
  };
  const crons = scheduleCollectorCrons({ gcIntervalMs: 3_600_000, uploadTtlMs: 86_400_000 }, cron);
  assert.deepEqual([...jobs].map(([name, job]) => [name, job.schedule]), [
    ["berth-gc", "0 * * * *"],
    ["berth-upload-sweep", "0 * * * *"],
  ]);
  // A job that fires before the stores are open waits for them.
  let swept = 0;
  let collected = 0;
  const sweeping = jobs.get("berth-upload-sweep")!.handler();
  using kv = await Deno.openKv(":memory:");
  const meta = new KvMetadataStore(kv);
  const storage = new KvBlobStore(kv, { maxBlobBytes: 1 << 20 });
  await storage.writePart("abandoned", null, { algorithm: "sha256" });
  const stop = crons.start({
    meta,
    storage,
    collect: { graceMs: 0, untaggedTtlMs: null, policies: [], uploadTtlMs: 0 },
    onError: (error) => assert.fail(String(error)),
    onSweep: (report) => (swept += report.orphanUploads),
    onCollect: () => collected++,
  });
  const runs = () => metricValue('berth_gc_runs_total{result="ok"}');
  const sweeps = () => metricValue("berth_upload_sweeps_total");
  const [runsBefore, sweepsBefore] = [runs(), sweeps()];
  await sweeping;
  assert.equal(swept, 1);
  await jobs.get("berth-gc")!.handler();
  assert.equal(collected, 1);
  // Cron runs count in /metrics as timer runs do.
  assert.equal(runs(), runsBefore + 1);
  assert.equal(sweeps(), sweepsBefore + 1);
  await stop();
  // No collection job when --gc-interval is 0; no Deno.cron: a clear error.
  jobs.clear();
  scheduleCollectorCrons({ gcIntervalMs: 0, uploadTtlMs: 60_000 }, cron);
  assert.deepEqual([...jobs.keys()], ["berth-upload-sweep"]);
  assert.throws(
    () => scheduleCollectorCrons({ gcIntervalMs: 0, uploadTtlMs: 1 }, null),
    /--unstable-cron/,
  );
});
