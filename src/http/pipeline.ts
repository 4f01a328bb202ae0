/**
 * The request pipeline: small composable steps around the router, each
 * `(ctx, next) => Promise<Response>`. Cross-cutting work (request ids,
 * logging, URL and Host checks, and later authentication and metrics) is a
 * step here, never code in a handler.
 *
 * The order (see `createApp`): log → errors → check URL → dispatch. The
 * errors step is the one place that turns anything thrown into the spec's
 * error response.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { OciError } from "../oci/errors.ts";
import { discardBody } from "./body.ts";
import type { RequestContext } from "./context.ts";
import { errorResponse, toOciError } from "./respond.ts";

/** One step: does its work around `next`, the rest of the pipeline. */
export type Step = (ctx: RequestContext, next: () => Promise<Response>) => Promise<Response>;

/** The end of the pipeline. */
export type Terminal = (ctx: RequestContext) => Response | Promise<Response>;

/** Composes `steps` (outermost first) around `terminal`. */
export function compose(
  steps: Step[],
  terminal: Terminal,
): (ctx: RequestContext) => Promise<Response> {
  return (ctx) => {
    const run = async (i: number): Promise<Response> => {
      const step = steps[i];
      return step ? await step(ctx, () => run(i + 1)) : await terminal(ctx);
    };
    return run(0);
  };
}

/** Longest request URL accepted (longer: 414). */
export const MAX_URL_LENGTH = 8192;

const HOST_REGEXP = /^(?:[A-Za-z0-9._~-]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

/**
 * The path of the raw request target: `req.url` as Deno gives it is the
 * target unresolved (`/v2/h/../q` stays so); only `new URL` resolves it.
 */
export function rawPath(url: string): string {
  const authority = url.indexOf("//");
  const rest = authority === -1 ? url : url.slice(authority + 2);
  const start = rest.search(/[/?#]/);
  if (start === -1 || rest[start] !== "/") return "/";
  const path = rest.slice(start);
  const end = path.search(/[?#]/);
  return end === -1 ? path : path.slice(0, end);
}

/** A `.` or `..` segment, plain or percent-encoded in any case. */
const DOT_SEGMENT_REGEXP = /(?:^|\/)(?:\.|%2e){1,2}(?:\/|$)/i;

/**
 * Refuses a request path that a URL parser would rewrite: dot segments
 * (`.`, `..`, `%2e`, `.%2E`…), backslashes (read as `/` in http URLs), and
 * anything else that makes the parsed path differ from the raw one. Routing
 * and authorization then act on exactly the name the client sent.
 */
function checkPath(raw: string, parsed: string): void {
  if (DOT_SEGMENT_REGEXP.test(raw) || raw.includes("\\") || parsed !== raw) {
    throw new OciError("NAME_INVALID", "Request path with dot segments or escapes", {
      detail: { path: raw.slice(0, 300) },
    });
  }
}

/**
 * Checks the URL and Host before anything routes on them: over 8 KiB is a
 * 414; a Host header that is not a host (Deno builds `req.url` from it, so it
 * could change the path or fail to parse) is a 400; a path that parsing
 * would rewrite (dot segments, backslashes) is a 400 `NAME_INVALID`.
 */
export const checkUrl: Step = (ctx, next) => {
  const { req } = ctx;
  if (req.url.length > MAX_URL_LENGTH) {
    throw new OciError("UNSUPPORTED", `Request URL longer than ${MAX_URL_LENGTH} characters`, {
      status: 414,
    });
  }
  const host = req.headers.get("host");
  if (host !== null && !HOST_REGEXP.test(host)) {
    throw new OciError("UNSUPPORTED", "Invalid Host header", { status: 400 });
  }
  let url;
  try {
    url = new URL(req.url);
  } catch {
    throw new OciError("UNSUPPORTED", "Invalid Host header", { status: 400 });
  }
  checkPath(rawPath(req.url), url.pathname);
  ctx.url = url;
  return next();
};

/**
 * The one error path: anything thrown below becomes the spec's JSON error
 * (headers only for HEAD); an unread request body is cancelled; unknown
 * errors are logged once and become a 500 without internals.
 */
export function handleErrors(log: Logger): Step {
  return async (ctx, next) => {
    try {
      return await next();
    } catch (error) {
      const { req, id } = ctx;
      await discardBody(req);
      const oci = toOciError(error, (e) =>
        log.error("unhandled", {
          id,
          method: req.method,
          path: rawPath(req.url).slice(0, 500),
          error: e,
        }));
      if (oci.status === 507) {
        log.warn("disk full", { id, path: ctx.url?.pathname.slice(0, 300) ?? null });
      }
      return errorResponse(oci, req.method);
    }
  };
}

/** One JSON log line per request, and the request id on every response. */
export function logRequests(log: Logger): Step {
  return async (ctx, next) => {
    const response = await next();
    response.headers.set("X-Request-Id", ctx.id);
    const { req, url, route, remoteAddr } = ctx;
    log.info("request", {
      id: ctx.id,
      method: req.method,
      path: (url?.pathname ?? rawPath(req.url)).slice(0, 300),
      route: route?.name ?? null,
      remote: remoteAddr?.hostname ?? null,
      status: response.status,
      bytes: Number(response.headers.get("Content-Length") ?? 0),
      ms: Math.round((performance.now() - ctx.started) * 100) / 100,
    });
    return response;
  };
}
