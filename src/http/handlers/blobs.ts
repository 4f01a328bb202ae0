/**
 * end-2 (GET/HEAD a blob) and end-10 (DELETE a blob).
 *
 * @module
 */
import { type Digest, parseDigest } from "../../oci/digest.ts";
import { OciError } from "../../oci/errors.ts";
import { parseName } from "../../oci/name.ts";
import { parseRange } from "../../oci/range.ts";
import type { Deps } from "../deps.ts";
import { notFound, requireDeletes } from "../headers.ts";
import { type Route, route } from "../router.ts";
import type { MetadataStore } from "../../meta/metadata_store.ts";

/** Throws the 404 for a blob that is not in `name`: NAME_UNKNOWN if the repository is unknown. */
export function blobUnknown(meta: MetadataStore, name: string, digest: Digest): Promise<never> {
  return notFound(
    meta,
    name,
    new OciError("BLOB_UNKNOWN", `Blob ${digest} is not in repository "${name}"`, {
      detail: { digest },
    }),
  );
}

function blobHeaders(digest: Digest, length: number): Record<string, string> {
  return {
    "Content-Type": "application/octet-stream",
    "Content-Length": String(length),
    "Docker-Content-Digest": digest,
    "Accept-Ranges": "bytes",
    ETag: `"${digest}"`,
    "Cache-Control": "max-age=31536000, immutable",
  };
}

/** Blob routes. */
export function blobRoutes({ meta, blobs, config }: Deps): Route[] {
  return [
    route("HEAD", "/v2/:name+/blobs/:digest", async (_req, p) => {
      const name = parseName(p.name!);
      const digest = parseDigest(p.digest!);
      const link = await meta.getBlobLink(name, digest) ?? await blobUnknown(meta, name, digest);
      return new Response(null, { headers: blobHeaders(digest, link.size) });
    }),
    route("GET", "/v2/:name+/blobs/:digest", async (req, p) => {
      const name = parseName(p.name!);
      const digest = parseDigest(p.digest!);
      const link = await meta.getBlobLink(name, digest) ?? await blobUnknown(meta, name, digest);
      const range = parseRange(req.headers.get("Range"), link.size);
      const blob = await blobs.open(digest, range ?? undefined) ??
        await blobUnknown(meta, name, digest);
      if (!range) return new Response(blob.stream, { headers: blobHeaders(digest, blob.size) });
      const headers = blobHeaders(digest, range.end - range.start + 1);
      headers["Content-Range"] = `bytes ${range.start}-${range.end}/${blob.size}`;
      return new Response(blob.stream, { status: 206, headers });
    }),
    route("DELETE", "/v2/:name+/blobs/:digest", async (_req, p) => {
      requireDeletes(config.deleteEnabled);
      const name = parseName(p.name!);
      const digest = parseDigest(p.digest!);
      if (!(await meta.unlinkBlob(name, digest))) await blobUnknown(meta, name, digest);
      return new Response(null, { status: 202, headers: { "Content-Length": "0" } });
    }),
  ];
}
