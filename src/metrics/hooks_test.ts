/**
 * The figures other modules report into the process registry: KV retries and
 * commits (`src/meta/kv.ts`), cache hits and misses
 * (`src/storage/byte_cache.ts`) and background collections
 * (`src/gc/collector.ts`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { startCollector } from "../gc/collector.ts";
import { Kv, RETRY } from "../meta/kv.ts";
import { KvMetadataStore } from "../meta/metadata_store.ts";
import { ByteCache } from "../storage/byte_cache.ts";
import { FsBlobStore } from "../storage/fs_blob_store.ts";
import { metrics } from "./registry.ts";

/** The value of one sample of the process registry's output (0 when absent). */
function sample(line: string): number {
  const found = metrics.render().split("\n").find((l) => l.startsWith(line + " "));
  return found === undefined ? 0 : Number(found.slice(line.length + 1));
}

Deno.test("Kv counts retries on database is locked, lost races and commits by result", async () => {
  const locked = sample("berth_kv_locked_retries_total");
  let calls = 0;
  const busy = {
    get(key: Deno.KvKey) {
      if (++calls < 3) return Promise.reject(new TypeError("database is locked"));
      return Promise.resolve({ key, value: 1, versionstamp: "1" });
    },
  } as unknown as Deno.Kv;
  await new Kv(busy).get(["k"]);
  assert.equal(sample("berth_kv_locked_retries_total"), locked + 2);

  const kv = new Kv(await Deno.openKv(":memory:"));
  try {
    const races = sample("berth_kv_transaction_retries_total");
    const ok = sample('berth_kv_commits_total{result="ok"}');
    const conflict = sample('berth_kv_commits_total{result="conflict"}');
    let rounds = 0;
    await kv.transact("test", async () => {
      rounds++;
      const stamp = await kv.commit((op) =>
        rounds < 3 ? op.check({ key: ["k"], versionstamp: "00000000000000010000" }) : op
      );
      return stamp === null ? RETRY : stamp;
    });
    assert.equal(sample("berth_kv_transaction_retries_total"), races + 2);
    assert.equal(sample('berth_kv_commits_total{result="conflict"}'), conflict + 2);
    assert.equal(sample('berth_kv_commits_total{result="ok"}'), ok + 1);
  } finally {
    kv.close();
  }
});

Deno.test("ByteCache counts hits and misses and the bytes it holds, under its name", () => {
  const cache = new ByteCache(10, 10, { name: "test_cache" });
  cache.get("a");
  cache.set("a", new Uint8Array(6));
  cache.get("a");
  cache.get("a");
  cache.set("b", new Uint8Array(6)); // evicts a
  assert.equal(sample('berth_cache_hits_total{cache="test_cache"}'), 2);
  assert.equal(sample('berth_cache_misses_total{cache="test_cache"}'), 1);
  assert.equal(sample('berth_cache_bytes{cache="test_cache"}'), 6);
  assert.equal(sample('berth_cache_entries{cache="test_cache"}'), 1);
});

Deno.test("startCollector() counts runs and records the last run's duration and end", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-gc-" });
  const meta = new KvMetadataStore(await Deno.openKv(":memory:"));
  const blobs = await FsBlobStore.open(dir);
  const runs = sample('berth_gc_runs_total{result="ok"}');
  let collected = 0;
  const stop = startCollector(meta, blobs, {
    gcIntervalMs: 1,
    sweepIntervalMs: 5,
    collect: { graceMs: 0, untaggedTtlMs: null },
    onError: (error) => {
      throw error;
    },
    onCollect: () => collected++,
  });
  try {
    while (collected < 2) await new Promise((resolve) => setTimeout(resolve, 5));
  } finally {
    await stop();
    meta.close();
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(sample('berth_gc_runs_total{result="ok"}'), runs + collected);
  assert.ok(sample("berth_gc_last_run_timestamp_seconds") > Date.now() / 1000 - 60);
  assert.ok(sample("berth_gc_last_run_duration_seconds") >= 0);
});
