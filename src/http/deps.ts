/**
 * What handlers are given: the stores, the settings that shape answers, and
 * the logger. Passed through closures, never module globals.
 *
 * @module
 */
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import type { MetadataStore } from "../meta/metadata_store.ts";
import type { Storage } from "../storage/blob_store.ts";

/** Settings handlers read. */
export type AppConfig = Pick<
  Config,
  | "maxManifestBytes"
  | "deleteEnabled"
  | "autoMount"
  | "maxUploadsPerRepo"
  | "maxUploads"
  | "tagsPageMax"
  | "bodyTimeoutMs"
>;

/** Dependencies of the app. */
export interface Deps {
  meta: MetadataStore;
  blobs: Storage;
  config: AppConfig;
  log: Logger;
}
