/**
 * end-12a/12b: the referrers API, served from the index written at manifest
 * PUT, never a scan.
 *
 * @module
 */
import { parseDigest } from "../../oci/digest.ts";
import { OciError } from "../../oci/errors.ts";
import { MEDIA_TYPE_REGEXP, OCI_INDEX } from "../../oci/media_type.ts";
import { parseName } from "../../oci/name.ts";
import type { HandlerDeps } from "../deps.ts";
import { nextLink } from "../headers.ts";
import { parseLast, parsePageSize, singleParam } from "../query.ts";
import { json } from "../respond.ts";
import { type Route, route } from "../router.ts";

/** Referrers routes. */
export function referrerRoutes({ registry }: HandlerDeps): Route[] {
  return [
    route("referrers", "GET /v2/:name+/referrers/:digest", async ({ url }, p) => {
      const name = parseName(p.name!);
      const subject = parseDigest(p.digest!);
      const artifactType = singleParam(url, "artifactType", "MANIFEST_INVALID");
      if (artifactType !== undefined && !MEDIA_TYPE_REGEXP.test(artifactType)) {
        throw new OciError(
          "MANIFEST_INVALID",
          `Invalid artifactType "${artifactType.slice(0, 100)}"`,
        );
      }
      const n = parsePageSize(url);
      const last = parseLast(url);
      const page = await registry.listings.referrers(name, subject, {
        ...(artifactType === undefined ? {} : { artifactType }),
        ...(n === undefined ? {} : { n }),
        ...(last === undefined ? {} : { last }),
      });
      const headers: Record<string, string> = { "Content-Type": OCI_INDEX };
      if (artifactType !== undefined) headers["OCI-Filters-Applied"] = "artifactType";
      if (page.next) {
        const params: Record<string, string> = { n: String(page.n), last: page.next };
        if (artifactType !== undefined) params.artifactType = artifactType;
        headers.Link = nextLink(`/v2/${name}/referrers/${subject}`, params);
      }
      return json({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: page.items }, { headers });
    }),
  ];
}
