/**
 * A thin timing wrapper around any {@linkcode Storage}: how long each
 * operation takes to answer (a read until its stream is open, not until it is
 * drained), how many fail, the bytes written, and how many upload bodies are
 * being written right now. Everything goes to {@linkcode metrics}; the
 * wrapped store is otherwise untouched (listings pass straight through).
 *
 * @module
 */
import { type Counter, type Gauge, type Histogram, metrics } from "../metrics/registry.ts";
import type { Digest } from "../oci/digest.ts";
import type { ByteRange } from "../oci/range.ts";
import type { BlobInfo, BlobRead, FinishResult, Storage, WrittenPart } from "./blob_store.ts";

/** The operations timed. */
const OPERATIONS = [
  "stat",
  "open",
  "put",
  "put_bytes",
  "delete",
  "write_part",
  "remove_part",
  "finish",
  "remove_upload",
  "open_part",
] as const;

type Operation = typeof OPERATIONS[number];

interface Timing {
  seconds: Histogram;
  errors: Counter;
}

const timings = Object.fromEntries(OPERATIONS.map((op) => [op, {
  seconds: metrics.histogram(
    "berth_blob_store_operation_duration_seconds",
    "Time a blob store operation took to answer (reads: until the stream is open)",
    { op },
  ),
  errors: metrics.counter(
    "berth_blob_store_errors_total",
    "Blob store operations that threw",
    { op },
  ),
}])) as Record<Operation, Timing>;

const written: Counter = metrics.counter(
  "berth_blob_store_written_bytes_total",
  "Bytes written to the blob store (upload parts, monolithic uploads, manifests)",
);

const uploadsInFlight: Gauge = metrics.gauge(
  "berth_uploads_in_flight",
  "Upload bodies being written to the blob store right now",
);

async function timed<T>(op: Operation, work: Promise<T>): Promise<T> {
  const timing = timings[op];
  const started = performance.now();
  try {
    return await work;
  } catch (error) {
    timing.errors.inc();
    throw error;
  } finally {
    timing.seconds.observe((performance.now() - started) / 1000);
  }
}

/** `store`, timed. */
export class TimedStore implements Storage {
  readonly #store: Storage;

  constructor(store: Storage) {
    this.#store = store;
  }

  get location(): string {
    return this.#store.location;
  }

  stat(digest: Digest): Promise<BlobInfo | null> {
    return timed("stat", this.#store.stat(digest));
  }

  open(digest: Digest, range?: ByteRange): Promise<BlobRead | null> {
    return timed("open", this.#store.open(digest, range));
  }

  async put(digest: Digest, body: ReadableStream<Uint8Array> | null): Promise<FinishResult> {
    uploadsInFlight.inc();
    try {
      const result = await timed("put", this.#store.put(digest, body));
      if (result.ok) written.inc(result.size);
      return result;
    } finally {
      uploadsInFlight.dec();
    }
  }

  async putBytes(digest: Digest, bytes: Uint8Array): Promise<void> {
    await timed("put_bytes", this.#store.putBytes(digest, bytes));
    written.inc(bytes.length);
  }

  delete(digest: Digest): Promise<boolean> {
    return timed("delete", this.#store.delete(digest));
  }

  list(): AsyncIterable<Digest> {
    return this.#store.list();
  }

  close(): Promise<void> {
    return this.#store.close();
  }

  async writePart(
    uploadId: string,
    body: ReadableStream<Uint8Array> | null,
    options: Parameters<Storage["writePart"]>[2],
  ): Promise<WrittenPart> {
    uploadsInFlight.inc();
    try {
      const part = await timed("write_part", this.#store.writePart(uploadId, body, options));
      written.inc(part.size);
      return part;
    } finally {
      uploadsInFlight.dec();
    }
  }

  removePart(uploadId: string, file: string): Promise<void> {
    return timed("remove_part", this.#store.removePart(uploadId, file));
  }

  finish(uploadId: string, parts: WrittenPart[], digest: Digest): Promise<FinishResult> {
    return timed("finish", this.#store.finish(uploadId, parts, digest));
  }

  removeUpload(uploadId: string): Promise<void> {
    return timed("remove_upload", this.#store.removeUpload(uploadId));
  }

  listUploads(): AsyncIterable<{ uploadId: string; modifiedAt: number }> {
    return this.#store.listUploads();
  }

  listParts(uploadId: string): AsyncIterable<{ file: string; size: number }> {
    return this.#store.listParts(uploadId);
  }

  openPart(uploadId: string, file: string): Promise<ReadableStream<Uint8Array> | null> {
    return timed("open_part", this.#store.openPart(uploadId, file));
  }

  debris(
    options?: { leftoversOnly?: boolean },
  ): ReturnType<Storage["debris"]> {
    return this.#store.debris(options);
  }
}
