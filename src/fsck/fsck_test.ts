/**
 * Unit tests of `fsck()`: a store built through the API is clean; a store
 * with every kind of damage written straight into KV and the files is
 * reported line by line, repaired, and clean on the next run, with what could
 * be served still served.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type App, createApp } from "../app.ts";
import { type Config, defaultConfig } from "../config.ts";
import { fsck } from "./fsck.ts";
import { schemaVersion } from "./checks/schema.ts";
import { SchemaError } from "../meta/schema.ts";
import { createLogger } from "../log.ts";
import {
  blobLinkKey,
  blobReposKey,
  legacyManifestEpochsPrefix,
  manifestKey,
  type ManifestRecord,
  manifestRefsKey,
  migrationKey,
  referrerKey,
  repoKey,
  schemaKey,
  secretKey,
  tagClockKey,
  tagKey,
  tagsByDigestKey,
  uploadCountKey,
  uploadPartKey,
  uploadTotalKey,
} from "../meta/keys.ts";
import type { Digest } from "../oci/digest.ts";
import { kvLocation, openStores, type Stores } from "../open.ts";
import type { FsBlobStore } from "../storage/fs_blob_store.ts";
import { imageManifest, randomBytes, runMain, sha256 } from "../../tests/_registry.ts";

const MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json";
const enc = new TextEncoder();

interface Answer {
  status: number;
  headers: Headers;
  body: Uint8Array;
}

/** One request to the app, without a socket; the body is always read. */
async function call(
  app: App,
  method: string,
  path: string,
  body?: Uint8Array<ArrayBuffer> | string,
  headers: Record<string, string> = {},
): Promise<Answer> {
  const init: RequestInit = { method, headers };
  if (body !== undefined) init.body = body;
  const res = await app(new Request(`http://berth.test${path}`, init));
  return {
    status: res.status,
    headers: res.headers,
    body: new Uint8Array(await res.arrayBuffer()),
  };
}

async function pushBlob(app: App, name: string, bytes: Uint8Array<ArrayBuffer> | string) {
  const digest = sha256(bytes);
  const res = await call(app, "POST", `/v2/${name}/blobs/uploads/?digest=${digest}`, bytes);
  assert.equal(res.status, 201, `push blob to ${name}`);
  return digest as Digest;
}

interface Image {
  digest: Digest;
  body: string;
  config: Digest;
  layer: Digest;
  layerBytes: Uint8Array;
}

async function pushImage(
  app: App,
  name: string,
  tags: string[],
  seed: number,
  extra: Record<string, unknown> = {},
): Promise<Image> {
  const configBytes = JSON.stringify({ architecture: "amd64", os: "linux", seed });
  const layerBytes = randomBytes(1000 + seed, seed);
  const config = await pushBlob(app, name, configBytes);
  const layer = await pushBlob(app, name, layerBytes);
  const body = imageManifest(
    { digest: config, size: enc.encode(configBytes).length },
    [{ digest: layer, size: layerBytes.length }],
    extra,
  );
  const digest = sha256(body) as Digest;
  const reference = tags[0] ?? digest;
  const query = tags.slice(1).map((t) => `tag=${t}`).join("&");
  const res = await call(
    app,
    "PUT",
    `/v2/${name}/manifests/${reference}${query ? `?${query}` : ""}`,
    body,
    { "Content-Type": MANIFEST_TYPE },
  );
  assert.equal(res.status, 201, `push ${name}:${reference}: ${new TextDecoder().decode(res.body)}`);
  return { digest, body, config, layer, layerBytes };
}

/** Starts a chunked upload and sends `chunks`; returns its path. */
async function startUpload(app: App, name: string, chunks: Uint8Array<ArrayBuffer>[]) {
  const start = await call(app, "POST", `/v2/${name}/blobs/uploads/`);
  assert.equal(start.status, 202);
  const location = start.headers.get("Location")!;
  let offset = 0;
  for (const chunk of chunks) {
    const res = await call(app, "PATCH", location, chunk, {
      "Content-Type": "application/octet-stream",
      "Content-Range": `${offset}-${offset + chunk.length - 1}`,
    });
    assert.equal(res.status, 202);
    offset += chunk.length;
  }
  return { location, uploadId: location.split("/").at(-1)! };
}

