/**
 * Berth in deploy mode, as on Deno Deploy: `main.ts serve --deploy --blobs kv`
 * (and `--blobs s3://…` on a throw-away Ceph RGW, the S3 credentials from the
 * AWS variables) under Deno's permission flags with every disk write denied except the KV
 * file (and SQLite's `-wal` and `-shm` beside it), and `--unstable-cron` for
 * its collector. skopeo pushes and pulls the test images (tests/e2e/clients.sh
 * `make_test_images`) through it, anonymously and in token mode (the signing
 * key kept in KV: a token survives a restart); a chunked upload, a ranged
 * read and the largest blob (413) are checked with fetch.
 *
 * @module
 */
import assert from "node:assert/strict";
import { basic, writeUsers } from "./_auth.ts";
import {
  type ClientEnv,
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
import { cephForFile } from "./_ceph.ts";

const USER = "alice";
const PASSWORD = "deploy horse 9";

/**
 * The blob stores deploy mode is tested with. Another store adds a row: its `--blobs`
 * value, the hosts it must reach (`--allow-net`) and its environment (credentials).
 */
const ceph = await cephForFile();
const BUCKET = "deploy";
await ceph.createBucket(BUCKET);

const BACKENDS: { name: string; blobs: string; net: string[]; env: Record<string, string> }[] = [
  // The largest-blob (413) checks apply to this row only: --kv-max-blob-bytes is the KV store's.
  { name: "KV", blobs: "kv", net: [], env: {} },
  {
    name: "S3",
    blobs: `s3://${BUCKET}`,
    net: [new URL(ceph.endpoint).host],
    env: {
      AWS_ENDPOINT_URL_S3: ceph.endpoint,
      AWS_REGION: ceph.region,
      AWS_ACCESS_KEY_ID: ceph.accessKey,
      AWS_SECRET_ACCESS_KEY: ceph.secretKey,
    },
  },
];

type Backend = typeof BACKENDS[number];

/** A Berth in deploy mode. */
interface DeployedBerth extends AsyncDisposable {
  url: string;
  host: string;
  /** SIGKILL and wait (deploy mode listens to no signal). */
  kill(): Promise<void>;
}

/**
 * Starts `main.ts serve --deploy --blobs BLOBS --kv KV --listen 127.0.0.1:0` in
 * `cwd`, writing only `KV`, `KV-wal` and `KV-shm`.
 */
async function spawnDeployed(
  backend: Backend,
  kv: string,
  cwd: string,
  args: string[],
): Promise<DeployedBerth> {
  const main = new URL("../main.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-kv",
      "--unstable-cron",
      `--allow-write=${kv},${kv}-wal,${kv}-shm`,
      "--allow-read",
      "--allow-env",
      `--allow-net=${["127.0.0.1", ...backend.net].join(",")}`,
      main,
      "serve",
      "--deploy",
      "--blobs",
      backend.blobs,
      "--kv",
      kv,
      "--listen",
      "127.0.0.1:0",
      "--log-level",
      "warn",
      ...args,
    ],
    cwd,
    // No DENO_DIR writes either: the module graph is cached already by the test run.
    env: { DENO_NO_UPDATE_CHECK: "1", ...backend.env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  let url = "";
  while (!url) {
    const { done, value } = await reader.read();
    if (done) break;
    seen += value;
    url = /listening on (http:\/\/[^/ ]+)/.exec(seen)?.[1] ?? "";
  }
  const drain = (async () => {
    try {
      while (!(await reader.read()).done) { /* keep the pipe flowing */ }
    } catch { /* closed */ }
  })();
  const kill = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await drain;
    await stderr;
  };
  if (!url) {
    await kill();
    throw new Error(`deploy-mode Berth did not start: ${seen}\n${await stderr}`);
  }
  return { url, host: new URL(url).host, kill, [Symbol.asyncDispose]: kill };
}

/** skopeo copy over plain HTTP (digests preserved when pushing). */
function copy(env: ClientEnv, src: string, dest: string, extra: string[] = []) {
  const preserve = dest.startsWith("docker://") ? ["--preserve-digests"] : [];
  return skopeo(env, [
    "copy",
    "-q",
    "--src-tls-verify=false",
    "--dest-tls-verify=false",
    ...preserve,
    ...extra,
    src,
    dest,
  ]);
}

/** The manifest digest of `ref` in the registry, as skopeo reads it. */
async function remoteDigest(env: ClientEnv, ref: string, extra: string[] = []): Promise<string> {
  const out = await ok(
    skopeo(env, ["inspect", "--raw", "--tls-verify=false", ...extra, `docker://${ref}`]),
    `skopeo inspect ${ref}`,
  );
  return sha256(out.stdout);
}

/** Files and folders under `dir`. */
async function entries(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) out.push(entry.name);
  return out.sort();
}

