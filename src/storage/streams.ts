/**
 * The two hot loops of the registry, arranged as measured on Deno 2.9.6:
 * request bodies read (BYOB) straight into 1 MiB buffers, each hashed with
 * `node:crypto` while the previous one is being written; files served with
 * reads of 256 KiB, the next one under way while a chunk is sent. Never
 * `tee()` a body.
 *
 * @module
 */
import type { Hash } from "node:crypto";

/**
 * Size of the buffers a request body is gathered into: each is hashed in one
 * `update` and written in one call while the next one fills.
 */
export const WRITE_BUFFER_BYTES = 1024 * 1024;
/** Size of each read when assembling a file from parts. */
export const READ_BUFFER_BYTES = 1024 * 1024;
/**
 * Size of each read when serving a file: 256 KiB cost less CPU per byte than
 * 1 MiB (a fresh buffer per chunk; smaller ones stay in the cache).
 */
export const SERVE_BUFFER_BYTES = 256 * 1024;

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
 * written while the next one fills, one write in flight. The caller syncs
 * the file once at the end: flushing in the background while writing (every
 * 32 MiB, as it once did) measured slower, since the writes then wait on the
 * flushes. Returns the number of bytes written. Throws {@linkcode TooLargeError} past `limit`
 * bytes, and whatever the body or the disk throws.
 */
export async function writeBody(
  body: ReadableStream<Uint8Array>,
  file: Deno.FsFile,
  options: { hashes: Hash[]; limit?: number },
): Promise<number> {
  const { hashes, limit = Number.MAX_SAFE_INTEGER } = options;
  const filler = fillerOf(body);
  let buffer: Uint8Array = new Uint8Array(WRITE_BUFFER_BYTES);
  let spare: Uint8Array = new Uint8Array(WRITE_BUFFER_BYTES);
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
    return total;
  } catch (error) {
    await filler.cancel();
    if (inFlight) await (inFlight as Promise<void>).catch(() => {});
    throw error;
  } finally {
    filler.release();
  }
}

/** What a {@linkcode fileStream} serves, for a server that can send the file itself. */
export interface FileSource {
  file: Deno.FsFile;
  start: number;
  length: number;
}

/** Takes the file from streams not yet read: see {@linkcode takeFile}. */
const untouched = new WeakMap<ReadableStream<Uint8Array>, () => FileSource | null>();

/**
 * A stream of `length` bytes of `file` from `start`, read
 * {@linkcode SERVE_BUFFER_BYTES} at a time with the next read under way while
 * a chunk is being sent. Nothing is read before the first pull, so that
 * {@linkcode takeFile} can take the file instead. Closes the file when done
 * or cancelled.
 */
export function fileStream(
  file: Deno.FsFile,
  start: number,
  length: number,
): ReadableStream<Uint8Array> {
  let remaining = length;
  let closed = false;
  let started = false;
  /** The next chunk, read while the previous one is sent. */
  let next: Promise<Uint8Array | null> | null = null;
  const close = () => {
    if (!closed) {
      closed = true;
      file.close();
    }
  };
  const read = async (): Promise<Uint8Array | null> => {
    if (remaining <= 0) return null;
    const chunk = new Uint8Array(Math.min(SERVE_BUFFER_BYTES, remaining));
    const n = await file.read(chunk);
    if (n === null) throw new Error("File ended early");
    remaining -= n;
    return n === chunk.length ? chunk : chunk.subarray(0, n);
  };
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        if (!started) {
          started = true;
          if (start > 0) await file.seek(start, Deno.SeekMode.Start);
        }
        const chunk = await (next ?? read());
        next = null;
        if (chunk === null) {
          close();
          controller.close();
          return;
        }
        if (remaining > 0) {
          next = read();
          next.catch(() => {}); // awaited by the next pull; this only avoids an unhandled rejection
        }
        controller.enqueue(chunk);
        if (remaining <= 0 && !next) {
          close();
          controller.close();
        }
      } catch (error) {
        close();
        controller.error(error);
      }
    },
    async cancel() {
      if (next) await next.catch(() => {});
      close();
    },
  }, { highWaterMark: 0 });
  untouched.set(stream, () => {
    untouched.delete(stream);
    if (started || closed) return null;
    closed = true; // the taker closes it now
    return { file, start, length };
  });
  return stream;
}

/**
 * The file behind a {@linkcode fileStream} that has not been read from, or
 * null. The caller then owns the file (and must close it); the stream must
 * not be used any more.
 */
export function takeFile(stream: ReadableStream<Uint8Array>): FileSource | null {
  return untouched.get(stream)?.() ?? null;
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
