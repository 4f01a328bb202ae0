/**
 * The authorization step: after the router has matched a route and before
 * its handler runs, finds who is asking (the gate) and checks that they may
 * do what the route does to the repository it names. One table,
 * {@linkcode ROUTE_NEEDS}, says what every route needs; a route missing from
 * it is refused (fail closed).
 *
 * Every decision that refuses, or grants something other than `pull`, is one
 * `auth` log line: who, address, repository, action, result. Never a
 * password, token or `Authorization` header.
 *
 * @module
 */
import { type Caller, type ChallengeTarget, Gate, type Identity } from "../auth/gate.ts";
import { parseAuthorization } from "../auth/credentials.ts";
import type { Action, Scope } from "../auth/scope.ts";
import { grants } from "../auth/tokens.ts";
import type { Logger } from "../log.ts";
import { OciError } from "../oci/errors.ts";
import { NAME_REGEXP, parseName } from "../oci/name.ts";
import type { Step } from "./pipeline.ts";

/** What a route needs: nothing, a signed-in caller, the catalog scope, or an action on its repository. */
export type Need = "public" | "signed-in" | "catalog" | Action;

/** What every route needs. */
export const ROUTE_NEEDS: Readonly<Record<string, Need>> = {
  healthz: "public",
  readyz: "public",
  token: "public",
  base: "signed-in",
  catalog: "catalog",
  "tags.list": "pull",
  "manifest.get": "pull",
  "manifest.head": "pull",
  "blob.get": "pull",
  "blob.head": "pull",
  referrers: "pull",
  "upload.start": "push",
  "upload.status": "push",
  "upload.patch": "push",
  "upload.finish": "push",
  "upload.cancel": "push",
  "manifest.put": "push",
  "manifest.delete": "delete",
  "blob.delete": "delete",
};

/** The caller of public routes: may do nothing. */
const NOBODY: Caller = { user: null, can: () => false, lists: () => false };

/** The scope a 401 names for `need` on `repo` (pushing clients ask for pull too, as Docker does). */
function scopeOf(need: Action, repo: string): Scope {
  return { type: "repository", name: repo, actions: need === "push" ? ["pull", "push"] : [need] };
}

const CATALOG: Scope = { type: "registry", name: "catalog", actions: ["*"] };

/**
 * The source repository of a mount (`POST …/blobs/uploads/?mount=…&from=…`),
 * which needs `pull` too; null for other requests and names that do not
 * parse (the handler refuses those).
 */
function mountSource(ctx: Parameters<Step>[0], repo: string | null): string | null {
  if (ctx.route!.name !== "upload.start") return null;
  const params = ctx.url!.searchParams;
  const from = params.get("from");
  if (from === null || !params.has("mount") || from === repo || !NAME_REGEXP.test(from)) {
    return null;
  }
  return from;
}

/** The authorization step for `gate`. */
export function authorize(gate: Gate, log: Logger, https: boolean): Step {
  const audit = (
    ctx: Parameters<Step>[0],
    user: string | null,
    repo: string | null,
    action: string,
    result: string,
  ) =>
    log.info("auth", {
      id: ctx.id,
      user,
      remote: ctx.remoteAddr?.hostname ?? null,
      repository: repo,
      action,
      result,
    });
  return async (ctx, next) => {
    const route = ctx.route!;
    const need = ROUTE_NEEDS[route.name];
    if (need === undefined) throw new Error(`route ${route.name} has no authorization rule`);
    if (need === "public") {
      ctx.caller = NOBODY;
      return await next();
    }
    const repo = route.params.name === undefined ? null : parseName(route.params.name);
    const target: ChallengeTarget = { host: ctx.url!.host, https };
    const address = ctx.remoteAddr?.hostname ?? "unknown";
    const source = mountSource(ctx, repo);
    const scopes: Scope[] = need === "catalog"
      ? [CATALOG]
      : need === "signed-in"
      ? []
      : [scopeOf(need, repo!), ...(source === null ? [] : [scopeOf("pull", source)])];
    let identity: Identity;
    try {
      identity = await gate.identify(ctx.req, address, target, scopes);
    } catch (error) {
      const claimed = parseAuthorization(ctx.req.headers.get("authorization"));
      const result = error instanceof OciError && error.status === 429 ? "throttled" : "refused";
      audit(ctx, claimed.scheme === "basic" ? claimed.user : null, repo, need, result);
      throw error;
    }
    ctx.caller = await gate.caller(identity);
    const anonymous = identity.user === null && identity.access === null;
    if (need === "signed-in" || need === "catalog") {
      if (gate.mode !== "none" && anonymous) {
        audit(ctx, null, null, need, "unauthenticated");
        throw gate.authenticationRequired(target, scopes);
      }
      const catalogInToken = identity.access === null ||
        grants(identity.access, "registry", "catalog").has("*");
      if (need === "catalog" && !catalogInToken) {
        audit(ctx, identity.user, null, need, "denied");
        throw gate.insufficientScope(target, scopes);
      }
      return await next();
    }
    if (!ctx.caller.can(need, repo!)) {
      audit(ctx, identity.user, repo, need, anonymous ? "unauthenticated" : "denied");
      throw await gate.refusal(identity, need, scopes, target);
    }
    // A mount's source: a token of Berth's own that never asked for it may get it (else the
    // handler uploads, revealing nothing about the source). An external issuer may leave a
    // denied scope out of its tokens altogether, so there the handler just uploads.
    const asked = identity.access?.some((s) => s.type === "repository" && s.name === source);
    if (
      source !== null && identity.access !== null && !asked && gate.ownIssuer &&
      !ctx.caller.can("pull", source) && await gate.couldGrant(identity.user, "pull", source)
    ) {
      audit(ctx, identity.user, source, "pull", "denied");
      throw gate.insufficientScope(target, scopes);
    }
    if (need !== "pull") audit(ctx, identity.user, repo, need, "granted");
    return await next();
  };
}
