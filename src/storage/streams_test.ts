/**
 * Unit tests of the two hot loops: request bodies gathered into
 * 1 MiB buffers while hashing, and files served by range.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash, type Hash } from "node:crypto";
import { join } from "node:path";
import {
  fileStream,
  readLimited,
  SERVE_BUFFER_BYTES,
  takeFile,
  TooLargeError,
  WRITE_BUFFER_BYTES,
  writeBody,
} from "./streams.ts";
import { bodyOf, bytesOf, readAll } from "../../tests/_blob_store_suite.ts";

const SIZES = [0, 1, 65535, 262144, 262145, 3 * 1024 * 1024 + 7];
const CHUNKS = [1, 7, 4093, 65536, 100_003];

/** A temp directory removed by `await using`. */
async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "berth-streams-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

/**
 * A stand-in for `Deno.FsFile` that records each write. Each write completes
 * on a later macrotask and copies the bytes only then, so a buffer reused
 * while its write is in flight shows up as corrupt output.
 */
class RecordingFile {
  writes: number[] = [];
  chunks: Uint8Array[] = [];
  inFlight = 0;
  maxInFlight = 0;
  /** Bytes each write call accepts at most (exercises short writes). */
  constructor(readonly maxWrite = Infinity) {}

  async write(bytes: Uint8Array): Promise<number> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    await new Promise((resolve) => setTimeout(resolve, 0));
    const n = Math.min(bytes.length, this.maxWrite);
    this.chunks.push(bytes.slice(0, n));
    this.writes.push(n);
    this.inFlight--;
    return n;
  }

  bytes(): Uint8Array {
    const out = new Uint8Array(this.chunks.reduce((n, c) => n + c.length, 0));
    let offset = 0;
    for (const c of this.chunks) {
      out.set(c, offset);
      offset += c.length;
    }
    return out;
  }
}

function asFile(file: RecordingFile): Deno.FsFile {
  return file as unknown as Deno.FsFile;
}

/** A body delivering `bytes` in chunks that cycle through `sizes`. */
function oddBody(bytes: Uint8Array, sizes: number[]): ReadableStream<Uint8Array> {
  let offset = 0;
  let i = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      const n = sizes[i++ % sizes.length]!;
      controller.enqueue(bytes.slice(offset, offset + n));
      offset += n;
    },
  });
}

function hex(algorithm: string, bytes: Uint8Array): string {
  return createHash(algorithm).update(bytes).digest("hex");
}

Deno.test("writeBody() writes and hashes bodies of every size exactly, in WRITE_BUFFER_BYTES writes", async (t) => {
  for (const size of SIZES) {
    for (const chunks of [[65536], CHUNKS, [1]]) {
      if (chunks[0] === 1 && chunks.length === 1 && size > 300_000) continue; // too slow one byte at a time
      await t.step(`${size} bytes in chunks of ${chunks.join("/")}`, async () => {
        const bytes = bytesOf(size, size + 1);
        const file = new RecordingFile();
        const sha256 = createHash("sha256");
        const sha512 = createHash("sha512");
        const written = await writeBody(oddBody(bytes, chunks), asFile(file), {
          hashes: [sha256, sha512],
        });
        assert.equal(written, size);
        assert.deepEqual(file.bytes(), bytes);
        assert.equal(sha256.digest("hex"), hex("sha256", bytes));
        assert.equal(sha512.digest("hex"), hex("sha512", bytes));
        // Gathered: every write but the last is a full buffer.
        const full = Math.floor(size / WRITE_BUFFER_BYTES);
        const tail = size % WRITE_BUFFER_BYTES;
        const expected = [
          ...Array.from({ length: full }, () => WRITE_BUFFER_BYTES),
          ...(tail ? [tail] : []),
        ];
        assert.deepEqual(file.writes, expected);
        assert.ok(file.maxInFlight <= 1, "one write in flight at a time");
      });
    }
  }
});

Deno.test("writeBody() hashes each gathered buffer once, not each chunk", async () => {
  const bytes = bytesOf(WRITE_BUFFER_BYTES * 2 + 10);
  const updates: number[] = [];
  const real = createHash("sha256");
  const spy = {
    update(data: Uint8Array) {
      updates.push(data.length);
      real.update(data);
      return spy;
    },
  } as unknown as Hash;
  await writeBody(oddBody(bytes, [1000]), asFile(new RecordingFile()), { hashes: [spy] });
  assert.deepEqual(updates, [WRITE_BUFFER_BYTES, WRITE_BUFFER_BYTES, 10]);
  assert.equal(real.digest("hex"), hex("sha256", bytes));
});

