/**
 * Unit tests of the router (checklist A3 "parse the path from the right",
 * A2 endpoint table, A11 405 with Allow).
 *
 * @module
 */
import assert from "node:assert/strict";
import { OciError } from "../oci/errors.ts";
import type { RouteContext } from "./context.ts";
import { dispatch, type Handler, matchRoute, type Route, route } from "./router.ts";

const ok: Handler = () => new Response(null, { status: 204 });

function found(routes: Route[], method: string, pathname: string) {
  const match = matchRoute(routes, method, pathname);
  assert.equal(match.kind, "found", `${method} ${pathname} gave ${JSON.stringify(match)}`);
  return match as Extract<typeof match, { kind: "found" }>;
}

/** The routes of the app, in the app's order (see src/app.ts). */
const ROUTES: Route[] = [
  route("r", "GET /v2{/}?", ok),
  route("r", "GET /v2/_catalog", ok),
  route("r", "GET /v2/:name+/tags/list", ok),
  route("r", "POST /v2/:name+/blobs/uploads{/}?", ok),
  route("r", "GET /v2/:name+/blobs/uploads/:uploadId", ok),
  route("r", "PATCH /v2/:name+/blobs/uploads/:uploadId", ok),
  route("r", "PUT /v2/:name+/blobs/uploads/:uploadId", ok),
  route("r", "DELETE /v2/:name+/blobs/uploads/:uploadId", ok),
  route("r", "HEAD /v2/:name+/blobs/:digest", ok),
  route("r", "GET /v2/:name+/blobs/:digest", ok),
  route("r", "DELETE /v2/:name+/blobs/:digest", ok),
  route("r", "HEAD /v2/:name+/manifests/:reference", ok),
  route("r", "GET /v2/:name+/manifests/:reference", ok),
  route("r", "PUT /v2/:name+/manifests/:reference", ok),
  route("r", "DELETE /v2/:name+/manifests/:reference", ok),
  route("r", "GET /v2/:name+/referrers/:digest", ok),
];

Deno.test("route() keeps the name, the method and the template", () => {
  const r = route("tags.list", "GET /v2/:name+/tags/list", ok);
  assert.equal(r.name, "tags.list");
  assert.equal(r.method, "GET");
  assert.equal(r.path, "/v2/:name+/tags/list");
  assert.equal(r.handler, ok);
});

Deno.test("route() :name+ captures a name with slashes", () => {
  const r = [route("r", "GET /v2/:name+/manifests/:reference", ok)];
  assert.deepEqual(found(r, "GET", "/v2/a/manifests/latest").params, {
    name: "a",
    reference: "latest",
  });
  assert.deepEqual(found(r, "GET", "/v2/a/b/c/d/e/f/g/manifests/v1").params, {
    name: "a/b/c/d/e/f/g",
    reference: "v1",
  });
});

Deno.test("route() :name+ parses from the right when the name contains a keyword", () => {
  assert.deepEqual(found(ROUTES, "GET", "/v2/a/manifests/b/manifests/latest").params, {
    name: "a/manifests/b",
    reference: "latest",
  });
  assert.deepEqual(found(ROUTES, "GET", "/v2/blobs/blobs/sha256:x").params, {
    name: "blobs",
    digest: "sha256:x",
  });
  assert.deepEqual(found(ROUTES, "GET", "/v2/tags/list/tags/list").params, { name: "tags/list" });
});

Deno.test("route() :x captures one segment only", () => {
  const r = [route("r", "GET /v2/:name+/blobs/:digest", ok)];
  // The last segment is the digest; everything before /blobs/ is the name.
  assert.deepEqual(found(r, "GET", "/v2/a/blobs/x/blobs/d").params, {
    name: "a/blobs/x",
    digest: "d",
  });
  assert.equal(matchRoute(r, "GET", "/v2/a/blobs/").kind, "none");
});

