/**
 * The shared blob store suite (`_blob_store_suite.ts`) against every backend
 * Berth can be configured with, each opened the way `--blobs` opens it. A new
 * backend adds a row to `BACKENDS`. The S3 rows run against a throw-away
 * Ceph RADOS Gateway started once for this file (Ceph must be installed).
 *
 * @module
 */
import { openBlobStore } from "../src/storage/open.ts";
import { blobStoreSuite } from "./_blob_store_suite.ts";
import { cephForFile } from "./_ceph.ts";
import { FaultyStore } from "./_faulty_store.ts";
import { FsBlobStore } from "../src/storage/fs_blob_store.ts";

const ceph = await cephForFile();

const BACKENDS: {
  name: string;
  /** The store's `--blobs`, its other options and environment, and how to throw it away. */
  open: () => Promise<{
    blobs: string;
    config?: Record<string, string>;
    env?: Record<string, string>;
    /** The metadata KV, for a store that shares it (`--blobs kv`). */
    kv?: Deno.Kv;
    dispose: () => Promise<void>;
  }>;
}[] = [
  {
    name: "filesystem (--blobs DIR)",
    async open() {
      const dir = await Deno.makeTempDir({ prefix: "berth-store-" });
      return { blobs: dir, dispose: () => Deno.remove(dir, { recursive: true }) };
    },
  },
  {
    name: "filesystem (--blobs file:DIR)",
    async open() {
      const dir = await Deno.makeTempDir({ prefix: "berth-store-" });
      return { blobs: `file:${dir}`, dispose: () => Deno.remove(dir, { recursive: true }) };
    },
  },
  {
    // A bucket of its own, the endpoint and credentials from the AWS variables.
    name: "S3 on Ceph RGW (--blobs s3://BUCKET, AWS_* variables)",
    async open() {
      const bucket = `suite-${crypto.randomUUID().slice(0, 13)}`;
      await ceph.createBucket(bucket);
      return {
        blobs: `s3://${bucket}`,
        env: {
          AWS_ENDPOINT_URL_S3: ceph.endpoint,
          AWS_REGION: ceph.region,
          AWS_ACCESS_KEY_ID: ceph.accessKey,
          AWS_SECRET_ACCESS_KEY: ceph.secretKey,
        },
        dispose: () => Promise.resolve(),
      };
    },
  },
  {
    // A prefix of a shared bucket, everything from the --s3-* options.
    name: "S3 on Ceph RGW (--blobs s3://BUCKET/PREFIX, --s3-* options)",
    async open() {
      await sharedBucket;
      return {
        blobs: `s3://suite-shared/berth/${crypto.randomUUID()}`,
        config: {
          s3Endpoint: ceph.endpoint,
          s3Region: ceph.region,
          s3AccessKeyId: ceph.accessKey,
          s3SecretAccessKey: ceph.secretKey,
        },
        dispose: () => Promise.resolve(),
      };
    },
  },
  {
    name: "KV, in the metadata KV (--blobs kv)",
    async open() {
      const dir = await Deno.makeTempDir({ prefix: "berth-store-" });
      const kv = await Deno.openKv(`${dir}/meta.kv`);
      return {
        blobs: "kv",
        kv,
        dispose: async () => {
          kv.close();
          await Deno.remove(dir, { recursive: true });
        },
      };
    },
  },
  {
    name: "KV, a KV file of its own (--blobs kv:FILE)",
    async open() {
      const dir = await Deno.makeTempDir({ prefix: "berth-store-" });
      return { blobs: `kv:${dir}/blobs.kv`, dispose: () => Deno.remove(dir, { recursive: true }) };
    },
  },
];

const sharedBucket = ceph.createBucket("suite-shared");

for (const backend of BACKENDS) {
  blobStoreSuite(backend.name, async () => {
    const { blobs, config = {}, env = {}, kv, dispose } = await backend.open();
    const store = await openBlobStore({ blobs, data: "/nonexistent", ...config }, env, kv);
    return {
      store,
      async [Symbol.asyncDispose]() {
        await store.close();
        await dispose();
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

Deno.test({
  name: "the throw-away Ceph cluster stops: radosgw, then the OSD, then the monitor",
  async fn() {
    await ceph.stop();
  },
});
