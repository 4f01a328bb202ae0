/**
 * Docker token-flow scopes (`repository:team/app:pull,push`,
 * `registry:catalog:*`): parsing what a client asks for, and writing what a
 * request needed into a challenge.
 *
 * @module
 */

/** What a caller may do to a repository. */
export type Action = "pull" | "push" | "delete";

/** Every action, in the order scopes list them. */
export const ACTIONS: readonly Action[] = ["pull", "push", "delete"];

/** One requested or granted scope: Docker's `access` claim entry. */
export interface Scope {
  type: "repository" | "registry";
  name: string;
  actions: string[];
}

/** Most scopes one token request may name; more are ignored. */
export const MAX_SCOPES = 64;

const NAME_REGEXP = /^[A-Za-z0-9._\/:-]{1,256}$/;

/**
 * Parses one scope string. The name may hold a `:` (a host with a port), so
 * the type is before the first colon and the actions after the last. Unknown
 * types and malformed scopes give null (the token endpoint skips them, as
 * Distribution does).
 */
export function parseScope(value: string): Scope | null {
  const first = value.indexOf(":");
  const last = value.lastIndexOf(":");
  if (first <= 0 || last === first) return null;
  const type = value.slice(0, first);
  const name = value.slice(first + 1, last);
  const actions = value.slice(last + 1).split(",").filter((a) => a !== "");
  if ((type !== "repository" && type !== "registry") || !NAME_REGEXP.test(name)) return null;
  if (actions.length === 0 || actions.length > 8) return null;
  return { type, name, actions: [...new Set(actions)] };
}

/** Writes a scope the way clients send it: `repository:name:pull,push`. */
export function formatScope(scope: Scope): string {
  return `${scope.type}:${scope.name}:${scope.actions.join(",")}`;
}
