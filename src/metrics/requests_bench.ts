/**
 * What the metrics step costs a manifest GET, in process (no sockets):
 * `deno bench --unstable-kv -A src/metrics/requests_bench.ts`. The same app
 * is built with metrics on and off; both answer the same manifest by tag.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { createApp } from "../app.ts";
import { defaultConfig } from "../config.ts";
import { createLogger } from "../log.ts";
import { KvMetadataStore } from "../meta/metadata_store.ts";
import { FsBlobStore } from "../storage/fs_blob_store.ts";

const dir = await Deno.makeTempDir({ prefix: "berth-bench-" });
const meta = new KvMetadataStore(await Deno.openKv(":memory:"));
const blobs = await FsBlobStore.open(dir);
const log = createLogger("off");
const base = { ...defaultConfig(), data: dir, kv: ":memory:", logLevel: "off" as const };
const on = createApp({ meta, blobs, log, config: { ...base, metrics: true } });
const off = createApp({ meta, blobs, log, config: { ...base, metrics: false } });

const config = new TextEncoder().encode("{}");
const configDigest = `sha256:${createHash("sha256").update(config).digest("hex")}`;
await on(
  new Request(`http://localhost/v2/bench/blobs/uploads/?digest=${configDigest}`, {
    method: "POST",
    body: config,
    headers: { "Content-Length": "2" },
  }),
);
const manifest = JSON.stringify({
  schemaVersion: 2,
  mediaType: "application/vnd.oci.image.manifest.v1+json",
  config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: 2 },
  layers: [],
});
const put = await on(
  new Request("http://localhost/v2/bench/manifests/latest", {
    method: "PUT",
    headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
    body: manifest,
  }),
);
if (put.status !== 201) throw new Error(`PUT: ${put.status}`);

const url = "http://localhost/v2/bench/manifests/latest";
Deno.bench("manifest GET, metrics off", { group: "manifest", baseline: true }, async () => {
  await (await off(new Request(url))).arrayBuffer();
});
Deno.bench("manifest GET, metrics on", { group: "manifest" }, async () => {
  await (await on(new Request(url))).arrayBuffer();
});
