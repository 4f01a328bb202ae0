/**
 * `GET /metrics`: the process's metrics in the Prometheus text exposition
 * format. Outside `/v2/`; who may read it is `src/metrics/access.ts`. Other
 * methods get the router's 405 with `Allow: GET`.
 *
 * @module
 */
import { CONTENT_TYPE, type Registry } from "../../metrics/registry.ts";
import { type Route, route } from "../router.ts";

/** The name of the metrics route. */
export const METRICS_ROUTE = "metrics";

/** The `/metrics` route, rendering `registry`. */
export function metricsRoutes(registry: Registry): Route[] {
  return [
    route(METRICS_ROUTE, "GET /metrics", () => {
      const bytes = new TextEncoder().encode(registry.render());
      return new Response(bytes, {
        headers: {
          "Content-Type": CONTENT_TYPE,
          "Content-Length": String(bytes.length),
          "Cache-Control": "no-store",
        },
      });
    }),
  ];
}
