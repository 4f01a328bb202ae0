/**
 * The S3 blob store against a real S3 server (a throw-away Ceph RADOS
 * Gateway, started once for this file): what the shared suite cannot see.
 * Digest mismatches never become visible nor shadow a good blob; chunks are
 * copied server-side or gathered, and racing writers never overwrite each
 * other; a server that fails (a fault-injecting TCP proxy in front of
 * radosgw) is retried, then answered with a clean 503 and nothing
 * half-written; abandoned sessions and crashed multipart uploads are
 * cleaned up by the collector; presigned redirects are followed by curl and
 * skopeo; a session started in one Berth process is finished by another;
 * a 1 GiB blob goes through with flat memory; wrong credentials and a
 * missing bucket stop start-up with one line.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import { makeDigest } from "../src/oci/digest.ts";
import { OciError } from "../src/oci/errors.ts";
import { KvMetadataStore } from "../src/meta/metadata_store.ts";
import { S3BlobStore } from "../src/storage/s3/s3_blob_store.ts";
import { sweep } from "../src/sweeper.ts";
import { bodyOf, bytesOf, digestOf, readAll } from "./_blob_store_suite.ts";
import { cephForFile } from "./_ceph.ts";
import { runMain, spawnRegistry } from "./_registry.ts";

const ceph = await cephForFile();
const BUCKET = "berth-s3-test";
await ceph.createBucket(BUCKET);
const MiB = 1024 * 1024;

function test(name: string, fn: () => Promise<void>) {
  Deno.test({ name, fn });
}

/** A store on a fresh prefix of the test bucket, through `endpoint` (radosgw by default). */
function openStore(
  options: {
    endpoint?: string;
    prefix?: string;
    retries?: number;
    redirectMs?: number;
    readStallMs?: number;
  } = {},
) {
  return S3BlobStore.open({
    endpoint: options.endpoint ?? ceph.endpoint,
    region: ceph.region,
    bucket: BUCKET,
    prefix: options.prefix ?? `t/${crypto.randomUUID()}/`,
    pathStyle: true,
    accessKeyId: ceph.accessKey,
    secretAccessKey: ceph.secretKey,
    retryBaseMs: 20,
    ...(options.retries === undefined ? {} : { retries: options.retries }),
    ...(options.readStallMs === undefined ? {} : { readStallMs: options.readStallMs }),
  });
}

/** Berth's options for the test bucket under `prefix`, through `endpoint`. */
function berthArgs(prefix: string, endpoint = ceph.endpoint): string[] {
  return [
    "--blobs",
    `s3://${BUCKET}/${prefix}`,
    "--s3-endpoint",
    endpoint,
    "--s3-access-key-id",
    ceph.accessKey,
    "--s3-secret-access-key",
    ceph.secretKey,
  ];
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

async function sha256Of(stream: ReadableStream<Uint8Array>): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of stream) hash.update(chunk);
  return `sha256:${hash.digest("hex")}`;
}

/** Every multipart upload in progress and every object under the store's prefix. */
async function leftovers(store: S3BlobStore) {
  return {
    uploads: await collect(store.client.listUploads(store.prefix)),
    objects: (await collect(store.client.list(store.prefix))).map((o) => o.key),
  };
}

test("put() of a large body streams it as a multipart upload and reads back whole", async () => {
  const store = await openStore();
  const bytes = bytesOf(21 * MiB + 123, 3);
  const digest = digestOf(bytes);
  assert.deepEqual(await store.put(digest, bodyOf(bytes, 65536)), { ok: true, size: bytes.length });
  assert.equal((await store.stat(digest))?.size, bytes.length);
  assert.equal(await sha256Of((await store.open(digest))!.stream), digest);
  const range = await store.open(digest, { start: 9 * MiB, end: 9 * MiB + 99 });
  assert.deepEqual(await readAll(range!.stream), bytes.subarray(9 * MiB, 9 * MiB + 100));
  assert.deepEqual((await leftovers(store)).uploads, []);
});

