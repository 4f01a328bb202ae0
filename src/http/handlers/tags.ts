/**
 * end-8a/8b: a repository's tags, one page at a time. A page the registry
 * kept (the same frozen object while the repository is unchanged) is
 * encoded once: its body and `Link` are remembered with it.
 *
 * @module
 */
import { parseName } from "../../oci/name.ts";
import type { ListPage } from "../../registry/listings.ts";
import type { HandlerDeps } from "../deps.ts";
import { nextLink } from "../headers.ts";
import { parseLast, parsePageSize } from "../query.ts";
import { type Route, route } from "../router.ts";

/** A page's answer, encoded. */
interface Encoded {
  body: Uint8Array<ArrayBuffer>;
  link: string | undefined;
}

/** Tags list routes. */
export function tagRoutes({ registry }: HandlerDeps): Route[] {
  const encoded = new WeakMap<Readonly<ListPage<string>>, Encoded>();
  const encode = (name: string, page: Readonly<ListPage<string>>): Encoded => {
    let answer = encoded.get(page);
    if (!answer) {
      const link = page.next
        ? nextLink(`/v2/${name}/tags/list`, { n: String(page.n), last: page.next })
        : undefined;
      answer = { body: new TextEncoder().encode(JSON.stringify({ name, tags: page.items })), link };
      if (Object.isFrozen(page)) encoded.set(page, answer);
    }
    return answer;
  };
  return [
    route("tags.list", "GET /v2/:name+/tags/list", async ({ url }, p) => {
      const name = parseName(p.name!);
      const page = await registry.listings.tags(name, parsePageSize(url), parseLast(url));
      const { body, link } = encode(name, page);
      const headers: Record<string, string> = {
        "Content-Type": "application/json",
        "Content-Length": String(body.length),
      };
      if (link) headers.Link = link;
      return new Response(body, { headers });
    }),
  ];
}
