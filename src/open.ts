/**
 * Opens the stores a configuration names: KV (file, URL or memory) and the
 * filesystem blob store. Shared by `serve`, `fsck` and the tests.
 *
 * @module
 */
import { join } from "node:path";
import type { Config } from "./config.ts";
import { MetadataStore } from "./meta/metadata_store.ts";
import { FsBlobStore } from "./storage/fs_blob_store.ts";

/** Open stores; `close()` releases them. */
export interface Stores {
  meta: MetadataStore;
  blobs: FsBlobStore;
  close(): void;
}

/** Where KV lives for `config`. */
export function kvLocation(config: Pick<Config, "kv" | "data">): string {
  return config.kv === "" ? join(config.data, "meta.kv") : config.kv;
}

/** Opens KV and the blob store of `config`, creating the data directory if needed. */
export async function openStores(config: Pick<Config, "kv" | "data">): Promise<Stores> {
  await Deno.mkdir(config.data, { recursive: true });
  const blobs = await FsBlobStore.open(config.data);
  const location = kvLocation(config);
  const kv = await Deno.openKv(location === ":memory:" ? ":memory:" : location);
  const meta = new MetadataStore(kv);
  return { meta, blobs, close: () => kv.close() };
}
