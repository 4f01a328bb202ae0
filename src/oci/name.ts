/**
 * Repository names and tags (spec §Pulling manifests).
 *
 * @module
 */
import { OciError } from "./errors.ts";

/** The spec's repository name grammar. */
export const NAME_REGEXP =
  /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;

/** The spec's tag grammar (at most 128 characters). */
export const TAG_REGEXP = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

/**
 * Longest repository name accepted. Distribution's limit; clients cap
 * `host[:port]/name` at 255, so keep names nearer 230 for portability.
 */
export const MAX_NAME_LENGTH = 255;

function shorten(value: string): string {
  return value.length > 300 ? value.slice(0, 300) + "…" : value;
}

/**
 * Validates a repository name, throwing `NAME_INVALID` (400).
 *
 * @example
 * ```ts
 * import { parseName } from "./name.ts";
 * parseName("library/busybox");
 * ```
 */
export function parseName(value: string): string {
  if (value.length > MAX_NAME_LENGTH) {
    throw new OciError(
      "NAME_INVALID",
      `Invalid repository name: longer than ${MAX_NAME_LENGTH} characters`,
      { detail: { name: shorten(value) } },
    );
  }
  if (!NAME_REGEXP.test(value)) {
    throw new OciError("NAME_INVALID", `Invalid repository name "${shorten(value)}"`, {
      detail: { name: shorten(value) },
    });
  }
  return value;
}

/** Whether `value` is a valid tag. */
export function isTag(value: string): boolean {
  return TAG_REGEXP.test(value);
}

/** Validates a tag, throwing `TAG_INVALID` (400). */
export function parseTag(value: string): string {
  if (isTag(value)) return value;
  throw new OciError("TAG_INVALID", `Invalid tag "${shorten(value)}"`, {
    detail: { tag: shorten(value) },
  });
}