/** What the populated store holds. */
interface Built {
  a: Image;
  b: Image;
  c: Image;
  signature: Image;
  appUpload: { location: string; uploadId: string; chunks: Uint8Array<ArrayBuffer>[] };
  otherUpload: { location: string; uploadId: string };
}

/**
 * A store with a bit of everything, built through the API: two repositories,
 * tags, a mount, a referrer, two unfinished chunked uploads.
 */
async function populate(app: App): Promise<Built> {
  const a = await pushImage(app, "lib/app", ["v1", "latest"], 1);
  const b = await pushImage(app, "lib/app", ["v2"], 2);
  const signature = await pushImage(app, "lib/app", [], 4, {
    artifactType: "application/vnd.example.signature",
    subject: { mediaType: MANIFEST_TYPE, digest: a.digest, size: enc.encode(a.body).length },
    annotations: { "org.example.signed-by": "fsck test" },
  });
  const mount = await call(
    app,
    "POST",
    `/v2/other/blobs/uploads/?mount=${a.layer}&from=lib/app`,
  );
  assert.equal(mount.status, 201);
  const c = await pushImage(app, "other", ["c1"], 3);
  const chunks = [randomBytes(3000, 7), randomBytes(2000, 8)];
  const appUpload = { ...(await startUpload(app, "lib/app", chunks)), chunks };
  const otherUpload = await startUpload(app, "other", [randomBytes(500, 9)]);
  return { a, b, c, signature, appUpload, otherUpload };
}

