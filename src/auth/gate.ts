/**
 * The gate: who sent a request (from its `Authorization` header, in the
 * configured mode) and what that caller may do, as one object the pipeline
 * asks. HTTP-free apart from the challenges it writes into its errors.
 *
 * | mode | credentials read | rights |
 * | --- | --- | --- |
 * | none | none (everyone is anonymous) | the policy for anonymous, or everything without one |
 * | basic | Basic user:password against the htpasswd file | the policy for the user |
 * | token | a Bearer JWT from Berth's `/token` or an external issuer | the token's `access` claim, within the policy |
 *
 * Failed logins are throttled per address and per user; a throttled caller
 * gets 429 with `Retry-After` before any password is checked.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { AuthMode } from "../config.ts";
import { OciError } from "../oci/errors.ts";
import { parseAuthorization } from "./credentials.ts";
import { type Action, formatScope, type Scope } from "./scope.ts";
import { type Access, grants } from "./tokens.ts";

/** The users file, as the gate needs it. */
export interface UserStore {
  verify(user: string, password: string): Promise<boolean>;
  /** A short hash of the user's entry (changes with the password); null for no such user. */
  fingerprint(user: string): string | null;
}

/** A policy, as the gate needs it. */
export interface PolicyRules {
  allowed(user: string | null, repo: string): ReadonlySet<Action>;
}

/** Where the policy comes from: a file whose edits apply without a restart. */
export interface PolicySource {
  current(): Promise<PolicyRules>;
}

/** Verifies access tokens (Berth's own or an external issuer's). */
export interface TokenCheck {
  /** The token's subject ("" for anonymous) and access; throws when it is not valid. */
  verify(token: string): Promise<{ subject: string; access: Access }>;
}

/** Failed-login throttling, as the gate needs it. */
export interface Throttle {
  check(address: string, user: string | null): number;
  begin(address: string, credential: string): void;
  end(address: string, credential: string): void;
  failed(address: string, user: string | null): void;
  succeeded(address: string, user: string | null): void;
}

/** Who sent a request. */
export interface Identity {
  /** The user name; null for anonymous. */
  user: string | null;
  /** What a token grants (token mode); null without a token. */
  access: Access | null;
}

/** What the request's caller may do; handlers pass `can` to the registry (mounts, catalog). */
export interface Caller {
  readonly user: string | null;
  can(action: Action, repo: string): boolean;
  /** Whether the catalog shows `repo` to the caller (a token's catalog scope aside, by policy). */
  lists(repo: string): boolean;
}

/** Where a 401 should send the client: the request's host and scheme. */
export interface ChallengeTarget {
  host: string;
  https: boolean;
}

/** What the gate is built from. */
export interface GateOptions {
  mode: AuthMode;
  /** The users file (modes basic and token with Berth's own issuer). */
  users: UserStore | null;
  /** The policy; null means the default (authenticated: everything; anonymous: nothing). */
  policy: PolicySource | null;
  /** Verifies tokens (mode token). */
  tokens: TokenCheck | null;
  throttle: Throttle;
  /** The token service (audience), and the Basic realm. */
  service: string;
  /** A configured token realm; "" means Berth's own `/token` on the request's host. */
  realm: string;
  /** Whether Berth issues the tokens it accepts (then the policy is current and decides 401 vs 403). */
  ownIssuer: boolean;
}

const ALL: readonly Action[] = ["pull", "push", "delete"];
const ANYONE: PolicyRules = { allowed: () => new Set(ALL) };
const DEFAULT_POLICY: PolicyRules = { allowed: (user) => new Set(user === null ? [] : ALL) };

function tooMany(waitS: number): OciError {
  return new OciError("TOOMANYREQUESTS", "Too many failed logins; try again later", {
    headers: { "Retry-After": String(Math.ceil(waitS)) },
  });
}

function unauthorized(message: string, challenge: string): OciError {
  return new OciError("UNAUTHORIZED", message, { headers: { "WWW-Authenticate": challenge } });
}

/** The gate of one configuration. */
export class Gate {
  readonly #options: GateOptions;
  readonly #fallback: PolicyRules;

  constructor(options: GateOptions) {
    this.#options = options;
    this.#fallback = options.mode === "none" ? ANYONE : DEFAULT_POLICY;
  }

