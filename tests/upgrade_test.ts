/**
 * Upgrade: the current Berth serves a data directory written by the last
 * release before KV schema versions (`tests/fixtures/release-schema1/`, see
 * its README), migrating it at start-up, and refuses one written by a newer
 * Berth.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Expected } from "./fixtures/make_release_schema1.ts";
import { assertError, sha256, spawnRegistry } from "./_registry.ts";

const FIXTURE = new URL("./fixtures/release-schema1/", import.meta.url).pathname;
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const expected: Expected = JSON.parse(await Deno.readTextFile(join(FIXTURE, "expected.json")));

async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    if (entry.isDirectory) await copyTree(join(from, entry.name), join(to, entry.name));
    else await Deno.copyFile(join(from, entry.name), join(to, entry.name));
  }
}

/** A copy of the fixture's data directory (KV, blobs, uploads), removed on dispose. */
async function fixtureCopy(): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "berth-upgrade-" });
  await Deno.copyFile(join(FIXTURE, "meta.kv"), join(dir, "meta.kv"));
  await copyTree(join(FIXTURE, "blobs"), join(dir, "blobs"));
  await copyTree(join(FIXTURE, "uploads"), join(dir, "uploads"));
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** Every KV entry of a (stopped) data directory, by top-level family. */
async function readKv(dir: string): Promise<Map<string, Deno.KvEntry<unknown>[]>> {
  const kv = await Deno.openKv(join(dir, "meta.kv"));
  try {
    const families = new Map<string, Deno.KvEntry<unknown>[]>();
    for await (const entry of kv.list({ prefix: [] })) {
      const family = String(entry.key[0]);
      families.set(family, [...(families.get(family) ?? []), entry]);
    }
    return families;
  } finally {
    kv.close();
  }
}

async function get(
  url: string,
  init: RequestInit = {},
): Promise<{ res: Response; body: Uint8Array }> {
  const res = await fetch(url, init);
  return { res, body: await res.bytes() };
}

/**
 * Runs `main.ts` with `args` to its exit; one that is still running after
 * 30 s (a server that started when it should not have) is killed.
 */