test("a body that does not match never becomes visible and never shadows the good blob", async () => {
  const store = await openStore();
  const good = bytesOf(18 * MiB, 5);
  const digest = digestOf(good);
  const bad = bytesOf(18 * MiB, 6);
  // Not there yet: a mismatching body of several parts leaves no blob and no upload.
  const first = await store.put(digest, bodyOf(bad));
  assert.equal(first.ok, false);
  assert.equal(await store.stat(digest), null);
  assert.deepEqual(await leftovers(store), { uploads: [], objects: [] });
  // There already: neither a monolithic nor a chunked mismatch touches it.
  assert.equal((await store.put(digest, bodyOf(good))).ok, true);
  const before = await store.stat(digest);
  assert.equal((await store.put(digest, bodyOf(bad))).ok, false);
  const parts = [
    await store.writePart("sess-1", bodyOf(bad.subarray(0, 6 * MiB)), { algorithm: "sha256" }),
    await store.writePart("sess-1", bodyOf(bad.subarray(6 * MiB)), { algorithm: "sha256" }),
  ];
  const finished = await store.finish("sess-1", parts, digest);
  assert.deepEqual(finished, { ok: false, actual: digestOf(bad), size: bad.length });
  assert.deepEqual(await store.stat(digest), before);
  assert.equal(await sha256Of((await store.open(digest))!.stream), digest);
  assert.deepEqual((await leftovers(store)).uploads, []);
});

test("finish() copies chunks of 5 MiB or more server-side and gathers smaller ones in order", async () => {
  const store = await openStore();
  const sizes = [1 * MiB, 6 * MiB, 300, 2 * MiB, 9 * MiB + 7, 5 * MiB, 100];
  const chunks = sizes.map((size, i) => bytesOf(size, 10 + i));
  const whole = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
  let offset = 0;
  for (const chunk of chunks) whole.set(chunk, (offset += chunk.length) - chunk.length);
  const parts = [];
  for (const chunk of chunks) {
    parts.push(await store.writePart("sess-2", bodyOf(chunk, 40000), { algorithm: "sha256" }));
  }
  const digest = digestOf(whole);
  assert.deepEqual(await store.finish("sess-2", parts, digest), { ok: true, size: whole.length });
  assert.deepEqual(await readAll((await store.open(digest))!.stream), whole);
  // A session that starts with a large chunk: copied first, then the rest.
  const large = [bytesOf(7 * MiB, 30), bytesOf(7 * MiB, 31)];
  const both = new Uint8Array(14 * MiB);
  both.set(large[0]!, 0);
  both.set(large[1]!, 7 * MiB);
  const bigParts = [];
  for (const chunk of large) {
    bigParts.push(await store.writePart("sess-3", bodyOf(chunk), { algorithm: "sha256" }));
  }
  assert.deepEqual(await store.finish("sess-3", bigParts, digestOf(both)), {
    ok: true,
    size: both.length,
  });
  assert.equal(await sha256Of((await store.open(digestOf(both)))!.stream), digestOf(both));
  assert.deepEqual((await leftovers(store)).uploads, []);
});

test("racing writers of one session each get a part of their own", async () => {
  const store = await openStore();
  const bodies = [0, 1, 2, 3].map((i) => bytesOf(6 * MiB + i, 40 + i));
  const parts = await Promise.all(
    bodies.map((bytes) => store.writePart("sess-race", bodyOf(bytes), { algorithm: "sha256" })),
  );
  assert.equal(new Set(parts.map((p) => p.file)).size, 4);
  for (const [i, part] of parts.entries()) {
    assert.equal(part.digest, digestOf(bodies[i]!));
    assert.equal(await sha256Of((await store.openPart("sess-race", part.file))!), part.digest);
  }
  // Two finishers at once of the same session: both verified, the blob is the concatenation.
  const whole = new Uint8Array(bodies.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const body of [bodies[2]!, bodies[0]!]) whole.set(body, (at += body.length) - body.length);
  const ordered = [parts[2]!, parts[0]!];
  const digest = digestOf(whole.subarray(0, at));
  const results = await Promise.all([
    store.finish("sess-race", ordered, digest),
    store.finish("sess-race", ordered, digest),
  ]);
  assert.deepEqual(results.map((r) => r.ok), [true, true]);
  assert.equal(await sha256Of((await store.open(digest))!.stream), digest);
});

