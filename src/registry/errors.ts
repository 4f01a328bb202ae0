/**
 * The registry's "not there" answers, built in one place: a request about a
 * repository this registry does not know is `NAME_UNKNOWN`; about something
 * missing from a known repository, the code of what is missing.
 *
 * @module
 */
import type { Digest } from "../oci/digest.ts";
import { OciError } from "../oci/errors.ts";
import type { MetadataStore } from "../meta/metadata_store.ts";

/** The 404 for a repository this registry does not know. */
export function nameUnknown(name: string): OciError {
  return new OciError("NAME_UNKNOWN", `Repository "${name}" is not known to this registry`, {
    detail: { name },
  });
}

/**
 * Throws the 404 for something missing from `name`: `NAME_UNKNOWN` when the
 * repository itself is unknown, else `missing` (one KV read, only on a miss).
 */
export async function notFound(
  meta: MetadataStore,
  name: string,
  missing: OciError,
): Promise<never> {
  if (!(await meta.repoExists(name))) throw nameUnknown(name);
  throw missing;
}

/** Throws the 404 for a blob that is not in `name`. */
export function blobUnknown(meta: MetadataStore, name: string, digest: Digest): Promise<never> {
  const message = `Blob ${digest} is not in repository "${name}"`;
  return notFound(meta, name, new OciError("BLOB_UNKNOWN", message, { detail: { digest } }));
}

/** Throws the 404 for a manifest that is not in `name`. */
export function manifestUnknown(
  meta: MetadataStore,
  name: string,
  reference: string,
): Promise<never> {
  const message = `Manifest "${reference}" is not in repository "${name}"`;
  return notFound(meta, name, new OciError("MANIFEST_UNKNOWN", message, { detail: { reference } }));
}

/** The 404 for an upload session that does not exist (or not in this repository). */
export function uploadUnknown(message: string): OciError {
  return new OciError("BLOB_UPLOAD_UNKNOWN", message);
}

/** Throws `UNSUPPORTED` (405) when deletes are disabled. */
export function requireDeletes(enabled: boolean): void {
  if (!enabled) throw new OciError("UNSUPPORTED", "Deletes are disabled on this registry");
}