async function runBerth(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--unstable-kv", "-A", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, 30_000);
  try {
    const out = await child.output();
    const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
    return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

/** What a manifest references, read from its JSON (not from Berth's parser). */
function referencesOf(bytes: Uint8Array) {
  const body = JSON.parse(new TextDecoder().decode(bytes));
  const blobs = body.manifests
    ? []
    : [body.config, ...body.layers].map((d: { digest: string }) => d.digest);
  const manifests = (body.manifests ?? []).map((d: { digest: string }) => d.digest);
  return { blobs: [...new Set(blobs)], manifests, subject: body.subject?.digest };
}

Deno.test("main.ts serve on a data directory written by the last release serves all it held and migrates its KV to schema 3 with the collector's bookkeeping", async () => {
  await using data = await fixtureCopy();
  // The fixture is what the release left: no schema key, manifest_epochs present.
  const before = await readKv(data.dir);
  assert.deepEqual(
    Object.fromEntries([...before].map(([family, entries]) => [family, entries.length])),
    expected.kvFamilies,
  );
  assert.equal(before.has("schema"), false);

  const registry = await spawnRegistry(["--data", data.dir, "--upload-ttl", "365d"]);
  try {
    const url = registry.url;
    const catalog = await (await fetch(`${url}/v2/_catalog`)).json();
    assert.deepEqual(catalog, { repositories: [...expected.repositories].sort() });

    for (const [name, tags] of Object.entries(expected.tags)) {
      const list = await (await fetch(`${url}/v2/${name}/tags/list`)).json();
      assert.deepEqual(list, { name, tags: Object.keys(tags).sort() });
      for (const [tag, digest] of Object.entries(tags)) {
        const manifest = expected.manifests.find((m) => m.name === name && m.digest === digest)!;
        const { res, body } = await get(`${url}/v2/${name}/manifests/${tag}`);
        assert.equal(res.status, 200, `${name}:${tag}`);
        assert.equal(res.headers.get("Docker-Content-Digest"), digest);
        assert.equal(res.headers.get("Content-Type"), manifest.mediaType);
        assert.equal(sha256(body), digest, `${name}:${tag} is byte-identical`);
      }
    }
    for (const { name, tag } of expected.deletedTags) {
      await assertError(await fetch(`${url}/v2/${name}/manifests/${tag}`), 404, "MANIFEST_UNKNOWN");
    }

    for (const m of expected.manifests) {
      const { res, body } = await get(`${url}/v2/${m.name}/manifests/${m.digest}`);
      assert.equal(res.status, 200, `${m.name}@${m.digest}`);
      assert.equal(res.headers.get("Content-Type"), m.mediaType);
      assert.equal(body.length, m.size);
      assert.equal(sha256(body), m.digest);
      const head = await fetch(`${url}/v2/${m.name}/manifests/${m.digest}`, { method: "HEAD" });
      assert.equal(head.status, 200);
      assert.equal(head.headers.get("Content-Length"), String(m.size));
    }

    for (const b of expected.blobs) {
      const { res, body } = await get(`${url}/v2/${b.name}/blobs/${b.digest}`);
      assert.equal(res.status, 200, `${b.name} blob ${b.digest}`);
      assert.equal(body.length, b.size);
      assert.equal(sha256(body), b.digest);
    }

    for (const r of expected.referrers) {
      const index = await (await fetch(`${url}/v2/${r.name}/referrers/${r.subject}`)).json();
      assert.deepEqual(index.manifests, r.descriptors);
      const type = r.descriptors[0]!.artifactType!;
      const filtered = await fetch(
        `${url}/v2/${r.name}/referrers/${r.subject}?artifactType=${encodeURIComponent(type)}`,
      );
      assert.equal(filtered.headers.get("OCI-Filters-Applied"), "artifactType");
      assert.deepEqual((await filtered.json()).manifests, r.descriptors);
    }

    // The session the release left open resumes at its acknowledged offset and completes.
    const { upload } = expected;
    const status = await fetch(url + upload.location);
    await status.body?.cancel();
    assert.equal(status.status, 204);
    assert.equal(status.headers.get("Range"), `0-${upload.offset - 1}`);
    const location = new URL(url + upload.location);
    location.searchParams.set("digest", upload.digest);
    const rest = new TextEncoder().encode(upload.rest);
    const done = await fetch(location, {
      method: "PUT",
      headers: {
        "Content-Type": "application/octet-stream",
        "Content-Range": `${upload.offset}-${upload.offset + rest.length - 1}`,
      },
      body: rest,
    });
    await done.body?.cancel();
    assert.equal(done.status, 201);
    const blob = await get(`${url}/v2/${upload.name}/blobs/${upload.digest}`);
    assert.equal(new TextDecoder().decode(blob.body), upload.chunk + upload.rest);

    // Migrated records work with the current code: a tag moves back, a manifest is deleted.
    const [older, newer] = expected.manifests.filter((m) => m.name === "alpine");
    const olderBytes = (await get(`${url}/v2/alpine/manifests/${older!.digest}`)).body;
    const moved = await fetch(`${url}/v2/alpine/manifests/latest`, {
      method: "PUT",
      headers: { "Content-Type": older!.mediaType },
      body: olderBytes as Uint8Array<ArrayBuffer>,
    });
    await moved.body?.cancel();
    assert.equal(moved.status, 201);
    const deleted = await fetch(`${url}/v2/alpine/manifests/${newer!.digest}`, {
      method: "DELETE",
    });
    await deleted.body?.cancel();
    assert.equal(deleted.status, 202);
    await assertError(await fetch(`${url}/v2/alpine/manifests/3.20`), 404, "MANIFEST_UNKNOWN");
    const latest = await fetch(`${url}/v2/alpine/manifests/latest`, { method: "HEAD" });
    assert.equal(latest.headers.get("Docker-Content-Digest"), older!.digest);
  } finally {
    assert.equal(await registry.stop(), 0);
  }

  const after = await readKv(data.dir);
  const schema = after.get("schema") ?? [];
  assert.equal(schema.length, 1);
  assert.equal((schema[0]!.value as { version: number }).version, 3);
  assert.equal(after.has("schema_migration"), false);
  // The collector's counts were built from what the release held.
  assert.ok(after.has("blob_holders") && after.has("usage") && after.has("usage_total"));
  assert.equal(after.has("manifest_epochs"), false);
  const manifests = after.get("manifests") ?? [];
  assert.equal(manifests.length, expected.manifests.length - 1);
  const refs = after.get("manifest_refs") ?? [];
  for (const { key } of manifests) {
    const [, name, digest] = key as [string, string, string];
    const pages = refs.filter((e) => e.key[1] === name && e.key[2] === digest);
    assert.equal(pages.length, 1, `manifest_refs of ${name}@${digest}`);
    const bytes = await Deno.readFile(
      join(data.dir, "blobs", "sha256", digest.slice(7, 9), digest.slice(7)),
    );
    const want = referencesOf(bytes);
    const page = pages[0]!.value as { blobs: string[]; manifests: string[]; subject?: string };
    assert.deepEqual(page.blobs, want.blobs);
    assert.deepEqual(page.manifests, want.manifests);
    assert.equal(page.subject, want.subject);
  }
  assert.equal(refs.length, manifests.length, "no manifest_refs without a manifest");

  // fsck finds the migrated directory clean.
  const fsck = await runBerth(["fsck", "--data", data.dir]);
  assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
});

Deno.test("main.ts serve refuses a data directory from a newer Berth with one berth: line and exit 2, changing nothing", async () => {
  await using data = await fixtureCopy();
  const kv = await Deno.openKv(join(data.dir, "meta.kv"));
  await kv.set(["schema"], { version: 99, migratedAt: 0 });
  kv.close();
  const before = await readKv(data.dir);
  for (const command of ["serve", "fsck"]) {
    const out = await runBerth([
      command,
      ...(command === "serve" ? ["--listen", "127.0.0.1:0"] : []),
      "--data",
      data.dir,
    ]);
    const stderr = out.stderr;
    assert.equal(out.code, 2, `${command}: ${stderr}`);
    assert.match(
      stderr,
      /^berth: .*newer Berth \(schema 99\).*schema 3 and older: upgrade Berth\n$/,
    );
    assert.equal(stderr.trim().split("\n").length, 1, stderr);
    assert.doesNotMatch(out.stdout, /listening/);
  }
  const after = await readKv(data.dir);
  assert.deepEqual(after, before);
});
