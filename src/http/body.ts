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

/** Bytes a default (non-BYOB) reader of {@linkcode requestBody} gets per read at most. */
const AUTO_CHUNK_BYTES = 64 * 1024;

/**
 * `req.body`, erroring with {@linkcode BodyTimeoutError} when idle for `ms`,
 * and with {@linkcode BodyReadError} when reading it fails. It takes hold of
 * `req.body` only when first read, so a request refused before its body is
 * read still has it cancelled (drained) by the error path, and its connection
 * serves on.
 *
 * It is a byte stream: a BYOB reader (the upload path's `writeBody`) has the
 * request's bytes read straight into its own buffers, with nothing allocated
 * per chunk; a default reader gets chunks of up to 64 KiB.
 */
export function requestBody(req: Request, ms: number): ReadableStream<Uint8Array> | null {
  const body = req.body;
  if (!body) return null;
  let byob: ReadableStreamBYOBReader | null = null;
  let plain: ReadableStreamDefaultReader<Uint8Array> | null = null;
  const read = async (view: Uint8Array): Promise<ReadableStreamReadResult<Uint8Array>> => {
    if (!byob && !plain) {
      try {
        byob = body.getReader({ mode: "byob" });
      } catch {
        plain = body.getReader();
      }
    }
    if (byob) return await byob.read(view);
    for (;;) {
      const result = await plain!.read();
      if (result.done || result.value.length > 0) return result; // skip empty chunks
    }
  };
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: AUTO_CHUNK_BYTES,
    async pull(controller: ReadableByteStreamController) {
      const request = controller.byobRequest!;
      const view = request.view as Uint8Array;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new BodyTimeoutError(ms)), ms);
      });
      try {
        const { done, value } = await Promise.race([read(view), timeout]);
        if (byob) {
          // The read transferred the view's buffer: hand the same memory back.
          if (done) controller.close();
          request.respondWithNewView(value as Uint8Array<ArrayBuffer>);
        } else if (done) {
          controller.close();
          request.respondWithNewView(new Uint8Array(view.buffer, view.byteOffset, 0));
        } else if (value!.length <= view.length) {
          view.set(value!);
          request.respond(value!.length);
        } else {
          controller.enqueue(value as Uint8Array<ArrayBuffer>);
        }
      } catch (error) {
        controller.error(error instanceof BodyTimeoutError ? error : new BodyReadError(error));
        await (byob ?? plain ?? body).cancel(error).catch(() => {});
      } finally {
        clearTimeout(timer);
      }
    },
    cancel(reason) {
      return (byob ?? plain ?? body).cancel(reason);
    },
  });
}

/** Cancels a request body that will not be read. */
export async function discardBody(req: Request): Promise<void> {
  if (req.body && !req.bodyUsed) await req.body.cancel().catch(() => {});
}