Deno.test("writeBody() finishes short writes", async () => {
  const bytes = bytesOf(600_000);
  const file = new RecordingFile(10_000);
  const hash = createHash("sha256");
  assert.equal(await writeBody(bodyOf(bytes), asFile(file), { hashes: [hash] }), 600_000);
  assert.deepEqual(file.bytes(), bytes);
});

Deno.test("writeBody() writes a real file identical to the body", async () => {
  await using dir = await tempDir();
  const bytes = bytesOf(3 * 1024 * 1024 + 7, 42);
  const path = join(dir.path, "out");
  const hash = createHash("sha256");
  {
    using file = await Deno.open(path, { createNew: true, write: true });
    assert.equal(
      await writeBody(oddBody(bytes, CHUNKS), file, { hashes: [hash] }),
      bytes.length,
    );
  }
  assert.equal(hash.digest("hex"), hex("sha256", bytes));
  assert.deepEqual(await Deno.readFile(path), bytes);
});

Deno.test("writeBody() accepts a body of exactly the limit", async () => {
  const bytes = bytesOf(300_000);
  const file = new RecordingFile();
  assert.equal(
    await writeBody(bodyOf(bytes), asFile(file), { hashes: [], limit: 300_000 }),
    300_000,
  );
});

Deno.test("writeBody() throws TooLargeError past the limit and cancels the body", async () => {
  let cancelled: unknown = "not cancelled";
  let pulled = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulled++;
      controller.enqueue(new Uint8Array(1000));
    },
    cancel(reason) {
      cancelled = reason;
    },
  });
  const error = await writeBody(body, asFile(new RecordingFile()), { hashes: [], limit: 5500 })
    .then(() => null, (e) => e);
  assert.ok(error instanceof TooLargeError);
  assert.equal(error.limit, 5500);
  assert.notEqual(cancelled, "not cancelled", "the body was cancelled");
  assert.ok(pulled <= 8, `read ${pulled} chunks, far past the limit`);
});

Deno.test("writeBody() rethrows a body error and waits for the write in flight", async () => {
  const file = new RecordingFile();
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new Uint8Array(WRITE_BUFFER_BYTES)); // one full buffer: a write starts
      controller.enqueue(new Uint8Array(10));
      controller.error(new Error("client went away"));
    },
  });
  await assert.rejects(
    writeBody(body, asFile(file), { hashes: [] }),
    /client went away/,
  );
  assert.equal(file.inFlight, 0, "no write still running after writeBody settles");
});

Deno.test("writeBody() rethrows a write error", async () => {
  const failing = {
    write(): Promise<number> {
      return Promise.reject(new Error("No space left on device"));
    },
  } as unknown as Deno.FsFile;
  await assert.rejects(
    writeBody(bodyOf(bytesOf(WRITE_BUFFER_BYTES * 3)), failing, { hashes: [] }),
    /No space left/,
  );
});

async function fileWith(dir: string, bytes: Uint8Array): Promise<string> {
  const path = join(dir, crypto.randomUUID());
  await Deno.writeFile(path, bytes);
  return path;
}

Deno.test("fileStream() streams a whole file in reads of at most 256 KiB and closes it", async () => {
  await using dir = await tempDir();
  const bytes = bytesOf(3 * 1024 * 1024 + 7);
  const file = await Deno.open(await fileWith(dir.path, bytes));
  const sizes: number[] = [];
  const chunks: Uint8Array[] = [];
  for await (const chunk of fileStream(file, 0, bytes.length)) {
    sizes.push(chunk.length);
    chunks.push(chunk);
  }
  assert.ok(sizes.every((n) => n <= SERVE_BUFFER_BYTES));
  assert.deepEqual(await readAll(new Blob(chunks as BlobPart[]).stream()), bytes);
  assert.throws(() => file.close(), Deno.errors.BadResource, "already closed");
});

Deno.test("fileStream() streams ranges", async () => {
  await using dir = await tempDir();
  const bytes = bytesOf(2 * 1024 * 1024 + 3, 5);
  const path = await fileWith(dir.path, bytes);
  for (
    const [start, length] of [
      [0, 1],
      [1, 1],
      [100, 1000],
      [SERVE_BUFFER_BYTES - 1, 2],
      [5, SERVE_BUFFER_BYTES + 10],
      [bytes.length - 1, 1],
      [0, bytes.length],
    ] as const
  ) {
    const file = await Deno.open(path);
    assert.deepEqual(
      await readAll(fileStream(file, start, length)),
      bytes.subarray(start, start + length),
      `${start}+${length}`,
    );
    assert.throws(() => file.close(), Deno.errors.BadResource);
  }
});