/** A temp data dir with file KV, the app over it, and a way to reopen it. */
async function withStore<T>(
  fn: (dir: string, config: Config) => Promise<T>,
): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "berth-fsck-" });
  const config: Config = { ...defaultConfig(), data: dir, kv: "", logLevel: "off" };
  try {
    return await fn(dir, config);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function open(
  config: Config,
): Promise<{ stores: Stores; app: App; [Symbol.dispose](): void }> {
  const stores = await openStores(config);
  const app = createApp({
    meta: stores.meta,
    blobs: stores.blobs,
    config,
    log: createLogger("off"),
  });
  return { stores, app, [Symbol.dispose]: () => stores.close() };
}

/** Opens the KV file of `config` directly, to damage it as a bug or a crash could. */
function rawKv(config: Config): Promise<Deno.Kv> {
  return Deno.openKv(kvLocation(config));
}

/** One value straight from the KV file of `config`. */
async function readRaw(config: Config, key: Deno.KvKey): Promise<unknown> {
  using kv = await rawKv(config);
  return (await kv.get(key)).value;
}

/** Runs fsck, capturing its report. */
async function run(
  config: Config,
  repair: boolean,
): Promise<{ code: number; lines: string[]; summary: string; progress: string[] }> {
  const lines: string[] = [];
  const progress: string[] = [];
  const code = await fsck(config, {
    repair,
    out: (line) => lines.push(line),
    progress: (line) => progress.push(line),
  });
  return { code, lines, summary: lines.at(-1) ?? "", progress };
}

Deno.test("fsck() finds nothing wrong in a store built through the API", async () => {
  await withStore(async (_dir, config) => {
    {
      using s = await open(config);
      await populate(s.app);
    }
    const { code, lines, summary, progress } = await run(config, false);
    assert.deepEqual(lines.slice(0, -1), []);
    assert.deepEqual(progress, [], "a small store shows no progress");
    assert.match(
      summary,
      /^fsck: 12 blobs \(.*\), 4 manifests, 4 tags, 9 blob links, 1 referrers, 2 uploads, 2 repositories checked; 0 problems$/,
    );
    assert.equal(code, 0);
  });
});

Deno.test("fsck() returns 2 when the data directory does not exist", async () => {
  const lines: string[] = [];
  const code = await fsck({ data: "/nonexistent/berth-fsck", kv: "" }, {
    repair: false,
    out: (line) => lines.push(line),
  });
  assert.equal(code, 2);
  assert.match(lines[0]!, /does not exist/);
});

Deno.test("fsck() reports every kind of damage, --repair fixes it, and a second run is clean", async () => {
  await withStore(async (dir, config) => {
    let built: Built;
    const ghost = sha256("no such manifest") as Digest;
    const nothing = sha256("no such referrer") as Digest;
    {
      using s = await open(config);
      built = await populate(s.app);
      const { a, b, c, signature, otherUpload } = built;
      using kv = await rawKv(config);
      const blobs = s.stores.blobs as FsBlobStore;
      // 1. Corrupt bytes (same size) under b's layer; its link can no longer be served.
      await Deno.writeFile(blobs.blobPath(b.layer), randomBytes(b.layerBytes.length, 99));
      // 2. c's manifest bytes lost: the record and the tag c1 cannot be served.
      await Deno.remove(blobs.blobPath(c.digest));
      // 3. A tag to a manifest that does not exist.
      await kv.set(tagKey("lib/app", "ghost"), { digest: ghost, updatedAt: 1 });
      // 4. A referrer entry with no manifest behind it.
      await kv.set(referrerKey("lib/app", a.digest, "application/x", nothing), {
        mediaType: MANIFEST_TYPE,
        digest: nothing,
        size: 1,
      });
      // 5. The signature's referrer entry lost.
      await kv.delete(
        referrerKey("lib/app", a.digest, "application/vnd.example.signature", signature.digest),
      );
      // 6. A tag without its reverse entry; 7. a reverse entry its tag does not agree with.
      await kv.delete(tagsByDigestKey("lib/app", a.digest, "latest"));
      await kv.set(tagsByDigestKey("lib/app", b.digest, "v1"), true);
      // 8. A link without blob_repos; 9. blob_repos without a link.
      await kv.delete(blobReposKey(a.config, "lib/app"));
      await kv.set(blobReposKey(a.config, "nowhere"), true);
      // 10. A link with the wrong size.
      await kv.set(blobLinkKey("other", a.layer), { size: a.layerBytes.length + 1, linkedAt: 1 });
      // 11. A repository with content but no entry.
      await kv.delete(repoKey("other"));
      // 12. Parts of no session.
      await kv.set(uploadPartKey("orphan-session", 0), {
        file: "p-0123456789abcdef",
        size: 10,
        digest: sha256("x"),
      });
      // 13. Both counters wrong.
      await kv.set(uploadCountKey("lib/app"), new Deno.KvU64(5n));
      await kv.set(uploadTotalKey(), new Deno.KvU64(9n));
      // 14. A session whose part file is gone.
      for await (const entry of Deno.readDir(join(dir, "uploads", otherUpload.uploadId))) {
        await Deno.remove(join(dir, "uploads", otherUpload.uploadId, entry.name));
      }
      // 15. A manifest record whose size disagrees with its bytes.
      const bRecord = (await kv.get<ManifestRecord>(manifestKey("lib/app", b.digest))).value!;
      await kv.set(manifestKey("lib/app", b.digest), { ...bRecord, size: bRecord.size + 5 });
      // 16. A file in the blob tree that is not a blob.
      await Deno.mkdir(join(dir, "blobs", "sha256", "ab"), { recursive: true });
      await Deno.writeTextFile(join(dir, "blobs", "sha256", "ab", "not-a-blob"), "junk");
      // 17. A manifest record over bytes that are not a manifest (a config).
      await kv.set(manifestKey("lib/app", a.config), {
        mediaType: MANIFEST_TYPE,
        size: (await Deno.stat(blobs.blobPath(a.config))).size,
        createdAt: 1,
      });
      // 18. A secret that is not 32 bytes.
      await kv.set(secretKey("cursor"), "not bytes");
      // Leftovers (not problems): a temp file and an upload directory of no session.
      await Deno.writeTextFile(join(dir, "tmp", "leftover"), "half a manifest");
      await Deno.mkdir(join(dir, "uploads", "put-leftover"));
      await Deno.writeFile(
        join(dir, "uploads", "put-leftover", "p-0000000000000000"),
        randomBytes(64),
      );
    }
    const { a, b, c, signature, appUpload, otherUpload } = built;
    const expected: [string, RegExp][] = [
      ["corrupt blob", new RegExp(`^problem: blob ${b.layer}: its bytes hash to sha256:`)],
      ["stray file", /^problem: blobs\/sha256\/ab\/not-a-blob is not a blob file/],
      ["manifest bytes lost", new RegExp(`manifest other@${c.digest}: its bytes are missing`)],
      ["not a manifest", new RegExp(`manifest lib/app@${a.config}: its bytes do not parse`)],
      ["record size", new RegExp(`manifest lib/app@${b.digest}: record disagrees.*size`)],
      ["tag to unservable manifest", /tag other:c1: points at .*cannot be served/],
      ["tag to missing manifest", new RegExp(`tag lib/app:ghost: points at ${ghost}, no manifest`)],
      ["missing reverse tag", /tag lib\/app:latest -> .* has no tags_by_digest entry/],
      ["stale reverse tag", /tags_by_digest lib\/app .* v1: the tag points at/],
      ["corrupt blob link", new RegExp(`blob link lib/app@${b.layer}: its bytes are missing`)],
      ["link size", new RegExp(`blob link other@${a.layer}: recorded size`)],
      ["blob_repos without link", /blob_repos .* nowhere: no such blob link/],
      ["link without blob_repos", new RegExp(`blob link lib/app@${a.config} has no blob_repos`)],
      ["dangling referrer", new RegExp(`referrer lib/app .* ${nothing}: no such manifest`)],
      ["missing referrer", /has a subject but no referrers entry/],
      [
        "broken session",
        /upload .* cannot be completed: part 0 file (p-[0-9a-f]+|data) is missing/,
      ],
      ["orphan parts", /1 upload_parts of orphan-session, which is not a session/],
      ["repo counter", /upload_counts lib\/app is 5, but 1 session is open/],
      ["total counter", /upload_total is 9, but 2 sessions are open/],
      ["missing repo", /repository other has content but no repos entry/],
      ["bad secret", /secret \["cursor"\] is not 32 bytes under a name/],
    ];
    const check = await run(config, false);
    assert.equal(check.code, 1);
    // The damage also puts the collector's counters out (sizes, a record, lost bytes): those
    // lines come on top, and are repaired with the rest.
    const counter = /^problem: (usage|usage_total|blob_holders|gc_refs)\b/;
    const counters = check.lines.filter((line) => counter.test(line)).length;
    assert.ok(counters > 0, check.lines.join("\n"));
    const problems = check.lines.filter((line) =>
      line.startsWith("problem: ") && !counter.test(line)
    );
    for (const [what, pattern] of expected) {
      assert.ok(
        problems.some((line) => pattern.test(line)),
        `${what}: no line matches ${pattern}\n${check.lines.join("\n")}`,
      );
    }
    assert.equal(problems.length, expected.length, check.lines.join("\n"));
    assert.match(
      check.summary,
      new RegExp(`; ${expected.length + counters} problems; 2 leftover file\\(s\\)`),
    );
    assert.equal(check.lines.filter((line) => line.startsWith("leftover: ")).length, 2);

    // Checking changes nothing: the same report again.
    assert.deepEqual((await run(config, false)).lines, check.lines);

    const repair = await run(config, true);
    assert.equal(repair.code, 1);
    const repaired = repair.lines.filter((line) => line.startsWith("problem: "));
    const all = expected.length + counters;
    assert.equal(repaired.length, all, repair.lines.join("\n"));
    assert.ok(repaired.every((line) => / -> /.test(line)), repair.lines.join("\n"));
    assert.match(repair.summary, new RegExp(`${all} problems, ${all} repaired`));

    const again = await run(config, false);
    // Clean, but for the warning that image b lost its (corrupt, removed) layer.
    assert.deepEqual(
      again.lines.slice(0, -1).map((line) => line.replace(/sha256:[0-9a-f]{64}/g, "D")),
      [
        "warning: image lib/app@D cannot be pulled whole: 1 blob(s) or manifest(s) it references " +
        "are not in the repository (D); push them again or delete the image",
      ],
      again.lines.join("\n"),
    );
    assert.ok(again.lines[0]!.includes(b.digest) && again.lines[0]!.includes(b.layer));
    assert.match(again.summary, /; 0 problems; 1 warning\(s\)$/);
    assert.equal(again.code, 0);

    // What could be served still is, and what was fixed serves right.
    using s = await open(config);
    const v1 = await call(s.app, "GET", "/v2/lib/app/manifests/v1");
    assert.equal(v1.status, 200);
    assert.equal(new TextDecoder().decode(v1.body), a.body);
    // b lost its layer: the image stays, and fsck keeps warning that it cannot be pulled whole.
    assert.equal((await call(s.app, "HEAD", `/v2/lib/app/manifests/${b.digest}`)).status, 200);
    assert.equal((await call(s.app, "GET", "/v2/other/manifests/c1")).status, 404);
    assert.equal((await call(s.app, "GET", "/v2/lib/app/manifests/ghost")).status, 404);
    assert.equal((await call(s.app, "HEAD", `/v2/lib/app/blobs/${b.layer}`)).status, 404);
    await assert.rejects(
      Deno.stat((s.stores.blobs as FsBlobStore).blobPath(b.layer)),
      Deno.errors.NotFound,
    );
    const mounted = await call(s.app, "GET", `/v2/other/blobs/${a.layer}`);
    assert.deepEqual(mounted.body, a.layerBytes);
    assert.equal(mounted.headers.get("Content-Length"), String(a.layerBytes.length));
    const referrers = await call(s.app, "GET", `/v2/lib/app/referrers/${a.digest}`);
    const index = JSON.parse(new TextDecoder().decode(referrers.body));
    assert.deepEqual(index.manifests.map((d: { digest: string }) => d.digest), [signature.digest]);
    assert.equal(index.manifests[0].annotations["org.example.signed-by"], "fsck test");
    assert.equal(
      await readRaw(config, tagsByDigestKey("lib/app", a.digest, "latest")),
      true,
    );
    assert.deepEqual(await s.stores.meta.countUploads("lib/app"), { repo: 1, total: 1 });
    assert.equal((await call(s.app, "GET", otherUpload.location)).status, 404);
    assert.equal(await s.stores.meta.repoExists("other"), true);
    for (const gone of ["tmp/leftover", "uploads/put-leftover", "blobs/sha256/ab/not-a-blob"]) {
      await assert.rejects(Deno.stat(join(dir, gone)), Deno.errors.NotFound, gone);
    }
    // The intact session survived and completes into the right blob.
    const rest = randomBytes(100, 10);
    const whole = new Uint8Array([...appUpload.chunks[0]!, ...appUpload.chunks[1]!, ...rest]);
    const put = await call(s.app, "PUT", `${appUpload.location}?digest=${sha256(whole)}`, rest, {
      "Content-Type": "application/octet-stream",
    });
    assert.equal(put.status, 201);
    assert.deepEqual((await call(s.app, "GET", `/v2/lib/app/blobs/${sha256(whole)}`)).body, whole);
  });
});

Deno.test("fsck() writes progress lines as it goes, at most one per progressEveryMs", async () => {
  await withStore(async (_dir, config) => {
    {
      using s = await open(config);
      await populate(s.app);
    }
    const progress: string[] = [];
    const code = await fsck(config, {
      repair: false,
      out: () => {},
      progress: (line) => progress.push(line),
      progressEveryMs: 0,
    });
    assert.equal(code, 0);
    assert.ok(
      progress.some((line) => /^fsck: blobs: \d+ checked \(/.test(line)),
      progress.join("\n"),
    );
    assert.ok(
      progress.some((line) => /^fsck: manifests: \d+ checked/.test(line)),
      progress.join("\n"),
    );
  });
});

Deno.test("fsck() as `main.ts fsck` exits 1 on a damaged store and 0 once repaired", async () => {
  await withStore(async (dir, config) => {
    {
      using s = await open(config);
      const { b } = await populate(s.app);
      await Deno.writeFile((s.stores.blobs as FsBlobStore).blobPath(b.config), enc.encode("{}"));
    }
    const cli = async (...extra: string[]) => {
      const { code, stdout } = await runMain(["fsck", "--data", dir, ...extra]);
      return { code, text: stdout };
    };
    const damaged = await cli();
    assert.equal(damaged.code, 1, damaged.text);
    assert.match(damaged.text, /problem: blob sha256:[0-9a-f]+: its bytes hash to/);
    assert.equal((await cli("--repair")).code, 1);
    const clean = await cli();
    assert.equal(clean.code, 0, clean.text);
    assert.match(clean.text, /; 0 problems(; 1 warning\(s\))?\n$/); // the corrupted layer's image warns
  });
});

Deno.test("fsck() rewrites a record that disagrees with its bytes, and its referrer entry with it", async () => {
  await withStore(async (_dir, config) => {
    let built: Built;
    const right = "application/vnd.example.signature";
    {
      using s = await open(config);
      built = await populate(s.app);
      const { a, signature } = built;
      using kv = await rawKv(config);
      const key = manifestKey("lib/app", signature.digest);
      const record = (await kv.get<ManifestRecord>(key)).value!;
      const wrongKey = referrerKey("lib/app", a.digest, "application/wrong", signature.digest);
      const rightKey = referrerKey("lib/app", a.digest, right, signature.digest);
      const entry = (await kv.get(rightKey)).value as Record<string, unknown>;
      // As if the record had been written with another artifactType, its referrer entry alike.
      await kv.atomic()
        .set(key, { ...record, artifactType: "application/wrong" })
        .delete(rightKey)
        .set(wrongKey, { ...entry, artifactType: "application/wrong" })
        .commit();
    }
    const check = await run(config, false);
    const problems = check.lines.filter((line) => line.startsWith("problem: "));
    assert.equal(problems.length, 1, check.lines.join("\n"));
    assert.match(
      problems[0]!,
      /^problem: manifest lib\/app@sha256:[0-9a-f]{64}: record disagrees with its bytes: artifactType "application\/wrong" \(bytes say "application\/vnd\.example\.signature"\)$/,
    );
    assert.equal((await run(config, true)).code, 1);
    const again = await run(config, false);
    assert.equal(again.code, 0, again.lines.join("\n"));
    using s = await open(config);
    const res = await call(s.app, "GET", `/v2/lib/app/referrers/${built.a.digest}`);
    const index = JSON.parse(new TextDecoder().decode(res.body));
    assert.deepEqual(
      index.manifests.map((
        d: { digest: string; artifactType: string },
      ) => [d.digest, d.artifactType]),
      [[built.signature.digest, right]],
    );
  });
});

Deno.test("fsck() reports a tag whose media type disagrees with its manifest, and manifest_refs without a manifest", async () => {
  await withStore(async (_dir, config) => {
    const ghost = sha256("no such manifest") as Digest;
    {
      using s = await open(config);
      await populate(s.app);
      using kv = await rawKv(config);
      const latest = await kv.get<Record<string, unknown>>(tagKey("lib/app", "latest"));
      await kv.set(tagKey("lib/app", "latest"), {
        ...latest.value,
        mediaType: "application/x.wrong",
      });
      await kv.set(manifestRefsKey("lib/app", ghost, 0), { blobs: [], manifests: [] });
    }
    const check = await run(config, false);
    const problems = check.lines.filter((line) => line.startsWith("problem: "));
    assert.deepEqual(problems.map((line) => line.replace(/sha256:[0-9a-f]{64}/g, "D")), [
      "problem: manifest_refs of lib/app@D: no such manifest",
      'problem: tag lib/app:latest: says "application/x.wrong" 401, its manifest is ' +
      "application/vnd.oci.image.manifest.v1+json 401",
    ]);
    assert.ok(problems[0]!.includes(ghost));
    const repair = await run(config, true);
    assert.equal(repair.code, 1);
    assert.match(repair.lines[0]!, / -> removed them$/);
    const again = await run(config, false);
    assert.equal(again.code, 0, again.lines.join("\n"));
    assert.equal(await readRaw(config, manifestRefsKey("lib/app", ghost, 0)), null);
  });
});

Deno.test("fsck() reports folders under blobs/ that are no algorithm's, and --repair removes them", async () => {
  await withStore(async (dir, config) => {
    {
      using s = await open(config);
      await populate(s.app);
    }
    await Deno.mkdir(join(dir, "blobs", "md5", "aa"), { recursive: true });
    await Deno.writeTextFile(join(dir, "blobs", "stray.txt"), "x");
    const check = await run(config, false);
    const problems = check.lines.filter((line) => line.startsWith("problem: "));
    assert.deepEqual(problems.sort(), [
      "problem: blobs/md5 does not belong in the blob store",
      "problem: blobs/stray.txt does not belong in the blob store",
    ]);
    await run(config, true);
    assert.equal((await run(config, false)).code, 0);
    await assert.rejects(Deno.stat(join(dir, "blobs", "md5")), Deno.errors.NotFound);
  });
});

Deno.test("fsck() rewrites manifest_refs that disagree with the bytes and adds missing ones", async () => {
  await withStore(async (_dir, config) => {
    let built: Built;
    {
      using s = await open(config);
      built = await populate(s.app);
      using kv = await rawKv(config);
      await kv.set(manifestRefsKey("lib/app", built.a.digest, 0), { blobs: [], manifests: [] });
      await kv.set(manifestRefsKey("lib/app", built.a.digest, 1), { blobs: [], manifests: [] });
      await kv.delete(manifestRefsKey("lib/app", built.b.digest, 0));
    }
    const { a, b } = built;
    const check = await run(config, false);
    const problems = check.lines.filter((line) => line.startsWith("problem: "));
    assert.deepEqual(
      problems.sort(),
      [
        `problem: manifest lib/app@${a.digest}: its manifest_refs disagree with its bytes`,
        `problem: manifest lib/app@${b.digest}: its manifest_refs are missing`,
      ].sort(),
    );
    const repair = await run(config, true);
    assert.ok(
      repair.lines.slice(0, 2).every((line) => line.endsWith(" -> rewrote them from its bytes")),
      repair.lines.join("\n"),
    );
    const again = await run(config, false);
    assert.equal(again.code, 0, again.lines.join("\n"));
    using s = await open(config);
    assert.deepEqual(await s.stores.meta.getManifestRefs("lib/app", a.digest), {
      blobs: [a.config, a.layer],
      manifests: [],
    });
    assert.deepEqual(await s.stores.meta.getManifestRefs("lib/app", b.digest), {
      blobs: [b.config, b.layer],
      manifests: [],
    });
    assert.equal(await readRaw(config, manifestRefsKey("lib/app", a.digest, 1)), null);
  });
});

Deno.test("fsck() removes manifest_epochs left by schema 1 and tag clocks that are not counters", async () => {
  await withStore(async (_dir, config) => {
    let built: Built;
    {
      using s = await open(config);
      built = await populate(s.app);
      using kv = await rawKv(config);
      await kv.set(
        [...legacyManifestEpochsPrefix(), "lib/app", built.a.digest],
        new Deno.KvU64(1n),
      );
      await kv.set([...legacyManifestEpochsPrefix(), "other", built.c.digest], new Deno.KvU64(4n));
      await kv.set(tagClockKey("lib/app"), "not a counter");
    }
    const check = await run(config, false);
    assert.deepEqual(check.lines.filter((line) => line.startsWith("problem: ")), [
      "problem: 2 manifest_epochs entries left over from schema 1",
      "problem: tag_clock lib/app is malformed",
    ]);
    const repair = await run(config, true);
    assert.match(repair.summary, /2 problems, 2 repaired$/);
    const again = await run(config, false);
    assert.equal(again.code, 0, again.lines.join("\n"));
    // Tags change as before: the clock starts again.
    using s = await open(config);
    const moved = await call(s.app, "PUT", "/v2/lib/app/manifests/v1", built.b.body, {
      "Content-Type": MANIFEST_TYPE,
    });
    assert.equal(moved.status, 201);
    assert.equal((await call(s.app, "DELETE", "/v2/lib/app/manifests/latest")).status, 202);
  });
});

Deno.test("fsck() refuses a schema newer than it knows and changes nothing", async () => {
  await withStore(async (_dir, config) => {
    {
      using s = await open(config);
      await populate(s.app);
      using kv = await rawKv(config);
      await kv.set(schemaKey(), { version: 4, migratedAt: 1 });
    }
    for (const repair of [false, true]) {
      await assert.rejects(run(config, repair), SchemaError);
    }
    assert.deepEqual(await readRaw(config, schemaKey()), { version: 4, migratedAt: 1 });
  });
});

Deno.test("the schema invariant reports a version other than this code's as a problem it cannot repair", () => {
  const scan = {
    meta: { schema: [{ key: {}, value: { version: 4, migratedAt: 1 } }] },
  } as unknown as Parameters<typeof schemaVersion.check>[0]["scan"];
  const found = [...schemaVersion.check({ scan } as Parameters<typeof schemaVersion.check>[0])];
  assert.deepEqual(found.map((f) => [f.kind, f.message, "repair" in f && f.repair !== undefined]), [
    ["problem", "schema version 4 is not the one this code reads (3)", false],
  ]);
});

Deno.test("fsck() warns about a schema migration under way without failing", async () => {
  await withStore(async (_dir, config) => {
    {
      using s = await open(config);
      await populate(s.app);
      using kv = await rawKv(config);
      await kv.set(migrationKey(), { from: 1, to: 2, step: "manifest_refs" });
    }
    const check = await run(config, false);
    assert.deepEqual(check.lines.slice(0, -1), [
      "warning: a schema migration from 1 to 2 is under way (step manifest_refs); " +
      "start the server to finish it",
    ]);
    assert.equal(check.code, 0);
  });
});

Deno.test("fsck() finds an upload part whose bytes changed but not its size, and --repair ends the session", async () => {
  await withStore(async (dir, config) => {
    let uploadId: string;
    {
      using s = await open(config);
      ({ uploadId } = await startUpload(s.app, "lib/app", [enc.encode("hello world")]));
    }
    const sessionDir = join(dir, "uploads", uploadId);
    const [part] = [...Deno.readDirSync(sessionDir)].map((e) => e.name).filter((n) => n !== "lock");
    await Deno.writeTextFile(join(sessionDir, part!), "HELLO WORLD");
    const check = await run(config, false);
    const problems = check.lines.filter((line) => line.startsWith("problem: "));
    assert.equal(problems.length, 1, check.lines.join("\n"));
    assert.match(problems[0]!, new RegExp(`part 0 file ${part} does not match its record`));
    await run(config, true);
    const again = await run(config, false);
    assert.equal(again.code, 0, again.lines.join("\n"));
  });
});

Deno.test("fsck() of a blob store it cannot open says so in one line and exits 2", async () => {
  await withStore(async (_dir, config) => {
    const lines: string[] = [];
    const code = await fsck({ ...config, blobs: "/proc/berth-no-such-dir" }, {
      repair: false,
      out: (line) => lines.push(line),
      progress: () => {},
    });
    assert.equal(code, 2);
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /^fsck: cannot open the stores of ".*": .*berth-no-such-dir/);
  });
});