test("racing PATCHes at one offset through Berth: one wins, the blob is the winner's", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-s3-" });
  await using reg = await spawnRegistry([
    "--data",
    dir,
    ...berthArgs(`race-${crypto.randomUUID()}`),
  ]);
  const start = await fetch(`${reg.url}/v2/race/blobs/uploads/`, { method: "POST" });
  await start.body?.cancel();
  const location = new URL(start.headers.get("Location")!, reg.url).href;
  const bodies = [bytesOf(5 * MiB, 50), bytesOf(5 * MiB, 51)];
  const answers = await Promise.all(bodies.map((body) =>
    fetch(location, {
      method: "PATCH",
      headers: {
        "Content-Type": "application/octet-stream",
        "Content-Range": `0-${body.length - 1}`,
      },
      body,
    }).then(async (r) => (await r.body?.cancel(), r))
  ));
  const statuses = answers.map((a) => a.status).sort();
  assert.deepEqual(statuses, [202, 416]);
  const winner = bodies[answers.findIndex((a) => a.status === 202)]!;
  const next = new URL(answers.find((a) => a.status === 202)!.headers.get("Location")!, reg.url);
  next.searchParams.set("digest", digestOf(winner));
  const put = await fetch(next, { method: "PUT" });
  await put.body?.cancel();
  assert.equal(put.status, 201);
  const got = await fetch(`${reg.url}/v2/race/blobs/${digestOf(winner)}`);
  assert.equal(await sha256Of(got.body!), digestOf(winner));
  await reg.stop();
  await Deno.remove(dir, { recursive: true });
});

/**
 * A TCP proxy in front of radosgw that can answer 503 or cut connections
 * (bytes pass untouched, so SigV4 signatures stay valid).
 */
function faultProxy(target: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const state = {
    /**
     * pass; 503: answer every request 503; cut: close after `cutAfter` bytes; lose: pass a
     * multipart completion to the server but drop its answer (the connection is then cut);
     * stall: pass `cutAfter` bytes of each answer, then nothing (the connection stays open).
     */
    mode: "pass" as "pass" | "503" | "cut" | "lose" | "stall",
    /** How many new connections get the fault (then back to pass); Infinity: all. */
    faults: Infinity,
    cutAfter: 64 * 1024,
    faulted: 0,
    /** Connections accepted so far. */
    accepted: 0,
  };
  const open = new Set<Deno.Conn>();
  const closeAll = () => {
    for (const conn of open) {
      try {
        conn.close();
      } catch { /* closed */ }
    }
    open.clear();
  };
  const serve = async (client: Deno.Conn) => {
    open.add(client);
    state.accepted++;
    const fault = state.mode !== "pass" && state.mode !== "lose" &&
      state.faulted < state.faults;
    const stall = fault && state.mode === "stall";
    let received = 0;
    if (fault) state.faulted++;
    let losing = false;
    try {
      if (fault && state.mode === "503") {
        const buffer = new Uint8Array(16384);
        await client.read(buffer); // the request head (and maybe some of its body)
        await client.write(
          new TextEncoder().encode(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n" +
              "Content-Length: 58\r\nConnection: close\r\n\r\n" +
              "<Error><Code>SlowDown</Code><Message>x</Message></Error>\r\n",
          ),
        );
        return;
      }
      const server = await Deno.connect({ hostname: "127.0.0.1", port: target });
      open.add(server);
      let sent = 0;
      const limit = fault && !stall ? state.cutAfter : Infinity;
      const up = (async () => {
        const buffer = new Uint8Array(65536);
        for (;;) {
          const n = await client.read(buffer);
          if (n === null) break;
          if (
            state.mode === "lose" && state.faulted < state.faults &&
            /^POST [^ ]*uploadId=/.test(new TextDecoder().decode(buffer.subarray(0, 200)))
          ) {
            state.faulted++;
            losing = true;
          }
          sent += n;
          if (sent > limit) throw new Error("cut");
          let written = 0;
          while (written < n) written += await server.write(buffer.subarray(written, n));
        }
      })();
      const down = (async () => {
        const buffer = new Uint8Array(65536);
        for (;;) {
          const n = await server.read(buffer);
          if (n === null) break;
          if (losing) throw new Error("lost"); // the server did it; the client never hears
          received += n;
          if (stall && received > state.cutAfter) await new Promise(() => {}); // until closed
          let written = 0;
          while (written < n) written += await client.write(buffer.subarray(written, n));
        }
      })();
      await Promise.race([up, down]).catch(() => {});
      server.close();
      open.delete(server);
    } catch {
      /* cut */
    } finally {
      try {
        client.close();
      } catch { /* closed */ }
      open.delete(client);
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) serve(conn);
  })().catch(() => {});
  return {
    endpoint: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    state,
    /** Sets the fault for the next `faults` connections and drops those open now. */
    set(mode: "pass" | "503" | "cut" | "lose" | "stall", faults = Infinity) {
      state.mode = mode;
      state.faults = faults;
      state.faulted = 0;
      closeAll();
    },
    async close() {
      listener.close();
      closeAll();
      await accepting;
    },
  };
}

