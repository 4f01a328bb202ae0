/**
 * Bounds: what Berth does when a client or the machine pushes it
 * past a limit. Every limit answers cleanly and leaves nothing half done.
 *
 * - The upload session caps as set on the command line (`--max-uploads-per-repo`,
 *   `--max-uploads`): 429 TOOMANYREQUESTS with Retry-After (A5, A10).
 * - A full disk: a real 16 MiB tmpfs mounted for the test (root only, as in
 *   CI), and a fault-injecting store (`_faulty_store.ts`) that raises ENOSPC or
 *   EIO in each write path. ENOSPC answers 507 UNAVAILABLE, EIO 500 UNKNOWN with
 *   no internals, and neither commits anything: the KV contents (with
 *   versionstamps) and the `blobs/`, `uploads/` and `tmp/` trees are the same
 *   before and after.
 * - Abandoned sessions expire after `--upload-ttl` with their files; busy ones
 *   do not (A5 "expire abandoned sessions").
 * - A body that stalls for `--body-timeout` gets 408 and keeps nothing; a slow
 *   but steady one succeeds.
 * - Huge headers get Deno's 400 (or a closed connection), never a 5xx, both
 *   in process and behind the connection guard of `main.ts serve`.
 * - The connection guard: an idle connection (or one stalled in its headers)
 *   is closed after `--idle-timeout`, one with a request in flight is not, and
 *   the connection over `--max-connections` gets 503 while the others go on.
 *
 * Observed (Deno 2.9.6): behind the guard, a 1 MiB header gets the connection
 * closed with no answer (the relay fails writing it to the inner server, which
 * has already refused the head); in process it gets 400.
 *
 * @module
 */
import assert from "node:assert/strict";
import { statfs } from "node:fs/promises";
import { join } from "node:path";
import { createApp } from "../src/app.ts";
import { type Config, defaultConfig } from "../src/config.ts";
import type { Logger } from "../src/log.ts";
import { KvMetadataStore } from "../src/meta/metadata_store.ts";
import type { Digest } from "../src/oci/digest.ts";
import { FsBlobStore } from "../src/storage/fs_blob_store.ts";
import { type Fault, FaultyStore, ioError, noSpaceError } from "./_faulty_store.ts";
import {
  concat,
  decoder,
  encoder,
  isComplete,
  parseRawResponse,
  type RawResponse,
} from "./_observed.ts";
import {
  assertError,
  exists,
  imageManifest,
  pushBlob,
  randomBytes,
  sha256,
  spawnRegistry,
  type TestRegistry,
} from "./_registry.ts";
import { OCI_MANIFEST } from "../src/oci/media_type.ts";

const MiB = 1024 * 1024;
const OCTET = { "Content-Type": "application/octet-stream" };

// ---------------------------------------------------------------------------
// An in-process Berth over a FaultyStore, in a data directory of our choosing
// ---------------------------------------------------------------------------

/** A running in-process registry whose store can be made to fail. */
interface Berth extends AsyncDisposable {
  url: string;
  port: number;
  dataDir: string;
  meta: KvMetadataStore;
  kv: Deno.Kv;
  store: FaultyStore;
  /** What Berth logged as unhandled errors. */
  errors: unknown[];
  fetch(path: string, init?: RequestInit): Promise<Response>;
  /** This registry in the shape the `_registry.ts` push helpers take. */
  asTestRegistry(): TestRegistry;
}

/**
 * Starts Berth on 127.0.0.1:0 with an in-memory KV. With `dataDir`, the data
 * lives there (and is left for the caller); otherwise in a fresh temp dir.
 */
async function startBerth(
  options: { dataDir?: string; config?: Partial<Config> } = {},
): Promise<Berth> {
  const own = options.dataDir === undefined;
  const dataDir = options.dataDir ?? await Deno.makeTempDir({ prefix: "berth-bounds-" });
  const kv = await Deno.openKv(":memory:");
  const meta = new KvMetadataStore(kv);
  const store = new FaultyStore(await FsBlobStore.open(dataDir));
  const errors: unknown[] = [];
  const quiet = () => {};
  const log: Logger = {
    debug: quiet,
    info: quiet,
    warn: quiet,
    error: (event, fields) => errors.push({ event, ...fields }),
  };
  const config = { ...defaultConfig(), data: dataDir, kv: ":memory:", ...options.config };
  const app = createApp({ meta, blobs: store, config, log });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app);
  const url = `http://127.0.0.1:${server.addr.port}`;
  const berth: Berth = {
    url,
    port: server.addr.port,
    dataDir,
    meta,
    kv,
    store,
    errors,
    fetch: (path, init) => fetch(url + path, init),
    asTestRegistry: () => ({
      url,
      dataDir,
      meta,
      kv,
      blobs: store.inner,
      fetch: berth.fetch,
      [Symbol.asyncDispose]: () => berth[Symbol.asyncDispose](),
    }),
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      kv.close();
      if (own) await Deno.remove(dataDir, { recursive: true });
    },
  };
  return berth;
}

/** Every file and directory under `dir` (relative, with file sizes), sorted. */
async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(path: string, shown: string): Promise<void> {
    for await (const entry of Deno.readDir(path)) {
      const child = join(path, entry.name);
      if (entry.isDirectory) {
        out.push(`${shown}${entry.name}/`);
        await walk(child, `${shown}${entry.name}/`);
      } else {
        out.push(`${shown}${entry.name} ${(await Deno.stat(child)).size}`);
      }
    }
  }
  await walk(dir, "");
  return out.sort();
}

