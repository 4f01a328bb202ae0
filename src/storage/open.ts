/**
 * Chooses and opens the blob store a configuration names (`--blobs`). A new
 * backend adds a row to {@linkcode BACKENDS}; nothing else changes.
 *
 * @module
 */
import type { Config } from "../config.ts";
import type { Storage } from "./blob_store.ts";
import { FsBlobStore } from "./fs_blob_store.ts";

/** A blob store backend: the `--blobs` scheme it answers to and how to open it. */
interface Backend {
  scheme: string;
  open(location: string): Promise<Storage>;
}

const BACKENDS: Backend[] = [
  // `file:DIR`, `file://DIR` or a bare directory: the filesystem store.
  { scheme: "file", open: (location) => FsBlobStore.open(location.replace(/^file:(\/\/)?/, "")) },
];

/** The `--blobs` location `config` means, with the default spelled out (`file:<data>`). */
export function blobsLocation(config: Pick<Config, "blobs" | "data">): string {
  if (config.blobs === "") return `file:${config.data}`;
  return /^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(config.blobs) ? config.blobs : `file:${config.blobs}`;
}

/** Opens the blob store of `config`, creating what it needs. */
export function openBlobStore(config: Pick<Config, "blobs" | "data">): Promise<Storage> {
  const location = blobsLocation(config);
  const scheme = location.slice(0, location.indexOf(":"));
  const backend = BACKENDS.find((b) => b.scheme === scheme);
  if (!backend) throw new Error(`No blob store for "${location}"`);
  return backend.open(location);
}
