/**
 * Opens the stores a configuration names: KV (file, URL or memory) and the
 * filesystem blob store, and brings KV to the current schema. Shared by
 * `serve`, `fsck` and the tests.
 *
 * @module
 */
import { join } from "node:path";
import type { Config } from "./config.ts";
import { Kv } from "./meta/kv.ts";
import { MetadataStore } from "./meta/metadata_store.ts";
import { migrate } from "./meta/schema.ts";
import { FsBlobStore } from "./storage/fs_blob_store.ts";

/** Open stores; `close()` releases them. */
export interface Stores {
  meta: MetadataStore;
  blobs: FsBlobStore;
  /** The schema KV had when opened and has now, and how long bringing it there took. */
  schema: { from: number; to: number; ms: number };
  close(): void;
}

/** Where KV lives for `config`. */
export function kvLocation(config: Pick<Config, "kv" | "data">): string {
  return config.kv === "" ? join(config.data, "meta.kv") : config.kv;
}

/**
 * Opens KV and the blob store of `config`, creating the data directory if
 * needed, and migrates KV to the current schema (`onProgress` gets its lines).
 * Throws `SchemaError` (KV closed) when KV was written by a newer Berth.
 */
export async function openStores(
  config: Pick<Config, "kv" | "data">,
  options: { onProgress?: (line: string) => void } = {},
): Promise<Stores> {
  await Deno.mkdir(config.data, { recursive: true });
  const blobs = await FsBlobStore.open(config.data);
  const location = kvLocation(config);
  const raw = await Deno.openKv(location === ":memory:" ? ":memory:" : location);
  const kv = new Kv(raw);
  const started = performance.now();
  let schema;
  try {
    schema = await migrate(kv, blobs, options.onProgress ? { onProgress: options.onProgress } : {});
  } catch (error) {
    raw.close();
    throw error;
  }
  const ms = Math.round(performance.now() - started);
  const meta = new MetadataStore(kv);
  return { meta, blobs, schema: { ...schema, ms }, close: () => raw.close() };
}
