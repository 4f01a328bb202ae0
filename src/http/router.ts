/**
 * A small router: routes are `route(name, "METHOD /template", handler)` with
 * URLPattern-style templates (`/v2/:name+/blobs/:digest`), compiled to one
 * RegExp each. URLPattern itself costs about 5 µs per `exec` on Deno 2.9.6,
 * more than the rest of a manifest GET, so it is not used; the syntax is kept.
 *
 * The first match wins. A path that matches under other methods answers 405
 * with `Allow`. {@linkcode dispatch} records the matched route's name and
 * template on the request context, so logs, metrics and authorization use it
 * without parsing the path again.
 *
 * @module
 */
import { OciError } from "../oci/errors.ts";
import type { RouteContext } from "./context.ts";

/** Path parameters captured by a route. */
export type Params = Record<string, string>;

/** A request handler: the request's context and the route's parameters. */
export type Handler = (ctx: RouteContext, params: Params) => Response | Promise<Response>;

/** The route a request matched, as recorded on its context. */
export interface MatchedRoute {
  name: string;
  template: string;
  params: Params;
  handler: Handler;
}

/** One route. */
export interface Route {
  /** A stable name (`manifest.get`): log field, metric label, authorization scope. */
  name: string;
  method: string;
  /** The template, as written (`/v2/:name+/manifests/:reference`). */
  path: string;
  regexp: RegExp;
  handler: Handler;
}

/**
 * Declares a route from its name, `"METHOD /template"` and handler. In the
 * template `:x` captures one segment, `:x+` one or more segments joined by
 * `/`, and `{/}?` an optional trailing slash.
 */
export function route(name: string, pattern: string, handler: Handler): Route {
  const [method, path] = pattern.split(" ") as [string, string];
  const source = path
    .replace("{/}?", "/?")
    // Empty segments match too, so `a//b` reaches parseName and gets 400 NAME_INVALID, not 404.
    .replace(/:([a-zA-Z]+)\+/g, "(?<$1>[^/]*(?:/[^/]*)*)")
    .replace(/:([a-zA-Z]+)/g, "(?<$1>[^/]+)");
  return { name, method, path, regexp: new RegExp(`^${source}$`), handler };
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

/**
 * Finds the route of a request and records it on `ctx` (name, template,
 * parameters, handler); throws an {@linkcode OciError} for unknown paths
 * (404, or the extensions' `EXTENSION_UNKNOWN`) and methods (405 with `Allow`).
 */
export function findRoute(routes: Route[], ctx: RouteContext): MatchedRoute {
  const { req, url } = ctx;
  const match = matchRoute(routes, req.method, url.pathname);
  if (match.kind === "found") {
    const { name, path, handler } = match.route;
    ctx.route = { name, template: path, params: match.params, handler };
    return ctx.route;
  }
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

/** Finds the route of a request and calls its handler. */
export function dispatch(routes: Route[], ctx: RouteContext): Response | Promise<Response> {
  const { handler, params } = findRoute(routes, ctx);
  return handler(ctx, params);
}
