/**
 * The registry service layer: every operation a registry performs, between
 * HTTP (or any other caller: fsck, a mirror, a UI, the garbage collector) and
 * the two stores. It alone talks to the metadata store and the blob store.
 *
 * | part | operations |
 * | --- | --- |
 * | {@linkcode Manifests} | resolve by tag or digest, get bytes, push (parse, validate, check references, record), delete |
 * | {@linkcode Blobs} | stat, open (with a range), put in one request, mount, delete |
 * | {@linkcode Uploads} | start (with caps), status, append a chunk, finish, cancel |
 * | {@linkcode Listings} | tags, catalog, referrers |
 *
 * @module
 */
import type { Digest } from "../oci/digest.ts";
import { Blobs } from "./blobs.ts";
import type { RegistryContext } from "./context.ts";
import { requireDeletes } from "./errors.ts";
import { Listings } from "./listings.ts";
import { Manifests } from "./manifests.ts";
import { Uploads } from "./uploads.ts";

export type { RegistryConfig, RegistryContext } from "./context.ts";

/** The registry's operations over one pair of stores. */
export class Registry {
  readonly manifests: Manifests;
  readonly blobs: Blobs;
  readonly uploads: Uploads;
  readonly listings: Listings;

  constructor(readonly context: RegistryContext) {
    this.manifests = new Manifests(context);
    this.blobs = new Blobs(context);
    this.uploads = new Uploads(context);
    this.listings = new Listings(context);
  }

  /**
   * Throws 405 `UNSUPPORTED` when deletes are disabled. The deletes check it
   * themselves; a caller may check first, before it validates the request.
   */
  checkDeletes(): void {
    requireDeletes(this.context.config.deleteEnabled);
  }

  /** Whether both stores answer (`/readyz`). */
  async ready(): Promise<void> {
    await this.context.meta.repoExists("_readyz");
    await this.context.blobs.stat(`sha256:${"0".repeat(64)}` as Digest);
  }
}
