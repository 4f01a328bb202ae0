/**
 * Query parameters: the one place that reads them, so each is validated the
 * same way on every endpoint.
 *
 * @module
 */
import { type ErrorCode, OciError } from "../oci/errors.ts";

/** Longest `last` cursor accepted: a longer one would make a KV key over 2 KiB. */
export const MAX_LAST_LENGTH = 512;

/** The single value of a query parameter; a repeated one is refused (it would be ambiguous). */
export function singleParam(
  url: URL,
  key: string,
  code: ErrorCode = "UNSUPPORTED",
): string | undefined {
  const values = url.searchParams.getAll(key);
  if (values.length > 1) {
    throw new OciError(code, `Query parameter "${key}" may be given once`, { status: 400 });
  }
  return values[0];
}

/** The page size `n` of a listing, if given (the registry caps it). */
export function parsePageSize(url: URL): number | undefined {
  const raw = singleParam(url, "n", "PAGINATION_NUMBER_INVALID");
  if (raw === undefined) return undefined;
  if (!/^[0-9]{1,9}$/.test(raw)) {
    throw new OciError(
      "PAGINATION_NUMBER_INVALID",
      `Invalid n "${raw.slice(0, 50)}": expected a whole number`,
      { detail: { n: raw.slice(0, 50) } },
    );
  }
  return Number(raw);
}

/** The `last` cursor of a listing, if given. */
export function parseLast(url: URL): string | undefined {
  const last = singleParam(url, "last", "PAGINATION_NUMBER_INVALID");
  if (last !== undefined && last.length > MAX_LAST_LENGTH) {
    throw new OciError(
      "PAGINATION_NUMBER_INVALID",
      `last may be at most ${MAX_LAST_LENGTH} characters`,
    );
  }
  return last;
}
