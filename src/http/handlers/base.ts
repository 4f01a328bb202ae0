/**
 * end-1 (`GET /v2/`) and the health endpoints outside `/v2/`.
 *
 * @module
 */
import type { Deps } from "../deps.ts";
import { json } from "../respond.ts";
import { type Route, route } from "../router.ts";

/** Routes of the API root and health checks. */
export function baseRoutes({ meta, blobs }: Deps): Route[] {
  const root = () => json({}, { headers: { "Docker-Distribution-API-Version": "registry/2.0" } });
  return [
    route("GET", "/v2{/}?", root),
    route(
      "HEAD",
      "/v2{/}?",
      () => new Response(null, { headers: { "Docker-Distribution-API-Version": "registry/2.0" } }),
    ),
    route("GET", "/healthz", () => json({ status: "ok" })),
    route("GET", "/readyz", async () => {
      // Ready when both stores answer.
      await meta.repoExists("_readyz");
      await blobs.stat(("sha256:" + "0".repeat(64)) as Parameters<typeof blobs.stat>[0]);
      return json({ status: "ready" });
    }),
  ];
}
