/**
 * Builds the authentication of a configuration: reads the users file, the
 * policy and the token keys (each failure is one start-up line), and
 * returns the gate and, when Berth issues its own tokens, the issuer for
 * its `/token` endpoint.
 *
 * @module
 */
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { Gate, type TokenCheck } from "./gate.ts";
import { Htpasswd } from "./htpasswd.ts";
import { PolicyFile } from "./policy.ts";
import type { Scope } from "./scope.ts";
import { LoginThrottle } from "./throttle.ts";
import {
  loadSigningKey,
  loadVerifyKeys,
  type SigningKey,
  signingKeyFromSeed,
  verifyKeyFor,
} from "./token_keys.ts";
import {
  type Access,
  issueAccessToken,
  issueRefreshToken,
  TokenVerifier,
  verifyRefreshToken,
} from "./tokens.ts";
import type { TokenIssuing } from "../http/handlers/token.ts";

/** The key Berth signs its tokens with: `--token-key`, the KV secret (deploy) or `<data>/token-key.pem`. */
async function signingKey(
  config: Config,
  secrets: { secret(name: string): Promise<Uint8Array> } | undefined,
): Promise<SigningKey> {
  if (!config.deploy || config.tokenKey !== "") {
    return await loadSigningKey({ path: config.tokenKey, dataDir: config.data });
  }
  if (!secrets) throw new Error("Deploy mode keeps the token key in KV, and KV is not open");
  return await signingKeyFromSeed(await secrets.secret(TOKEN_KEY_SECRET));
}

/** How long a refresh token (docker's identity token, containerd's refresh) stays valid. */
export const REFRESH_TTL_MS = 7 * 24 * 3600_000;

/** The authentication of a running registry. */
export interface Auth {
  gate: Gate;
  /** Berth's own token issuing (mode token without an external issuer), else null. */
  issuer: TokenIssuing | null;
  /** A user's current password fingerprint (refresh tokens carry it). */
  fingerprint(user: string): string | null;
  /** Whether `fingerprint` is the user's current one, compared in constant time. */
  fingerprintMatches(user: string, fingerprint: string): boolean;
}

/** The name of the KV secret whose bytes seed the token key in deploy mode. */
export const TOKEN_KEY_SECRET = "token-key";

/**
 * Reads the files `config` names and builds its {@linkcode Auth}. Throws with a one-line
 * message. In deploy mode without `--token-key`, the signing key comes from the KV secret
 * {@linkcode TOKEN_KEY_SECRET} (made on first use, shared by every instance) through
 * `secrets`, instead of a file in the data directory.
 */
export async function openAuth(
  config: Config,
  log: Logger,
  secrets?: { secret(name: string): Promise<Uint8Array> },
): Promise<Auth> {
  const reloadFailed = (file: string) => (reason: string | Error) =>
    log.warn("file edit not applied; the previous version stays", {
      file,
      reason: reason instanceof Error ? reason.message : reason,
    });
  const users = config.htpasswd === ""
    ? null
    : await Htpasswd.open(config.htpasswd, { onError: reloadFailed(config.htpasswd) });
  const policy = config.policy === ""
    ? null
    : await PolicyFile.open(config.policy, { onError: reloadFailed(config.policy) });
  const { tokenIssuer: issuer, tokenService: service } = config;
  let tokens: TokenCheck | null = null;
  let issuing: TokenIssuing | null = null;
  if (config.auth === "token") {
    let verifier: TokenVerifier;
    if (config.tokenPublicKeys !== "") {
      const keys = await loadVerifyKeys(config.tokenPublicKeys, {
        onError: reloadFailed(config.tokenPublicKeys),
      });
      verifier = new TokenVerifier({ issuer, audience: service, keys });
    } else {
      const key = await signingKey(config, secrets);
      const keys = [verifyKeyFor(key)];
      verifier = new TokenVerifier({ issuer, audience: service, keys });
      const common = { issuer, service };
      issuing = {
        issue: (subject: string, access: Scope[]) =>
          issueAccessToken(key, {
            ...common,
            subject,
            access: access as Access,
            ttlMs: config.tokenTtlMs,
          }),
        issueRefresh: (subject: string, fingerprint: string) =>
          issueRefreshToken(key, { ...common, subject, fingerprint, ttlMs: REFRESH_TTL_MS }),
        verifyRefresh: (token: string) =>
          verifyRefreshToken(token, { issuer, audience: service, keys }),
      };
    }
    tokens = {
      async verify(token) {
        const verified = await verifier.verify(token);
        return { subject: verified.subject ?? "", access: verified.access };
      },
    };
  }
  const gate = new Gate({
    mode: config.auth,
    users,
    policy,
    tokens,
    throttle: new LoginThrottle(),
    service,
    realm: config.tokenRealm,
    ownIssuer: config.tokenPublicKeys === "",
  });
  return {
    gate,
    issuer: issuing,
    fingerprint: (user) => users?.fingerprint(user) ?? null,
    fingerprintMatches: (user, fingerprint) =>
      users?.fingerprintMatches(user, fingerprint) ?? false,
  };
}
