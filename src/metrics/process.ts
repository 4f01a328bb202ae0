/**
 * Process figures read when metrics are rendered (cheap reads, nothing
 * tracked between scrapes): resident and heap memory, and the start time.
 * Node's default collectors (event loop lag, GC, handles) are left out.
 *
 * @module
 */
import type { Registry } from "./registry.ts";

const STARTED_S = Date.now() / 1000 - performance.now() / 1000;

/** Adds the process figures to `registry` (once per registry). */
export function watchProcess(registry: Registry): void {
  const resident = registry.gauge(
    "process_resident_memory_bytes",
    "Resident memory size in bytes",
  );
  const heap = registry.gauge("berth_heap_used_bytes", "JavaScript heap in use, in bytes");
  const external = registry.gauge(
    "berth_external_memory_bytes",
    "Memory of buffers outside the JavaScript heap, in bytes",
  );
  registry.gauge("process_start_time_seconds", "Start time of the process (Unix time)")
    .set(Math.round(STARTED_S));
  if (watched.has(registry)) return;
  watched.add(registry);
  registry.onCollect(() => {
    const usage = Deno.memoryUsage();
    resident.set(usage.rss);
    heap.set(usage.heapUsed);
    external.set(usage.external);
  });
}

const watched = new WeakSet<Registry>();
