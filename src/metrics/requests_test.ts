/**
 * Unit tests of the request metrics step.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createLogger } from "../log.ts";
import { OciError } from "../oci/errors.ts";
import { checkUrl, compose, handleErrors, type Step } from "../http/pipeline.ts";
import type { RequestContext, RouteContext } from "../http/context.ts";
import { findRoute, route } from "../http/router.ts";
import { Registry } from "./registry.ts";
import { measureRequests } from "./requests.ts";

const ROUTES = [
  route(
    "manifest.get",
    "GET /v2/:name+/manifests/:reference",
    () => new Response("{}", { headers: { "Content-Length": "2" } }),
  ),
  route(
    "manifest.head",
    "HEAD /v2/:name+/manifests/:reference",
    () => new Response(null, { headers: { "Content-Length": "1234" } }),
  ),
  route("manifest.put", "PUT /v2/:name+/manifests/:reference", async (ctx) => {
    await ctx.req.arrayBuffer();
    throw new OciError("MANIFEST_INVALID", "no");
  }),
];

function app(registry: Registry) {
  const match: Step = (ctx, next) => {
    findRoute(ROUTES, ctx as RouteContext);
    return next();
  };
  const handle = compose(
    [measureRequests(registry, ROUTES), handleErrors(createLogger("off")), checkUrl, match],
    (ctx) => ctx.route!.handler(ctx as RouteContext, ctx.route!.params),
  );
  return (path: string, init?: RequestInit) =>
    handle({
      req: new Request(`http://localhost${path}`, init),
      id: "t",
      remoteAddr: null,
      started: performance.now(),
      url: null,
      route: null,
      caller: null,
    } as RequestContext);
}

Deno.test("measureRequests() counts by route template and status, never by path", async () => {
  const registry = new Registry();
  const request = app(registry);
  for (let i = 0; i < 50; i++) await (await request(`/v2/repo${i}/manifests/v${i}`)).body?.cancel();
  await (await request("/v2/a/manifests/x", { method: "PUT", body: "xyz" })).body?.cancel();
  const text = registry.render();
  assert.match(
    text,
    /^berth_http_requests_total\{route="\/v2\/:name\+\/manifests\/:reference",method="GET",status="200"\} 50$/m,
  );
  assert.match(
    text,
    /^berth_http_requests_total\{route="\/v2\/:name\+\/manifests\/:reference",method="PUT",status="400"\} 1$/m,
  );
  assert.doesNotMatch(text, /repo1|v49/);
  assert.match(
    text,
    /^berth_http_request_duration_seconds_count\{route="\/v2\/:name\+\/manifests\/:reference",method="GET"\} 50$/m,
  );
});

Deno.test("measureRequests() gives unmatched requests one label per known method", async () => {
  const registry = new Registry();
  const request = app(registry);
  await (await request("/nothing/here")).body?.cancel();
  await (await request("/v2/a/manifests/x", { method: "DELETE" })).body?.cancel();
  await (await request("/v2/a/manifests/x", { method: "BREW" })).body?.cancel();
  const text = registry.render();
  assert.match(
    text,
    /^berth_http_requests_total\{route="unmatched",method="GET",status="404"\} 1$/m,
  );
  assert.match(
    text,
    /^berth_http_requests_total\{route="unmatched",method="DELETE",status="405"\} 1$/m,
  );
  assert.match(
    text,
    /^berth_http_requests_total\{route="unmatched",method="other",status="405"\} 1$/m,
  );
  assert.doesNotMatch(text, /BREW|nothing/);
});

Deno.test("measureRequests() adds up declared bytes in and out, and none out for HEAD", async () => {
  const registry = new Registry();
  const request = app(registry);
  await (await request("/v2/a/manifests/x")).body?.cancel();
  await (await request("/v2/a/manifests/x", { method: "HEAD" })).body?.cancel();
  await (await request("/v2/a/manifests/x", {
    method: "PUT",
    body: "12345",
    headers: { "Content-Length": "5" },
  })).body?.cancel();
  const text = registry.render();
  const template = "/v2/:name\\+/manifests/:reference";
  assert.match(
    text,
    new RegExp(`^berth_http_response_bytes_total\\{route="${template}",method="GET"\\} 2$`, "m"),
  );
  assert.match(
    text,
    new RegExp(`^berth_http_response_bytes_total\\{route="${template}",method="HEAD"\\} 0$`, "m"),
  );
  assert.match(
    text,
    new RegExp(`^berth_http_request_bytes_total\\{route="${template}",method="PUT"\\} 5$`, "m"),
  );
  assert.match(text, /^berth_http_requests_in_flight 0$/m);
});
