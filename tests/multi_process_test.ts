/**
 * Three Berth processes over one KV file and one S3 bucket (a throw-away Ceph
 * RGW) behave as one registry: skopeo pushes through one and pulls through
 * the others; a chunked upload session moves from process to process; a tag
 * moved or deleted through one is seen at once by the others (their read
 * caches re-check a versionstamped key); and the collectors of all three run
 * at the same time, removing what nothing references and keeping what is.
 *
 * @module
 */
import assert from "node:assert/strict";
import { cephForFile } from "./_ceph.ts";
import {
  clientEnv,
  lib,
  ok,
  removeTree,
  sha256,
  skopeo,
  which,
  writeClientConfigs,
} from "./_e2e.ts";
import { bytesOf } from "./_blob_store_suite.ts";
import { type RegistryProcess, spawnRegistry } from "./_registry.ts";

const ceph = await cephForFile();
const BUCKET = "three";
await ceph.createBucket(BUCKET);

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const ACCEPT = [OCI_MANIFEST, "application/vnd.oci.image.index.v1+json"].join(", ");

/** The value of an unlabelled or labelled sample in a Prometheus text page. */
async function metric(reg: RegistryProcess, sample: string): Promise<number> {
  const text = await (await fetch(`${reg.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${sample} `));
  return line ? Number(line.slice(sample.length + 1)) : 0;
}

