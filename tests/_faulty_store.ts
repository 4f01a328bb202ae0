/**
 * A blob store that fails on demand: it wraps a real {@linkcode FsBlobStore}
 * and makes `writePart`, `put`, `putBytes` or `finish` throw a given error,
 * either at once or, for the two that take a request body, after that many
 * body bytes have gone through (so the real store has a file open and half
 * written when the error arrives, and its cleanup path runs). Used by
 * `bounds_test.ts` to check that a full disk (ENOSPC) or a broken one (EIO)
 * becomes a clean error response and commits nothing.
 *
 * @module
 */
import type { Algorithm, Digest } from "../src/oci/digest.ts";
import type { ByteRange } from "../src/oci/range.ts";
import type {
  BlobInfo,
  BlobRead,
  Debris,
  FinishResult,
  Storage,
  WrittenPart,
} from "../src/storage/blob_store.ts";
import type { FsBlobStore } from "../src/storage/fs_blob_store.ts";

/** The store operations a fault can be injected into. */
export type FaultPoint = "writePart" | "put" | "putBytes" | "finish";

/** One injected fault. */
export interface Fault {
  /** Builds the error to throw (a fresh one each time). */
  error: () => Error;
  /**
   * `writePart` and `put` only: let this many body bytes through to the real
   * store, then fail the body with the error. Absent: throw before the real
   * store is called.
   */
  afterBytes?: number;
}

/** An error shaped like Deno's for a full disk. */
export function noSpaceError(): Error {
  return Object.assign(new Error("No space left on device (os error 28)"), { code: "ENOSPC" });
}

/** An error shaped like Deno's for a failing disk, naming an internal path. */
export function ioError(path = "/srv/berth/uploads/secret-part"): Error {
  return Object.assign(new Error(`Input/output error (os error 5): write '${path}'`), {
    code: "EIO",
  });
}

/** `body`, erroring with `error()` when byte `limit + 1` arrives (a shorter body passes). */
function failingAfter(
  body: ReadableStream<Uint8Array> | null,
  limit: number,
  error: () => Error,
): ReadableStream<Uint8Array> {
  const reader = body?.getReader();
  let passed = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = reader ? await reader.read() : { done: true as const, value: undefined };
      if (next.done) {
        controller.close();
        return;
      }
      const room = limit - passed;
      if (next.value.length <= room) {
        passed += next.value.length;
        controller.enqueue(next.value);
        return;
      }
      if (room > 0) {
        passed += room;
        controller.enqueue(next.value.subarray(0, room));
        return;
      }
      await reader?.cancel().catch(() => {});
      controller.error(error());
    },
    async cancel(reason) {
      await reader?.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/** {@linkcode FsBlobStore} with faults injected on demand; counts the faults it raised. */
export class FaultyStore implements Storage {
  readonly inner: FsBlobStore;
  readonly #faults = new Map<FaultPoint, Fault>();
  /** How many times each fault fired. */
  readonly fired: Record<FaultPoint, number> = { writePart: 0, put: 0, putBytes: 0, finish: 0 };

  constructor(inner: FsBlobStore) {
    this.inner = inner;
  }

  /** Makes `point` fail with `fault` until {@linkcode clear}. */
  fail(point: FaultPoint, fault: Fault): void {
    this.#faults.set(point, fault);
  }

  /** Removes every fault. */
  clear(): void {
    this.#faults.clear();
  }

  /** Throws now for a fault without `afterBytes`; returns the body to use otherwise. */
  #apply(
    point: FaultPoint,
    body: ReadableStream<Uint8Array> | null = null,
  ): ReadableStream<Uint8Array> | null {
    const fault = this.#faults.get(point);
    if (!fault) return body;
    if (fault.afterBytes === undefined) {
      this.fired[point]++;
      throw fault.error();
    }
    return failingAfter(body, fault.afterBytes, () => {
      this.fired[point]++;
      return fault.error();
    });
  }

  get location(): string {
    return this.inner.location;
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  stat(digest: Digest): Promise<BlobInfo | null> {
    return this.inner.stat(digest);
  }

  open(digest: Digest, range?: ByteRange): Promise<BlobRead | null> {
    return this.inner.open(digest, range);
  }

  async put(digest: Digest, body: ReadableStream<Uint8Array> | null): Promise<FinishResult> {
    return await this.inner.put(digest, this.#apply("put", body));
  }

  async putBytes(digest: Digest, bytes: Uint8Array): Promise<void> {
    this.#apply("putBytes");
    await this.inner.putBytes(digest, bytes);
  }

  delete(digest: Digest): Promise<boolean> {
    return this.inner.delete(digest);
  }

  list(): AsyncIterable<Digest> {
    return this.inner.list();
  }

  async writePart(
    uploadId: string,
    body: ReadableStream<Uint8Array> | null,
    options: { algorithm: Algorithm; alsoHash?: Algorithm; limit?: number },
  ): Promise<WrittenPart> {
    return await this.inner.writePart(uploadId, this.#apply("writePart", body), options);
  }

  removePart(uploadId: string, file: string): Promise<void> {
    return this.inner.removePart(uploadId, file);
  }

  async finish(uploadId: string, parts: WrittenPart[], digest: Digest): Promise<FinishResult> {
    this.#apply("finish");
    return await this.inner.finish(uploadId, parts, digest);
  }

  removeUpload(uploadId: string): Promise<void> {
    return this.inner.removeUpload(uploadId);
  }

  listUploads(): AsyncIterable<{ uploadId: string; modifiedAt: number }> {
    return this.inner.listUploads();
  }

  listParts(uploadId: string): AsyncIterable<{ file: string; size: number }> {
    return this.inner.listParts(uploadId);
  }

  openPart(uploadId: string, file: string): Promise<ReadableStream<Uint8Array> | null> {
    return this.inner.openPart(uploadId, file);
  }

  debris(
    options?: { leftoversOnly?: boolean },
  ): AsyncIterable<Debris & { kind: "problem" | "leftover" }> {
    return this.inner.debris(options);
  }
}
