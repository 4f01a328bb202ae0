/**
 * Response helpers and the only function that writes `{"errors":[...]}`.
 *
 * @module
 */
import { OciError } from "../oci/errors.ts";
import { ContentionError, isLockedError } from "../meta/kv.ts";
import { takeFile, TooLargeError } from "../storage/streams.ts";
import { BodyReadError, BodyTimeoutError } from "./body.ts";
import { canHandOff, handOffFile } from "./conn_guard.ts";

/** A JSON response. */
export function json(
  body: unknown,
  init: { status?: number; headers?: HeadersInit } = {},
): Response {
  const headers = new Headers(init.headers);
  headers.set("Content-Type", headers.get("Content-Type") ?? "application/json");
  const bytes = new TextEncoder().encode(JSON.stringify(body));
  headers.set("Content-Length", String(bytes.length));
  return new Response(bytes, { status: init.status ?? 200, headers });
}

/**
 * A response to `req` with `body`. A file's stream on a connection where the
 * connection guard can write the file itself is handed to it (no copy through
 * the internal server and the relay); anything else is streamed.
 */
export function streamResponse(
  req: Request,
  body: ReadableStream<Uint8Array>,
  init: { status?: number; headers: HeadersInit },
): Response {
  if (req.method === "GET" && canHandOff(req)) {
    const file = takeFile(body);
    if (file) return handOffFile(req, file, init);
  }
  return new Response(body, init);
}

/** Whether an error means the disk is full or over quota: by its errno code. */
function isNoSpace(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === "ENOSPC" || code === "EDQUOT") return true;
  // Deno 2.9.6 gives some write errors no code; its message then names the errno.
  return error instanceof Error && code === undefined &&
    /No space left on device|Disk quota exceeded|\(os error (28|122)\)/i.test(error.message);
}

/** Maps anything thrown to an {@linkcode OciError}; unknown errors go to `log` once. */
export function toOciError(error: unknown, log: (error: unknown) => void): OciError {
  if (error instanceof OciError) return error;
  if (error instanceof TooLargeError) {
    return new OciError("SIZE_INVALID", `Body larger than the limit of ${error.limit} bytes`, {
      status: 413,
    });
  }
  if (error instanceof BodyTimeoutError) {
    return new OciError("BLOB_UPLOAD_INVALID", `Request body stalled: ${error.message}`, {
      status: 408,
    });
  }
  if (error instanceof ContentionError || isLockedError(error)) {
    // Many writers racing for one repository, or KV busy past its retries: this request's
    // change did not complete (each commit is whole); the client may retry.
    return new OciError("UNAVAILABLE", "Too many concurrent changes; try again", {
      status: 503,
      headers: { "Retry-After": "1" },
    });
  }
  if (isNoSpace(error)) {
    return new OciError("UNAVAILABLE", "Storage is full; nothing was stored", { status: 507 });
  }
  // Only errors raised while reading the request body (`requestBody` wraps them) are the
  // client's doing; the same classes raised elsewhere are faults of ours and stay 500s.
  if (error instanceof BodyReadError || (error as Error | null)?.name === "AbortError") {
    return new OciError("BLOB_UPLOAD_INVALID", "The request body ended before it was complete");
  }
  log(error);
  return new OciError("UNKNOWN", "Internal error", { status: 500 });
}

/**
 * The spec's error response for `error`. HEAD answers carry the status and
 * headers with no body.
 */
export function errorResponse(error: OciError, method = "GET"): Response {
  const headers = new Headers(error.options.headers);
  const body: Record<string, unknown> = { code: error.code, message: error.message };
  if (error.options.detail !== undefined) body.detail = error.options.detail;
  if (error.status === 429 && !headers.has("Retry-After")) headers.set("Retry-After", "1");
  if (method === "HEAD") return new Response(null, { status: error.status, headers });
  return json({ errors: [body] }, { status: error.status, headers });
}
