/**
 * A thin timing wrapper around any {@linkcode Storage}: how long each
 * operation takes to answer (a read until its stream is open, not until it is
 * drained), how many fail, the bytes written, and how many upload bodies are
 * being written right now. Everything goes to {@linkcode metrics}; the
 * wrapped store is otherwise untouched (listings pass straight through).
 *
 * @module
 */
import { type Counter, type Gauge, type Histogram, metrics } from "../metrics/registry.ts";
import type { Storage } from "./blob_store.ts";

/** The operations timed. */
const OPERATIONS = [
  "stat",
  "open",
  "put",
  "put_bytes",
  "delete",
  "write_part",
  "remove_part",
  "finish",
  "remove_upload",
  "open_part",
] as const;

type Operation = typeof OPERATIONS[number];

interface Timing {
  seconds: Histogram;
  errors: Counter;
}

const timings = Object.fromEntries(OPERATIONS.map((op) => [op, {
  seconds: metrics.histogram(
    "berth_blob_store_operation_duration_seconds",
    "Time a blob store operation took to answer (reads: until the stream is open)",
    { op },
  ),
  errors: metrics.counter(
    "berth_blob_store_errors_total",
    "Blob store operations that threw",
    { op },
  ),
}])) as Record<Operation, Timing>;

const written: Counter = metrics.counter(
  "berth_blob_store_written_bytes_total",
  "Bytes written to the blob store (upload parts, monolithic uploads, manifests)",
);

const uploadsInFlight: Gauge = metrics.gauge(
  "berth_uploads_in_flight",
  "Upload bodies being written to the blob store right now",
);

async function timed<T>(op: Operation, work: Promise<T>): Promise<T> {
  const timing = timings[op];
  const started = performance.now();
  try {
    return await work;
  } catch (error) {
    timing.errors.inc();
    throw error;
  } finally {
    timing.seconds.observe((performance.now() - started) / 1000);
  }
}

/** The timed versions of `store`'s methods, calling `store`. */
function timedMethods(store: Storage): Partial<Storage> {
  return {
    // Arguments pass through whole: optional ones a store understands are not dropped.
    stat: (...args) => timed("stat", store.stat(...args)),
    open: (...args) => timed("open", store.open(...args)),
    async put(...args) {
      uploadsInFlight.inc();
      try {
        const result = await timed("put", store.put(...args));
        if (result.ok) written.inc(result.size);
        return result;
      } finally {
        uploadsInFlight.dec();
      }
    },
    async putBytes(digest, bytes) {
      await timed("put_bytes", store.putBytes(digest, bytes));
      written.inc(bytes.length);
    },
    delete: (...args) => timed("delete", store.delete(...args)),
    async writePart(...args) {
      uploadsInFlight.inc();
      try {
        const part = await timed("write_part", store.writePart(...args));
        written.inc(part.size);
        return part;
      } finally {
        uploadsInFlight.dec();
      }
    },
    removePart: (...args) => timed("remove_part", store.removePart(...args)),
    finish: (...args) => timed("finish", store.finish(...args)),
    removeUpload: (...args) => timed("remove_upload", store.removeUpload(...args)),
    openPart: (...args) => timed("open_part", store.openPart(...args)),
  };
}

/**
 * `store`, timed: the same object to its users (its own methods and fields,
 * `FsBlobStore.blobPath` say, pass through), with the operations above timed.
 * Listings, `debris()`, `location` and `close()` are the store's own.
 */
export function timeStore<S extends Storage>(store: S): S {
  const own = timedMethods(store) as Record<PropertyKey, unknown>;
  const bound = new Map<PropertyKey, unknown>();
  return new Proxy(store, {
    get(target, key) {
      if (Object.hasOwn(own, key)) return own[key];
      const value = Reflect.get(target, key, target);
      if (typeof value !== "function") return value;
      // Bound to the store itself: its private fields are not the proxy's.
      let fn = bound.get(key);
      if (fn === undefined || (fn as { original?: unknown }).original !== value) {
        fn = Object.assign(value.bind(target), { original: value });
        bound.set(key, fn);
      }
      return fn;
    },
  });
}
