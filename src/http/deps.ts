/**
 * What the app is built from, and what route handlers are given: the
 * registry service layer and the settings of the HTTP translation. Passed
 * through closures, never module globals.
 *
 * @module
 */
import type { Auth } from "../auth/open.ts";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import type { MetadataStore } from "../meta/metadata_store.ts";
import type { RegistryConfig } from "../registry/context.ts";
import type { Registry } from "../registry/registry.ts";
import type { Storage } from "../storage/blob_store.ts";

/** Settings the app reads. */
export type AppConfig = RegistryConfig & Pick<Config, "tlsCert" | "tokenService">;

/** Dependencies of the app. */
export interface Deps {
  meta: MetadataStore;
  blobs: Storage;
  config: AppConfig;
  log: Logger;
  /** Who may do what; absent means mode none without a policy (everyone everything). */
  auth?: Auth;
}

/** What route handlers get. */
export interface HandlerDeps {
  registry: Registry;
  /** How long a request body may send nothing before it is a 408. */
  bodyTimeoutMs: number;
}