/** Everything Berth has written: KV keys with versionstamps, and the data trees. */
async function snapshot(reg: Berth): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of reg.kv.list({ prefix: [] })) {
    out.push(`kv ${Deno.inspect(entry.key)} = ${Deno.inspect(entry.value)} @${entry.versionstamp}`);
  }
  for (const dir of ["blobs", "uploads", "tmp"]) {
    out.push(...(await tree(join(reg.dataDir, dir))).map((line) => `${dir}/${line}`));
  }
  return out;
}

/** Asserts a 507 UNAVAILABLE OCI error (JSON body), consuming it. */
async function assertNoSpace(res: Response, what: string): Promise<void> {
  const body = await res.text();
  assert.equal(res.status, 507, `${what}: expected 507, got ${res.status}: ${body}`);
  assert.match(res.headers.get("Content-Type") ?? "", /json/);
  const parsed = JSON.parse(body) as { errors: { code: string; message: string }[] };
  assert.equal(parsed.errors[0]?.code, "UNAVAILABLE", body);
}

/** Opens a session in `name`; returns its Location. */
async function openSession(reg: { fetch: Berth["fetch"] }, name: string): Promise<string> {
  const res = await reg.fetch(`/v2/${name}/blobs/uploads/`, { method: "POST" });
  const body = await res.text();
  assert.equal(res.status, 202, `POST uploads in ${name}: ${body}`);
  return res.headers.get("Location")!;
}

/** The Range of a session (GET status, asserting 204). */
async function rangeOf(reg: { fetch: Berth["fetch"] }, location: string): Promise<string | null> {
  const res = await reg.fetch(location);
  await res.body?.cancel();
  assert.equal(res.status, 204, `GET ${location}`);
  return res.headers.get("Range");
}

/** PATCHes `bytes` (with a Content-Range from `start` when given). */
function patch(
  reg: { fetch: Berth["fetch"] },
  location: string,
  bytes: BodyInit,
  start?: number,
): Promise<Response> {
  const headers: Record<string, string> = { ...OCTET };
  if (start !== undefined && bytes instanceof Uint8Array) {
    headers["Content-Range"] = `${start}-${start + bytes.length - 1}`;
  }
  return reg.fetch(location, { method: "PATCH", headers, body: bytes });
}

/** Appends `digest=` to a session Location. */
function withDigest(location: string, digest: string): string {
  return `${location}${location.includes("?") ? "&" : "?"}digest=${digest}`;
}

/** Asserts `res` is `status`, consuming the body. */
async function expectStatus(res: Response, status: number, what: string): Promise<void> {
  const body = await res.text();
  assert.equal(res.status, status, `${what}: expected ${status}, got ${res.status}: ${body}`);
}

/** The upload session id at the end of a Location. */
function uploadIdOf(location: string): string {
  return new URL(location, "http://x").pathname.split("/").pop()!;
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------

/** A raw answer and how long it took. */
interface Timed extends RawResponse {
  ms: number;
}

/**
 * Writes `head` and `body` on a fresh connection and reads until the answer
 * is complete or the server closes (status null). Fails if neither happens
 * within `timeoutMs`. A server that closes while we still write is fine.
 */
async function rawRequest(
  port: number,
  head: string,
  body: Uint8Array = new Uint8Array(),
  timeoutMs = 5_000,
): Promise<Timed> {
  const started = performance.now();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let timedOut = false;
  const guard = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, timeoutMs);
  const chunks: Uint8Array[] = [];
  try {
    try {
      for (const bytes of [encoder.encode(head), body]) {
        let written = 0;
        while (written < bytes.length) written += await conn.write(bytes.subarray(written));
      }
    } catch (error) {
      if (timedOut) throw error;
      // The server refused the head and closed: read what it said.
    }
    const buffer = new Uint8Array(64 * 1024);
    while (!isComplete(concat(...chunks))) {
      const n = await conn.read(buffer).catch((error) => {
        if (timedOut || !(error instanceof Deno.errors.ConnectionReset)) throw error;
        return null;
      });
      if (n === null) break;
      chunks.push(buffer.slice(0, n));
    }
  } catch (error) {
    if (!timedOut) throw error;
  } finally {
    clearTimeout(guard);
    if (!timedOut) conn.close();
  }
  assert.ok(!timedOut, `no answer and no close within ${timeoutMs} ms`);
  return { ...parseRawResponse(concat(...chunks)), ms: performance.now() - started };
}

// ---------------------------------------------------------------------------
// A real full disk: a tmpfs
// ---------------------------------------------------------------------------

/** Mounts a `sizeMiB` tmpfs on a fresh directory for `fn`, unmounting it afterwards. */
async function withTmpfs(sizeMiB: number, fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "berth-tmpfs-" });
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", `size=${sizeMiB}m`, "tmpfs", dir],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!mount.success) {
    await Deno.remove(dir);
    assert.fail(
      `Cannot mount a tmpfs on ${dir} (these tests run as root, as CI does; uid ${Deno.uid()}): ` +
        decoder.decode(mount.stderr).trim(),
    );
  }
  try {
    await fn(dir);
  } finally {
    const umount = await new Deno.Command("umount", { args: [dir], stderr: "piped" }).output();
    if (!umount.success) {
      // Something still holds it: detach it lazily so it goes when released.
      await new Deno.Command("umount", { args: ["-l", dir] }).output();
    }
    await Deno.remove(dir);
  }
}

/** Bytes free for an unprivileged writer on the filesystem of `dir`. */
async function freeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return Number(s.bavail) * Number(s.bsize);
}

/** Writes `path` until the disk is full; returns how much it took. */
async function fillDisk(path: string): Promise<number> {
  using file = await Deno.open(path, { createNew: true, write: true });
  const chunk = new Uint8Array(64 * 1024);
  let total = 0;
  for (;;) {
    try {
      total += await file.write(chunk);
    } catch (error) {
      assert.equal((error as { code?: string }).code, "ENOSPC", String(error));
      return total;
    }
  }
}