for (const backend of BACKENDS) {
  Deno.test(`deploy mode (${backend.name} blobs) writes only its KV file and serves skopeo pushes and pulls, anonymous and with tokens`, (t) =>
    deployRound(t, backend));
}

Deno.test("the throw-away Ceph cluster of the S3 rows stops", async () => {
  await ceph.stop();
});

async function deployRound(t: Deno.TestContext, backend: Backend): Promise<void> {
  for (const name of ["bash", "skopeo", "busybox"]) {
    assert.ok(which(name), `${name} missing: see tests/e2e/README.md for the packages`);
  }
  const tmp = await Deno.makeTempDir({ dir: "/tmp", prefix: "bdp." });
  try {
    await writeClientConfigs(tmp);
    const env = clientEnv(tmp, "berthdeploy");
    const made = await lib(
      env,
      'make_test_images 1 >&2; printf \'{"small":"%s","big":"%s","multi":"%s"}\' ' +
        '"$E2E_SMALL_DIGEST" "$E2E_BIG_DIGEST" "$E2E_MULTI_DIGEST"',
    );
    const digests = JSON.parse(made.stdout) as { small: string; big: string; multi: string };
    const cwd = `${tmp}/cwd`;
    await Deno.mkdir(cwd);
    await Deno.mkdir(`${tmp}/kv`);

    await t.step(
      "anonymous: images in and out, a chunked upload, a range, 413 past the largest blob",
      async () => {
        const kv = `${tmp}/kv/anon.kv`;
        await using berth = await spawnDeployed(backend, kv, cwd, ["--kv-max-blob-bytes", "4MiB"]);
        for (const tag of ["small", "big"] as const) {
          await ok(
            copy(env, `oci:${env.layout}:${tag}`, `docker://${berth.host}/dep/${tag}:1`),
            `push ${tag}`,
          );
          assert.equal(await remoteDigest(env, `${berth.host}/dep/${tag}:1`), digests[tag]);
          await ok(
            copy(env, `docker://${berth.host}/dep/${tag}:1`, `oci:${tmp}/back:${tag}`),
            `pull ${tag}`,
          );
        }
        await ok(
          copy(env, `oci:${env.layout}:multi`, `docker://${berth.host}/dep/multi:1`, ["--all"]),
          "push multi --all",
        );
        assert.equal(await remoteDigest(env, `${berth.host}/dep/multi:1`), digests.multi);
        await ok(
          copy(env, `docker://${berth.host}/dep/multi:1`, `oci:${tmp}/back:multi`, ["--all"]),
          "pull multi --all",
        );
        // The pulled layout holds the very manifests pushed.
        const index = JSON.parse(await Deno.readTextFile(`${tmp}/back/index.json`));
        const pulled = index.manifests.map((m: { digest: string }) => m.digest).sort();
        assert.deepEqual(pulled, [digests.small, digests.big, digests.multi].sort());

        // A chunked upload of three PATCHes, finished by PUT, then read whole and by range.
        const bytes = bytesOf(900_000, 4);
        const digest = sha256(bytes);
        let res = await fetch(`${berth.url}/v2/dep/chunked/blobs/uploads/`, { method: "POST" });
        await res.body?.cancel();
        assert.equal(res.status, 202);
        let location = new URL(res.headers.get("Location")!, berth.url).href;
        for (let at = 0; at < bytes.length; at += 300_000) {
          res = await fetch(location, {
            method: "PATCH",
            headers: {
              "Content-Type": "application/octet-stream",
              "Content-Range": `${at}-${at + 299_999}`,
            },
            body: bytes.slice(at, at + 300_000),
          });
          await res.body?.cancel();
          assert.equal(res.status, 202, `PATCH at ${at}`);
          location = new URL(res.headers.get("Location")!, berth.url).href;
        }
        res = await fetch(`${location}${location.includes("?") ? "&" : "?"}digest=${digest}`, {
          method: "PUT",
        });
        await res.body?.cancel();
        assert.equal(res.status, 201);
        res = await fetch(`${berth.url}/v2/dep/chunked/blobs/${digest}`);
        assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes);
        res = await fetch(`${berth.url}/v2/dep/chunked/blobs/${digest}`, {
          headers: { Range: "bytes=299990-600009" },
        });
        assert.equal(res.status, 206);
        assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes.subarray(299_990, 600_010));

        // Past --kv-max-blob-bytes: 413 with the spec's error body, in one body or in chunks.
        if (!backend.blobs.startsWith("kv")) return;
        const large = bytesOf(4 * 1024 * 1024 + 1, 5);
        res = await fetch(`${berth.url}/v2/dep/large/blobs/uploads/?digest=${sha256(large)}`, {
          method: "POST",
          headers: { "Content-Type": "application/octet-stream" },
          body: large,
        });
        assert.equal(res.status, 413);
        assert.equal((await res.json()).errors[0].code, "SIZE_INVALID");
        res = await fetch(`${berth.url}/v2/dep/large/blobs/uploads/`, { method: "POST" });
        await res.body?.cancel();
        location = new URL(res.headers.get("Location")!, berth.url).href;
        res = await fetch(location, { method: "PATCH", body: large.slice(0, 3 * 1024 * 1024) });
        await res.body?.cancel();
        assert.equal(res.status, 202);
        location = new URL(res.headers.get("Location")!, berth.url).href;
        res = await fetch(location, { method: "PATCH", body: large.slice(3 * 1024 * 1024) });
        assert.equal(res.status, 413);
        assert.equal((await res.json()).errors[0].code, "SIZE_INVALID");
      },
    );

    await t.step(
      "token mode: the signing key lives in KV, a token outlives a restart",
      async () => {
        const kv = `${tmp}/kv/token.kv`;
        const users = `${tmp}/users.htpasswd`;
        await writeUsers(users, { [USER]: PASSWORD });
        const args = ["--auth", "token", "--htpasswd", users];
        let token = "";
        {
          await using berth = await spawnDeployed(backend, kv, cwd, args);
          const creds = `${USER}:${PASSWORD}`;
          const denied = await copy(
            env,
            `oci:${env.layout}:small`,
            `docker://${berth.host}/tok/small:1`,
          );
          assert.notEqual(denied.code, 0, "an anonymous push must fail");
          await ok(
            copy(env, `oci:${env.layout}:small`, `docker://${berth.host}/tok/small:1`, [
              "--dest-creds",
              creds,
            ]),
            "push with credentials",
          );
          assert.equal(
            await remoteDigest(env, `${berth.host}/tok/small:1`, ["--creds", creds]),
            digests.small,
          );
          await ok(
            copy(env, `docker://${berth.host}/tok/small:1`, `oci:${tmp}/tok-back:small`, [
              "--src-creds",
              creds,
            ]),
            "pull with credentials",
          );
          const res = await fetch(
            `${berth.url}/token?service=berth&scope=repository:tok/small:pull`,
            { headers: { Authorization: basic(USER, PASSWORD) } },
          );
          assert.equal(res.status, 200);
          token = (await res.json()).token;
        }
        // Another instance over the same KV accepts the token: the key is not per process.
        await using again = await spawnDeployed(backend, kv, cwd, args);
        const res = await fetch(`${again.url}/v2/tok/small/manifests/1`, {
          headers: {
            Authorization: `Bearer ${token}`,
            Accept: "application/vnd.oci.image.manifest.v1+json",
          },
        });
        assert.equal(res.status, 200, await res.clone().text());
        assert.equal(sha256(new Uint8Array(await res.arrayBuffer())), digests.small);
        await again.kill();
        using raw = await Deno.openKv(kv);
        const secret = await raw.get<Uint8Array>(["secrets", "token-key"]);
        assert.ok(secret.value instanceof Uint8Array && secret.value.length === 32);
      },
    );

    // Nothing was written where Berth ran (the permission flags denied it anyway).
    assert.deepEqual(await entries(cwd), []);
    assert.ok(
      (await entries(`${tmp}/kv`)).every((name) => /^(anon|token)\.kv(-wal|-shm)?$/.test(name)),
    );
  } finally {
    await removeTree(tmp);
  }
}

Deno.test("deploy mode refuses the filesystem blob store with one clear line", async () => {
  const main = new URL("../main.ts", import.meta.url).pathname;
  for (const blobs of [[], ["--blobs", "/srv/blobs"], ["--blobs", "file:/srv/blobs"]]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--unstable-kv", "--unstable-cron", "-A", main, "serve", "--deploy", ...blobs],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 2, stderr);
    assert.match(stderr, /^berth: --deploy writes nothing to the local disk.*--blobs kv/);
    assert.equal(stderr.trim().split("\n").length, 1, stderr);
  }
});

Deno.test("deploy mode without --unstable-cron says what to add", async () => {
  const main = new URL("../main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-kv",
      "-A",
      main,
      "serve",
      "--deploy",
      "--blobs",
      "kv",
      "--kv",
      ":memory:",
      "--listen",
      "127.0.0.1:0",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 2, stderr);
  assert.match(stderr, /--unstable-cron/);
});
