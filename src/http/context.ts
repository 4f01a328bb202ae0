/**
 * What a request carries through the pipeline: the request, its id, the
 * client's address, the parsed URL (once checked) and the matched route.
 *
 * @module
 */
import type { Caller } from "../auth/gate.ts";
import type { MatchedRoute } from "./router.ts";

/** One request on its way through the pipeline. */
export interface RequestContext {
  readonly req: Request;
  /** The request id (also sent as `X-Request-Id`). */
  readonly id: string;
  /** The client's address (behind the connection guard too); null when unknown (tests). */
  readonly remoteAddr: Deno.NetAddr | null;
  /** `performance.now()` when the request arrived. */
  readonly started: number;
  /** The checked URL: null until the URL step has parsed it. */
  url: URL | null;
  /** The route that matched (name, template, parameters, handler), set by `findRoute`. */
  route: MatchedRoute | null;
  /** Who is asking and what they may do, set by the authorization step. */
  caller: Caller | null;
}

/** A context whose URL has been checked and caller found: what route handlers get. */
export type RouteContext = RequestContext & { url: URL; caller: Caller };