Deno.test("A10: a full disk (16 MiB tmpfs) answers 507 UNAVAILABLE, keeps nothing and the server goes on serving", async (t) => {
  await withTmpfs(16, async (dir) => {
    await using reg = await startBerth({ dataDir: dir });
    const serving = async () => {
      const res = await reg.fetch("/v2/");
      await res.body?.cancel();
      assert.equal(res.status, 200, "GET /v2/ while the disk is full");
    };
    const freeAtStart = await freeBytes(dir);

    await t.step("a 32 MiB monolithic POST: 507, no link, no files, space given back", async () => {
      const big = randomBytes(32 * MiB, 7);
      const digest = sha256(big);
      const before = await snapshot(reg);
      const res = await reg.fetch(`/v2/full/app/blobs/uploads/?digest=${digest}`, {
        method: "POST",
        headers: OCTET,
        body: big,
      });
      await assertNoSpace(res, "monolithic POST of 32 MiB");
      assert.deepEqual(await snapshot(reg), before, "the failed POST left something behind");
      assert.equal(await reg.meta.getBlobLink("full/app", digest as Digest), null);
      // Not even the repository came to exist.
      await assertError(await reg.fetch(`/v2/full/app/blobs/${digest}`), 404, "NAME_UNKNOWN");
      assert.deepEqual(await tree(join(dir, "uploads")), []);
      assert.deepEqual(await tree(join(dir, "tmp")), []);
      assert.equal(await freeBytes(dir), freeAtStart, "space not given back");
      await serving();
    });

    await t.step(
      "a PATCH that does not fit: 507, offset unchanged, the session goes on",
      async () => {
        const location = await openSession(reg, "full/app");
        const first = randomBytes(1000, 1);
        await expectStatus(await patch(reg, location, first, 0), 202, "first chunk");
        const before = await snapshot(reg);
        const freeBefore = await freeBytes(dir);
        await assertNoSpace(
          await patch(reg, location, randomBytes(32 * MiB, 8), 1000),
          "big PATCH",
        );
        assert.deepEqual(await snapshot(reg), before, "the failed PATCH left something behind");
        assert.equal(await rangeOf(reg, location), "0-999");
        assert.equal(await freeBytes(dir), freeBefore, "space not given back");
        await serving();
        // The session is still usable: a small chunk, then the closing PUT.
        const second = randomBytes(500, 2);
        await expectStatus(await patch(reg, location, second, 1000), 202, "small chunk after 507");
        assert.equal(await rangeOf(reg, location), "0-1499");
        const whole = concat(first, second);
        const put = await reg.fetch(withDigest(location, sha256(whole)), { method: "PUT" });
        await expectStatus(put, 201, "closing PUT after 507");
        const got = await reg.fetch(`/v2/full/app/blobs/${sha256(whole)}`);
        assert.deepEqual(new Uint8Array(await got.arrayBuffer()), whole);
        assert.deepEqual(await tree(join(dir, "uploads")), []);
      },
    );

    await t.step(
      "a closing PUT whose blob cannot be assembled: 507, temp file removed",
      async () => {
        // Two 6 MiB parts fit; assembling them into a 12 MiB blob does not.
        const location = await openSession(reg, "full/app");
        const a = randomBytes(6 * MiB, 3);
        const b = randomBytes(6 * MiB, 4);
        await expectStatus(await patch(reg, location, a, 0), 202, "chunk a");
        await expectStatus(await patch(reg, location, b, a.length), 202, "chunk b");
        const digest = sha256(concat(a, b));
        const before = await snapshot(reg);
        const freeBefore = await freeBytes(dir);
        const put = await reg.fetch(withDigest(location, digest), { method: "PUT" });
        await assertNoSpace(put, "closing PUT assembling 12 MiB");
        assert.deepEqual(await snapshot(reg), before, "the failed PUT left something behind");
        assert.equal(await freeBytes(dir), freeBefore, "space not given back");
        assert.equal(await rangeOf(reg, location), `0-${12 * MiB - 1}`);
        await serving();
        // Cancelling it gives the space back.
        await expectStatus(await reg.fetch(location, { method: "DELETE" }), 204, "cancel");
        assert.deepEqual(await tree(join(dir, "uploads")), []);
      },
    );

    await t.step(
      "a manifest PUT on a full disk: 507 and no record; after freeing space it works",
      async () => {
        const configBytes = JSON.stringify({ architecture: "amd64", os: "linux" });
        const layerBytes = randomBytes(2000, 5);
        const config = await pushBlob(reg.asTestRegistry(), "full/app", configBytes);
        const layer = await pushBlob(reg.asTestRegistry(), "full/app", layerBytes);
        const manifest = imageManifest(
          { digest: config, size: encoder.encode(configBytes).length },
          [{ digest: layer, size: layerBytes.length }],
        );
        const filler = join(dir, "filler");
        assert.ok(await fillDisk(filler) > 0);
        try {
          const before = await snapshot(reg);
          const res = await reg.fetch("/v2/full/app/manifests/v1", {
            method: "PUT",
            headers: { "Content-Type": OCI_MANIFEST },
            body: manifest,
          });
          await assertNoSpace(res, "manifest PUT on a full disk");
          assert.deepEqual(await snapshot(reg), before, "the failed manifest PUT left something");
          assert.equal(await reg.meta.getManifest("full/app", sha256(manifest) as Digest), null);
          assert.equal(await reg.meta.getTag("full/app", "v1"), null);
          await assertError(await reg.fetch("/v2/full/app/manifests/v1"), 404, "MANIFEST_UNKNOWN");
          // A blob push on the full disk fails the same way; reads go on.
          const small = randomBytes(10_000, 6);
          const blob = await reg.fetch(`/v2/full/app/blobs/uploads/?digest=${sha256(small)}`, {
            method: "POST",
            headers: OCTET,
            body: small,
          });
          await assertNoSpace(blob, "blob POST on a full disk");
          await serving();
          const read = await reg.fetch(`/v2/full/app/blobs/${layer}`);
          assert.deepEqual(new Uint8Array(await read.arrayBuffer()), layerBytes);
          assert.deepEqual(await tree(join(dir, "tmp")), []);
          assert.deepEqual(await tree(join(dir, "uploads")), []);
        } finally {
          await Deno.remove(filler);
        }
        // Space is back: the same push succeeds.
        const res = await reg.fetch("/v2/full/app/manifests/v1", {
          method: "PUT",
          headers: { "Content-Type": OCI_MANIFEST },
          body: manifest,
        });
        await expectStatus(res, 201, "manifest PUT after freeing space");
        const got = await reg.fetch("/v2/full/app/manifests/v1", {
          headers: { Accept: OCI_MANIFEST },
        });
        assert.equal(await got.text(), manifest);
        assert.deepEqual(await tree(join(dir, "tmp")), []);
      },
    );
    assert.deepEqual(reg.errors, [], "a full disk was logged as an unhandled error");
  });
});

