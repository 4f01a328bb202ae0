/**
 * Request bodies with an idle timeout: a client that stops sending in the
 * middle of a body (slowloris) gets 408 after `--body-timeout`, and whatever it
 * sent is discarded, instead of holding a session and a file open forever.
 *
 * @module
 */

/** Raised when no body bytes arrived for the allowed time. */
export class BodyTimeoutError extends Error {
  constructor(readonly ms: number) {
    super(`No request body bytes for ${ms} ms`);
    this.name = "BodyTimeoutError";
  }
}

/** Raised for a request body that broke off (the client went away, a malformed chunk). */
export class BodyReadError extends Error {
  constructor(cause: unknown) {
    super(`The request body could not be read: ${(cause as Error)?.message ?? String(cause)}`, {
      cause,
    });
    this.name = "BodyReadError";
  }
}

/**
 * `req.body`, erroring with {@linkcode BodyTimeoutError} when idle for `ms`,
 * and with {@linkcode BodyReadError} when reading it fails. It takes hold of
 * `req.body` only when first read, so a request refused before its body is
 * read still has it cancelled (drained) by the error path, and its connection
 * serves on.
 */
export function requestBody(req: Request, ms: number): ReadableStream<Uint8Array> | null {
  const body = req.body;
  if (!body) return null;
  let reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      reader ??= body.getReader();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new BodyTimeoutError(ms)), ms);
      });
      try {
        const { done, value } = await Promise.race([reader.read(), timeout]);
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (error) {
        controller.error(error instanceof BodyTimeoutError ? error : new BodyReadError(error));
        await reader.cancel(error).catch(() => {});
      } finally {
        clearTimeout(timer);
      }
    },
    cancel(reason) {
      return reader ? reader.cancel(reason) : body.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/** Cancels a request body that will not be read. */
export async function discardBody(req: Request): Promise<void> {
  if (req.body && !req.bodyUsed) await req.body.cancel().catch(() => {});
}