Deno.test("route() :name+ passes empty segments on to the name parser", () => {
  // They must reach parseName (400 NAME_INVALID), not fall through to a 404.
  assert.deepEqual(found(ROUTES, "GET", "/v2//manifests/x").params, { name: "", reference: "x" });
  assert.deepEqual(found(ROUTES, "GET", "/v2/a//b/manifests/x").params, {
    name: "a//b",
    reference: "x",
  });
  assert.deepEqual(found(ROUTES, "GET", "/v2/a//tags/list").params, { name: "a/" });
  // A single-segment parameter still needs at least one character.
  assert.equal(matchRoute(ROUTES, "GET", "/v2/a/manifests/").kind, "none");
});

Deno.test("route() {/}? makes the trailing slash optional", () => {
  found(ROUTES, "GET", "/v2");
  found(ROUTES, "GET", "/v2/");
  assert.deepEqual(found(ROUTES, "POST", "/v2/a/b/blobs/uploads/").params, { name: "a/b" });
  assert.deepEqual(found(ROUTES, "POST", "/v2/a/b/blobs/uploads").params, { name: "a/b" });
  assert.equal(matchRoute(ROUTES, "GET", "/v2//").kind, "none");
});

Deno.test("route() does not add a trailing slash where the template has none", () => {
  assert.equal(matchRoute(ROUTES, "GET", "/v2/a/tags/list/").kind, "none");
  assert.equal(matchRoute(ROUTES, "GET", "/v2/_catalog/").kind, "none");
});

Deno.test("route() matches the whole path, not a prefix or suffix", () => {
  assert.equal(matchRoute(ROUTES, "GET", "/x/v2/a/tags/list").kind, "none");
  assert.equal(matchRoute(ROUTES, "GET", "/v2/a/tags/listing").kind, "none");
  assert.equal(matchRoute(ROUTES, "GET", "/v2x").kind, "none");
});

Deno.test("matchRoute() keeps an encoded slash inside the name", () => {
  const match = found(ROUTES, "GET", "/v2/a%2Fb/manifests/latest");
  assert.deepEqual(match.params, { name: "a%2Fb", reference: "latest" });
  const url = new URL("http://localhost/v2/library%2Fbusybox/blobs/sha256:x");
  assert.deepEqual(found(ROUTES, "GET", url.pathname).params, {
    name: "library%2Fbusybox",
    digest: "sha256:x",
  });
});

Deno.test("matchRoute() sends upload paths to upload routes, not blob routes", () => {
  const match = found(ROUTES, "GET", "/v2/a/blobs/uploads/0b5c7e0e-id");
  assert.equal(match.route.path, "/v2/:name+/blobs/uploads/:uploadId");
  assert.deepEqual(match.params, { name: "a", uploadId: "0b5c7e0e-id" });
  assert.equal(found(ROUTES, "PATCH", "/v2/a/blobs/uploads/u").route.method, "PATCH");
});

Deno.test("matchRoute() answers 405 with the methods the path allows", () => {
  assert.deepEqual(matchRoute(ROUTES, "POST", "/v2/a/manifests/latest"), {
    kind: "method",
    allow: ["HEAD", "GET", "PUT", "DELETE"],
  });
  assert.deepEqual(matchRoute(ROUTES, "POST", "/v2/a/tags/list"), {
    kind: "method",
    allow: ["GET"],
  });
  assert.deepEqual(matchRoute(ROUTES, "PUT", "/v2/"), { kind: "method", allow: ["GET"] });
});

Deno.test("matchRoute() lists each allowed method once, from every matching route", () => {
  // /v2/a/blobs/uploads matches the POST upload route and, as digest "uploads",
  // the blob routes.
  assert.deepEqual(matchRoute(ROUTES, "PATCH", "/v2/a/blobs/uploads"), {
    kind: "method",
    allow: ["POST", "HEAD", "GET", "DELETE"],
  });
  const twice = [route("r", "GET /x", ok), route("r", "GET /:y", ok), route("r", "PUT /x", ok)];
  assert.deepEqual(matchRoute(twice, "POST", "/x"), { kind: "method", allow: ["GET", "PUT"] });
});

