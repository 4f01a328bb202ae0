/**
 * Garbage collection racing the registry: many rounds of concurrent pushes
 * of images that share layers (into several repositories, overwriting
 * tags), deletes by tag and by digest, and collections with no grace period
 * and no TTL for untagged manifests. After every round, with a last
 * collection on a quiet store: every image that still has a tag is pullable
 * and byte-identical, no bytes remain that nothing holds, nothing remains
 * that no tag holds, and fsck finds nothing.
 *
 * @module
 */
import assert from "node:assert/strict";
import { checkConsistency, k } from "./_consistency.ts";
import {
  imageManifest,
  randomBytes,
  sha256,
  startRegistry,
  type TestRegistry,
} from "./_registry.ts";
import { collect } from "../src/gc/collect.ts";

const MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json";
const REPOS = ["race/a", "race/b", "race/c"];
const TAGS = ["t0", "t1", "t2"];
const LAYERS = Array.from({ length: 6 }, (_, i) => randomBytes(2000 + i, 500 + i));
const ROUNDS = 30;

/** A tiny deterministic random source, so a failure reproduces. */
function random(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    return x / 0x7fffffff;
  };
}

/**
 * Pushes a blob one of three ways: monolithically, as a session with one PATCH and the closing
 * PUT, or by mounting it from another repository (falling back to an upload when there is
 * nothing to mount).
 */
async function postBlob(
  reg: TestRegistry,
  name: string,
  bytes: Uint8Array<ArrayBuffer>,
  how = 0,
) {
  const digest = sha256(bytes);
  if (how === 1) {
    const from = REPOS.find((r) => r !== name)!;
    const res = await reg.fetch(`/v2/${name}/blobs/uploads/?mount=${digest}&from=${from}`, {
      method: "POST",
    });
    await res.body?.cancel();
    if (res.status === 201) return;
    assert.equal(res.status, 202);
    const location = res.headers.get("Location")!;
    await reg.fetch(location, { method: "DELETE" }).then((r) => r.body?.cancel());
  }
  if (how === 2) {
    const start = await reg.fetch(`/v2/${name}/blobs/uploads/`, { method: "POST" });
    await start.body?.cancel();
    assert.equal(start.status, 202);
    const patch = await reg.fetch(start.headers.get("Location")!, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream" },
      body: bytes,
    });
    await patch.body?.cancel();
    assert.equal(patch.status, 202);
    const location = patch.headers.get("Location")!;
    const sep = location.includes("?") ? "&" : "?";
    const done = await reg.fetch(`${location}${sep}digest=${digest}`, { method: "PUT" });
    const text = await done.text();
    assert.equal(done.status, 201, text);
    return;
  }
  await postMonolithic(reg, name, bytes);
}

async function postMonolithic(reg: TestRegistry, name: string, bytes: Uint8Array<ArrayBuffer>) {
  const res = await reg.fetch(`/v2/${name}/blobs/uploads/?digest=${sha256(bytes)}`, {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream" },
    body: bytes,
  });
  const text = await res.text();
  assert.equal(res.status, 201, text);
}

/**
 * Pushes an image (its blobs, then its manifest under `tag`). A collection
 * may take the blobs before the manifest comes (no grace period): then the
 * PUT is 400 MANIFEST_BLOB_UNKNOWN and the push starts over, as a client would.
 */
async function pushImage(
  reg: TestRegistry,
  name: string,
  tag: string,
  seed: number,
  rnd: () => number,
): Promise<{ digest: string; body: string; blobs: Map<string, Uint8Array> }> {
  const config = new TextEncoder().encode(JSON.stringify({ seed }));
  const layers = [LAYERS[Math.floor(rnd() * LAYERS.length)]!, LAYERS[Math.floor(rnd() * 6)]!];
  const body = imageManifest(
    { digest: sha256(config), size: config.length },
    layers.map((l) => ({ digest: sha256(l), size: l.length })),
  );
  for (let attempt = 1;; attempt++) {
    for (const blob of [config, ...layers]) await postBlob(reg, name, blob, Math.floor(rnd() * 3));
    const res = await reg.fetch(`/v2/${name}/manifests/${tag}`, {
      method: "PUT",
      headers: { "Content-Type": MANIFEST_TYPE },
      body,
    });
    const text = await res.text();
    if (res.status === 201) {
      const blobs = new Map<string, Uint8Array>([config, ...layers].map((b) => [sha256(b), b]));
      return { digest: sha256(body), body, blobs };
    }
    assert.equal(res.status, 400, text);
    assert.match(text, /MANIFEST_BLOB_UNKNOWN/);
    assert.ok(attempt < 50, "a push lost to collections 50 times in a row");
  }
}