function rgwPort(): number {
  return Number(new URL(ceph.endpoint).port);
}

test("a server that answers 503 or cuts connections a few times is retried: the blob is stored", async () => {
  const proxy = faultProxy(rgwPort());
  try {
    const store = await openStore({ endpoint: proxy.endpoint });
    const bytes = bytesOf(17 * MiB, 60);
    const digest = digestOf(bytes);
    proxy.set("503", 3);
    assert.equal((await store.put(digest, bodyOf(bytes))).ok, true);
    proxy.set("cut", 3);
    const again = bytesOf(12 * MiB, 61);
    assert.equal((await store.put(digestOf(again), bodyOf(again))).ok, true);
    proxy.set("pass");
    assert.equal(await sha256Of((await store.open(digest))!.stream), digest);
    assert.equal(await sha256Of((await store.open(digestOf(again)))!.stream), digestOf(again));
  } finally {
    await proxy.close();
  }
});

test("a read whose answer stalls midway resumes on a new connection", async () => {
  const proxy = faultProxy(rgwPort());
  try {
    const store = await openStore({ endpoint: proxy.endpoint, readStallMs: 300 });
    const bytes = bytesOf(3 * MiB, 63);
    const digest = digestOf(bytes);
    assert.equal((await store.put(digest, bodyOf(bytes))).ok, true);
    proxy.set("stall", 1);
    const accepted = proxy.state.accepted;
    assert.equal(await sha256Of((await store.open(digest))!.stream), digest);
    assert.equal(proxy.state.faulted, 1, "the first answer stalled");
    assert.ok(proxy.state.accepted > accepted + 1, "the rest came over a new connection");
  } finally {
    await proxy.close();
  }
});

test("a multipart completion whose answer was lost is retried and found done: the blob is stored", async () => {
  const proxy = faultProxy(rgwPort());
  try {
    const store = await openStore({ endpoint: proxy.endpoint });
    const bytes = bytesOf(17 * MiB, 62);
    const digest = digestOf(bytes);
    proxy.set("lose", 1);
    assert.equal((await store.put(digest, bodyOf(bytes))).ok, true);
    assert.equal(proxy.state.faulted, 1, "the completion's answer was dropped once");
    proxy.set("pass");
    assert.equal(await sha256Of((await store.open(digest))!.stream), digest);
  } finally {
    await proxy.close();
  }
});

test("a read cut off midway resumes where it stopped", async () => {
  const proxy = faultProxy(rgwPort());
  try {
    const store = await openStore({ endpoint: proxy.endpoint });
    const bytes = bytesOf(12 * MiB, 62);
    const digest = digestOf(bytes);
    assert.equal((await store.put(digest, bodyOf(bytes))).ok, true);
    const read = await store.open(digest);
    const reader = read!.stream.getReader();
    const first = await reader.read();
    assert.ok(first.value && first.value.length > 0);
    const accepted = proxy.state.accepted;
    proxy.set("pass"); // drops the connection the read is on
    const hash = createHash("sha256").update(first.value);
    for (let r; !(r = await reader.read()).done;) hash.update(r.value);
    assert.equal(`sha256:${hash.digest("hex")}`, digest);
    assert.ok(proxy.state.accepted > accepted, "the rest came over a new connection");
  } finally {
    await proxy.close();
  }
});

