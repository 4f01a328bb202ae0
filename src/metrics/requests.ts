/**
 * The request metrics step: counts every request by route template, method
 * and status, times it (until its response is ready: a body that streams
 * later is not included), and adds up the bytes in and out. It sits outside
 * the error step, so it sees the final status of refused and failed
 * requests too, and reads the route the router recorded on the context.
 *
 * Labels are the route's template (`/v2/:name+/manifests/:reference`),
 * never the path, so the number of series is bounded by the route table.
 * Requests no route matched (404, 405, a bad URL) share `route="unmatched"`.
 *
 * Per request this is three small map lookups, a few increments and a header read:
 * every metric is created once per route (and status) and kept.
 *
 * @module
 */
import { handedOffLength } from "../http/conn_guard.ts";
import type { Step } from "../http/pipeline.ts";
import type { Route } from "../http/router.ts";
import type { Counter, Histogram, Registry } from "./registry.ts";

/** The `route` label of requests no route matched. */
export const UNMATCHED = "unmatched";

/** Methods kept as they are in the `method` label of unmatched requests; others are `other`. */
const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

const REQUESTS = "berth_http_requests_total";
const REQUESTS_HELP = "HTTP requests, by route template, method and status";

/** The metrics of one route (or of unmatched requests of one method). */
class RouteMetrics {
  readonly #registry: Registry;
  readonly #labels: { route: string; method: string };
  readonly #byStatus = new Map<number, Counter>();
  readonly seconds: Histogram;
  readonly bytesIn: Counter;
  readonly bytesOut: Counter;

  constructor(registry: Registry, labels: { route: string; method: string }) {
    this.#registry = registry;
    this.#labels = labels;
    this.seconds = registry.histogram(
      "berth_http_request_duration_seconds",
      "Time from a request's arrival to its response being ready (bodies stream after), by route",
      labels,
    );
    this.bytesIn = registry.counter(
      "berth_http_request_bytes_total",
      "Request body bytes as declared by Content-Length (chunked bodies are not counted), by route",
      labels,
    );
    this.bytesOut = registry.counter(
      "berth_http_response_bytes_total",
      "Response body bytes as declared by Content-Length (HEAD answers send none), by route",
      labels,
    );
  }

  /** The counter of responses with `status`. */
  requests(status: number): Counter {
    let counter = this.#byStatus.get(status);
    if (!counter) {
      counter = this.#registry.counter(REQUESTS, REQUESTS_HELP, {
        ...this.#labels,
        status: String(status),
      });
      this.#byStatus.set(status, counter);
    }
    return counter;
  }
}

/** The request metrics step for `routes`, reporting into `registry`. */
export function measureRequests(registry: Registry, routes: readonly Route[]): Step {
  // By template, then method: together they name one route (the first that matches wins).
  // Metrics are created on a route's first request (null until then), then kept.
  const byRoute = new Map<string, Map<string, RouteMetrics | null>>();
  for (const { method, path } of routes) {
    const methods = byRoute.get(path) ?? new Map<string, RouteMetrics | null>();
    byRoute.set(path, methods);
    methods.set(method, null);
  }
  const unmatched = new Map<string, RouteMetrics | null>();
  for (const method of [...METHODS, "other"]) unmatched.set(method, null);
  const inFlight = registry.gauge("berth_http_requests_in_flight", "Requests being answered now");
  const find = (method: string, template: string | undefined): RouteMetrics => {
    const methods = template === undefined ? undefined : byRoute.get(template);
    let route = template;
    let table = methods;
    if (methods === undefined || !methods.has(method)) {
      route = UNMATCHED;
      table = unmatched;
      if (!unmatched.has(method)) method = "other";
    }
    let metrics = table!.get(method);
    if (!metrics) {
      metrics = new RouteMetrics(registry, { route: route!, method });
      table!.set(method, metrics);
    }
    return metrics;
  };
  return async (ctx, next) => {
    inFlight.inc();
    let response: Response;
    try {
      response = await next();
    } finally {
      inFlight.dec();
    }
    const { req } = ctx;
    const metrics = find(req.method, ctx.route?.template);
    metrics.requests(response.status).inc();
    metrics.seconds.observe((performance.now() - ctx.started) / 1000);
    const method = req.method;
    if (method !== "GET" && method !== "HEAD") {
      const bytesIn = req.headers.get("content-length");
      if (bytesIn !== null) metrics.bytesIn.inc(Number(bytesIn) || 0);
    }
    if (method !== "HEAD") {
      // A file the connection guard writes itself has no Content-Length here.
      const bytesOut = response.headers.get("content-length") ?? handedOffLength(response);
      if (bytesOut !== null && bytesOut !== undefined) metrics.bytesOut.inc(Number(bytesOut) || 0);
    }
    return response;
  };
}
