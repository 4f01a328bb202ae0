/**
 * Two Berth processes on one KV file, each with its own read cache: a push,
 * tag move, tag delete, manifest delete or garbage collection committed
 * through one is seen at once by the other's manifest GET and HEAD (by tag
 * and by digest) and tags list, though the other has just cached the state
 * before. Each round warms B's cache, changes through A, and reads through B
 * the moment A answered.
 *
 * @module
 */
import assert from "node:assert/strict";
import { imageManifest, randomBytes, runMain, sha256, spawnRegistry } from "./_registry.ts";

const MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json";

async function call(base: string, path: string, init?: RequestInit) {
  const res = await fetch(base + path, init);
  const text = await res.text();
  assert.ok(res.status < 500, `${init?.method ?? "GET"} ${path}: ${res.status} ${text}`);
  return { status: res.status, headers: res.headers, text };
}

async function pushBlob(base: string, name: string, bytes: Uint8Array<ArrayBuffer>) {
  const digest = sha256(bytes);
  const res = await call(base, `/v2/${name}/blobs/uploads/?digest=${digest}`, {
    method: "POST",
    body: bytes,
  });
  assert.equal(res.status, 201, res.text);
  return { digest, size: bytes.length };
}

async function putManifest(base: string, name: string, ref: string, body: string) {
  const res = await call(base, `/v2/${name}/manifests/${ref}`, {
    method: "PUT",
    headers: { "Content-Type": MANIFEST_TYPE },
    body,
  });
  assert.equal(res.status, 201, res.text);
}

/** Reads everything B caches about `ref` and the tags list, so that B has it cached. */
async function warm(base: string, name: string, refs: string[]) {
  for (let i = 0; i < 2; i++) {
    for (const ref of refs) {
      await call(base, `/v2/${name}/manifests/${ref}`);
      await call(base, `/v2/${name}/manifests/${ref}`, { method: "HEAD" });
    }
    await call(base, `/v2/${name}/tags/list`);
    await call(base, `/v2/${name}/tags/list?n=1`);
  }
}

async function tags(base: string, name: string): Promise<string[]> {
  const res = await call(base, `/v2/${name}/tags/list`);
  assert.equal(res.status, 200, res.text);
  return (JSON.parse(res.text) as { tags: string[] }).tags;
}

async function digestOf(base: string, name: string, ref: string, method = "GET") {
  const res = await call(base, `/v2/${name}/manifests/${ref}`, { method });
  return res.status === 200 ? res.headers.get("Docker-Content-Digest") : res.status;
}

