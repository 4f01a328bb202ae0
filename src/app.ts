/**
 * `createApp(deps)`: the whole registry as a function from Request to
 * Response. No sockets here; `main.ts` alone listens.
 *
 * A request goes through the pipeline's steps (log → errors → URL checks →
 * route → authorize) to its route's handler, which translates HTTP into a
 * call of the registry service layer and its answer back into HTTP. With
 * metrics on, a step between logging and errors counts and times every
 * request by route template, and `GET /metrics` shows the figures.
 *
 * @module
 */
import type { Deps } from "./http/deps.ts";
import { baseRoutes } from "./http/handlers/base.ts";
import { blobRoutes } from "./http/handlers/blobs.ts";
import { catalogRoutes } from "./http/handlers/catalog.ts";
import { manifestRoutes } from "./http/handlers/manifests.ts";
import { referrerRoutes } from "./http/handlers/referrers.ts";
import { tagRoutes } from "./http/handlers/tags.ts";
import { uploadRoutes } from "./http/handlers/uploads.ts";
import { authorize } from "./http/authorize.ts";
import { checkUrl, compose, handleErrors, logRequests, type Step } from "./http/pipeline.ts";
import { findRoute, type Route } from "./http/router.ts";
import type { RouteContext } from "./http/context.ts";
import { Gate } from "./auth/gate.ts";
import { LoginThrottle } from "./auth/throttle.ts";
import { tokenRoutes } from "./http/handlers/token.ts";
import { Registry } from "./registry/registry.ts";
import { METRICS_ROUTE, metricsRoutes } from "./http/handlers/metrics.ts";
import { authorizeMetrics } from "./metrics/access.ts";
import { watchProcess } from "./metrics/process.ts";
import { metrics } from "./metrics/registry.ts";
import { measureRequests } from "./metrics/requests.ts";

export type { Deps } from "./http/deps.ts";
export { MAX_URL_LENGTH } from "./http/pipeline.ts";

/** The gate of mode none without a policy: everyone may do everything (loopback, tests). */
const ANONYMOUS = {
  mode: "none",
  users: null,
  policy: null,
  tokens: null,
  throttle: new LoginThrottle(),
  service: "berth",
  realm: "",
  ownIssuer: true,
} as const;

/** Who is asking: the client's address, as `Deno.serve` or the connection guard gives it. */
export interface ClientInfo {
  remoteAddr: Deno.Addr;
}

/** A registry request handler. */
export type App = (req: Request, info?: ClientInfo) => Promise<Response>;

/** Builds the registry's request handler (`config.metrics` false: no metrics step, no `/metrics`). */
export function createApp(deps: Deps & { config: { metrics?: boolean } }): App {
  const metricsOn = deps.config.metrics !== false;
  const registry = new Registry({ meta: deps.meta, blobs: deps.blobs, config: deps.config });
  const handlerDeps = { registry, bodyTimeoutMs: deps.config.bodyTimeoutMs };
  // Upload routes come before blob routes: `/blobs/uploads/x` is not a digest.
  const gate = deps.auth?.gate ?? new Gate(ANONYMOUS);
  const issuer = deps.auth?.issuer ?? null;
  const routes: Route[] = [
    ...(issuer === null ? [] : tokenRoutes({
      gate,
      issuer,
      fingerprint: deps.auth!.fingerprint,
      fingerprintMatches: deps.auth!.fingerprintMatches,
      service: deps.config.tokenService,
      bodyTimeoutMs: deps.config.bodyTimeoutMs,
      audit: (entry) => deps.log.info("auth", { action: "token", ...entry }),
    })),
    ...baseRoutes(handlerDeps),
    ...catalogRoutes(handlerDeps),
    ...tagRoutes(handlerDeps),
    ...uploadRoutes(handlerDeps),
    ...blobRoutes(handlerDeps),
    ...manifestRoutes(handlerDeps),
    ...referrerRoutes(handlerDeps),
    ...(metricsOn ? metricsRoutes(metrics) : []),
  ];
  if (metricsOn) watchProcess(metrics);
  const match: Step = (ctx, next) => {
    findRoute(routes, ctx as RouteContext);
    return next();
  };
  const https = deps.config.tlsCert !== "";
  const authorizeRoute = authorize(gate, deps.log, https);
  const authorizeScrape = authorizeMetrics(gate, deps.log, https);
  // `/metrics` names no repository: it has its own rule (src/metrics/access.ts).
  const authorizeStep: Step = (ctx, next) =>
    ctx.route!.name === METRICS_ROUTE ? authorizeScrape(ctx, next) : authorizeRoute(ctx, next);
  const handle = compose(
    [
      logRequests(deps.log),
      // Outside the error step: it sees the final status of every request, and the route.
      ...(metricsOn ? [measureRequests(metrics, routes)] : []),
      handleErrors(deps.log),
      checkUrl,
      match,
      authorizeStep,
    ],
    (ctx) => ctx.route!.handler(ctx as RouteContext, ctx.route!.params),
  );
  let sequence = 0;
  const prefix = crypto.randomUUID().slice(0, 8);
  return function app(req: Request, info?: ClientInfo): Promise<Response> {
    const remote = info?.remoteAddr;
    return handle({
      req,
      id: `${prefix}-${(++sequence).toString(36)}`,
      remoteAddr: remote && remote.transport !== "unix" && remote.transport !== "unixpacket"
        ? remote as Deno.NetAddr
        : null,
      started: performance.now(),
      url: null,
      route: null,
      caller: null,
    });
  };
}
