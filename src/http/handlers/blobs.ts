/**
 * end-2 (GET/HEAD a blob) and end-10 (DELETE a blob).
 *
 * @module
 */
import { parseDigest } from "../../oci/digest.ts";
import { parseName } from "../../oci/name.ts";
import type { HandlerDeps } from "../deps.ts";
import { blobHeaders, noContent } from "../headers.ts";
import { streamResponse } from "../respond.ts";
import { type Params, type Route, route } from "../router.ts";

function parseParams(p: Params) {
  return { name: parseName(p.name!), digest: parseDigest(p.digest!) };
}

/** Blob routes. */
export function blobRoutes({ registry }: HandlerDeps): Route[] {
  const path = "/v2/:name+/blobs/:digest";
  return [
    route("blob.head", `HEAD ${path}`, async (_ctx, p) => {
      const { name, digest } = parseParams(p);
      const { size } = await registry.blobs.stat(name, digest);
      return new Response(null, { headers: blobHeaders(digest, size) });
    }),
    route("blob.get", `GET ${path}`, async ({ req }, p) => {
      const { name, digest } = parseParams(p);
      const location = await registry.blobs.redirect(name, digest);
      if (location) {
        return new Response(null, {
          status: 307,
          headers: { Location: location, "Docker-Content-Digest": digest },
        });
      }
      const blob = await registry.blobs.open(name, digest, req.headers.get("Range"));
      const { range } = blob;
      if (!range) {
        return streamResponse(req, blob.stream, { headers: blobHeaders(digest, blob.size) });
      }
      const headers = blobHeaders(digest, range.end - range.start + 1);
      headers["Content-Range"] = `bytes ${range.start}-${range.end}/${blob.size}`;
      return streamResponse(req, blob.stream, { status: 206, headers });
    }),
    route("blob.delete", `DELETE ${path}`, async (_ctx, p) => {
      registry.checkDeletes();
      const { name, digest } = parseParams(p);
      await registry.blobs.delete(name, digest);
      return noContent(202);
    }),
  ];
}