  /** The policy now (a file's edits apply without a restart). */
  async #policy(): Promise<PolicyRules> {
    return this.#options.policy ? await this.#options.policy.current() : this.#fallback;
  }

  get mode(): AuthMode {
    return this.#options.mode;
  }

  /** Whether Berth issues the tokens it accepts (mode token without an external issuer). */
  get ownIssuer(): boolean {
    return this.#options.mode === "token" && this.#options.ownIssuer;
  }

  /** The realm clients get tokens from. */
  realm(target: ChallengeTarget): string {
    return this.#options.realm || `${target.https ? "https" : "http"}://${target.host}/token`;
  }

  /**
   * The `WWW-Authenticate` value naming `scopes` (space separated in one
   * `scope`, as Distribution does for a mount's two repositories), and
   * `error` for a token that lacks them.
   */
  challenge(
    target: ChallengeTarget,
    scopes: readonly Scope[] = [],
    error?: "insufficient_scope",
  ): string {
    const { mode, service } = this.#options;
    if (mode === "basic") return `Basic realm="${service}",charset="UTF-8"`;
    let value = `Bearer realm="${this.realm(target)}",service="${service}"`;
    if (scopes.length > 0) value += `,scope="${scopes.map(formatScope).join(" ")}"`;
    if (error) value += `,error="${error}"`;
    return value;
  }

  /**
   * Checks a user name and password (throttled per address and user). Throws
   * 429 while throttled and 401 (with `challenge`) when they are wrong.
   */
  async login(address: string, user: string, password: string, challenge: string): Promise<void> {
    const { users, throttle } = this.#options;
    const wait = throttle.check(address, user);
    if (wait > 0) throw tooMany(wait);
    // The same user and password checked in parallel count once while in flight.
    const credential = createHash("sha256").update(JSON.stringify([user, password])).digest("hex");
    throttle.begin(address, credential);
    let ok;
    try {
      ok = users !== null && await users.verify(user, password);
    } finally {
      throttle.end(address, credential);
    }
    if (ok) {
      throttle.succeeded(address, user);
      return;
    }
    throttle.failed(address, user);
    throw unauthorized("Wrong user name or password", challenge);
  }

  /**
   * Who sent `req`: anonymous without credentials; throws 401 (with the
   * challenge naming `scopes`, what the request needs) for credentials that are wrong, malformed or of the other
   * mode's scheme, and 429 while the address or user is throttled.
   */
  async identify(
    req: Request,
    address: string,
    target: ChallengeTarget,
    scopes: readonly Scope[] = [],
  ): Promise<Identity> {
    const { mode, tokens, throttle } = this.#options;
    if (mode === "none") return { user: null, access: null };
    const credentials = parseAuthorization(req.headers.get("authorization"));
    const challenge = this.challenge(target, scopes);
    switch (credentials.scheme) {
      case "none":
        return { user: null, access: null };
      case "basic":
        if (mode !== "basic") break;
        await this.login(address, credentials.user, credentials.password, challenge);
        return { user: credentials.user, access: null };
      case "bearer": {
        if (mode !== "token" || !tokens) break;
        // A valid token passes whatever its address did; only failures meet the throttle.
        try {
          const { subject, access } = await tokens.verify(credentials.token);
          // Berth's own tokens end with their user: a removed user's are refused at once.
          const gone = this.#options.ownIssuer && subject !== "" &&
            this.#options.users?.fingerprint(subject) === null;
          if (!gone) return { user: subject === "" ? null : subject, access };
        } catch {
          // Refused below.
        }
        const wait = throttle.check(address, null);
        if (wait > 0) throw tooMany(wait);
        throttle.failed(address, null);
        throw unauthorized("Invalid or expired token", challenge);
      }
    }
    throw unauthorized("Credentials this registry does not accept", challenge);
  }

  /** What the policy grants `user` on `repo` now. */
  async allowed(user: string | null, repo: string): Promise<ReadonlySet<Action>> {
    return (await this.#policy()).allowed(user, repo);
  }

  /**
   * The rights of `identity`: the policy's for the user, and with a token
   * only what the token grants too. An external issuer's tokens without a
   * policy file are bounded by the token alone; there a request without a
   * token may do nothing.
   */
  async caller(identity: Identity): Promise<Caller> {
    const { user, access } = identity;
    const policy = await this.#policy();
    const tokenOnly = this.#options.mode === "token" && !this.#options.ownIssuer &&
      this.#options.policy === null;
    const byPolicy = (action: Action, repo: string) =>
      tokenOnly ? access !== null : policy.allowed(user, repo).has(action);
    return {
      user,
      can(action: Action, repo: string): boolean {
        if (access !== null && !grants(access, "repository", repo).has(action)) return false;
        return byPolicy(action, repo);
      },
      lists(repo: string): boolean {
        return byPolicy("pull", repo);
      },
    };
  }

  /** The 401 for an anonymous caller: a challenge naming `scopes` (none for the base endpoint). */
  authenticationRequired(target: ChallengeTarget, scopes: readonly Scope[] = []): OciError {
    return unauthorized("Authentication required", this.challenge(target, scopes));
  }

  /** The 401 for a token that lacks `scopes`: the client asks for a new one. */
  insufficientScope(target: ChallengeTarget, scopes: readonly Scope[]): OciError {
    return unauthorized(
      "The token does not grant this",
      this.challenge(target, scopes, "insufficient_scope"),
    );
  }

  /**
   * Whether a new token could grant `user` the `action` on `repo`: Berth's
   * own tokens if the policy grants it now; an external issuer's, maybe.
   */
  async couldGrant(user: string | null, action: Action, repo: string): Promise<boolean> {
    return !this.#options.ownIssuer || (await this.allowed(user, repo)).has(action);
  }

  /**
   * The error for `identity` lacking `need` on the repository of `scopes[0]`: 401 with a challenge
   * naming the scope when more credentials could help (anonymous, or a token
   * that lacks what the policy would grant), else 403 `DENIED`.
   */
  async refusal(
    identity: Identity,
    need: Action,
    scopes: readonly Scope[],
    target: ChallengeTarget,
  ): Promise<OciError> {
    // Anonymous, with or without an (anonymous) token: signing in may help.
    if (identity.user === null) return this.authenticationRequired(target, scopes);
    const repo = scopes[0]!.name;
    if (this.#options.mode === "token" && await this.couldGrant(identity.user, need, repo)) {
      return this.insufficientScope(target, scopes);
    }
    return new OciError("DENIED", "Not allowed", {
      detail: { repository: repo, actions: scopes[0]!.actions },
    });
  }
}