// A closing PUT's final chunk is never acknowledged on its own, so a 507 while
// assembling leaves the session where it was and the PUT can be retried.
Deno.test({
  name:
    "A10: a closing PUT with a final chunk whose blob cannot be assembled answers 507 and does not keep the chunk",
  async fn() {
    await withTmpfs(16, async (dir) => {
      await using reg = await startBerth({ dataDir: dir });
      const location = await openSession(reg, "full/app");
      const a = randomBytes(6 * MiB, 3);
      const b = randomBytes(6 * MiB, 4);
      await expectStatus(await patch(reg, location, a, 0), 202, "chunk a");
      const digest = sha256(concat(a, b));
      const before = await snapshot(reg);
      const freeBefore = await freeBytes(dir);
      const put = await reg.fetch(withDigest(location, digest), {
        method: "PUT",
        headers: { ...OCTET, "Content-Range": `${a.length}-${a.length + b.length - 1}` },
        body: b,
      });
      await assertNoSpace(put, "closing PUT with a final chunk assembling 12 MiB");
      assert.equal(await rangeOf(reg, location), `0-${a.length - 1}`, "the final chunk was kept");
      assert.deepEqual(await snapshot(reg), before, "the failed PUT left something behind");
      assert.equal(await freeBytes(dir), freeBefore, "space not given back");
    });
  },
});

// ---------------------------------------------------------------------------
// A fault-injecting store: ENOSPC and EIO in every write path
// ---------------------------------------------------------------------------

/** One write path and the request that reaches it. */
interface FaultRow {
  name: string;
  point: "writePart" | "put" | "putBytes" | "finish";
  afterBytes?: number;
  send(reg: Berth, f: FaultFixture): Promise<Response>;
}

interface FaultFixture {
  /** A session in `fault/app` holding `SESSION` (10 bytes). */
  session: string;
  manifest: string;
}

const SESSION = encoder.encode("0123456789");
const BIG = randomBytes(MiB, 11);

/** A body of `bytes` sent as a stream of 16 KiB pieces (chunked, no Content-Length). */
function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(offset, offset + 16 * 1024));
      offset += 16 * 1024;
    },
  });
}

const FAULT_ROWS: FaultRow[] = [
  {
    name: "monolithic POST, failing after 64 KiB of the body",
    // The body is written as a scratch part, kept until its link is committed.
    point: "writePart",
    afterBytes: 64 * 1024,
    send: (reg) =>
      reg.fetch(`/v2/fault/app/blobs/uploads/?digest=${sha256(BIG)}`, {
        method: "POST",
        headers: OCTET,
        body: BIG,
      }),
  },
  {
    name: "monolithic POST, failing at once",
    point: "writePart",
    send: (reg) =>
      reg.fetch(`/v2/fault/app/blobs/uploads/?digest=${sha256(BIG)}`, {
        method: "POST",
        headers: OCTET,
        body: BIG,
      }),
  },
  {
    name: "PATCH with Content-Range, failing after 64 KiB of the chunk",
    point: "writePart",
    afterBytes: 64 * 1024,
    send: (reg, f) => patch(reg, f.session, BIG, SESSION.length),
  },
  {
    name: "streamed PATCH without Content-Range, failing after 100 KB",
    point: "writePart",
    afterBytes: 100_000,
    send: (reg, f) => patch(reg, f.session, streamOf(BIG)),
  },
  {
    name: "PATCH, failing at once",
    point: "writePart",
    send: (reg, f) => patch(reg, f.session, BIG, SESSION.length),
  },
  {
    name: "closing PUT with a final chunk, failing while writing the chunk",
    point: "writePart",
    afterBytes: 1000,
    send: (reg, f) =>
      reg.fetch(withDigest(f.session, sha256(concat(SESSION, BIG))), {
        method: "PUT",
        headers: OCTET,
        body: BIG,
      }),
  },
  {
    name: "closing PUT without a body, failing while assembling the blob",
    point: "finish",
    send: (reg, f) => reg.fetch(withDigest(f.session, sha256(SESSION)), { method: "PUT" }),
  },
  {
    name: "manifest PUT, failing while writing the manifest",
    point: "putBytes",
    send: (reg, f) =>
      reg.fetch("/v2/fault/app/manifests/v1", {
        method: "PUT",
        headers: { "Content-Type": OCI_MANIFEST },
        body: f.manifest,
      }),
  },
];