test("a server that stays down: a clean 503 UNAVAILABLE, and nothing half-written is visible", async () => {
  const proxy = faultProxy(rgwPort());
  const dir = await Deno.makeTempDir({ prefix: "berth-s3-" });
  const prefix = `down-${crypto.randomUUID()}`;
  try {
    const store = await openStore({ endpoint: proxy.endpoint, retries: 2, prefix: `${prefix}/` });
    const bytes = bytesOf(10 * MiB, 63);
    const digest = digestOf(bytes);
    // In the store: an OciError UNAVAILABLE (503) once the retries are spent.
    proxy.set("503");
    await assert.rejects(
      () => store.put(digest, bodyOf(bytes)),
      (error) => error instanceof OciError && error.status === 503,
    );
    proxy.set("pass");
    assert.equal(await store.stat(digest), null);
    // Through Berth: the client gets the spec's JSON error with 503, and nothing is linked.
    await using reg = await spawnRegistry(["--data", dir, ...berthArgs(prefix, proxy.endpoint)]);
    proxy.set("503");
    const push = await fetch(`${reg.url}/v2/down/blobs/uploads/?digest=${digest}`, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: bytes,
    });
    assert.equal(push.status, 503);
    assert.equal((await push.json()).errors[0].code, "UNAVAILABLE");
    proxy.set("pass");
    const head = await fetch(`${reg.url}/v2/down/blobs/${digest}`, { method: "HEAD" });
    assert.equal(head.status, 404);
    assert.equal(await store.stat(digest), null);
    await reg.stop();
  } finally {
    await proxy.close();
    await Deno.remove(dir, { recursive: true });
  }
});

test("abandoned sessions and crashed multipart uploads leave nothing after the collector", async () => {
  const store = await openStore();
  const kv = await Deno.openKv(":memory:");
  try {
    const meta = new KvMetadataStore(kv);
    // A session with parts nothing records, a part upload that crashed midway (an
    // unfinished multipart upload under uploads/), and a put() that crashed (one under blobs/).
    await store.writePart("orphan-1", bodyOf(bytesOf(9 * MiB, 70)), { algorithm: "sha256" });
    const client = store.client;
    const partKey = `${store.prefix}uploads/orphan-2/p-0123456789abcdef`;
    const partUpload = await client.createUpload(partKey);
    await client.uploadPart(partKey, partUpload, 1, bytesOf(MiB, 71));
    const blobKey = store.blobKey(digestOf("never finished"));
    const blobUpload = await client.createUpload(blobKey);
    await client.uploadPart(blobKey, blobUpload, 1, bytesOf(MiB, 72));
    assert.deepEqual((await collect(store.listUploads())).map((u) => u.uploadId), [
      "orphan-1",
      "orphan-2",
    ]);
    const debris = await collect(store.debris({ leftoversOnly: true }));
    assert.deepEqual(debris.map((d) => d.what), ["unfinished multipart upload"]);
    // Young: kept. Old: gone.
    await sweep(meta, store, { ttlMs: 3_600_000 });
    assert.equal((await leftovers(store)).uploads.length, 2);
    const report = await sweep(meta, store, { ttlMs: 1000, now: Date.now() + 60_000 });
    assert.equal(report.orphanUploads, 2);
    assert.equal(report.tempFiles, 1);
    assert.deepEqual(await leftovers(store), { uploads: [], objects: [] });
  } finally {
    kv.close();
  }
});

