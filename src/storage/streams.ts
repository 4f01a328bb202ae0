/**
 * The two hot loops of the registry, arranged as measured on Deno 2.9.6:
 * request bodies read (BYOB) straight into 1 MiB buffers, each hashed with
 * `node:crypto` while the previous one is being written; files served with
 * reads of ~1 MiB. Never `tee()` a body.
 *
 * @module
 */
import type { Hash } from "node:crypto";

/**
 * Size of the buffers a request body is gathered into: each is hashed in one
 * `update` and written in one call while the next one fills.
 */
export const WRITE_BUFFER_BYTES = 1024 * 1024;
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

/** Fills buffers from a body: straight into them for byte streams (BYOB), else by copying. */
interface Filler {
  /**
   * Reads more into `buffer` from `used`. Returns the buffer to go on with (a
   * BYOB read transfers it), how many bytes were added, and whether the body ended.
   */
  fill(buffer: Uint8Array, used: number): Promise<{ buffer: Uint8Array; n: number; done: boolean }>;
  cancel(): Promise<void>;
  release(): void;
}

function fillerOf(body: ReadableStream<Uint8Array>): Filler {
  let byob: ReadableStreamBYOBReader | null = null;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    // Not a byte stream: copy its chunks.
  }
  if (byob) {
    const reader = byob;
    return {
      async fill(buffer, used) {
        const size = buffer.length; // the read detaches `buffer`
        const view = new Uint8Array(buffer.buffer, used, size - used);
        const { done, value } = await reader.read(view);
        if (!value) throw new Error("The request body was cancelled");
        return { buffer: new Uint8Array(value.buffer, 0, size), n: value.length, done };
      },
      cancel: () => reader.cancel().catch(() => {}),
      release: () => reader.releaseLock(),
    };
  }
  const reader = body.getReader();
  let pending: Uint8Array = new Uint8Array();
  return {
    async fill(buffer, used) {
      if (pending.length === 0) {
        const { done, value } = await reader.read();
        if (done) return { buffer, n: 0, done: true };
        pending = value;
      }
      const n = Math.min(pending.length, buffer.length - used);
      buffer.set(pending.subarray(0, n), used);
      pending = pending.subarray(n);
      return { buffer, n, done: false };
    },
    cancel: () => reader.cancel().catch(() => {}),
    release: () => reader.releaseLock(),
  };
}

/**
 * Streams `body` into `file` through `hashes`: the body is gathered into
 * {@linkcode WRITE_BUFFER_BYTES} buffers (read straight into them when it is a
 * byte stream, so nothing is allocated per chunk), each hashed and then
 * written while the next one fills, one write in flight. With `syncEvery`,
 * the file's data is flushed (`fdatasync`) in the background every that many
 * bytes, so the caller's closing `sync` has little left to write. Returns
 * the number of bytes written. Throws {@linkcode TooLargeError} past `limit`
 * bytes, and whatever the body or the disk throws.
 */
export async function writeBody(
  body: ReadableStream<Uint8Array>,
  file: Deno.FsFile,
  options: { hashes: Hash[]; limit?: number; syncEvery?: number },
): Promise<number> {
  const { hashes, limit = Number.MAX_SAFE_INTEGER, syncEvery = 0 } = options;
  const filler = fillerOf(body);
  let buffer: Uint8Array = new Uint8Array(WRITE_BUFFER_BYTES);
  let spare: Uint8Array = new Uint8Array(WRITE_BUFFER_BYTES);
  let used = 0;
  let total = 0;
  let inFlight: Promise<void> | null = null;
  let syncing: Promise<void> | null = null;
  let unsynced = 0;
  const flush = async (bytes: Uint8Array) => {
    for (const hash of hashes) hash.update(bytes);
    if (inFlight) await inFlight;
    if (syncEvery > 0 && unsynced >= syncEvery && !syncing) {
      unsynced = 0;
      syncing = file.syncData().finally(() => (syncing = null));
      syncing.catch(() => {}); // awaited below
    }
    unsynced += bytes.length;
    inFlight = writeAll(file, bytes);
    inFlight.catch(() => {}); // awaited below; this only avoids an unhandled rejection meanwhile
  };
  try {
    for (;;) {
      const got = await filler.fill(buffer, used);
      buffer = got.buffer;
      used += got.n;
      total += got.n;
      if (total > limit) throw new TooLargeError(limit);
      if (got.done) break;
      if (used === buffer.length) {
        await flush(buffer);
        [buffer, spare] = [spare, buffer];
        used = 0;
      }
    }
    if (used > 0) await flush(buffer.subarray(0, used));
    if (inFlight) await inFlight;
    if (syncing) await syncing;
    return total;
  } catch (error) {
    await filler.cancel();
    if (inFlight) await (inFlight as Promise<void>).catch(() => {});
    if (syncing) await (syncing as Promise<void>).catch(() => {});
    throw error;
  } finally {
    filler.release();
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