Deno.test("matchRoute() says none for a path no route knows", () => {
  assert.deepEqual(matchRoute(ROUTES, "GET", "/v2/a/nothing-here"), { kind: "none" });
  assert.deepEqual(matchRoute(ROUTES, "GET", "/"), { kind: "none" });
  assert.deepEqual(matchRoute([], "GET", "/v2/"), { kind: "none" });
});

Deno.test("matchRoute() takes the first matching route", () => {
  const first: Handler = () => new Response("first");
  const second: Handler = () => new Response("second");
  const routes = [
    route("r", "GET /v2/_catalog", first),
    route("r", "GET /v2/:name", second),
  ];
  assert.equal(found(routes, "GET", "/v2/_catalog").route.handler, first);
  assert.equal(found(routes, "GET", "/v2/other").route.handler, second);
  const reversed = [routes[1]!, routes[0]!];
  assert.equal(found(reversed, "GET", "/v2/_catalog").route.handler, second);
});

Deno.test("matchRoute() prefers a later route of the right method over a 405", () => {
  const routes = [route("r", "PUT /a", ok), route("r", "GET /a", ok)];
  assert.equal(found(routes, "GET", "/a").route.method, "GET");
});

Deno.test("matchRoute() gives each match its own params object", () => {
  const a = found(ROUTES, "GET", "/v2/a/tags/list");
  a.params.name = "changed";
  assert.deepEqual(found(ROUTES, "GET", "/v2/a/tags/list").params, { name: "a" });
});

/** A request context as the pipeline hands it to dispatch. */
function contextOf(url: URL, init?: RequestInit): RouteContext {
  return {
    req: new Request(url, init),
    url,
    id: "t-1",
    remoteAddr: { transport: "tcp", hostname: "192.0.2.7", port: 4321 },
    started: 0,
    route: null,
    caller: { user: null, can: () => false, lists: () => false },
  };
}

Deno.test("dispatch() calls the handler with the context and params, and records the route", async () => {
  let seen: unknown;
  const routes = [
    route("tags.list", "GET /v2/:name+/tags/list", ({ req, url, remoteAddr }, params) => {
      seen = { method: req.method, params, n: url.searchParams.get("n"), from: remoteAddr };
      return new Response("tags");
    }),
  ];
  const ctx = contextOf(new URL("http://127.0.0.1/v2/a/b/tags/list?n=3"));
  const res = await dispatch(routes, ctx);
  assert.equal(await res.text(), "tags");
  assert.deepEqual(seen, {
    method: "GET",
    params: { name: "a/b" },
    n: "3",
    from: { transport: "tcp", hostname: "192.0.2.7", port: 4321 },
  });
  assert.equal(ctx.route?.name, "tags.list");
  assert.equal(ctx.route?.template, "/v2/:name+/tags/list");
  assert.deepEqual(ctx.route?.params, { name: "a/b" });
});

Deno.test("dispatch() throws UNSUPPORTED with Allow for a wrong method", () => {
  const ctx = contextOf(new URL("http://127.0.0.1/v2/a/tags/list"), { method: "DELETE" });
  try {
    dispatch(ROUTES, ctx);
    assert.fail("expected an error");
  } catch (error) {
    assert.ok(error instanceof OciError);
    assert.equal(error.code, "UNSUPPORTED");
    assert.equal(error.status, 405);
    assert.deepEqual(error.options.headers, { Allow: "GET" });
  }
});

Deno.test("dispatch() throws a 404 for an unknown path", () => {
  const ctx = contextOf(new URL("http://127.0.0.1/v3/"));
  try {
    dispatch(ROUTES, ctx);
    assert.fail("expected an error");
  } catch (error) {
    assert.ok(error instanceof OciError);
    assert.equal(error.status, 404);
    assert.deepEqual(error.options.detail, { path: "/v3/" });
  }
});
