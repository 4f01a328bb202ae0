/**
 * A small router: routes are `{ method, path, handler }` with URLPattern-style
 * templates (`/v2/:name+/blobs/:digest`), compiled to one RegExp each.
 * URLPattern itself costs about 5 µs per `exec` on Deno 2.9.6, more than the
 * rest of a manifest GET, so it is not used; the syntax is kept.
 *
 * The first match wins. A path that matches under other methods answers 405
 * with `Allow`. Errors thrown by handlers go to the one error path.
 *
 * @module
 */
import { OciError } from "../oci/errors.ts";

/** Path parameters captured by a route. */
export type Params = Record<string, string>;

/** A request handler. */
export type Handler = (req: Request, params: Params, url: URL) => Response | Promise<Response>;

/** One route. */
export interface Route {
  method: string;
  path: string;
  regexp: RegExp;
  handler: Handler;
}

/**
 * Declares a route. `:x` captures one segment, `:x+` one or more segments
 * joined by `/`, and `{/}?` an optional trailing slash.
 */
export function route(method: string, path: string, handler: Handler): Route {
  const source = path
    .replace("{/}?", "/?")
    // Empty segments match too, so `a//b` reaches parseName and gets 400 NAME_INVALID, not 404.
    .replace(/:([a-zA-Z]+)\+/g, "(?<$1>[^/]*(?:/[^/]*)*)")
    .replace(/:([a-zA-Z]+)/g, "(?<$1>[^/]+)");
  return { method, path, regexp: new RegExp(`^${source}$`), handler };
}

/** The result of matching a request against the routes. */
export type Match =
  | { kind: "found"; route: Route; params: Params }
  | { kind: "method"; allow: string[] }
  | { kind: "none" };

/** Finds the route for `method` and `pathname`. */
export function matchRoute(routes: Route[], method: string, pathname: string): Match {
  const allow: string[] = [];
  for (const candidate of routes) {
    const found = candidate.regexp.exec(pathname);
    if (!found) continue;
    if (candidate.method === method) {
      return { kind: "found", route: candidate, params: { ...found.groups } };
    }
    allow.push(candidate.method);
  }
  return allow.length ? { kind: "method", allow: [...new Set(allow)] } : { kind: "none" };
}

const EXTENSION_PATH_REGEXP = /^\/v2\/(?:[^/]+\/)*_[a-z]/;

/** Dispatches a request, throwing an {@linkcode OciError} for unknown paths and methods. */
export function dispatch(routes: Route[], req: Request, url: URL): Response | Promise<Response> {
  const match = matchRoute(routes, req.method, url.pathname);
  if (match.kind === "found") return match.route.handler(req, match.params, url);
  if (match.kind === "method") {
    throw new OciError("UNSUPPORTED", `Method ${req.method} is not allowed on ${url.pathname}`, {
      headers: { Allow: match.allow.join(", ") },
    });
  }
  // `_`-prefixed segments are the extensions namespace (distribution-spec extensions/README.md).
  if (EXTENSION_PATH_REGEXP.test(url.pathname)) {
    throw new OciError("EXTENSION_UNKNOWN", `Unknown extension ${url.pathname.slice(0, 300)}`, {
      detail: { path: url.pathname.slice(0, 300) },
    });
  }
  throw new OciError("UNSUPPORTED", `No such endpoint ${url.pathname.slice(0, 300)}`, {
    status: 404,
    detail: { path: url.pathname.slice(0, 300) },
  });
}
