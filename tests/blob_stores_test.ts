/**
 * The shared blob store suite (`_blob_store_suite.ts`) against every backend
 * Berth can be configured with, each opened the way `--blobs` opens it. A new
 * backend adds a row to `BACKENDS`.
 *
 * @module
 */
import { openBlobStore } from "../src/storage/open.ts";
import { blobStoreSuite } from "./_blob_store_suite.ts";
import { FaultyStore } from "./_faulty_store.ts";
import { FsBlobStore } from "../src/storage/fs_blob_store.ts";

const BACKENDS: { name: string; blobs: (dir: string) => string; sharedKv?: boolean }[] = [
  { name: "filesystem (--blobs DIR)", blobs: (dir) => dir },
  { name: "filesystem (--blobs file:DIR)", blobs: (dir) => `file:${dir}` },
  { name: "KV, in the metadata KV (--blobs kv)", blobs: () => "kv", sharedKv: true },
  { name: "KV, a KV file of its own (--blobs kv:FILE)", blobs: (dir) => `kv:${dir}/blobs.kv` },
];

for (const backend of BACKENDS) {
  blobStoreSuite(backend.name, async () => {
    const dir = await Deno.makeTempDir({ prefix: "berth-store-" });
    const kv = backend.sharedKv ? await Deno.openKv(`${dir}/meta.kv`) : undefined;
    const store = await openBlobStore(
      { blobs: backend.blobs(dir), data: "/nonexistent" },
      Deno.env.toObject(),
      kv,
    );
    return {
      store,
      async [Symbol.asyncDispose]() {
        await store.close();
        kv?.close();
        await Deno.remove(dir, { recursive: true });
      },
    };
  });
}

// The fault-injecting wrapper the bounds tests use must behave as its store when no fault is set.
blobStoreSuite("fault-injecting wrapper, no faults", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-store-" });
  const store = new FaultyStore(await FsBlobStore.open(dir));
  return {
    store,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
});
