/**
 * end-8a/8b (tags list) and `GET /v2/_catalog` (Docker's catalog, optional in
 * the spec). Both read one page with a KV prefix scan: cost grows with `n`,
 * never with the number of tags or repositories.
 *
 * @module
 */
import { OciError } from "../../oci/errors.ts";
import { parseName } from "../../oci/name.ts";
import type { Deps } from "../deps.ts";
import { json } from "../respond.ts";
import { nameUnknown, nextLink, parsePageSize, singleParam } from "../headers.ts";
import { type Route, route } from "../router.ts";

const MAX_LAST_LENGTH = 512;

function parseLast(url: URL): string | undefined {
  const last = singleParam(url, "last", "PAGINATION_NUMBER_INVALID");
  if (last !== undefined && last.length > MAX_LAST_LENGTH) {
    throw new OciError(
      "PAGINATION_NUMBER_INVALID",
      `last may be at most ${MAX_LAST_LENGTH} characters`,
    );
  }
  return last;
}

/** Tags list and catalog routes. */
export function tagRoutes({ meta, config }: Deps): Route[] {
  return [
    route("GET", "/v2/_catalog", async (_req, _p, url) => {
      const n = parsePageSize(url, config.tagsPageMax);
      const page = await meta.listRepos(n, parseLast(url));
      const headers: Record<string, string> = {};
      if (page.next) headers.Link = nextLink("/v2/_catalog", { n: String(n), last: page.next });
      return json({ repositories: page.items }, { headers });
    }),
    route("GET", "/v2/:name+/tags/list", async (_req, p, url) => {
      const name = parseName(p.name!);
      const n = parsePageSize(url, config.tagsPageMax);
      const last = parseLast(url);
      const [page, exists] = await Promise.all([
        meta.listTags(name, n, last),
        meta.repoExists(name),
      ]);
      if (!exists) throw nameUnknown(name);
      const headers: Record<string, string> = {};
      if (page.next) {
        headers.Link = nextLink(`/v2/${name}/tags/list`, { n: String(n), last: page.next });
      }
      return json({ name, tags: page.items }, { headers });
    }),
  ];
}