Deno.test("fileStream() of length 0 is empty and closes the file", async () => {
  await using dir = await tempDir();
  for (const start of [0, 10]) {
    const file = await Deno.open(await fileWith(dir.path, bytesOf(20)));
    assert.deepEqual(await readAll(fileStream(file, start, 0)), new Uint8Array());
    assert.throws(() => file.close(), Deno.errors.BadResource);
  }
});

Deno.test("fileStream() cancelled part-way closes the file", async () => {
  await using dir = await tempDir();
  const file = await Deno.open(await fileWith(dir.path, bytesOf(3 * 1024 * 1024)));
  const reader = fileStream(file, 0, 3 * 1024 * 1024).getReader();
  const first = await reader.read();
  assert.equal(first.done, false);
  await reader.cancel();
  assert.throws(() => file.close(), Deno.errors.BadResource);
});

Deno.test("fileStream() cancelled before any read closes the file", async () => {
  await using dir = await tempDir();
  const file = await Deno.open(await fileWith(dir.path, bytesOf(100)));
  await fileStream(file, 50, 10).cancel();
  assert.throws(() => file.close(), Deno.errors.BadResource);
});

Deno.test("fileStream() errors when the file is shorter than asked, and closes it", async () => {
  await using dir = await tempDir();
  const file = await Deno.open(await fileWith(dir.path, bytesOf(100)));
  await assert.rejects(readAll(fileStream(file, 90, 20)), /File ended early/);
  assert.throws(() => file.close(), Deno.errors.BadResource);
});

Deno.test("fileStream() reads nothing before it is pulled", async () => {
  await using dir = await tempDir();
  const file = await Deno.open(await fileWith(dir.path, bytesOf(100)));
  const stream = fileStream(file, 10, 20);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(await file.seek(0, Deno.SeekMode.Current), 0);
  await stream.cancel();
});

Deno.test("takeFile() hands over the file of a stream not yet read, once", async () => {
  await using dir = await tempDir();
  const bytes = bytesOf(100);
  const path = await fileWith(dir.path, bytes);
  const file = await Deno.open(path);
  const stream = fileStream(file, 10, 20);
  await new Promise((resolve) => setTimeout(resolve, 20));
  const taken = takeFile(stream);
  assert.ok(taken);
  assert.equal(taken.file, file);
  assert.deepEqual([taken.start, taken.length], [10, 20]);
  assert.equal(takeFile(stream), null);
  await stream.cancel(); // the stream no longer closes it: the taker does
  file.close();
  const read = await Deno.open(path);
  const other = fileStream(read, 0, 100);
  const reader = other.getReader();
  await reader.read();
  assert.equal(takeFile(other), null, "already being read");
  await reader.cancel();
  assert.throws(() => read.close(), Deno.errors.BadResource);
  assert.equal(takeFile(new Blob([new Uint8Array(3)]).stream()), null);
});

Deno.test("readLimited() reads a whole body up to the limit", async () => {
  const bytes = bytesOf(5000);
  assert.deepEqual(await readLimited(bodyOf(bytes, 333), 5000), bytes);
  assert.deepEqual(await readLimited(null, 10), new Uint8Array());
  assert.deepEqual(await readLimited(bodyOf(new Uint8Array()), 0), new Uint8Array());
});

Deno.test("readLimited() throws TooLargeError past the limit and cancels the body", async () => {
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(new Uint8Array(100));
    },
    cancel() {
      cancelled = true;
    },
  });
  await assert.rejects(readLimited(body, 1000), TooLargeError);
  assert.ok(cancelled);
});

Deno.test("writeBody() reads a byte stream straight into its buffers (BYOB) and writes it exactly", async () => {
  for (const size of [0, 1, WRITE_BUFFER_BYTES, 3 * WRITE_BUFFER_BYTES + 7]) {
    const bytes = bytesOf(size, size + 3);
    let offset = 0;
    let byobReads = 0;
    const body = new ReadableStream({
      type: "bytes",
      pull(controller: ReadableByteStreamController) {
        const request = controller.byobRequest!;
        const view = request.view as Uint8Array;
        if (offset >= bytes.length) {
          controller.close();
          request.respond(0);
          return;
        }
        byobReads++;
        const n = Math.min(view.length, 100_003, bytes.length - offset);
        view.set(bytes.subarray(offset, offset + n));
        offset += n;
        request.respond(n);
      },
    });
    const file = new RecordingFile();
    const hash = createHash("sha256");
    assert.equal(await writeBody(body, asFile(file), { hashes: [hash] }), size);
    assert.deepEqual(file.bytes(), bytes);
    assert.equal(hash.digest("hex"), hex("sha256", bytes));
    // Without BYOB this body (no autoAllocateChunkSize) would have no byobRequest to fill.
    assert.ok(byobReads >= Math.ceil(size / 100_003));
  }
});
