/**
 * `createApp(deps)`: the whole registry as a function from Request to
 * Response. No sockets here; `main.ts` alone calls `Deno.serve`.
 *
 * @module
 */
import { OciError } from "./oci/errors.ts";
import type { Deps } from "./http/deps.ts";
import { baseRoutes } from "./http/handlers/base.ts";
import { blobRoutes } from "./http/handlers/blobs.ts";
import { manifestRoutes } from "./http/handlers/manifests.ts";
import { referrerRoutes } from "./http/handlers/referrers.ts";
import { tagRoutes } from "./http/handlers/tags.ts";
import { uploadRoutes } from "./http/handlers/uploads.ts";
import { errorResponse, toOciError } from "./http/respond.ts";
import { dispatch, type Route } from "./http/router.ts";

export type { Deps } from "./http/deps.ts";

/** Longest request URL accepted (longer: 414). */
export const MAX_URL_LENGTH = 8192;

const HOST_REGEXP = /^(?:[A-Za-z0-9._~-]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

/** The request's URL; a Host header that does not make one (port 99999) is a 400. */
function parseUrl(req: Request): URL {
  try {
    return new URL(req.url);
  } catch {
    throw new OciError("UNSUPPORTED", "Invalid Host header", { status: 400 });
  }
}

/** A registry request handler. */
export type App = (req: Request, info?: Deno.ServeHandlerInfo) => Promise<Response>;

/** Builds the registry's request handler. */
export function createApp(deps: Deps): App {
  // Upload routes come before blob routes: `/blobs/uploads/x` is not a digest.
  const routes: Route[] = [
    ...baseRoutes(deps),
    ...tagRoutes(deps),
    ...uploadRoutes(deps),
    ...blobRoutes(deps),
    ...manifestRoutes(deps),
    ...referrerRoutes(deps),
  ];
  let sequence = 0;
  const prefix = crypto.randomUUID().slice(0, 8);
  return async function app(req: Request): Promise<Response> {
    const started = performance.now();
    const id = `${prefix}-${(++sequence).toString(36)}`;
    let response: Response;
    let url: URL | null = null;
    try {
      if (req.url.length > MAX_URL_LENGTH) {
        throw new OciError("UNSUPPORTED", `Request URL longer than ${MAX_URL_LENGTH} characters`, {
          status: 414,
        });
      }
      // Deno builds req.url from the Host header: a Host that is not a host would
      // change the path or fail to parse.
      const host = req.headers.get("host");
      if (host !== null && !HOST_REGEXP.test(host)) {
        throw new OciError("UNSUPPORTED", "Invalid Host header", { status: 400 });
      }
      url = parseUrl(req);
      response = await dispatch(routes, req, url);
    } catch (error) {
      if (req.body && !req.bodyUsed) await req.body.cancel().catch(() => {});
      const oci = toOciError(
        error,
        (e) =>
          deps.log.error("unhandled", {
            id,
            method: req.method,
            url: req.url.slice(0, 500),
            error: e,
          }),
      );
      if (oci.status === 507) deps.log.warn("disk full", { id, path: url?.pathname.slice(0, 300) });
      response = errorResponse(oci, req.method);
    }
    response.headers.set("X-Request-Id", id);
    deps.log.info("request", {
      id,
      method: req.method,
      path: (url?.pathname ?? req.url).slice(0, 300),
      status: response.status,
      bytes: Number(response.headers.get("Content-Length") ?? 0),
      ms: Math.round((performance.now() - started) * 100) / 100,
    });
    return response;
  };
}
