/**
 * `deno task bench:gc`: what a collection costs when nothing is due, in a
 * store of 100 manifests and in one of 10,000 (each with its own config and
 * a shared layer, all tagged), against what reading every manifest record
 * once costs (what a collector that walks the store would pay at least). A
 * collection reads only the due candidates, so its cost should not grow with
 * the store. Also: a collection with 1,000 untagged images due.
 *
 * Options: `--sizes 100,10000` (store sizes), `--runs N` (default 20: median).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { createHash } from "node:crypto";
import { KvMetadataStore } from "../src/meta/metadata_store.ts";
import { FsBlobStore } from "../src/storage/fs_blob_store.ts";
import { collect } from "../src/gc/collect.ts";
import type { Digest } from "../src/oci/digest.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    sizes: { type: "string", default: "100,10000" },
    runs: { type: "string", default: "20" },
  },
});
const SIZES = values.sizes!.split(",").map(Number);
const RUNS = Number(values.runs);
const MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json";

const sha = (s: string) => `sha256:${createHash("sha256").update(s).digest("hex")}` as Digest;

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** A store of `n` tagged manifests, each with its own config and a shared layer. */
async function build(
  dir: string,
  n: number,
): Promise<{ meta: KvMetadataStore; blobs: FsBlobStore }> {
  const meta = await KvMetadataStore.open(`${dir}/meta.kv`);
  await meta.migrate({ open: () => Promise.resolve(null), stat: () => Promise.resolve(null) });
  const blobs = await FsBlobStore.open(dir);
  const layer = sha("shared layer");
  for (let r = 0; r < 10; r++) await meta.linkBlob(`bench/r${r}`, layer, 1000);
  for (let i = 0; i < n; i++) {
    const name = `bench/r${i % 10}`;
    const config = sha(`config ${i}`);
    await meta.linkBlob(name, config, 100);
    await meta.putManifest({
      name,
      digest: sha(`manifest ${i}`),
      record: { mediaType: MANIFEST_TYPE, size: 400, createdAt: Date.now() },
      tags: [`t${i}`],
      refs: { blobs: [config, layer], manifests: [] },
    });
  }
  return { meta, blobs };
}

async function time(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

console.log(
  `| store | collection, nothing due (median of ${RUNS}) | read every manifest record once |`,
);
console.log("| --- | --- | --- |");
for (const n of SIZES) {
  const dir = await Deno.makeTempDir({ prefix: "berth-bench-gc-" });
  try {
    const { meta, blobs } = await build(dir, n);
    // The first collection examines what the pushes queued (links inside no grace) and drops it.
    await collect(meta, blobs, { graceMs: 0, untaggedTtlMs: 0 });
    const idle: number[] = [];
    let examined = 0;
    for (let i = 0; i < RUNS; i++) {
      idle.push(
        await time(async () => {
          const r = await collect(meta, blobs, {
            graceMs: 0,
            untaggedTtlMs: 0,
            uploadTtlMs: 86400_000,
          });
          examined += r.examined;
        }),
      );
    }
    const walk = await time(async () => {
      let count = 0;
      for await (const _ of meta.audit().scan("manifests")) count++;
      if (count !== n) throw new Error(`read ${count} manifests, expected ${n}`);
    });
    console.log(
      `| ${n.toLocaleString("en")} manifests | ${
        median(idle).toFixed(2)
      } ms (${examined} examined) | ${walk.toFixed(1)} ms |`,
    );
    meta.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

{
  const dir = await Deno.makeTempDir({ prefix: "berth-bench-gc-" });
  try {
    const { meta, blobs } = await build(dir, 1000);
    await collect(meta, blobs, { graceMs: 0, untaggedTtlMs: 0 });
    for (let i = 0; i < 1000; i++) await meta.deleteTag(`bench/r${i % 10}`, `t${i}`);
    let report;
    const ms = await time(async () => {
      report = await collect(meta, blobs, { graceMs: 0, untaggedTtlMs: 0 });
    });
    console.log(
      `\n1,000 untagged images due: ${ms.toFixed(0)} ms, ${
        JSON.stringify({ ...report!, removed: undefined })
      }`,
    );
    meta.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
