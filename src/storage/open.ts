/**
 * Chooses and opens the blob store a configuration names (`--blobs`). A new
 * backend adds a row to {@linkcode BACKENDS}; nothing else changes.
 *
 * @module
 */
import type { Config } from "../config.ts";
import type { Storage } from "./blob_store.ts";
import { FsBlobStore } from "./fs_blob_store.ts";
import { S3BlobStore } from "./s3/s3_blob_store.ts";
import { s3ClientOptions, type S3Config } from "./s3/settings.ts";

/** What a backend may read of the configuration besides `--blobs`. */
export type BlobsConfig = Pick<Config, "blobs" | "data"> & Partial<S3Config>;

/** A blob store backend: the `--blobs` scheme it answers to and how to open it. */
interface Backend {
  scheme: string;
  open(
    location: string,
    config: BlobsConfig,
    env: Record<string, string | undefined>,
  ): Promise<Storage>;
}

const BACKENDS: Backend[] = [
  // `file:DIR`, `file://DIR` or a bare directory: the filesystem store.
  { scheme: "file", open: (location) => FsBlobStore.open(location.replace(/^file:(\/\/)?/, "")) },
  // `s3://BUCKET[/PREFIX]`: an S3-compatible service (--s3-* options, else the AWS_* variables).
  {
    scheme: "s3",
    open: (location, config, env) =>
      S3BlobStore.open({
        ...s3ClientOptions(location, config, env),
        redirectMs: config.s3RedirectMs ?? 0,
      }),
  },
];

/** The `--blobs` location `config` means, with the default spelled out (`file:<data>`). */
export function blobsLocation(config: Pick<Config, "blobs" | "data">): string {
  if (config.blobs === "") return `file:${config.data}`;
  return /^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(config.blobs) ? config.blobs : `file:${config.blobs}`;
}

/**
 * Opens the blob store of `config`, creating what it needs. `env` gives the
 * variables a backend falls back to (the AWS ones for S3).
 */
export function openBlobStore(
  config: BlobsConfig,
  env: Record<string, string | undefined> = Deno.env.toObject(),
): Promise<Storage> {
  const location = blobsLocation(config);
  const scheme = location.slice(0, location.indexOf(":"));
  const backend = BACKENDS.find((b) => b.scheme === scheme);
  if (!backend) throw new Error(`No blob store for "${location}"`);
  return backend.open(location, config, env);
}