async function waitFor(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function status(url: string, init: RequestInit = {}): Promise<number> {
  const res = await fetch(url, init);
  await res.body?.cancel();
  return res.status;
}

Deno.test("three processes over one KV and one S3 bucket behave as one registry", async (t) => {
  for (const name of ["bash", "skopeo", "busybox"]) {
    assert.ok(which(name), `${name} missing: see tests/e2e/README.md for the packages`);
  }
  const tmp = await Deno.makeTempDir({ dir: "/tmp", prefix: "b3p." });
  const procs: RegistryProcess[] = [];
  try {
    const shared = [
      "--kv",
      `${tmp}/meta.kv`,
      "--blobs",
      `s3://${BUCKET}/registry`,
      "--s3-endpoint",
      ceph.endpoint,
      "--s3-access-key-id",
      ceph.accessKey,
      "--s3-secret-access-key",
      ceph.secretKey,
      "--gc-interval",
      "2s",
      // Long enough that a blob is read back before it could go, short enough to watch it go.
      "--gc-grace",
      "5s",
    ];
    for (const i of [0, 1, 2]) {
      procs.push(await spawnRegistry(["--data", `${tmp}/p${i}`, ...shared]));
    }
    const [a, b, c] = procs as [RegistryProcess, RegistryProcess, RegistryProcess];
    const host = (reg: RegistryProcess) => new URL(reg.url).host;
    await writeClientConfigs(tmp);
    const env = clientEnv(tmp, "berth3");
    const made = await lib(
      env,
      'make_test_images 6 >&2; printf \'{"small":"%s","big":"%s"}\' ' +
        '"$E2E_SMALL_DIGEST" "$E2E_BIG_DIGEST"',
    );
    const digests = JSON.parse(made.stdout) as { small: string; big: string };
    const skopeoCopy = (src: string, dest: string) =>
      skopeo(env, [
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        ...(dest.startsWith("docker://") ? ["--preserve-digests"] : []),
        src,
        dest,
      ]);

    await t.step("skopeo pushes through one process and pulls through the other two", async () => {
      for (const tag of ["small", "big"] as const) {
        await ok(skopeoCopy(`oci:${env.layout}:${tag}`, `docker://${host(a)}/app:${tag}`), tag);
      }
      for (const [i, reg] of [b, c].entries()) {
        for (const tag of ["small", "big"] as const) {
          await ok(
            skopeoCopy(`docker://${host(reg)}/app:${tag}`, `oci:${tmp}/back${i}:${tag}`),
            tag,
          );
          const index = JSON.parse(await Deno.readTextFile(`${tmp}/back${i}/index.json`));
          const pulled = index.manifests.map((m: { digest: string }) => m.digest);
          assert.ok(pulled.includes(digests[tag]), `${tag} through process ${i + 1}`);
        }
      }
    });

    await t.step(
      "a chunked upload moves from process to process and finishes on the third",
      async () => {
        // 6 MiB chunks: S3's smallest part is 5 MiB (the session says so); the last may be shorter.
        const bytes = bytesOf(14 * 1024 * 1024, 7);
        const digest = sha256(bytes);
        let res = await fetch(`${a.url}/v2/app/blobs/uploads/`, { method: "POST" });
        await res.body?.cancel();
        assert.equal(res.status, 202);
        assert.equal(res.headers.get("OCI-Chunk-Min-Length"), String(5 * 1024 * 1024));
        let path = new URL(res.headers.get("Location")!, a.url).pathname +
          new URL(res.headers.get("Location")!, a.url).search;
        const chunk = 6 * 1024 * 1024;
        for (const [i, reg] of [a, b, c].entries()) {
          const start = i * chunk;
          const end = Math.min(start + chunk, bytes.length);
          res = await fetch(`${reg.url}${path}`, {
            method: "PATCH",
            headers: {
              "Content-Type": "application/octet-stream",
              "Content-Range": `${start}-${end - 1}`,
            },
            body: bytes.slice(start, end),
          });
          await res.body?.cancel();
          assert.equal(res.status, 202, `chunk ${i} through process ${i + 1}`);
          assert.equal(res.headers.get("Range"), `0-${end - 1}`);
          const next = new URL(res.headers.get("Location")!, reg.url);
          path = next.pathname + next.search;
        }
        const put = `${c.url}${path}${path.includes("?") ? "&" : "?"}digest=${digest}`;
        assert.equal(await status(put, { method: "PUT" }), 201);
        res = await fetch(`${a.url}/v2/app/blobs/${digest}`);
        assert.equal(sha256(new Uint8Array(await res.arrayBuffer())), digest);
      },
    );

    await t.step(
      "a tag moved or deleted through one process is seen at once by the others",
      async () => {
        const manifest = (i: number) =>
          JSON.stringify({
            schemaVersion: 2,
            mediaType: OCI_MANIFEST,
            config: { mediaType: "application/vnd.oci.empty.v1+json", digest: EMPTY, size: 2 },
            layers: [],
            annotations: { round: String(i) },
          });
        const EMPTY = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        const blob = await fetch(`${a.url}/v2/moving/blobs/uploads/?digest=${EMPTY}`, {
          method: "POST",
          body: "{}",
        });
        await blob.body?.cancel();
        assert.equal(blob.status, 201);
        for (let i = 0; i < 12; i++) {
          const [writer, ...readers] = [a, b, c].slice(i % 3).concat([a, b, c].slice(0, i % 3));
          const body = manifest(i);
          const put = await status(`${writer!.url}/v2/moving/manifests/latest`, {
            method: "PUT",
            headers: { "Content-Type": OCI_MANIFEST },
            body,
          });
          assert.equal(put, 201);
          for (const reader of readers) {
            const res = await fetch(`${reader.url}/v2/moving/manifests/latest`, {
              headers: { Accept: ACCEPT },
            });
            assert.equal(await res.text(), body, `round ${i}: a fresh GET sees the new tag`);
            const list = await (await fetch(`${reader.url}/v2/moving/tags/list`)).json();
            assert.deepEqual(list.tags, ["latest"]);
          }
        }
        assert.equal(
          await status(`${b.url}/v2/moving/manifests/latest`, { method: "DELETE" }),
          202,
        );
        for (const reader of [a, c]) {
          assert.equal(
            await status(`${reader.url}/v2/moving/manifests/latest`, { method: "HEAD" }),
            404,
          );
        }
      },
    );

    await t.step(
      "all three collectors run at once, remove what nothing references, keep the rest",
      async () => {
        const big =
          await (await fetch(`${b.url}/v2/app/manifests/big`, { headers: { Accept: ACCEPT } }))
            .json() as { layers: { digest: string }[] };
        const small =
          await (await fetch(`${b.url}/v2/app/manifests/small`, { headers: { Accept: ACCEPT } }))
            .json() as { layers: { digest: string }[] };
        const smallLayers = new Set(small.layers.map((l) => l.digest));
        const onlyBig = big.layers.map((l) => l.digest).filter((d) => !smallLayers.has(d));
        const shared = big.layers.map((l) => l.digest).filter((d) => smallLayers.has(d));
        assert.ok(
          onlyBig.length > 0 && shared.length > 0,
          "big has a layer of its own and one shared with small",
        );
        const before = await Promise.all(
          procs.map((p) => metric(p, 'berth_gc_runs_total{result="ok"}')),
        );

        assert.equal(
          await status(`${c.url}/v2/app/manifests/${digests.big}`, { method: "DELETE" }),
          202,
        );
        await waitFor(
          "the big image's own layer to be collected",
          60_000,
          async () =>
            (await Promise.all(
              onlyBig.map((d) => status(`${a.url}/v2/app/blobs/${d}`, { method: "HEAD" })),
            ))
              .every((s) => s === 404),
        );
        await waitFor("every collector to have run since", 30_000, async () => {
          const now = await Promise.all(
            procs.map((p) => metric(p, 'berth_gc_runs_total{result="ok"}')),
          );
          return now.every((runs, i) => runs > before[i]!);
        });
        // What small still references survived three collectors running side by side.
        for (const d of [...shared, ...smallLayers]) {
          assert.equal(await status(`${b.url}/v2/app/blobs/${d}`, { method: "HEAD" }), 200, d);
        }
        await ok(
          skopeoCopy(`docker://${host(c)}/app:small`, `oci:${tmp}/after:small`),
          "pull small after",
        );
        for (const p of procs) {
          const errors = p.lines.filter((line) => line.includes('"level":"error"'));
          assert.deepEqual(errors, [], "no process logged an error");
        }
      },
    );
  } finally {
    for (const p of procs) await p.kill();
    await removeTree(tmp);
  }
});

Deno.test("the throw-away Ceph cluster of the three processes stops", async () => {
  await ceph.stop();
});
