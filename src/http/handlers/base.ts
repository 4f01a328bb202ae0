/**
 * end-1 (`GET /v2/`) and the health endpoints outside `/v2/`.
 *
 * @module
 */
import type { HandlerDeps } from "../deps.ts";
import { json } from "../respond.ts";
import { type Route, route } from "../router.ts";

const API_VERSION = { "Docker-Distribution-API-Version": "registry/2.0" };

/** Routes of the API root and health checks. */
export function baseRoutes({ registry }: HandlerDeps): Route[] {
  return [
    route("base", "GET /v2{/}?", () => json({}, { headers: API_VERSION })),
    route("base", "HEAD /v2{/}?", () => new Response(null, { headers: API_VERSION })),
    route("healthz", "GET /healthz", () => json({ status: "ok" })),
    route("readyz", "GET /readyz", async () => {
      await registry.ready();
      return json({ status: "ready" });
    }),
  ];
}
