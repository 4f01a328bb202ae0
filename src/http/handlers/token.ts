/**
 * The token endpoint of the Docker registry token flow (the `realm` of
 * Berth's Bearer challenges), served when Berth issues its own tokens:
 *
 * - `GET /token?service=…&scope=…&scope=…` with Basic credentials, or none
 *   for an anonymous token; `offline_token=true` adds a refresh token.
 * - `POST /token`, the OAuth2 form containerd tries first:
 *   `grant_type=password` (`username`, `password`) or
 *   `grant_type=refresh_token` (`refresh_token`), with `scope` (space
 *   separated) and `service`; `access_type=offline` adds a refresh token.
 *
 * A token's `access` holds only what the policy grants of what was asked.
 * Wrong credentials get 401 (throttled: 429); a refresh token stops working
 * when its user's password changes or the user is removed.
 *
 * @module
 */
import type { Gate } from "../../auth/gate.ts";
import { parseAuthorization } from "../../auth/credentials.ts";
import { type Action, MAX_SCOPES, parseScope, type Scope } from "../../auth/scope.ts";
import { OciError } from "../../oci/errors.ts";
import { NAME_REGEXP } from "../../oci/name.ts";
import type { RouteContext } from "../context.ts";
import { readLimited } from "../../storage/streams.ts";
import { requestBody } from "../body.ts";
import { json } from "../respond.ts";
import { type Route, route } from "../router.ts";

/** A signed token and the fields of the token response. */
export interface IssuedToken {
  token: string;
  expiresIn: number;
  issuedAt: string;
}

/** Issuing Berth's tokens, as the endpoint needs it. */
export interface TokenIssuing {
  issue(subject: string, access: Scope[]): Promise<IssuedToken>;
  issueRefresh(subject: string, fingerprint: string): Promise<IssuedToken>;
  /** The refresh token's user and fingerprint; throws when it is not valid. */
  verifyRefresh(token: string): Promise<{ subject: string; fingerprint: string }>;
}

/** What the token endpoint is built from. */
export interface TokenDeps {
  gate: Gate;
  issuer: TokenIssuing;
  /** The current fingerprint of a user's password entry, null for no such user. */
  fingerprint(user: string): string | null;
  /** Whether `fingerprint` is the user's current one, compared in constant time. */
  fingerprintMatches(user: string, fingerprint: string): boolean;
  service: string;
  bodyTimeoutMs: number;
  /** Records a decision that refused or granted more than pull. */
  audit(entry: { user: string | null; remote: string | null; scope: string; result: string }): void;
}

/** Largest POST form read. */
const MAX_FORM_BYTES = 16 * 1024;

const bad = (message: string) => new OciError("UNSUPPORTED", message, { status: 400 });

