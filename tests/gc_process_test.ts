/**
 * Garbage collection as its own process: `berth gc` beside a serving
 * process on the same data directory (dry run first, then for real, with
 * `--json`), `berth du`, and a collection killed with SIGKILL at many
 * points: fsck is clean after every kill and the next collection finishes
 * the work.
 *
 * @module
 */
import assert from "node:assert/strict";
import { checkConsistency } from "./_consistency.ts";
import { join } from "node:path";
import { exists, imageManifest, randomBytes, runMain, sha256, spawnRegistry } from "./_registry.ts";
import type { Digest } from "../src/oci/digest.ts";
import { openStores } from "../src/open.ts";
import { collect } from "../src/gc/collect.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json";

function berth(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--unstable-kv", "-A", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Pushes an image of a unique config and layer under `tag` through HTTP. */
async function pushImage(url: string, name: string, tag: string, seed: number) {
  const config = new TextEncoder().encode(JSON.stringify({ seed }));
  const layer = randomBytes(300 + seed, seed);
  for (const bytes of [config, layer]) {
    const res = await fetch(`${url}/v2/${name}/blobs/uploads/?digest=${sha256(bytes)}`, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: bytes,
    });
    await res.body?.cancel();
    assert.equal(res.status, 201);
  }
  const body = JSON.stringify({
    schemaVersion: 2,
    mediaType: MANIFEST_TYPE,
    config: {
      mediaType: "application/vnd.oci.image.config.v1+json",
      digest: sha256(config),
      size: config.length,
    },
    layers: [{
      mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
      digest: sha256(layer),
      size: layer.length,
    }],
  });
  const res = await fetch(`${url}/v2/${name}/manifests/${tag}`, {
    method: "PUT",
    headers: { "Content-Type": MANIFEST_TYPE },
    body,
  });
  await res.body?.cancel();
  assert.equal(res.status, 201);
  return { digest: sha256(body), body, layer: sha256(layer) };
}

async function remove(url: string, name: string, ref: string) {
  const res = await fetch(`${url}/v2/${name}/manifests/${ref}`, { method: "DELETE" });
  await res.body?.cancel();
  assert.equal(res.status, 202);
}

