/**
 * Reading the `Authorization` header, whatever a client (or an attacker)
 * puts in it: Basic user and password, a Bearer token, nothing, or garbage.
 * Bounded: a header over {@linkcode MAX_AUTHORIZATION_LENGTH} is garbage too.
 *
 * @module
 */

/** Longest `Authorization` header read (a token is at most 8 KiB). */
export const MAX_AUTHORIZATION_LENGTH = 12 * 1024;

/** What an `Authorization` header holds. */
export type Credentials =
  | { scheme: "none" }
  | { scheme: "basic"; user: string; password: string }
  | { scheme: "bearer"; token: string }
  | { scheme: "invalid" };

const BASE64_REGEXP = /^[A-Za-z0-9+/]+={0,2}$/;
const TOKEN_REGEXP = /^[A-Za-z0-9._~+/-]+=*$/;
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Decodes Basic credentials (`base64(user:password)`), null when malformed. */
function basic(encoded: string): Credentials | null {
  if (!BASE64_REGEXP.test(encoded) || encoded.length % 4 !== 0) return null;
  let text;
  try {
    text = decoder.decode(Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0)));
  } catch {
    return null;
  }
  const colon = text.indexOf(":");
  // A user name has no control characters; the password is anything after the first colon.
  // deno-lint-ignore no-control-regex -- control characters are what is refused
  if (colon <= 0 || /[\x00-\x1f\x7f]/.test(text.slice(0, colon))) return null;
  return { scheme: "basic", user: text.slice(0, colon), password: text.slice(colon + 1) };
}

/**
 * Reads an `Authorization` header value (null when absent). Several headers
 * (joined with `, `), unknown schemes, bad base64 and oversize values are
 * `invalid`, never an exception.
 */
export function parseAuthorization(header: string | null): Credentials {
  if (header === null) return { scheme: "none" };
  if (header.length > MAX_AUTHORIZATION_LENGTH) return { scheme: "invalid" };
  const match = /^([A-Za-z]+) +(\S+)$/.exec(header.trim());
  if (!match) return { scheme: "invalid" };
  const scheme = match[1]!.toLowerCase();
  const value = match[2]!;
  if (scheme === "basic") return basic(value) ?? { scheme: "invalid" };
  if (scheme === "bearer" && TOKEN_REGEXP.test(value)) return { scheme: "bearer", token: value };
  return { scheme: "invalid" };
}
