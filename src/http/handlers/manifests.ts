/**
 * end-3 (GET/HEAD a manifest), end-7 and end-7b (PUT, with `?tag=`) and
 * end-9 (DELETE by tag or digest).
 *
 * @module
 */
import { parseName, parseTag } from "../../oci/name.ts";
import { parseReference } from "../../oci/reference.ts";
import { requestBody } from "../body.ts";
import type { HandlerDeps } from "../deps.ts";
import { manifestHeaders, manifestLocation, noContent } from "../headers.ts";
import { type Route, route } from "../router.ts";

/** Manifest routes. */
export function manifestRoutes({ registry, bodyTimeoutMs }: HandlerDeps): Route[] {
  const path = "/v2/:name+/manifests/:reference";
  return [
    route("manifest.head", `HEAD ${path}`, async (_ctx, p) => {
      const manifest = await registry.manifests.resolve(parseName(p.name!), p.reference!);
      return new Response(null, { headers: manifestHeaders(manifest) });
    }),
    route("manifest.get", `GET ${path}`, async (_ctx, p) => {
      const manifest = await registry.manifests.get(parseName(p.name!), p.reference!);
      return new Response(manifest.bytes as Uint8Array<ArrayBuffer>, {
        headers: manifestHeaders(manifest),
      });
    }),
    route("manifest.put", `PUT ${path}`, async ({ req, url }, p) => {
      const name = parseName(p.name!);
      const reference = parseReference(p.reference!);
      const length = req.headers.get("Content-Length");
      const pushed = await registry.manifests.push({
        name,
        reference,
        tags: url.searchParams.getAll("tag").map(parseTag),
        body: requestBody(req, bodyTimeoutMs),
        declaredLength: length === null ? null : Number(length),
        contentType: req.headers.get("Content-Type"),
      });
      const headers: Record<string, string> = {
        Location: manifestLocation(name, pushed.digest),
        "Docker-Content-Digest": pushed.digest,
      };
      if (pushed.subject) headers["OCI-Subject"] = pushed.subject;
      if (url.searchParams.has("tag")) headers["OCI-Tag"] = pushed.tags.join(", ");
      return noContent(201, headers);
    }),
    route("manifest.delete", `DELETE ${path}`, async (_ctx, p) => {
      registry.checkDeletes();
      await registry.manifests.delete(parseName(p.name!), parseReference(p.reference!));
      return noContent(202);
    }),
  ];
}