Deno.test("pushes, tag moves, deletes and collections racing for many rounds lose nothing tagged and keep nothing unheld", async () => {
  await using reg = await startRegistry();
  const rnd = random(7);
  const pushed = new Map<string, { body: string; blobs: Map<string, Uint8Array> }>();
  let seed = 0;
  let collections = 0;
  let removedBytes = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const work: Promise<unknown>[] = [];
    for (let p = 0; p < 5; p++) {
      const name = REPOS[Math.floor(rnd() * REPOS.length)]!;
      const tag = TAGS[Math.floor(rnd() * TAGS.length)]!;
      const s = seed++ % 9; // images repeat: the same manifest pushed again
      work.push(
        pushImage(reg, name, tag, s, rnd).then((image) => {
          pushed.set(image.digest, image);
        }),
      );
    }
    for (let d = 0; d < 2; d++) {
      const name = REPOS[Math.floor(rnd() * REPOS.length)]!;
      const byDigest = rnd() < 0.5 && pushed.size > 0;
      const ref = byDigest
        ? [...pushed.keys()][Math.floor(rnd() * pushed.size)]!
        : TAGS[Math.floor(rnd() * TAGS.length)]!;
      work.push(
        reg.fetch(`/v2/${name}/manifests/${ref}`, { method: "DELETE" }).then(async (res) => {
          await res.body?.cancel();
          assert.ok([202, 404].includes(res.status), `DELETE ${name}:${ref}: ${res.status}`);
        }),
      );
    }
    for (let c = 0; c < 3; c++) {
      work.push(
        new Promise((resolve) => setTimeout(resolve, Math.floor(rnd() * 30))).then(async () => {
          const report = await collect(reg.meta, reg.blobs, { graceMs: 0, untaggedTtlMs: 0 });
          collections++;
          removedBytes += report.blobs;
        }),
      );
    }
    await Promise.all(work);
    // A last collection on the quiet store, then everything is checked.
    await collect(reg.meta, reg.blobs, { graceMs: 0, untaggedTtlMs: 0 });
    const snapshot = await checkConsistency(reg.meta, reg.blobs);
    for (const [key, digest] of snapshot.tags) {
      const [name, tag] = key.split("\0") as [string, string];
      const image = pushed.get(digest);
      assert.ok(image, `${name}:${tag} points at ${digest}, never pushed`);
      const res = await reg.fetch(`/v2/${name}/manifests/${tag}`);
      assert.equal(await res.text(), image.body, `round ${round}: ${name}:${tag}`);
      for (const [blob, bytes] of image.blobs) {
        const got = await reg.fetch(`/v2/${name}/blobs/${blob}`);
        assert.equal(got.status, 200, `round ${round}: ${name}:${tag} blob ${blob}`);
        assert.deepEqual(new Uint8Array(await got.arrayBuffer()), bytes);
      }
    }
    // Nothing is left that no tag holds: every manifest is tagged, every link is one of a
    // tagged manifest's blobs, every stored blob is held by a link or a manifest.
    const tagged = new Set(snapshot.tags.values());
    const wanted = new Set<string>();
    for (const key of snapshot.manifests.keys()) {
      const [name, digest] = key.split("\0") as [string, string];
      assert.ok(
        [...snapshot.tags].some(([t, d]) => t.startsWith(`${name}\0`) && d === digest),
        `round ${round}: manifest ${name}@${digest} is untagged but was not collected`,
      );
      for (const blob of pushed.get(digest)!.blobs.keys()) wanted.add(k(name, blob));
    }
    for (const key of snapshot.links.keys()) {
      assert.ok(wanted.has(key), `round ${round}: link ${key} is held by no manifest`);
    }
    const held = new Set([
      ...[...snapshot.links.keys()].map((key) => key.split("\0")[1]!),
      ...[...snapshot.manifests.keys()].map((key) => key.split("\0")[1]!),
    ]);
    assert.deepEqual([...snapshot.blobFiles].filter((d) => !held.has(d)), [], `round ${round}`);
    assert.ok(tagged.size <= REPOS.length * TAGS.length);
  }
  assert.ok(collections >= ROUNDS * 3);
  assert.ok(removedBytes > 0, "the collections never removed anything");
});
