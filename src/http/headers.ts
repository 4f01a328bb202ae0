/**
 * Response headers the handlers share: where a pushed blob or manifest can
 * be pulled, what a blob or manifest response says about its body, and the
 * `Link` to a listing's next page.
 *
 * @module
 */
import type { Digest } from "../oci/digest.ts";

/** The answer to a blob that was stored or mounted: 201 with where to pull it. */
export function blobCreated(name: string, digest: Digest): Response {
  return new Response(null, {
    status: 201,
    headers: {
      Location: `/v2/${name}/blobs/${digest}`,
      "Docker-Content-Digest": digest,
      "Content-Length": "0",
    },
  });
}

/** The pullable URL of a manifest. */
export function manifestLocation(name: string, digest: Digest): string {
  return `/v2/${name}/manifests/${digest}`;
}

/** Headers of a blob response of `length` bytes. */
export function blobHeaders(digest: Digest, length: number): Record<string, string> {
  return {
    "Content-Type": "application/octet-stream",
    "Content-Length": String(length),
    "Docker-Content-Digest": digest,
    "Accept-Ranges": "bytes",
    ETag: `"${digest}"`,
    "Cache-Control": "max-age=31536000, immutable",
  };
}

/** Headers of a manifest response. */
export function manifestHeaders(
  manifest: { digest: Digest; mediaType: string; size: number },
): Record<string, string> {
  return {
    "Content-Type": manifest.mediaType,
    "Content-Length": String(manifest.size),
    "Docker-Content-Digest": manifest.digest,
    ETag: `"${manifest.digest}"`,
  };
}

/** A `Link: <url>; rel="next"` header for the page after `last`. */
export function nextLink(path: string, params: Record<string, string>): string {
  return `<${path}?${new URLSearchParams(params)}>; rel="next"`;
}

/** An empty answer with `status`. */
export function noContent(status: number, headers: Record<string, string> = {}): Response {
  return new Response(null, { status, headers: { ...headers, "Content-Length": "0" } });
}