/** Pushes what the rows need: image blobs for the manifest and a session holding 10 bytes. */
async function faultFixture(reg: Berth): Promise<FaultFixture> {
  const configBytes = JSON.stringify({ architecture: "amd64", os: "linux" });
  const layerBytes = randomBytes(3000, 12);
  const config = await pushBlob(reg.asTestRegistry(), "fault/app", configBytes);
  const layer = await pushBlob(reg.asTestRegistry(), "fault/app", layerBytes);
  const manifest = imageManifest(
    { digest: config, size: encoder.encode(configBytes).length },
    [{ digest: layer, size: layerBytes.length }],
  );
  const session = await openSession(reg, "fault/app");
  await expectStatus(await patch(reg, session, SESSION, 0), 202, "fixture chunk");
  return { session, manifest };
}

/**
 * Runs every row with `error` injected: each gets `status`/`code`, fires the
 * fault, and leaves KV (records, links, parts, counters) and the data trees
 * exactly as they were. Then, with the faults cleared, the same requests work.
 */
async function runFaultRows(
  t: Deno.TestContext,
  error: () => Error,
  expect: { status: number; code: string; check?: (body: string, reg: Berth) => void },
): Promise<void> {
  await using reg = await startBerth();
  const f = await faultFixture(reg);
  for (const row of FAULT_ROWS) {
    await t.step(row.name, async () => {
      const fault: Fault = row.afterBytes === undefined
        ? { error }
        : { error, afterBytes: row.afterBytes };
      reg.store.fail(row.point, fault);
      try {
        const before = await snapshot(reg);
        const counts = await reg.meta.countUploads("fault/app");
        const fired = reg.store.fired[row.point];
        const res = await row.send(reg, f);
        const body = await res.text();
        assert.equal(res.status, expect.status, `got ${res.status}: ${body}`);
        assert.equal(JSON.parse(body).errors[0].code, expect.code, body);
        expect.check?.(body, reg);
        assert.equal(reg.store.fired[row.point], fired + 1, "the fault did not fire");
        assert.deepEqual(await snapshot(reg), before, "the failed request left something behind");
        assert.deepEqual(await reg.meta.countUploads("fault/app"), counts);
        assert.equal(await rangeOf(reg, f.session), `0-${SESSION.length - 1}`);
      } finally {
        reg.store.clear();
      }
    });
  }
  await t.step("with the faults cleared, the same requests succeed", async () => {
    const mono = await reg.fetch(`/v2/fault/app/blobs/uploads/?digest=${sha256(BIG)}`, {
      method: "POST",
      headers: OCTET,
      body: BIG,
    });
    await expectStatus(mono, 201, "monolithic POST");
    await expectStatus(await patch(reg, f.session, BIG, SESSION.length), 202, "PATCH");
    const whole = sha256(concat(SESSION, BIG));
    await expectStatus(
      await reg.fetch(withDigest(f.session, whole), { method: "PUT" }),
      201,
      "PUT",
    );
    const manifest = await reg.fetch("/v2/fault/app/manifests/v1", {
      method: "PUT",
      headers: { "Content-Type": OCI_MANIFEST },
      body: f.manifest,
    });
    await expectStatus(manifest, 201, "manifest PUT");
    assert.deepEqual(await tree(join(reg.dataDir, "uploads")), []);
    assert.deepEqual(await tree(join(reg.dataDir, "tmp")), []);
  });
}

Deno.test("A10: ENOSPC in each write path (fault-injecting store) answers 507 UNAVAILABLE and commits nothing", async (t) => {
  await runFaultRows(t, noSpaceError, { status: 507, code: "UNAVAILABLE" });
});

Deno.test("A10: EIO in each write path answers 500 UNKNOWN with no internals in the body, logged once, and commits nothing", async (t) => {
  await runFaultRows(t, () => ioError(), {
    status: 500,
    code: "UNKNOWN",
    check(body, reg) {
      for (
        const secret of [
          "EIO",
          "os error",
          "Input/output",
          "/srv/berth",
          "secret-part",
          reg.dataDir,
        ]
      ) {
        assert.ok(!body.includes(secret), `the body leaks "${secret}": ${body}`);
      }
      assert.doesNotMatch(body, /\bat .*\.ts:\d+/, "the body leaks a stack trace");
      const logged = reg.errors.splice(0);
      assert.equal(
        logged.length,
        1,
        `expected one unhandled-error log, got ${Deno.inspect(logged)}`,
      );
      assert.match(Deno.inspect(logged[0]), /Input\/output error/);
    },
  });
});

// ---------------------------------------------------------------------------
// Through the command line: caps, expiry, body timeout
// ---------------------------------------------------------------------------

/** A `main.ts serve` subprocess on a fresh data directory, removed on dispose. */
async function spawnBerth(args: string[]): Promise<
  { url: string; port: number; dataDir: string; fetch: Berth["fetch"] } & AsyncDisposable
> {
  const dataDir = await Deno.makeTempDir({ prefix: "berth-bounds-cli-" });
  let proc;
  try {
    proc = await spawnRegistry(["--data", dataDir, "--kv", ":memory:", ...args]);
  } catch (error) {
    await Deno.remove(dataDir, { recursive: true });
    throw error;
  }
  const { url } = proc;
  // No pooled keep-alive connections: the connection tests count and time out
  // connections, and a pooled one closed by the guard could race a reuse.
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  return {
    url,
    port: Number(new URL(url).port),
    dataDir,
    fetch: (path, init) => fetch(url + path, { ...init, client }),
    async [Symbol.asyncDispose]() {
      client.close();
      await proc.kill();
      await Deno.remove(dataDir, { recursive: true });
    },
  };
}

