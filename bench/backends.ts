/**
 * `deno task bench:backends`: push and pull throughput of each blob store in
 * one run, relative to the filesystem store. Berth runs as a subprocess once
 * per backend (the filesystem store; Deno KV, sharing the metadata KV; S3 on a
 * throw-away Ceph RGW with its data in memory, started here), and the same
 * client pushes unique blobs (one streamed PATCH, as docker does) and
 * downloads them with curl. Rounds alternate the order of the backends.
 *
 * Options: `--size-mib N` (64), `--rounds N` (3), `--json FILE`.
 *
 * @module
 */
import { startCeph } from "../tests/_ceph.ts";
import { spawnRegistry } from "../tests/_registry.ts";
import { curlDownload, pushStreamed, TestBlob } from "./client.ts";
import { median } from "./report.ts";

const MIB = 1024 * 1024;

function option(name: string, fallback: string): string {
  const at = Deno.args.indexOf(`--${name}`);
  return at >= 0 && Deno.args[at + 1] !== undefined ? Deno.args[at + 1]! : fallback;
}

const sizeMib = Number(option("size-mib", "64"));
const rounds = Number(option("rounds", "3"));
const jsonFile = option("json", "bench-backends.json");

const dir = await Deno.makeTempDir({ prefix: "berth-bench-backends-" });
const ceph = await startCeph();
try {
  await ceph.createBucket("bench");
  const backends: { name: string; args: string[] }[] = [
    { name: "filesystem", args: [] },
    { name: "Deno KV (local SQLite)", args: ["--blobs", "kv"] },
    {
      name: "S3 (Ceph RGW, memstore)",
      args: [
        "--blobs",
        "s3://bench/berth",
        "--s3-endpoint",
        ceph.endpoint,
        "--s3-access-key-id",
        ceph.accessKey,
        "--s3-secret-access-key",
        ceph.secretKey,
      ],
    },
  ];
  const samples: Record<string, { push: number[]; pull: number[] }> = {};
  for (const b of backends) samples[b.name] = { push: [], pull: [] };
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? backends : [...backends].reverse();
    for (const backend of order) {
      const data = `${dir}/${round}-${backend.name.replace(/\W+/g, "-")}`;
      await using berth = await spawnRegistry([
        "--data",
        data,
        "--gc-interval",
        "0",
        "--kv-max-blob-bytes",
        "4GiB",
        ...backend.args,
      ]);
      const blob = new TestBlob(sizeMib * MIB);
      let started = performance.now();
      await pushStreamed(berth.url, "bench/backends", blob);
      const push = blob.size / MIB / ((performance.now() - started) / 1000);
      started = performance.now();
      const { bytes } = await curlDownload(`${berth.url}/v2/bench/backends/blobs/${blob.digest}`);
      if (bytes !== blob.size) throw new Error(`${backend.name}: downloaded ${bytes} bytes`);
      const pull = blob.size / MIB / ((performance.now() - started) / 1000);
      samples[backend.name]!.push.push(push);
      samples[backend.name]!.pull.push(pull);
      console.error(
        `round ${round + 1} ${backend.name}: push ${push.toFixed(0)} MiB/s, pull ${
          pull.toFixed(0)
        } MiB/s`,
      );
    }
  }
  const fs = samples["filesystem"]!;
  console.log(`\n${sizeMib} MiB blobs, medians of ${rounds} rounds (MiB/s; ratio to filesystem)\n`);
  console.log("| blob store | push | pull |");
  console.log("| --- | --- | --- |");
  for (const { name } of backends) {
    const s = samples[name]!;
    const push = median(s.push);
    const pull = median(s.pull);
    console.log(
      `| ${name} | ${push.toFixed(0)} (${(push / median(fs.push) * 100).toFixed(0)}%) | ${
        pull.toFixed(0)
      } (${(pull / median(fs.pull) * 100).toFixed(0)}%) |`,
    );
  }
  await Deno.writeTextFile(jsonFile, JSON.stringify({ sizeMib, rounds, samples }, null, 2));
  console.log(`\nraw samples: ${jsonFile}`);
} finally {
  await ceph.stop();
  await Deno.remove(dir, { recursive: true });
}
