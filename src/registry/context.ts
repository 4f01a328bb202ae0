/**
 * What every part of the registry service layer is built from: the two
 * stores and the settings that shape registry rules. Passed in, never global.
 *
 * @module
 */
import type { Config } from "../config.ts";
import type { MetadataStore } from "../meta/metadata_store.ts";
import type { Storage } from "../storage/blob_store.ts";

/** Settings the registry rules read. */
export type RegistryConfig = Pick<
  Config,
  | "maxManifestBytes"
  | "deleteEnabled"
  | "autoMount"
  | "maxUploadsPerRepo"
  | "maxUploads"
  | "tagsPageMax"
  | "bodyTimeoutMs"
  | "gcGraceMs"
>;

/** The stores and settings of the service layer. */
export interface RegistryContext {
  meta: MetadataStore;
  blobs: Storage;
  config: RegistryConfig;
}
