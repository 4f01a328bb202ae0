/**
 * Opens the stores a configuration names: the metadata store (KV: a file, a
 * KV Connect URL or memory) and the blob store (`--blobs`), and brings the
 * metadata schema up to date. Shared by `serve`, `fsck` and the tests.
 *
 * @module
 */
import { dirname, join } from "node:path";
import type { Config } from "./config.ts";
import { KvMetadataStore } from "./meta/metadata_store.ts";
import type { Storage } from "./storage/blob_store.ts";
import { openBlobStore } from "./storage/open.ts";

/** Open stores; `close()` releases them. */
export interface Stores {
  meta: KvMetadataStore;
  blobs: Storage;
  close(): Promise<void>;
}

/** Where KV lives for `config`. */
export function kvLocation(config: Pick<Config, "kv" | "data">): string {
  return config.kv === "" ? join(config.data, "meta.kv") : config.kv;
}

/** Opens KV and the blob store of `config`. */
export async function openStores(config: Pick<Config, "kv" | "data" | "blobs">): Promise<Stores> {
  const location = kvLocation(config);
  const remote = location === ":memory:" || /^https?:\/\//.test(location);
  // A KV file's folder (the data directory by default) must exist before SQLite opens it.
  if (!remote) await Deno.mkdir(dirname(location), { recursive: true });
  const blobs = await openBlobStore(config);
  let meta: KvMetadataStore;
  try {
    meta = await KvMetadataStore.open(location);
  } catch (error) {
    await blobs.close();
    throw error;
  }
  return {
    meta,
    blobs,
    async close() {
      meta.close();
      await blobs.close();
    },
  };
}
