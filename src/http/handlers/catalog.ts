/**
 * `GET /v2/_catalog`: Docker's catalog of repositories (optional in the
 * spec), one page at a time.
 *
 * @module
 */
import type { HandlerDeps } from "../deps.ts";
import { nextLink } from "../headers.ts";
import { parseLast, parsePageSize } from "../query.ts";
import { json } from "../respond.ts";
import { type Route, route } from "../router.ts";

/** Catalog routes. */
export function catalogRoutes({ registry }: HandlerDeps): Route[] {
  return [
    route("catalog", "GET /v2/_catalog", async ({ url, caller }) => {
      const page = await registry.listings.catalog(
        parsePageSize(url),
        parseLast(url),
        (repo) => caller.lists(repo),
      );
      const headers: Record<string, string> = {};
      if (page.next) {
        headers.Link = nextLink("/v2/_catalog", { n: String(page.n), last: page.next });
      }
      return json({ repositories: page.items }, { headers });
    }),
  ];
}