/** Token routes. */
export function tokenRoutes(deps: TokenDeps): Route[] {
  const { gate, issuer, service } = deps;

  /** What the policy grants `user` of the scopes asked for. */
  const grant = async (user: string | null, asked: string[]): Promise<Scope[]> => {
    const granted: Scope[] = [];
    for (const text of asked.slice(0, MAX_SCOPES)) {
      const scope = parseScope(text);
      if (scope === null) continue;
      if (scope.type === "registry") {
        if (scope.name === "catalog" && user !== null) granted.push({ ...scope, actions: ["*"] });
        continue;
      }
      if (!NAME_REGEXP.test(scope.name)) continue;
      const allowed = await gate.allowed(user, scope.name);
      const wanted = scope.actions.includes("*") ? ["pull", "push", "delete"] : scope.actions;
      const actions = wanted.filter((a) => allowed.has(a as Action));
      granted.push({ type: "repository", name: scope.name, actions });
    }
    return granted;
  };

  const respond = async (
    ctx: RouteContext,
    user: string | null,
    asked: string[],
    offline: boolean,
  ) => {
    const access = await grant(user, asked);
    const remote = ctx.remoteAddr?.hostname ?? null;
    for (const scope of access) {
      if (scope.actions.some((a) => a !== "pull")) {
        deps.audit({
          user,
          remote,
          scope: `${scope.type}:${scope.name}:${scope.actions}`,
          result: "granted",
        });
      }
    }
    const issued = await issuer.issue(user ?? "", access).catch((error) => {
      // Scopes whose token would pass the 8 KiB bound.
      if (error instanceof RangeError) throw bad("Too many or too long scopes for one token");
      throw error;
    });
    const body: Record<string, unknown> = {
      token: issued.token,
      access_token: issued.token,
      expires_in: issued.expiresIn,
      issued_at: issued.issuedAt,
    };
    const fingerprint = user === null ? null : deps.fingerprint(user);
    if (offline && user !== null && fingerprint !== null) {
      body.refresh_token = (await issuer.issueRefresh(user, fingerprint)).token;
    }
    return json(body, { headers: { "Cache-Control": "no-store" } });
  };

  const checkService = (value: string | null) => {
    if (value !== null && value !== service) throw bad(`Unknown service; this is "${service}"`);
  };

  const address = (ctx: RouteContext) => ctx.remoteAddr?.hostname ?? "unknown";
  const basicChallenge = `Basic realm="${service}",charset="UTF-8"`;
  /** Checks a password, recording a refusal in the audit log. */
  const login = async (ctx: RouteContext, user: string, password: string) => {
    try {
      await gate.login(address(ctx), user, password, basicChallenge);
    } catch (error) {
      const throttled = error instanceof OciError && error.status === 429;
      const remote = ctx.remoteAddr?.hostname ?? null;
      deps.audit({ user, remote, scope: "login", result: throttled ? "throttled" : "refused" });
      throw error;
    }
  };

  return [
    route("token", "GET /token", async (ctx) => {
      const { url, req } = ctx;
      checkService(url.searchParams.get("service"));
      const credentials = parseAuthorization(req.headers.get("authorization"));
      let user: string | null = null;
      if (credentials.scheme === "basic") {
        await login(ctx, credentials.user, credentials.password);
        user = credentials.user;
      } else if (credentials.scheme !== "none") {
        throw new OciError("UNAUTHORIZED", "The token endpoint takes Basic credentials", {
          headers: { "WWW-Authenticate": basicChallenge },
        });
      }
      const asked = url.searchParams.getAll("scope").flatMap((s) => s.split(" "));
      return await respond(ctx, user, asked, url.searchParams.get("offline_token") === "true");
    }),
    route("token", "POST /token", async (ctx) => {
      const type = ctx.req.headers.get("content-type") ?? "";
      if (!/^application\/x-www-form-urlencoded\b/i.test(type)) {
        throw bad("POST /token takes an application/x-www-form-urlencoded form");
      }
      const form = new URLSearchParams(
        new TextDecoder().decode(
          await readLimited(requestBody(ctx.req, deps.bodyTimeoutMs), MAX_FORM_BYTES),
        ),
      );
      checkService(form.get("service"));
      const asked = (form.get("scope") ?? "").split(" ").filter((s) => s !== "");
      const offline = form.get("access_type") === "offline";
      const grantType = form.get("grant_type");
      if (grantType === "password") {
        const user = form.get("username") ?? "";
        await login(ctx, user, form.get("password") ?? "");
        return await respond(ctx, user, asked, offline);
      }
      if (grantType === "refresh_token") {
        const user = await refreshUser(deps, form.get("refresh_token") ?? "", address(ctx));
        return await respond(ctx, user, asked, true);
      }
      throw bad("grant_type must be password or refresh_token");
    }),
  ];
}

/** The user of a valid refresh token whose password is unchanged; else 401. */
async function refreshUser(deps: TokenDeps, token: string, address: string): Promise<string> {
  try {
    const { subject, fingerprint } = await deps.issuer.verifyRefresh(token);
    if (deps.fingerprintMatches(subject, fingerprint)) return subject;
  } catch {
    // Refused below, as a wrong password is.
  }
  deps.audit({ user: null, remote: address, scope: "refresh_token", result: "refused" });
  throw new OciError("UNAUTHORIZED", "Invalid or expired refresh token", {
    headers: { "WWW-Authenticate": `Basic realm="${deps.service}",charset="UTF-8"` },
  });
}