/** Polls `condition` every 100 ms until it holds, failing after `ms`. */
async function eventually(
  what: string,
  ms: number,
  condition: () => Promise<boolean>,
): Promise<number> {
  const started = performance.now();
  for (;;) {
    if (await condition()) return performance.now() - started;
    if (performance.now() - started > ms) assert.fail(`${what} did not happen within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

Deno.test("A10: a closing PUT whose session's bytes are gone (the store says NotFound) gets 404 and ends the session", async () => {
  // A store that does not keep a session's parts once they became a blob (Deno KV) says
  // NotFound when a collection took that blob before the session's commit.
  await using reg = await startBerth();
  const f = await faultFixture(reg);
  reg.store.fail("finish", { error: () => new Deno.errors.NotFound("Part p-1 of upload is gone") });
  try {
    const res = await reg.fetch(withDigest(f.session, sha256(SESSION)), { method: "PUT" });
    const body = await res.text();
    assert.equal(res.status, 404, body);
    assert.equal(JSON.parse(body).errors[0].code, "BLOB_UPLOAD_UNKNOWN");
    assert.deepEqual(reg.errors, [], "nothing logged as unhandled");
  } finally {
    reg.store.clear();
  }
  const status = await reg.fetch(f.session);
  await status.body?.cancel();
  assert.equal(status.status, 404, "the session has ended");
});

Deno.test("A5: --max-uploads-per-repo 2 --max-uploads 3: the next session gets 429 TOOMANYREQUESTS with Retry-After", async () => {
  await using reg = await spawnBerth(["--max-uploads-per-repo", "2", "--max-uploads", "3"]);
  const a1 = await openSession(reg, "a");
  await openSession(reg, "a");
  /** Asserts that opening one more session in `name` gets 429 with a Retry-After in seconds. */
  const assertRefused = async (name: string) => {
    const res = await reg.fetch(`/v2/${name}/blobs/uploads/`, { method: "POST" });
    assert.match(res.headers.get("Retry-After") ?? "", /^[1-9][0-9]*$/, "429 without Retry-After");
    await assertError(res, 429, "TOOMANYREQUESTS");
  };
  await assertRefused("a");
  await openSession(reg, "b");
  await assertRefused("c");
  // A monolithic POST opens no session, so the caps do not apply to it.
  const mono = await reg.fetch(`/v2/c/blobs/uploads/?digest=${sha256("x")}`, {
    method: "POST",
    headers: OCTET,
    body: "x",
  });
  await expectStatus(mono, 201, "a monolithic POST needs no session and is not capped");
  await expectStatus(await reg.fetch(a1, { method: "DELETE" }), 204, "cancel");
  await openSession(reg, "c");
});

Deno.test("A5: with --upload-ttl 2s an abandoned session expires with its files; a busy one does not", async () => {
  await using reg = await spawnBerth(["--upload-ttl", "2s", "--max-uploads-per-repo", "1"]);
  const idle = await openSession(reg, "idle/app");
  await expectStatus(await patch(reg, idle, randomBytes(5000, 1), 0), 202, "idle chunk");
  const lastTouched = performance.now();
  const idleDir = join(reg.dataDir, "uploads", uploadIdOf(idle));
  assert.ok(await exists(idleDir), "the chunk is not under uploads/<id>");
  await assertError(
    await reg.fetch("/v2/idle/app/blobs/uploads/", { method: "POST" }),
    429,
    "TOOMANYREQUESTS",
  );
  const busy = await openSession(reg, "busy/app");
  const busyBytes: Uint8Array[] = [];
  // Keep `busy` going with a chunk a second while `idle` expires, and a while after.
  const keepBusy = (async () => {
    for (let i = 0; i < 5; i++) {
      const chunk = randomBytes(100, 20 + i);
      await expectStatus(await patch(reg, busy, chunk, i * 100), 202, `busy chunk ${i}`);
      busyBytes.push(chunk);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  })();
  await eventually("expiry of the idle session", 8_000, async () => {
    const res = await reg.fetch(idle);
    await res.body?.cancel();
    return res.status === 404;
  });
  const idleFor = performance.now() - lastTouched;
  assert.ok(idleFor >= 1900, `expired after ${Math.round(idleFor)} ms idle, before its TTL`);
  await assertError(await reg.fetch(idle), 404, "BLOB_UPLOAD_UNKNOWN");
  await eventually(
    "removal of the idle session's files",
    2_000,
    async () => !(await exists(idleDir)),
  );
  // Its slot is free again.
  await openSession(reg, "idle/app");
  await keepBusy;
  // The busy session outlived 2.5 TTLs and completes.
  assert.equal(await rangeOf(reg, busy), "0-499");
  const whole = concat(...busyBytes);
  await expectStatus(
    await reg.fetch(withDigest(busy, sha256(whole)), { method: "PUT" }),
    201,
    "busy PUT",
  );
  const got = await reg.fetch(`/v2/busy/app/blobs/${sha256(whole)}`);
  assert.deepEqual(new Uint8Array(await got.arrayBuffer()), whole);
});

/** The head of a raw request with a declared body. */
function rawHead(method: string, path: string, contentLength: number, extra = ""): string {
  return `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
    `Content-Type: application/octet-stream\r\nContent-Length: ${contentLength}\r\n${extra}\r\n`;
}

/** Asserts a stalled request got a 408 OCI error, or was closed, after the timeout. */
function assertStalled(res: Timed, what: string, code?: string): void {
  assert.ok(res.ms >= 900, `${what}: answered after ${Math.round(res.ms)} ms, before the timeout`);
  assert.ok(res.ms < 4000, `${what}: answered after ${Math.round(res.ms)} ms`);
  if (res.status === null) return; // closed by the server: also acceptable
  assert.equal(res.status, 408, `${what}: ${res.status} ${res.body}`);
  const parsed = JSON.parse(res.body) as { errors: { code: string }[] };
  assert.ok(parsed.errors[0]?.code, res.body);
  if (code) assert.equal(parsed.errors[0].code, code, res.body);
}

Deno.test("A11: with --body-timeout 1s a stalled body gets 408 and keeps nothing; a slow but steady one succeeds", async (t) => {
  await using reg = await spawnBerth(["--body-timeout", "1s"]);
  const first = randomBytes(10, 1);
  const session = await openSession(reg, "slow/app");
  await expectStatus(await patch(reg, session, first, 0), 202, "first chunk");
  const sessionDir = join(reg.dataDir, "uploads", uploadIdOf(session));
  const partsBefore = await tree(sessionDir);
  const blob = randomBytes(2048, 2);
  const configBytes = encoder.encode(JSON.stringify({ os: "linux" }));
  // pushBlob only uses `fetch`.
  const config = await pushBlob(reg as unknown as TestRegistry, "slow/app", configBytes);
  const manifest = encoder.encode(imageManifest({ digest: config, size: configBytes.length }, []));
  const steady = randomBytes(8 * 1024, 3);

  // The stalls and the steady body run side by side; each takes about a second or more.
  const [patched, posted, manifested, steadied] = await Promise.all([
    rawRequest(
      reg.port,
      rawHead("PATCH", session, 2048, `Content-Range: 10-2057\r\n`),
      blob.subarray(0, 1024),
    ),
    rawRequest(
      reg.port,
      rawHead("POST", `/v2/slow/app/blobs/uploads/?digest=${sha256(blob)}`, 2048),
      blob.subarray(0, 1024),
    ),
    rawRequest(
      reg.port,
      rawHead("PUT", "/v2/slow/app/manifests/stalled", manifest.length).replace(
        "application/octet-stream",
        OCI_MANIFEST,
      ),
      manifest.subarray(0, 100),
    ),
    (async () => {
      const other = await openSession(reg, "slow/app");
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (sent >= steady.length) return controller.close();
          if (sent > 0) await new Promise((resolve) => setTimeout(resolve, 300));
          controller.enqueue(steady.slice(sent, sent + 1024));
          sent += 1024;
        },
      }, { highWaterMark: 0 });
      const started = performance.now();
      const res = await patch(reg, other, body);
      await expectStatus(res, 202, "steady PATCH");
      return { other, ms: performance.now() - started };
    })(),
  ]);

  await t.step("a PATCH that stalls halfway: 408, offset unchanged, no part file", async () => {
    assertStalled(patched, "stalled PATCH", "BLOB_UPLOAD_INVALID");
    assert.equal(await rangeOf(reg, session), "0-9");
    assert.deepEqual(await tree(sessionDir), partsBefore);
    // The session goes on.
    const rest = randomBytes(5, 4);
    await expectStatus(await patch(reg, session, rest, 10), 202, "chunk after the stall");
    const whole = sha256(concat(first, rest));
    await expectStatus(await reg.fetch(withDigest(session, whole), { method: "PUT" }), 201, "PUT");
  });

  await t.step("a monolithic POST that stalls halfway: 408 and nothing stored", async () => {
    assertStalled(posted, "stalled POST", "BLOB_UPLOAD_INVALID");
    await assertError(await reg.fetch(`/v2/slow/app/blobs/${sha256(blob)}`), 404, "BLOB_UNKNOWN");
    const scratch = (await tree(join(reg.dataDir, "uploads"))).filter((p) => p.startsWith("put-"));
    assert.deepEqual(scratch, []);
    assert.deepEqual(await tree(join(reg.dataDir, "tmp")), []);
  });

  await t.step("a manifest PUT that stalls halfway: 408 and no record", async () => {
    assertStalled(manifested, "stalled manifest PUT");
    await assertError(
      await reg.fetch("/v2/slow/app/manifests/stalled"),
      404,
      "MANIFEST_UNKNOWN",
    );
  });

  await t.step("a body sending 1 KiB every 300 ms for 2 s is not cut off", async () => {
    assert.ok(steadied.ms > 1500, `the steady body took only ${Math.round(steadied.ms)} ms`);
    assert.equal(await rangeOf(reg, steadied.other), `0-${steady.length - 1}`);
  });
});