Deno.test("berth gc runs beside a serving process: a dry run removes nothing, then it collects; du reports", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-gc-" });
  try {
    const server = await spawnRegistry(["--data", dir, "--gc-interval", "0"]);
    try {
      const kept = await pushImage(server.url, "app", "v1", 1);
      const gone = await pushImage(server.url, "app", "v2", 2);
      await remove(server.url, "app", "v2");
      const dry = await runMain(
        ["gc", "--data", dir, "--grace", "0", "--untagged-ttl", "0", "--dry-run"],
      );
      assert.equal(dry.code, 0, dry.stderr);
      assert.match(dry.stdout, new RegExp(`would remove manifest app@${gone.digest}`));
      assert.match(
        dry.stdout,
        /^gc: would remove 0 tag\(s\), 1 manifest\(s\), 2 link\(s\), 3 blob\(s\)/m,
      );
      let res = await fetch(`${server.url}/v2/app/manifests/${gone.digest}`);
      await res.body?.cancel();
      assert.equal(res.status, 200, "the dry run removed something");
      const du = await runMain(["du", "--data", dir, "--json"]);
      assert.equal(du.code, 0, du.stderr);
      const figures = JSON.parse(du.stdout);
      assert.ok(figures.repositories.app > 0 && figures.total === figures.repositories.app);
      assert.equal(typeof figures.reclaimableNow, "number");
      const real = await runMain(
        ["gc", "--data", dir, "--grace", "0", "--untagged-ttl", "0", "--json"],
      );
      assert.equal(real.code, 0, real.stderr);
      const report = JSON.parse(real.stdout);
      assert.equal(report.manifests, 1);
      assert.equal(report.blobs, 3);
      assert.ok(report.reclaimedBytes > 300);
      res = await fetch(`${server.url}/v2/app/manifests/${gone.digest}`);
      await res.body?.cancel();
      assert.equal(res.status, 404);
      res = await fetch(`${server.url}/v2/app/manifests/v1`);
      assert.equal(await res.text(), kept.body);
      res = await fetch(`${server.url}/v2/app/blobs/${kept.layer}`);
      assert.equal(res.status, 200);
      await res.body?.cancel();
      // The server pushes again what the collector just removed.
      const again = await pushImage(server.url, "app", "v2", 2);
      assert.equal(again.digest, gone.digest);
    } finally {
      assert.equal(await server.stop(), 0);
    }
    const stores = await openStores({ data: dir, kv: "", blobs: "" });
    try {
      await checkConsistency(stores.meta, stores.blobs);
    } finally {
      await stores.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Stores images straight through the stores (fast): garbage ones are deleted at once. */
async function generate(dir: string, from: number, count: number, keepEvery: number) {
  const stores = await openStores({ data: dir, kv: "", blobs: "" });
  const kept = [];
  try {
    for (let i = from; i < from + count; i++) {
      const name = `kill/r${i % 4}`;
      const config = new TextEncoder().encode(JSON.stringify({ seed: i }));
      const layer = randomBytes(200 + (i % 50), i);
      for (const bytes of [config, layer]) {
        const digest = sha256(bytes) as Digest;
        await stores.blobs.putBytes(digest, bytes);
        await stores.meta.linkBlob(name, digest, bytes.length);
      }
      const body = imageManifest(
        { digest: sha256(config), size: config.length },
        [{ digest: sha256(layer), size: layer.length }],
      );
      const digest = sha256(body) as Digest;
      const bytes = new TextEncoder().encode(body);
      await stores.blobs.putBytes(digest, bytes);
      await stores.meta.putManifest({
        name,
        digest,
        record: {
          mediaType: MANIFEST_TYPE,
          size: bytes.length,
          createdAt: Date.now(),
          artifactType: "application/vnd.oci.image.config.v1+json",
        },
        tags: [`t${i}`],
        refs: { blobs: [sha256(config) as Digest, sha256(layer) as Digest], manifests: [] },
      });
      if (i % keepEvery === 0) kept.push({ digest, body });
      else await stores.meta.deleteManifest(name, digest);
    }
  } finally {
    await stores.close();
  }
  return kept;
}

/** Waits until fewer release pages are pending than when called (or `done` settles). */
async function untilReleasesShrink(dir: string, done: Promise<unknown>): Promise<void> {
  using kv = await Deno.openKv(join(dir, "meta.kv"));
  const count = async () => {
    let n = 0;
    for await (const _ of kv.list({ prefix: ["gc_release"] })) n++;
    return n;
  };
  const start = await count();
  let finished = false;
  done.then(() => (finished = true));
  while (!finished && (await count()) >= start) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

Deno.test("a collection killed with SIGKILL at any point leaves fsck clean, and the next one finishes it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-gc-kill-" });
  try {
    const kept = [];
    let killed = 0;
    let seed = 0;
    // Rounds whose collection was killed after it had started, and before it was done.
    let midway = 0;
    for (const delay of [0, 50, 150, 300, 450, 600]) {
      kept.push(...await generate(dir, seed, 80, 10));
      seed += 80;
      const child = berth(["gc", "--data", dir, "--grace", "0", "--untagged-ttl", "0"]);
      // Kill it `delay` ms after it has started working (its releases are being uncounted).
      await untilReleasesShrink(dir, child.status);
      await new Promise((resolve) => setTimeout(resolve, delay));
      try {
        child.kill("SIGKILL");
      } catch { /* it finished first */ }
      const status = await child.status;
      if (status.signal === "SIGKILL") killed++;
      await child.stdout.cancel();
      await child.stderr.cancel();
      const stores = await openStores({ data: dir, kv: "", blobs: "" });
      try {
        // Killed after it had started (see above) and before it was done.
        const { blobFiles } = await checkConsistency(stores.meta, stores.blobs);
        if (status.signal === "SIGKILL" && blobFiles.size > kept.length * 3) midway++;
      } finally {
        await stores.close();
      }
    }
    assert.ok(midway >= 2, `no collection was killed midway (${killed} killed)`);
    // The next collection finishes; a claim a killed one left is taken over once its lease has
    // run out (1 s here).
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const stores = await openStores({ data: dir, kv: "", blobs: "" });
    try {
      const last = await collect(stores.meta, stores.blobs, {
        graceMs: 0,
        untaggedTtlMs: 0,
        leaseMs: 1000,
      });
      assert.ok(last.examined > 0);
      const snapshot = await checkConsistency(stores.meta, stores.blobs);
      assert.equal(snapshot.manifests.size, kept.length);
      assert.equal(snapshot.links.size, kept.length * 2);
      assert.equal(snapshot.blobFiles.size, kept.length * 3);
      for (const image of kept) {
        const read = await stores.blobs.open(image.digest);
        assert.equal(await new Response(read!.stream).text(), image.body);
      }
    } finally {
      await stores.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the server collects on its own every --gc-interval", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-gc-serve-" });
  try {
    const server = await spawnRegistry([
      "--data",
      dir,
      "--gc-interval",
      "1s",
      "--gc-grace",
      "0",
      "--untagged-ttl",
      "0",
    ]);
    try {
      const kept = await pushImage(server.url, "app", "v1", 1);
      const gone = await pushImage(server.url, "app", "v2", 2);
      await remove(server.url, "app", "v2");
      const file = join(dir, "blobs", "sha256", gone.layer.slice(7, 9), gone.layer.slice(7));
      const deadline = Date.now() + 10_000;
      while (await exists(file) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      assert.equal(await exists(file), false, "the server never collected");
      const res = await fetch(`${server.url}/v2/app/manifests/v1`);
      assert.equal(await res.text(), kept.body);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
