/**
 * Chooses and opens the blob store a configuration names (`--blobs`). A new
 * backend adds a row to {@linkcode BACKENDS}; nothing else changes.
 *
 * @module
 */
import type { Config } from "../config.ts";
import type { Storage } from "./blob_store.ts";
import { FsBlobStore } from "./fs_blob_store.ts";
import { DEFAULT_MAX_BLOB_BYTES, kvBlobLocation, KvBlobStore } from "./kv_blob_store.ts";
import { S3BlobStore } from "./s3/s3_blob_store.ts";
import { s3ClientOptions, type S3Config } from "./s3/settings.ts";

/** What a backend may read of the configuration besides `--blobs`. */
export type BlobsConfig =
  & Pick<Config, "blobs" | "data">
  & Partial<S3Config>
  & Partial<Pick<Config, "kvMaxBlobBytes">>;

/** A blob store backend: the `--blobs` scheme it answers to and how to open it. */
interface Backend {
  scheme: string;
  /** `kv` is the metadata KV, for a store that shares it (`--blobs kv`). */
  open(
    location: string,
    config: BlobsConfig,
    env: Record<string, string | undefined>,
    kv?: Deno.Kv,
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
  // `kv`: chunks in the metadata KV; `kv:PATH`, `kv:URL` or `kv::memory:`: a KV of their own.
  {
    scheme: "kv",
    async open(location, config, _env, kv) {
      const where = kvBlobLocation(location);
      const maxBlobBytes = config.kvMaxBlobBytes ?? DEFAULT_MAX_BLOB_BYTES;
      if (where.shared) {
        if (!kv) throw new Error("--blobs kv needs the metadata KV");
        return new KvBlobStore(kv, { maxBlobBytes, location: "kv (the metadata KV)" });
      }
      const own = await Deno.openKv(where.kv);
      return new KvBlobStore(own, { maxBlobBytes, location: `kv:${where.kv}`, ownsKv: true });
    },
  },
];

/**
 * The `--blobs` location `config` means, with the default spelled out
 * (`file:<data>`); a bare `kv` is the KV store (`./kv` is a directory).
 */
export function blobsLocation(config: Pick<Config, "blobs" | "data">): string {
  if (config.blobs === "") return `file:${config.data}`;
  if (config.blobs === "kv") return "kv";
  return /^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(config.blobs) ? config.blobs : `file:${config.blobs}`;
}

/**
 * Opens the blob store of `config`, creating what it needs. `env` gives the
 * variables a backend falls back to; `kv` is the metadata KV (`--blobs kv`).
 */
export function openBlobStore(
  config: BlobsConfig,
  env: Record<string, string | undefined> = Deno.env.toObject(),
  kv?: Deno.Kv,
): Promise<Storage> {
  const location = blobsLocation(config);
  const colon = location.indexOf(":");
  const scheme = colon < 0 ? location : location.slice(0, colon);
  const backend = BACKENDS.find((b) => b.scheme === scheme);
  if (!backend) throw new Error(`No blob store for "${location}"`);
  return backend.open(location, config, env, kv);
}