test("a cancelled session through Berth leaves nothing in the bucket", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-s3-" });
  const prefix = `cancel-${crypto.randomUUID()}`;
  await using reg = await spawnRegistry(["--data", dir, ...berthArgs(prefix)]);
  const start = await fetch(`${reg.url}/v2/c/blobs/uploads/`, { method: "POST" });
  await start.body?.cancel();
  const location = new URL(start.headers.get("Location")!, reg.url).href;
  const chunk = bytesOf(6 * MiB, 80);
  const patch = await fetch(location, {
    method: "PATCH",
    headers: { "Content-Type": "application/octet-stream" },
    body: chunk,
  });
  await patch.body?.cancel();
  assert.equal(patch.status, 202);
  const store = await openStore({ prefix: `${prefix}/` });
  assert.equal((await leftovers(store)).objects.length, 1);
  const cancel = await fetch(location, { method: "DELETE" });
  await cancel.body?.cancel();
  assert.equal(cancel.status, 204);
  assert.deepEqual(await leftovers(store), { uploads: [], objects: [] });
  await reg.stop();
  await Deno.remove(dir, { recursive: true });
});

test("a session started in one Berth process is continued and finished by another", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-s3-" });
  const args = ["--kv", `${dir}/meta.kv`, ...berthArgs(`two-${crypto.randomUUID()}`)];
  await using a = await spawnRegistry(["--data", `${dir}/a`, ...args]);
  await using b = await spawnRegistry(["--data", `${dir}/b`, ...args]);
  const chunks = [bytesOf(6 * MiB, 90), bytesOf(3 * MiB, 91), bytesOf(5 * MiB + 1, 92)];
  const whole = new Uint8Array(14 * MiB + 1);
  whole.set(chunks[0]!, 0);
  whole.set(chunks[1]!, 6 * MiB);
  whole.set(chunks[2]!, 9 * MiB);
  const start = await fetch(`${a.url}/v2/two/blobs/uploads/`, { method: "POST" });
  await start.body?.cancel();
  let path = start.headers.get("Location")!;
  let offset = 0;
  for (const [i, chunk] of chunks.entries()) {
    const reg = i % 2 === 0 ? a : b;
    const res = await fetch(new URL(path, reg.url), {
      method: "PATCH",
      headers: {
        "Content-Type": "application/octet-stream",
        "Content-Range": `${offset}-${offset + chunk.length - 1}`,
      },
      body: chunk,
    });
    await res.body?.cancel();
    assert.equal(res.status, 202, `chunk ${i}`);
    offset += chunk.length;
    path = res.headers.get("Location")!;
  }
  const digest = digestOf(whole);
  const done = new URL(path, b.url);
  done.searchParams.set("digest", digest);
  const put = await fetch(done, { method: "PUT" });
  await put.body?.cancel();
  assert.equal(put.status, 201);
  for (const reg of [a, b]) {
    const got = await fetch(`${reg.url}/v2/two/blobs/${digest}`);
    assert.equal(await sha256Of(got.body!), digest);
  }
  await a.stop();
  await b.stop();
  await Deno.remove(dir, { recursive: true });
});