// ---------------------------------------------------------------------------
// Header size (Deno's own limits, before Berth sees the request)
// ---------------------------------------------------------------------------

Deno.test("A11: a 1 MiB header or 300 headers get a clean 4xx or a closed connection, never a 5xx", async (t) => {
  await using direct = await startBerth();
  // `main.ts serve` puts the connection guard in front of Deno.serve by default.
  await using guarded = await spawnBerth([]);
  const rows = [
    {
      name: "one 1 MiB header",
      head: `GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${"a".repeat(MiB)}\r\n\r\n`,
    },
    {
      name: "300 headers",
      head: "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
        Array.from({ length: 300 }, (_, i) => `X-H${i}: ${i}\r\n`).join("") + "\r\n",
    },
    {
      name: "300 headers of 100 bytes on a PATCH with a body",
      head:
        "PATCH /v2/hdr/app/blobs/uploads/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n" +
        Array.from({ length: 300 }, (_, i) => `X-H${i}: ${"v".repeat(100)}\r\n`).join("") +
        "\r\nhello",
    },
  ];
  for (const [target, reg] of [["in process", direct], ["main.ts serve", guarded]] as const) {
    for (const row of rows) {
      await t.step(`${row.name} (${target})`, async () => {
        const before = reg === direct ? await snapshot(direct) : await tree(reg.dataDir);
        const res = await rawRequest(reg.port, row.head);
        if (res.status !== null) {
          assert.ok(
            res.status >= 400 && res.status < 500,
            `${res.status}: ${res.body.slice(0, 200)}`,
          );
        }
        const after = reg === direct ? await snapshot(direct) : await tree(reg.dataDir);
        assert.deepEqual(after, before, "the refused request wrote something");
        const still = await reg.fetch("/v2/");
        await still.body?.cancel();
        assert.equal(still.status, 200, "the server stopped serving");
      });
    }
  }
  assert.deepEqual(direct.errors, []);
});

