/**
 * Opens the stores a configuration names: the metadata store (KV: a file, a
 * KV Connect URL, memory, or on Deno Deploy its own KV) and the blob store
 * (`--blobs`), and brings the metadata schema up to date. Shared by `serve`,
 * `fsck` and the tests. The blob store is opened timed ({@linkcode timeStore}):
 * its timings go to the metrics.
 *
 * @module
 */
import { dirname, join } from "node:path";
import type { Config } from "./config.ts";
import { KvMetadataStore } from "./meta/metadata_store.ts";
import type { Storage } from "./storage/blob_store.ts";
import { type BlobsConfig, openBlobStore } from "./storage/open.ts";
import { timeStore } from "./storage/timed_store.ts";

/** Open stores; `close()` releases them. */
export interface Stores {
  meta: KvMetadataStore;
  blobs: Storage;
  /** The schema KV had when opened and has now, and how long bringing it there took. */
  schema: { from: number; to: number; ms: number };
  close(): Promise<void>;
}

/** What {@linkcode openStores} reads of a configuration. */
export type StoresConfig = Pick<Config, "kv"> & Partial<Pick<Config, "deploy">> & BlobsConfig;

/** Where KV lives for `config`; in deploy mode without `--kv`, the platform's KV. */
export function kvLocation(
  config: Pick<Config, "kv" | "data"> & Partial<Pick<Config, "deploy">>,
): string {
  if (config.kv !== "") return config.kv;
  return config.deploy ? "the default KV of Deno Deploy" : join(config.data, "meta.kv");
}

/**
 * Opens KV and the blob store of `config` and migrates KV to the current
 * schema (`onProgress` gets its lines). Throws `SchemaError` (all closed)
 * when KV was written by a newer Berth. In deploy mode nothing is created
 * on the local disk: KV is `Deno.openKv()` unless `--kv` names one.
 */
export async function openStores(
  config: StoresConfig,
  options: { onProgress?: (line: string) => void } = {},
): Promise<Stores> {
  const platform = config.deploy === true && config.kv === "";
  const location = kvLocation(config);
  const remote = platform || location === ":memory:" || /^https?:\/\//.test(location);
  // A KV file's folder (the data directory by default) must exist before SQLite opens it.
  if (!remote && !config.deploy) await Deno.mkdir(dirname(location), { recursive: true });
  const raw = platform ? await Deno.openKv() : await Deno.openKv(location);
  let blobs: Storage | null = null;
  let meta: KvMetadataStore | null = null;
  let schema;
  const started = performance.now();
  try {
    blobs = timeStore(await openBlobStore(config, Deno.env.toObject(), raw));
    meta = new KvMetadataStore(raw);
    schema = await meta.migrate(blobs, options);
  } catch (error) {
    raw.close();
    await blobs?.close();
    throw error;
  }
  const opened = meta;
  const openedBlobs = blobs;
  return {
    meta,
    blobs,
    schema: { ...schema, ms: Math.round(performance.now() - started) },
    async close() {
      opened.close();
      await openedBlobs.close();
    },
  };
}
