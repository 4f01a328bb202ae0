/**
 * end-8a/8b: a repository's tags, one page at a time.
 *
 * @module
 */
import { parseName } from "../../oci/name.ts";
import type { HandlerDeps } from "../deps.ts";
import { nextLink } from "../headers.ts";
import { parseLast, parsePageSize } from "../query.ts";
import { json } from "../respond.ts";
import { type Route, route } from "../router.ts";

/** Tags list routes. */
export function tagRoutes({ registry }: HandlerDeps): Route[] {
  return [
    route("tags.list", "GET /v2/:name+/tags/list", async ({ url }, p) => {
      const name = parseName(p.name!);
      const page = await registry.listings.tags(name, parsePageSize(url), parseLast(url));
      const headers: Record<string, string> = {};
      if (page.next) {
        headers.Link = nextLink(`/v2/${name}/tags/list`, { n: String(page.n), last: page.next });
      }
      return json({ name, tags: page.items }, { headers });
    }),
  ];
}
