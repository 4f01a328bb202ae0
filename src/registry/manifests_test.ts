/**
 * Unit tests of the manifest operations of the service layer, over an
 * in-memory KV and a temp filesystem store.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { defaultConfig } from "../config.ts";
import { KvMetadataStore } from "../meta/metadata_store.ts";
import { type Digest, makeDigest } from "../oci/digest.ts";
import { OciError } from "../oci/errors.ts";
import { OCI_INDEX, OCI_MANIFEST } from "../oci/media_type.ts";
import { FsBlobStore } from "../storage/fs_blob_store.ts";
import { Registry } from "./registry.ts";

function digestOf(text: string): Digest {
  return makeDigest("sha256", createHash("sha256").update(text).digest("hex"));
}

function bodyOf(text: string): ReadableStream<Uint8Array> {
  return new Blob([text]).stream();
}

async function withRegistry(fn: (r: Registry, meta: KvMetadataStore) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "berth-registry-" });
  const kv = await Deno.openKv(":memory:");
  const meta = new KvMetadataStore(kv);
  try {
    const registry = new Registry({
      meta,
      blobs: await FsBlobStore.open(dir),
      config: defaultConfig(),
    });
    await fn(registry, meta);
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function image(config: Digest, layers: Digest[]): string {
  return JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config, size: 2 },
    layers: layers.map((digest) => ({
      mediaType: "application/vnd.oci.image.layer.v1.tar",
      digest,
      size: 1,
    })),
  });
}

Deno.test("Manifests.push() checks blob and child references at the same time, not one after the other", async () => {
  await withRegistry(async (registry, meta) => {
    let manifestsStarted!: () => void;
    const started = new Promise<void>((resolve) => (manifestsStarted = resolve));
    const missingBlobs = meta.missingBlobs.bind(meta);
    const missingManifests = meta.missingManifests.bind(meta);
    // The blob check waits until the child check has started: one after the other would hang.
    meta.missingBlobs = async (name, digests) => {
      await started;
      return await missingBlobs(name, digests);
    };
    meta.missingManifests = (name, digests) => {
      manifestsStarted();
      return missingManifests(name, digests);
    };
    const index = JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, digest: digestOf("child"), size: 3 }],
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("the checks ran one after the other")), 2000);
    });
    try {
      await Promise.race([
        assert.rejects(
          registry.manifests.push({
            name: "app",
            reference: { kind: "tag", tag: "v1" },
            tags: [],
            body: bodyOf(index),
            declaredLength: null,
            contentType: OCI_INDEX,
          }),
          (error: unknown) =>
            error instanceof OciError && error.code === "MANIFEST_BLOB_UNKNOWN" &&
            JSON.stringify(error.options.detail).includes(digestOf("child")),
        ),
        timeout,
      ]);
    } finally {
      clearTimeout(timer);
    }
  });
});

Deno.test("Manifests.push() records what the manifest references, and delete removes it", async () => {
  await withRegistry(async (registry, meta) => {
    const config = digestOf("{}");
    const layer = digestOf("L");
    await registry.blobs.put("app", config, bodyOf("{}"));
    await registry.blobs.put("app", layer, bodyOf("L"));
    const body = image(config, [layer, layer]);
    const pushed = await registry.manifests.push({
      name: "app",
      reference: { kind: "tag", tag: "v1" },
      tags: ["latest"],
      body: bodyOf(body),
      declaredLength: body.length,
      contentType: OCI_MANIFEST,
    });
    assert.deepEqual(pushed.tags, ["latest", "v1"]);
    assert.deepEqual(await meta.getManifestRefs("app", pushed.digest), {
      blobs: [config, layer],
      manifests: [],
    });
    const got = await registry.manifests.get("app", "latest");
    assert.equal(new TextDecoder().decode(got.bytes), body);
    await registry.manifests.delete("app", { kind: "digest", digest: pushed.digest });
    assert.equal(await meta.getManifestRefs("app", pushed.digest), null);
    await assert.rejects(registry.manifests.resolve("app", "v1"), OciError);
  });
});

Deno.test("Manifests.push() refuses a body declared over the limit before reading it, and cancels it", async () => {
  await withRegistry(async (registry) => {
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      pull() {/* never sends */},
      cancel() {
        cancelled = true;
      },
    });
    await assert.rejects(
      registry.manifests.push({
        name: "app",
        reference: { kind: "tag", tag: "v1" },
        tags: [],
        body,
        declaredLength: 64 * 1024 * 1024,
        contentType: OCI_MANIFEST,
      }),
      (error: unknown) => error instanceof OciError && error.status === 413,
    );
    assert.ok(cancelled);
  });
});
