/**
 * end-12a/12b: the referrers API, served from the index written at manifest
 * PUT (`["referrers", name, subject, artifactType, digest]`), never a scan.
 *
 * @module
 */
import { parseDigest } from "../../oci/digest.ts";
import { OciError } from "../../oci/errors.ts";
import { OCI_INDEX } from "../../oci/media_type.ts";
import { MEDIA_TYPE_REGEXP } from "../../oci/media_type.ts";
import { parseName } from "../../oci/name.ts";
import type { Deps } from "../deps.ts";
import { json } from "../respond.ts";
import { nextLink, parsePageSize, singleParam } from "../headers.ts";
import { type Route, route } from "../router.ts";

/** Referrers routes. */
export function referrerRoutes({ meta, config }: Deps): Route[] {
  return [
    route("GET", "/v2/:name+/referrers/:digest", async (_req, p, url) => {
      const name = parseName(p.name!);
      const subject = parseDigest(p.digest!);
      const artifactType = singleParam(url, "artifactType", "MANIFEST_INVALID");
      if (artifactType !== undefined && !MEDIA_TYPE_REGEXP.test(artifactType)) {
        throw new OciError(
          "MANIFEST_INVALID",
          `Invalid artifactType "${artifactType.slice(0, 100)}"`,
          { status: 400 },
        );
      }
      const n = parsePageSize(url, config.tagsPageMax);
      const last = singleParam(url, "last", "PAGINATION_NUMBER_INVALID");
      // A cursor is `artifactType@digest`; a longer one would be a KV key over 2 KiB (a 500).
      if (last !== undefined && last.length > 512) {
        throw new OciError("PAGINATION_NUMBER_INVALID", "last may be at most 512 characters");
      }
      const page = await meta.listReferrers(name, subject, {
        n,
        ...(artifactType === undefined ? {} : { artifactType }),
        ...(last === undefined ? {} : { last }),
      });
      const headers: Record<string, string> = { "Content-Type": OCI_INDEX };
      if (artifactType !== undefined) headers["OCI-Filters-Applied"] = "artifactType";
      if (page.next) {
        const params: Record<string, string> = { n: String(n), last: page.next };
        if (artifactType !== undefined) params.artifactType = artifactType;
        headers.Link = nextLink(`/v2/${name}/referrers/${subject}`, params);
      }
      return json({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: page.items }, { headers });
    }),
  ];
}
