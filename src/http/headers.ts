/**
 * Header and URL helpers shared by handlers.
 *
 * @module
 */
import type { Digest } from "../oci/digest.ts";
import { type ErrorCode, OciError } from "../oci/errors.ts";
import { uploadRangeHeader } from "../oci/range.ts";
import type { MetadataStore } from "../meta/metadata_store.ts";

/** The pullable URL of a blob. */
export function blobLocation(name: string, digest: Digest): string {
  return `/v2/${name}/blobs/${digest}`;
}

/** The pullable URL of a manifest. */
export function manifestLocation(name: string, digest: Digest): string {
  return `/v2/${name}/manifests/${digest}`;
}

/** Headers of every answer about an upload session. */
export function uploadHeaders(
  name: string,
  uploadId: string,
  offset: number,
): Record<string, string> {
  return {
    Location: `/v2/${name}/blobs/uploads/${uploadId}`,
    Range: uploadRangeHeader(offset),
    "Docker-Upload-UUID": uploadId,
    "Content-Length": "0",
  };
}

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

/** Throws `UNSUPPORTED` (405) when deletes are disabled. */
export function requireDeletes(enabled: boolean): void {
  if (!enabled) throw new OciError("UNSUPPORTED", "Deletes are disabled on this registry");
}

/** The single value of a query parameter; a repeated one is refused (it would be ambiguous). */
export function singleParam(
  url: URL,
  key: string,
  code: ErrorCode = "UNSUPPORTED",
): string | undefined {
  const values = url.searchParams.getAll(key);
  if (values.length > 1) {
    throw new OciError(code, `Query parameter "${key}" may be given once`, { status: 400 });
  }
  return values[0];
}

/**
 * Parses the page size `n` of a listing: absent means `max`, larger values
 * are capped at `max` (the answer then carries `Link`).
 */
export function parsePageSize(url: URL, max: number): number {
  const raw = singleParam(url, "n", "PAGINATION_NUMBER_INVALID");
  if (raw === undefined) return max;
  if (!/^[0-9]{1,9}$/.test(raw)) {
    throw new OciError(
      "PAGINATION_NUMBER_INVALID",
      `Invalid n "${raw.slice(0, 50)}": expected a whole number`,
      {
        detail: { n: raw.slice(0, 50) },
      },
    );
  }
  return Math.min(Number(raw), max);
}

/** A `Link: <url>; rel="next"` header for the page after `last`. */
export function nextLink(path: string, params: Record<string, string>): string {
  return `<${path}?${new URLSearchParams(params)}>; rel="next"`;
}

/** Cancels a request body that will not be read. */
export async function discardBody(req: Request): Promise<void> {
  if (req.body && !req.bodyUsed) await req.body.cancel().catch(() => {});
}