Deno.test("a change committed through one process is seen at once by another's cached reads", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-cache-" });
  try {
    await using a = await spawnRegistry(["--data", dir, "--gc-interval", "0"]);
    await using b = await spawnRegistry(["--data", dir, "--gc-interval", "0"]);
    const name = "team/app";
    const config = await pushBlob(a.url, name, new TextEncoder().encode('{"os":"linux"}'));
    const bodies = Array.from({ length: 6 }, (_, i) => {
      const layer = randomBytes(500 + i, i + 1);
      return {
        layer,
        body: imageManifest(config, [{ digest: sha256(layer), size: layer.length }]),
      };
    });
    for (const { layer } of bodies) await pushBlob(a.url, name, layer);
    const digests = bodies.map(({ body }) => sha256(body));

    // A repository B has seen unknown before: its first push is seen.
    assert.equal(await digestOf(b.url, name, "latest"), 404);
    for (let round = 0; round < 5; round++) {
      const [one, two] = [bodies[round]!.body, bodies[round + 1]!.body];
      const [d1, d2] = [digests[round]!, digests[round + 1]!];

      // Push a tag through A: B's cached 404 and tags list give way.
      await warm(b.url, name, ["latest", `r${round}`, d1]);
      await putManifest(a.url, name, "latest", one);
      await putManifest(a.url, name, `r${round}`, one);
      assert.equal(await digestOf(b.url, name, "latest"), d1);
      assert.equal(await digestOf(b.url, name, `r${round}`, "HEAD"), d1);
      assert.equal(await digestOf(b.url, name, d1, "HEAD"), d1);
      assert.ok((await tags(b.url, name)).includes(`r${round}`));

      // Move the tag through A.
      await warm(b.url, name, ["latest", d1, d2]);
      await putManifest(a.url, name, "latest", two);
      assert.equal(await digestOf(b.url, name, "latest"), d2);
      assert.equal(await digestOf(b.url, name, "latest", "HEAD"), d2);
      assert.equal(await digestOf(b.url, name, d2), d2);

      // Delete a tag through A.
      await warm(b.url, name, ["latest", `r${round}`]);
      const deleted = await call(a.url, `/v2/${name}/manifests/r${round}`, { method: "DELETE" });
      assert.equal(deleted.status, 202, deleted.text);
      assert.equal(await digestOf(b.url, name, `r${round}`), 404);
      assert.equal(await digestOf(b.url, name, `r${round}`, "HEAD"), 404);
      assert.ok(!(await tags(b.url, name)).includes(`r${round}`));

      // Delete the manifest `latest` points at, by digest, through A: its tags go with it.
      await warm(b.url, name, ["latest", d2]);
      const gone = await call(a.url, `/v2/${name}/manifests/${d2}`, { method: "DELETE" });
      assert.equal(gone.status, 202, gone.text);
      assert.equal(await digestOf(b.url, name, d2), 404);
      assert.equal(await digestOf(b.url, name, d2, "HEAD"), 404);
      assert.equal(await digestOf(b.url, name, "latest"), 404);
      assert.ok(!(await tags(b.url, name)).includes("latest"));

      // The untagged manifest d1 is collected by `berth gc`, a third process.
      await warm(b.url, name, [d1]);
      assert.equal(await digestOf(b.url, name, d1, "HEAD"), d1);
      const gc = await runMain(["gc", "--data", dir, "--grace", "0", "--untagged-ttl", "0"]);
      assert.equal(gc.code, 0, gc.stderr);
      assert.equal(await digestOf(b.url, name, d1), 404, `round ${round}: collected by gc`);
      assert.equal(await digestOf(b.url, name, d1, "HEAD"), 404);
      assert.deepEqual(await tags(b.url, name), []);
      // The collection removed the layers too: push them again for the next round.
      for (const { layer } of bodies) await pushBlob(a.url, name, layer);
      await pushBlob(a.url, name, new TextEncoder().encode('{"os":"linux"}'));
    }
    assert.equal(await a.stop(), 0);
    assert.equal(await b.stop(), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tags list pages through a cached repository exactly as before", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-cache-" });
  try {
    await using a = await spawnRegistry(["--data", dir, "--tags-page-max", "50"]);
    await using b = await spawnRegistry(["--data", dir, "--tags-page-max", "50"]);
    const name = "paged";
    const config = await pushBlob(a.url, name, new TextEncoder().encode('{"os":"linux"}'));
    const body = imageManifest(config, []);
    const all = Array.from({ length: 120 }, (_, i) => `t${String(i).padStart(3, "0")}`);
    for (let i = 0; i < all.length; i += 10) {
      const query = all.slice(i + 1, i + 10).map((t) => `tag=${t}`).join("&");
      await putManifest(a.url, name, `${all[i]}?${query}`, body);
    }
    for (let pass = 0; pass < 2; pass++) { // the second pass is served from B's cache
      const seen: string[] = [];
      let path: string | null = `/v2/${name}/tags/list?n=30`;
      while (path) {
        const res = await call(b.url, path);
        assert.equal(res.status, 200, res.text);
        seen.push(...(JSON.parse(res.text) as { tags: string[] }).tags);
        path = /<([^>]+)>; rel="next"/.exec(res.headers.get("Link") ?? "")?.[1] ?? null;
      }
      assert.deepEqual(seen, all);
      const capped = await call(b.url, `/v2/${name}/tags/list`);
      assert.deepEqual((JSON.parse(capped.text) as { tags: string[] }).tags, all.slice(0, 50));
      assert.equal(
        capped.headers.get("Link"),
        `</v2/${name}/tags/list?n=50&last=t049>; rel="next"`,
      );
    }
    // A tag added through A appears on B's next page at once.
    await putManifest(a.url, name, "t0355", body);
    const page = await call(b.url, `/v2/${name}/tags/list?n=2&last=t035`);
    assert.deepEqual((JSON.parse(page.text) as { tags: string[] }).tags, ["t0355", "t036"]);
    assert.equal(await a.stop(), 0);
    assert.equal(await b.stop(), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
