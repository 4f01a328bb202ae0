/**
 * The two hot loops of the registry, arranged as measured on Deno 2.9.6:
 * request bodies gathered into ~256 KiB buffers, each hashed with
 * `node:crypto` while the previous one is being written; files served with
 * reads of ~1 MiB. Never `tee()` a body.
 *
 * @module
 */
import type { Hash } from "node:crypto";

/** Size of the buffers a request body is gathered into. */
export const WRITE_BUFFER_BYTES = 256 * 1024;
/** Size of each read when serving a file. */
export const READ_BUFFER_BYTES = 1024 * 1024;

/** Raised when a body is longer than allowed. */
export class TooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`Body exceeds ${limit} bytes`);
    this.name = "TooLargeError";
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await file.write(bytes.subarray(written));
}

/**
 * Streams `body` into `file` through `hashes`, keeping one write in flight.
 * Returns the number of bytes written. Throws {@linkcode TooLargeError} past
 * `limit` bytes, and whatever the body or the disk throws.
 */
export async function writeBody(
  body: ReadableStream<Uint8Array>,
  file: Deno.FsFile,
  options: { hashes: Hash[]; limit?: number },
): Promise<number> {
  const { hashes, limit = Number.MAX_SAFE_INTEGER } = options;
  const reader = body.getReader();
  let buffer = new Uint8Array(WRITE_BUFFER_BYTES);
  let spare = new Uint8Array(WRITE_BUFFER_BYTES);
  let used = 0;
  let total = 0;
  let inFlight: Promise<void> | null = null;
  const flush = async (bytes: Uint8Array) => {
    for (const hash of hashes) hash.update(bytes);
    if (inFlight) await inFlight;
    inFlight = writeAll(file, bytes);
    inFlight.catch(() => {}); // awaited below; this only avoids an unhandled rejection meanwhile
  };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > limit) throw new TooLargeError(limit);
      let offset = 0;
      while (offset < value.length) {
        const n = Math.min(value.length - offset, buffer.length - used);
        buffer.set(value.subarray(offset, offset + n), used);
        used += n;
        offset += n;
        if (used === buffer.length) {
          await flush(buffer);
          [buffer, spare] = [spare, buffer];
          used = 0;
        }
      }
    }
    if (used > 0) await flush(buffer.subarray(0, used));
    if (inFlight) await inFlight;
    return total;
  } catch (error) {
    await reader.cancel().catch(() => {});
    if (inFlight) await (inFlight as Promise<void>).catch(() => {});
    throw error;
  } finally {
    reader.releaseLock();
  }
}

/**
 * A stream of `length` bytes of `file` from `start`, read 1 MiB at a time.
 * Closes the file when done or cancelled.
 */
export function fileStream(
  file: Deno.FsFile,
  start: number,
  length: number,
): ReadableStream<Uint8Array> {
  let remaining = length;
  let positioned = start === 0;
  let closed = false;
  const close = () => {
    if (!closed) {
      closed = true;
      file.close();
    }
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        if (!positioned) {
          await file.seek(start, Deno.SeekMode.Start);
          positioned = true;
        }
        if (remaining <= 0) {
          close();
          controller.close();
          return;
        }
        const chunk = new Uint8Array(Math.min(READ_BUFFER_BYTES, remaining));
        const n = await file.read(chunk);
        if (n === null) {
          close();
          controller.error(new Error("File ended early"));
          return;
        }
        remaining -= n;
        controller.enqueue(n === chunk.length ? chunk : chunk.subarray(0, n));
        if (remaining <= 0) {
          close();
          controller.close();
        }
      } catch (error) {
        close();
        controller.error(error);
      }
    },
    cancel() {
      close();
    },
  });
}

/** Reads a whole body into memory, throwing {@linkcode TooLargeError} past `limit` bytes (manifests, forms). */
export async function readLimited(
  body: ReadableStream<Uint8Array> | null,
  limit: number,
): Promise<Uint8Array> {
  if (!body) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > limit) {
        await reader.cancel().catch(() => {});
        throw new TooLargeError(limit);
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes;
}
