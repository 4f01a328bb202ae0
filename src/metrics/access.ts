/**
 * Who may read `/metrics`: the route's authorization step, in place of the
 * repository rules of `authorize` (the route names no repository).
 *
 * - Authentication off (mode none): anyone who reaches the port; by default
 *   that is loopback only.
 * - Authentication on: a signed-in user (Basic, or a Bearer token; in token
 *   mode Basic is accepted too, so a scraper needs no token flow) whom the
 *   policy lets `pull` the reserved name {@linkcode METRICS_REPOSITORY}.
 *   Without a policy file that is every user; with one, a rule names it
 *   (`{"repository": "_metrics", "who": ["group:metrics"], "allow": ["pull"]}`;
 *   rules for `**` cover it too). No valid credentials: 401 with the usual
 *   challenge; a user not allowed: 403 `DENIED`. Refusals are audited as
 *   `auth` lines like the other routes'.
 *
 * @module
 */
import { parseAuthorization } from "../auth/credentials.ts";
import type { ChallengeTarget, Gate } from "../auth/gate.ts";
import type { Step } from "../http/pipeline.ts";
import type { Logger } from "../log.ts";
import { OciError } from "../oci/errors.ts";

/**
 * The name the policy grants metrics under: no repository can have it (names
 * start with a letter or digit), and policy globs can name it.
 */
export const METRICS_REPOSITORY = "_metrics";

/** The caller of an open `/metrics`: may do nothing to repositories. */
const NOBODY = { user: null, can: () => false, lists: () => false };

/** The authorization step of the `/metrics` route. */
export function authorizeMetrics(gate: Gate, log: Logger, https: boolean): Step {
  const audit = (ctx: Parameters<Step>[0], user: string | null, result: string) =>
    log.info("auth", {
      id: ctx.id,
      user,
      remote: ctx.remoteAddr?.hostname ?? null,
      repository: null,
      action: "metrics",
      result,
    });
  return async (ctx, next) => {
    if (gate.mode === "none") {
      ctx.caller = NOBODY;
      return await next();
    }
    const target: ChallengeTarget = { host: ctx.url!.host, https };
    const address = ctx.remoteAddr?.hostname ?? "unknown";
    const claimed = parseAuthorization(ctx.req.headers.get("authorization"));
    let user: string | null;
    try {
      if (claimed.scheme === "basic" && gate.mode === "token") {
        await gate.login(address, claimed.user, claimed.password, gate.challenge(target));
        user = claimed.user;
      } else {
        user = (await gate.identify(ctx.req, address, target)).user;
      }
    } catch (error) {
      const result = error instanceof OciError && error.status === 429 ? "throttled" : "refused";
      audit(ctx, claimed.scheme === "basic" ? claimed.user : null, result);
      throw error;
    }
    if (user === null) {
      audit(ctx, null, "unauthenticated");
      throw gate.authenticationRequired(target);
    }
    if (!(await gate.allowed(user, METRICS_REPOSITORY)).has("pull")) {
      audit(ctx, user, "denied");
      throw new OciError("DENIED", "Not allowed to read metrics", {
        detail: { repository: METRICS_REPOSITORY, actions: ["pull"] },
      });
    }
    ctx.caller = await gate.caller({ user, access: null });
    return await next();
  };
}
