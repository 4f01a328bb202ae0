/**
 * The one table of error codes and the one error class. Every failure a client
 * can see is an {@linkcode OciError}; `src/http/respond.ts` turns it into the
 * spec's `{"errors":[{code,message,detail}]}` body.
 *
 * The first fourteen codes are the spec's (§Error Codes). The rest are the
 * Distribution extras real clients already know (registry/api/errcode), used
 * only where none of the fourteen fits.
 *
 * @module
 */

/** Default HTTP status of every code (Distribution's, the de-facto standard). */
export const ERROR_STATUS = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  // The extensions spec's code for an unknown `/v2/_<ext>/…` path.
  EXTENSION_UNKNOWN: 404,
  // Distribution extras.
  TAG_INVALID: 400,
  PAGINATION_NUMBER_INVALID: 400,
  RANGE_INVALID: 416,
  UNAVAILABLE: 503,
  UNKNOWN: 500,
} as const;

/** An error code from {@linkcode ERROR_STATUS}. */
export type ErrorCode = keyof typeof ERROR_STATUS;

/** Options of an {@linkcode OciError}. */
export interface OciErrorOptions {
  /** Overrides the code's default status (416 for a chunk out of order, 413 for a large manifest). */
  status?: number;
  /** Any JSON, sent as `detail`. */
  detail?: unknown;
  /** Extra response headers (`Retry-After`, `Allow`, `Range`). */
  headers?: Record<string, string>;
}

/** A failure the client is told about, with a spec error code. */
export class OciError extends Error {
  readonly code: ErrorCode;
  readonly options: OciErrorOptions;

  constructor(code: ErrorCode, message: string, options: OciErrorOptions = {}) {
    super(message);
    this.name = "OciError";
    this.code = code;
    this.options = options;
  }

  /** The HTTP status to answer with. */
  get status(): number {
    return this.options.status ?? ERROR_STATUS[this.code];
  }
}
