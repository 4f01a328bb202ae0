/**
 * `createApp(deps)`: the whole registry as a function from Request to
 * Response. No sockets here; `main.ts` alone listens.
 *
 * A request goes through the pipeline's steps (log → errors → URL checks)
 * to the router, whose handler translates HTTP into a call of the registry
 * service layer and its answer back into HTTP.
 *
 * @module
 */
import type { Deps } from "./http/deps.ts";
import type { RequestContext } from "./http/context.ts";
import { baseRoutes } from "./http/handlers/base.ts";
import { blobRoutes } from "./http/handlers/blobs.ts";
import { catalogRoutes } from "./http/handlers/catalog.ts";
import { manifestRoutes } from "./http/handlers/manifests.ts";
import { referrerRoutes } from "./http/handlers/referrers.ts";
import { tagRoutes } from "./http/handlers/tags.ts";
import { uploadRoutes } from "./http/handlers/uploads.ts";
import { checkUrl, compose, handleErrors, logRequests } from "./http/pipeline.ts";
import { dispatch, type Route } from "./http/router.ts";
import { Registry } from "./registry/registry.ts";

export type { Deps } from "./http/deps.ts";
export { MAX_URL_LENGTH } from "./http/pipeline.ts";

/** Who is asking: the client's address, as `Deno.serve` or the connection guard gives it. */
export interface ClientInfo {
  remoteAddr: Deno.Addr;
}

/** A registry request handler. */
export type App = (req: Request, info?: ClientInfo) => Promise<Response>;

/** Builds the registry's request handler. */
export function createApp(deps: Deps): App {
  const registry = new Registry({ meta: deps.meta, blobs: deps.blobs, config: deps.config });
  const handlerDeps = { registry, bodyTimeoutMs: deps.config.bodyTimeoutMs };
  // Upload routes come before blob routes: `/blobs/uploads/x` is not a digest.
  const routes: Route[] = [
    ...baseRoutes(handlerDeps),
    ...catalogRoutes(handlerDeps),
    ...tagRoutes(handlerDeps),
    ...uploadRoutes(handlerDeps),
    ...blobRoutes(handlerDeps),
    ...manifestRoutes(handlerDeps),
    ...referrerRoutes(handlerDeps),
  ];
  const handle = compose(
    [logRequests(deps.log), handleErrors(deps.log), checkUrl],
    (ctx) => dispatch(routes, ctx as RequestContext & { url: URL }),
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
    });
  };
}
