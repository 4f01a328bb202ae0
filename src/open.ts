/**
 * Opens the stores a configuration names: the metadata store (KV: a file, a
 * KV Connect URL or memory) and the blob store (`--blobs`), and brings the
 * metadata schema up to date. Shared by `serve`, `fsck` and the tests. The
 * blob store is opened timed ({@linkcode timeStore}): its timings go to the metrics.
 *
 * @module
 */
import { dirname, join } from "node:path";
import type { Config } from "./config.ts";
import { KvMetadataStore } from "./meta/metadata_store.ts";
import type { Storage } from "./storage/blob_store.ts";
import { openBlobStore } from "./storage/open.ts";
import { timeStore } from "./storage/timed_store.ts";

/** Open stores; `close()` releases them. */
export interface Stores {
  meta: KvMetadataStore;
  blobs: Storage;
  /** The schema KV had when opened and has now, and how long bringing it there took. */
  schema: { from: number; to: number; ms: number };
  close(): Promise<void>;
}

/** Where KV lives for `config`. */
export function kvLocation(config: Pick<Config, "kv" | "data">): string {
  return config.kv === "" ? join(config.data, "meta.kv") : config.kv;
}

/**
 * Opens KV and the blob store of `config` and migrates KV to the current
 * schema (`onProgress` gets its lines). Throws `SchemaError` (all closed)
 * when KV was written by a newer Berth.
 */
export async function openStores(
  config: Pick<Config, "kv" | "data" | "blobs">,
  options: { onProgress?: (line: string) => void } = {},
): Promise<Stores> {
  const location = kvLocation(config);
  const remote = location === ":memory:" || /^https?:\/\//.test(location);
  // A KV file's folder (the data directory by default) must exist before SQLite opens it.
  if (!remote) await Deno.mkdir(dirname(location), { recursive: true });
  const blobs = timeStore(await openBlobStore(config));
  let meta: KvMetadataStore | null = null;
  let schema;
  const started = performance.now();
  try {
    meta = await KvMetadataStore.open(location);
    schema = await meta.migrate(blobs, options);
  } catch (error) {
    meta?.close();
    await blobs.close();
    throw error;
  }
  const opened = meta;
  return {
    meta,
    blobs,
    schema: { ...schema, ms: Math.round(performance.now() - started) },
    async close() {
      opened.close();
      await blobs.close();
    },
  };
}