// ---------------------------------------------------------------------------
// Idle connections and the connection cap (the connection guard of main.ts)
// ---------------------------------------------------------------------------

/** A keep-alive connection driven by hand. */
class RawConn implements Disposable {
  #conn: Deno.TcpConn;
  #buffer = new Uint8Array(64 * 1024);
  #closed = false;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  static async open(port: number): Promise<RawConn> {
    return new RawConn(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  async send(bytes: string | Uint8Array): Promise<void> {
    const data = typeof bytes === "string" ? encoder.encode(bytes) : bytes;
    let written = 0;
    while (written < data.length) written += await this.#conn.write(data.subarray(written));
  }

  /** Reads one whole response; null if the server closed first. Fails after `ms`. */
  async response(ms = 5_000): Promise<RawResponse | null> {
    const chunks: Uint8Array[] = [];
    const guard = setTimeout(() => this.close(), ms);
    try {
      while (!isComplete(concat(...chunks))) {
        const n = await this.#read();
        if (n === null) {
          assert.ok(!this.#closed, `no response within ${ms} ms`);
          return chunks.length ? parseRawResponse(concat(...chunks)) : null;
        }
        chunks.push(this.#buffer.slice(0, n));
      }
      return parseRawResponse(concat(...chunks));
    } finally {
      clearTimeout(guard);
    }
  }

  /** Waits for the server to close the connection, failing on data or after `ms`; returns ms waited. */
  async closedByServer(ms: number): Promise<number> {
    const started = performance.now();
    const guard = setTimeout(() => this.close(), ms);
    try {
      const n = await this.#read();
      assert.ok(!this.#closed, `the server kept the connection open for ${ms} ms`);
      assert.equal(n, null, "the server sent data on an idle connection");
      return performance.now() - started;
    } finally {
      clearTimeout(guard);
    }
  }

  async #read(): Promise<number | null> {
    try {
      return await this.#conn.read(this.#buffer);
    } catch (error) {
      if (this.#closed || error instanceof Deno.errors.ConnectionReset) return null;
      throw error;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#conn.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

const GET_V2 = "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

Deno.test("A11: with --idle-timeout 1s an idle connection is closed; one with a request in flight is not", async (t) => {
  await using reg = await spawnBerth(["--idle-timeout", "1s", "--body-timeout", "10s"]);

  await t.step(
    "a keep-alive connection idle after a response is closed by the server",
    async () => {
      using conn = await RawConn.open(reg.port);
      await conn.send(GET_V2);
      assert.equal((await conn.response())?.status, 200);
      const waited = await conn.closedByServer(4_000);
      assert.ok(waited >= 900, `closed after ${Math.round(waited)} ms, before the timeout`);
    },
  );

  await t.step("a connection that stalls in the middle of its headers is closed", async () => {
    using conn = await RawConn.open(reg.port);
    await conn.send("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
    const waited = await conn.closedByServer(4_000);
    assert.ok(waited >= 900, `closed after ${Math.round(waited)} ms, before the timeout`);
  });

  await t.step(
    "a connection whose request body pauses longer than the idle timeout is kept",
    async () => {
      const location = await openSession(reg, "idle/app");
      const bytes = randomBytes(2000, 9);
      using conn = await RawConn.open(reg.port);
      await conn.send(rawHead("PATCH", location, bytes.length, "Content-Range: 0-1999\r\n"));
      await conn.send(bytes.subarray(0, 1000));
      // Wait until Berth holds the request (the session dir appears with the part being written),
      // then pause past the idle timeout with the request in flight.
      const dir = join(reg.dataDir, "uploads", uploadIdOf(location));
      await eventually("the PATCH to reach Berth", 3_000, () => exists(dir));
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      await conn.send(bytes.subarray(1000));
      const res = await conn.response();
      assert.equal(res?.status, 202, `the paused PATCH: ${res?.status} ${res?.body}`);
      assert.equal(await rangeOf(reg, location), "0-1999");
    },
  );

  await t.step("a connection that keeps making requests stays open", async () => {
    using conn = await RawConn.open(reg.port);
    for (let i = 0; i < 4; i++) {
      await conn.send(GET_V2);
      assert.equal((await conn.response())?.status, 200, `request ${i} on the same connection`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  });
});

Deno.test("A11: with --max-connections 3 the 4th connection gets 503 or is closed; the first three keep working", async () => {
  await using reg = await spawnBerth(["--max-connections", "3", "--idle-timeout", "30s"]);
  // Only raw connections here: fetch's pool would take slots of its own.
  const conns = await Promise.all([0, 1, 2].map(() => RawConn.open(reg.port)));
  try {
    for (const conn of conns) {
      await conn.send(GET_V2);
      assert.equal((await conn.response())?.status, 200);
    }
    {
      using extra = await RawConn.open(reg.port);
      await extra.send(GET_V2).catch(() => {}); // it may already be closed
      const res = await extra.response();
      if (res !== null) {
        assert.equal(res.status, 503, `the 4th connection: ${res.status} ${res.body}`);
        assert.ok(res.headers.get("Retry-After"), "503 without Retry-After");
        assert.ok(JSON.parse(res.body).errors[0].code, res.body);
      }
    }
    for (const [i, conn] of conns.entries()) {
      await conn.send(GET_V2);
      assert.equal((await conn.response())?.status, 200, `connection ${i} after the refusal`);
    }
    // Closing one frees its slot.
    conns[0]!.close();
    await eventually("a slot to free up", 3_000, async () => {
      using next = await RawConn.open(reg.port);
      await next.send(GET_V2).catch(() => {});
      return (await next.response())?.status === 200;
    });
  } finally {
    for (const conn of conns) conn.close();
  }
});