test("blob GETs answer 307 to a presigned URL that curl -L and skopeo follow", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-s3-" });
  await using reg = await spawnRegistry([
    "--data",
    `${dir}/data`,
    "--s3-redirect",
    "1m",
    ...berthArgs(`redirect-${crypto.randomUUID()}`),
  ]);
  const layer = new Uint8Array(gzipSync(bytesOf(7 * MiB + 5, 100), { level: 1 }));
  const config = new TextEncoder().encode(JSON.stringify({ architecture: "amd64", os: "linux" }));
  for (const bytes of [layer, config]) {
    const res = await fetch(`${reg.url}/v2/app/blobs/uploads/?digest=${digestOf(bytes)}`, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: bytes,
    });
    await res.body?.cancel();
    assert.equal(res.status, 201);
  }
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {
      mediaType: "application/vnd.oci.image.config.v1+json",
      digest: digestOf(config),
      size: config.length,
    },
    layers: [{
      mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
      digest: digestOf(layer),
      size: layer.length,
    }],
  });
  const put = await fetch(`${reg.url}/v2/app/manifests/v1`, {
    method: "PUT",
    headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
    body: manifest,
  });
  await put.body?.cancel();
  assert.equal(put.status, 201);
  // The redirect itself: to radosgw, signed in the query.
  const get = await fetch(`${reg.url}/v2/app/blobs/${digestOf(layer)}`, { redirect: "manual" });
  await get.body?.cancel();
  assert.equal(get.status, 307);
  const location = get.headers.get("Location")!;
  assert.ok(location.startsWith(ceph.endpoint), location);
  assert.match(location, /X-Amz-Signature=/);
  // An unknown blob is still a 404 from Berth.
  const unknown = await fetch(`${reg.url}/v2/app/blobs/${digestOf("nothing")}`, {
    redirect: "manual",
  });
  await unknown.body?.cancel();
  assert.equal(unknown.status, 404);
  // curl -L, whole and a range.
  const curl = await new Deno.Command("curl", {
    args: ["-sSfL", "-o", `${dir}/layer`, `${reg.url}/v2/app/blobs/${digestOf(layer)}`],
  }).output();
  assert.equal(curl.code, 0, new TextDecoder().decode(curl.stderr));
  assert.equal(digestOf(await Deno.readFile(`${dir}/layer`)), digestOf(layer));
  const ranged = await new Deno.Command("curl", {
    args: ["-sSfL", "-r", "100-199", `${reg.url}/v2/app/blobs/${digestOf(layer)}`],
    stdout: "piped",
  }).output();
  assert.deepEqual(ranged.stdout, layer.subarray(100, 200));
  // skopeo copies the image out, following the redirects for its blobs.
  await Deno.writeTextFile(
    `${dir}/policy.json`,
    JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }),
  );
  const host = new URL(reg.url).host;
  const skopeo = await new Deno.Command("skopeo", {
    args: [
      "--policy",
      `${dir}/policy.json`,
      "copy",
      "--src-tls-verify=false",
      `docker://${host}/app:v1`,
      `dir:${dir}/out`,
    ],
    env: { TMPDIR: dir },
  }).output();
  assert.equal(skopeo.code, 0, new TextDecoder().decode(skopeo.stderr));
  const files = [...Deno.readDirSync(`${dir}/out`)].map((e) => e.name);
  const copied = await Deno.readFile(`${dir}/out/${digestOf(layer).slice(7)}`)
    .catch(() => assert.fail(`layer not copied; files: ${files}`));
  assert.equal(digestOf(copied), digestOf(layer));
  await reg.stop();
  await Deno.remove(dir, { recursive: true });
});

test("a 1 GiB blob goes through Berth to S3 and back with flat memory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-s3-" });
  await using reg = await spawnRegistry([
    "--data",
    dir,
    ...berthArgs(`big-${crypto.randomUUID()}`),
  ]);
  const size = 1024 * MiB;
  const block = bytesOf(MiB, 110);
  const hash = createHash("sha256");
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= size) return controller.close();
      const chunk = block.slice();
      chunk[0] = sent / MiB & 0xff; // no two blocks alike
      chunk[1] = (sent / MiB) >> 8;
      hash.update(chunk);
      sent += chunk.length;
      controller.enqueue(chunk);
    },
  });
  const start = await fetch(`${reg.url}/v2/big/blobs/uploads/`, { method: "POST" });
  await start.body?.cancel();
  const patch = await fetch(new URL(start.headers.get("Location")!, reg.url), {
    method: "PATCH",
    headers: { "Content-Type": "application/octet-stream" },
    body,
  });
  await patch.body?.cancel();
  assert.equal(patch.status, 202);
  const digest = makeDigest("sha256", hash.digest("hex"));
  const done = new URL(patch.headers.get("Location")!, reg.url);
  done.searchParams.set("digest", digest);
  const put = await fetch(done, { method: "PUT" });
  await put.body?.cancel();
  assert.equal(put.status, 201);
  const got = await fetch(`${reg.url}/v2/big/blobs/${digest}`);
  assert.equal(got.headers.get("Content-Length"), String(size));
  assert.equal(await sha256Of(got.body!), digest);
  const { stdout } = await new Deno.Command("cat", { args: [`/proc/${reg.pid}/status`] }).output();
  const status = new TextDecoder().decode(stdout);
  const peakKiB = Number(/VmHWM:\s+(\d+)/.exec(status)![1]);
  console.log(
    `Berth peak RSS after 1 GiB up and down through S3: ${Math.round(peakKiB / 1024)} MiB`,
  );
  assert.ok(peakKiB < 250 * 1024, `peak RSS ${peakKiB} KiB`);
  await reg.stop();
  await Deno.remove(dir, { recursive: true });
});

