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

/** `req.body`, erroring with {@linkcode BodyTimeoutError} when idle for `ms`. */
export function requestBody(req: Request, ms: number): ReadableStream<Uint8Array> | null {
  const body = req.body;
  if (!body) return null;
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new BodyTimeoutError(ms)), ms);
      });
      try {
        const { done, value } = await Promise.race([reader.read(), timeout]);
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (error) {
        controller.error(error);
        await reader.cancel(error).catch(() => {});
      } finally {
        clearTimeout(timer);
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/** Cancels a request body that will not be read. */
export async function discardBody(req: Request): Promise<void> {
  if (req.body && !req.bodyUsed) await req.body.cancel().catch(() => {});
}
