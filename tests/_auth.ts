/**
 * Test helpers for authentication: users files, policies, and a client that
 * speaks both Basic and the Docker token flow the way docker and containerd
 * do (try, read the challenge, fetch a token for its scope, retry).
 *
 * @module
 */
import { hashSync } from "bcryptjs";

/** Writes an htpasswd file of `users` (name → password), bcrypt cost 4 to keep tests quick. */
export async function writeUsers(path: string, users: Record<string, string>): Promise<void> {
  const lines = Object.entries(users).map(([name, password]) => `${name}:${hashSync(password, 4)}`);
  await Deno.writeTextFile(path, lines.join("\n") + "\n");
}

/** A caller: anonymous, a user name and password, or a raw `Authorization` value. */
export type Who = null | { user: string; password: string } | { authorization: string };

/** The parameters of a `WWW-Authenticate` challenge. */
export function parseChallenge(
  value: string | null,
): { scheme: string; params: Record<string, string> } | null {
  if (value === null) return null;
  const match = /^(\w+) (.*)$/.exec(value);
  if (!match) return null;
  const params: Record<string, string> = {};
  for (const [, key, val] of match[2]!.matchAll(/(\w+)="([^"]*)"/g)) params[key!] = val!;
  return { scheme: match[1]!, params };
}

/** The Basic `Authorization` value of a user and password. */
export function basic(user: string, password: string): string {
  return "Basic " + btoa(String.fromCharCode(...new TextEncoder().encode(`${user}:${password}`)));
}

/**
 * A registry client for one caller: sends a request; on a Bearer challenge
 * fetches a token from the realm for the challenge's scope (with the caller's
 * Basic credentials, or none) and sends it again, as docker does.
 */
export class AuthClient {
  readonly #tokens = new Map<string, string>();

  constructor(readonly base: string, readonly who: Who) {}

  #auth(): string | null {
    if (this.who === null) return null;
    if ("authorization" in this.who) return this.who.authorization;
    return basic(this.who.user, this.who.password);
  }

  /** Fetches a token for `scopes` from `realm`; null when the realm refuses. */
  async token(realm: string, service: string, scopes: string[]): Promise<string | null> {
    const url = new URL(realm);
    url.searchParams.set("service", service);
    for (const scope of scopes) url.searchParams.append("scope", scope);
    const auth = this.#auth();
    const res = await fetch(url, { headers: auth ? { Authorization: auth } : {} });
    const body = await res.json().catch(() => null);
    return res.ok ? body.token : null;
  }

  /**
   * Sends a request, following one Bearer challenge with a token as clients
   * do; `scopes` are asked for besides the challenge's (a mount's source).
   */
  async fetch(path: string, init: RequestInit = {}, scopes: string[] = []): Promise<Response> {
    const send = (authorization: string | null) => {
      const headers = new Headers(init.headers);
      if (authorization) headers.set("Authorization", authorization);
      const body = typeof init.body === "string" ? init.body : init.body ?? null;
      return fetch(this.base + path, { ...init, headers, body });
    };
    const cached = this.#tokens.get(path + init.method);
    const first = await send(cached ? `Bearer ${cached}` : this.#auth());
    const challenge = parseChallenge(first.headers.get("www-authenticate"));
    if (first.status !== 401 || challenge?.scheme !== "Bearer") return first;
    await first.body?.cancel();
    const token = await this.token(challenge.params.realm!, challenge.params.service!, [
      ...(challenge.params.scope ? [challenge.params.scope] : []),
      ...scopes,
    ]);
    if (token === null) return new Response(null, { status: first.status, headers: first.headers });
    this.#tokens.set(path + init.method, token);
    return await send(`Bearer ${token}`);
  }
}