test("berth gc removes the bytes of blobs nothing holds from the bucket, and --full finds strays", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-s3-" });
  const prefix = `gc-${crypto.randomUUID()}`;
  const args = ["--data", dir, ...berthArgs(prefix)];
  const store = await openStore({ prefix: `${prefix}/` });
  const kept = bytesOf(6 * MiB, 120);
  const dropped = bytesOf(6 * MiB, 121);
  {
    await using reg = await spawnRegistry(args);
    const config = new TextEncoder().encode('{"architecture":"amd64","os":"linux"}');
    for (const [repo, bytes] of [["keep", kept], ["keep", config], ["drop", dropped]] as const) {
      const res = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/?digest=${digestOf(bytes)}`, {
        method: "POST",
        headers: { "Content-Type": "application/octet-stream" },
        body: bytes,
      });
      await res.body?.cancel();
      assert.equal(res.status, 201);
    }
    const manifest = await fetch(`${reg.url}/v2/keep/manifests/v1`, {
      method: "PUT",
      headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
      body: JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {
          mediaType: "application/vnd.oci.image.config.v1+json",
          digest: digestOf(config),
          size: config.length,
        },
        layers: [{
          mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
          digest: digestOf(kept),
          size: kept.length,
        }],
      }),
    });
    await manifest.body?.cancel();
    assert.equal(manifest.status, 201);
    const del = await fetch(`${reg.url}/v2/drop/blobs/${digestOf(dropped)}`, { method: "DELETE" });
    await del.body?.cancel();
    assert.equal(del.status, 202);
    await reg.stop();
  }
  // Bytes no record knows of (a push killed before its link commit).
  const stray = bytesOf(1000, 122);
  await store.putBytes(digestOf(stray), stray);
  for (let pass = 0; pass < 2; pass++) {
    const gc = await runMain(["gc", ...args, "--grace", "0", "--full"]);
    assert.equal(gc.code, 0, gc.stderr);
  }
  assert.equal(await store.stat(digestOf(dropped)), null);
  assert.equal(await store.stat(digestOf(stray)), null);
  assert.equal((await store.stat(digestOf(kept)))?.size, kept.length);
  assert.deepEqual((await leftovers(store)).uploads, []);
  await Deno.remove(dir, { recursive: true });
});

test("a missing bucket or refused credentials stop start-up with one clear line (exit 2)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-s3-" });
  const base = ["serve", "--listen", "127.0.0.1:0", "--data", dir, "--s3-endpoint", ceph.endpoint];
  const missing = await runMain([
    ...base,
    "--blobs",
    "s3://no-such-bucket-here",
    "--s3-access-key-id",
    ceph.accessKey,
    "--s3-secret-access-key",
    ceph.secretKey,
  ]);
  assert.equal(missing.code, 2);
  assert.equal(missing.stderr.trim().split("\n").length, 1, missing.stderr);
  assert.match(missing.stderr, /^berth: .*S3 bucket "no-such-bucket-here" does not exist/);
  for (const [id, secret] of [[ceph.accessKey, "wrong"], ["NOSUCHKEY", ceph.secretKey]]) {
    const refused = await runMain([
      ...base,
      "--blobs",
      `s3://${BUCKET}`,
      "--s3-access-key-id",
      id!,
      "--s3-secret-access-key",
      secret!,
    ]);
    assert.equal(refused.code, 2);
    assert.equal(refused.stderr.trim().split("\n").length, 1, refused.stderr);
    assert.match(refused.stderr, /^berth: .*S3 refused the credentials for bucket/);
    assert.doesNotMatch(refused.stderr, /wrong|\n\s+at /);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test({
  name: "the throw-away Ceph cluster stops: radosgw, then the OSD, then the monitor",
  async fn() {
    await ceph.stop();
  },
});
