/**
 * Real registry clients against Berth running as `main.ts serve`.
 *
 * One Deno.test starts Berth (spawnRegistry, `--tags-page-max 50`), builds the
 * test images (tests/e2e/clients.sh `make_test_images`: busybox-static plus random
 * layers, one of 50 MiB), starts a private dockerd (with its own containerd, used
 * by `ctr` too), runs one step per client workflow, then stops dockerd and
 * Berth by PID and removes the temp dir. Client versions, flags and gotchas:
 * tests/e2e/README.md. The clients come from Debian packages (.ci/run
 * E2E_PACKAGES); a missing client fails its step with the package to install.
 * The only state outside the temp dir is the containers/image blob-info cache
 * (/var/lib/containers/cache, not configurable in skopeo 1.9 / podman 4.3).
 *
 * @module
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { attachArtifactToImage, type Credentials, getImageDigest } from "@sigstore/oci";
import {
  buildah,
  type ClientEnv,
  clientEnv,
  ctr,
  docker,
  existsSync,
  lib,
  ok,
  type Output,
  podman,
  removeTree,
  sha256,
  skopeo,
  startDockerd,
  tail,
  which,
  writeClientConfigs,
} from "./_e2e.ts";
import { spawnRegistry } from "./_registry.ts";

/** Debian package that ships each binary the suite runs. */
const PACKAGE: Record<string, string> = {
  bash: "bash",
  tar: "tar",
  gzip: "gzip",
  busybox: "busybox-static",
  skopeo: "skopeo",
  dockerd: "docker.io",
  docker: "docker.io",
  ctr: "containerd",
  buildah: "buildah",
  podman: "podman",
};
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
const MANIFEST_ACCEPT = [
  OCI_MANIFEST,
  OCI_INDEX,
  DOCKER_MANIFEST,
  "application/vnd.docker.distribution.manifest.list.v2+json",
].join(", ");
/** "Within a few seconds" for a failing client. */
const QUICK_FAILURE_MS = 5_000;

/** Throws a clear error unless every client in `names` is installed. */
function need(...names: string[]): void {
  const missing = names.filter((name) => !which(name));
  if (missing.length === 0) return;
  const packages = [...new Set(missing.map((name) => PACKAGE[name] ?? name))];
  throw new Error(
    `Missing client ${missing.map((m) => `"${m}"`).join(", ")} on PATH: install the Debian ` +
      `package(s) ${packages.join(" ")} (.ci/run installs E2E_PACKAGES as root)`,
  );
}

interface Env extends ClientEnv {
  /** host:port of Berth, as the clients write it. */
  host: string;
  url: string;
  /**
   * Digests of the layout's tags small, big (50 MiB layer), multi (two-platform
   * index) and of multi's two children.
   */
  digests: { small: string; big: string; multi: string; amd64: string; arm64: string };
}

/**
 * `skopeo copy` (quiet, plain HTTP). To a registry it adds `--preserve-digests` unless
 * converting: otherwise skopeo may substitute a layer with a differently compressed
 * copy it knows (global blob-info cache) is in Berth, changing the manifest digest.
 */
function skopeoCopy(env: Env, src: string, dest: string, extra: string[] = []): Promise<Output> {
  const converting = extra.includes("--format") && extra.includes("v2s2");
  const preserve = dest.startsWith("docker://") && !converting ? ["--preserve-digests"] : [];
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

/** Fetches from Berth, returns status, headers and the consumed body. */
async function api(
  env: Env,
  path: string,
  init: RequestInit = {},
): Promise<{ status: number; headers: Headers; body: string }> {
  const res = await fetch(`${env.url}${path}`, init);
  return { status: res.status, headers: res.headers, body: await res.text() };
}

/** HEAD of a manifest: its Docker-Content-Digest (asserting 200). */
async function remoteDigest(env: Env, name: string, reference: string): Promise<string> {
  const res = await api(env, `/v2/${name}/manifests/${reference}`, {
    method: "HEAD",
    headers: { Accept: MANIFEST_ACCEPT },
  });
  assert.equal(res.status, 200, `HEAD /v2/${name}/manifests/${reference}`);
  const digest = res.headers.get("Docker-Content-Digest");
  assert.ok(digest, `no Docker-Content-Digest for ${name}:${reference}`);
  return digest;
}

/** GET of a manifest: parsed JSON, Content-Type and digest of the bytes. */
async function remoteManifest(
  env: Env,
  name: string,
  reference: string,
): Promise<{ json: Manifest; type: string | null; digest: string; bytes: string }> {
  const res = await api(env, `/v2/${name}/manifests/${reference}`, {
    headers: { Accept: MANIFEST_ACCEPT },
  });
  assert.equal(res.status, 200, `GET /v2/${name}/manifests/${reference}: ${res.body}`);
  assert.equal(res.headers.get("Docker-Content-Digest"), sha256(res.body));
  return {
    json: JSON.parse(res.body),
    type: res.headers.get("Content-Type"),
    digest: sha256(res.body),
    bytes: res.body,
  };
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  platform?: { architecture: string; os: string; variant?: string };
  annotations?: Record<string, string>;
}
interface Manifest {
  mediaType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
  annotations?: Record<string, string>;
}

/** Asserts that every blob of an image manifest is in repository `name`. */
async function assertBlobsPresent(env: Env, name: string, manifest: Manifest): Promise<void> {
  const blobs = [manifest.config!, ...(manifest.layers ?? [])];
  assert.ok(blobs.length >= 2, "manifest with config and layers");
  for (const blob of blobs) {
    const res = await api(env, `/v2/${name}/blobs/${blob.digest}`, { method: "HEAD" });
    assert.equal(res.status, 200, `HEAD /v2/${name}/blobs/${blob.digest}`);
    assert.equal(res.headers.get("Content-Length"), String(blob.size));
  }
}

/** The manifest digest an OCI layout's index.json names `tag`. */
async function layoutDigest(dir: string, tag: string): Promise<string> {
  const index = JSON.parse(await Deno.readTextFile(`${dir}/index.json`)) as Manifest;
  const entry = index.manifests?.find((m) =>
    m.annotations?.["org.opencontainers.image.ref.name"] === tag
  );
  assert.ok(entry, `tag ${tag} in ${dir}/index.json`);
  return entry.digest;
}

/** Asserts that `dir/blobs/sha256/<hex>` holds exactly the bytes of `digest`. */
async function assertLayoutBlob(dir: string, digest: string): Promise<Manifest | null> {
  const bytes = await Deno.readFile(`${dir}/blobs/sha256/${digest.slice("sha256:".length)}`);
  assert.equal(sha256(bytes), digest, `blob ${digest} in ${dir}`);
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/** Asserts that a client failed quickly with a message naming the problem. */
function assertCleanFailure(out: Output, label: string, mustName: string, problem: RegExp): void {
  const text = `${out.stdout}\n${out.stderr}`;
  assert.notEqual(out.code, 0, `${label} should fail:\n${text}`);
  assert.ok(out.ms < QUICK_FAILURE_MS, `${label} took ${out.ms} ms to fail:\n${tail(text)}`);
  assert.ok(
    text.includes(mustName),
    `${label}: message does not name "${mustName}":\n${tail(text)}`,
  );
  assert.match(text, problem, `${label}: message does not say what is wrong`);
}

Deno.test("real clients push to and pull from Berth (main.ts serve)", async (t) => {
  need("bash", "tar", "gzip", "skopeo");
  assert.ok(existsSync("/bin/busybox"), "/bin/busybox missing: install busybox-static");
  // Short path on purpose: unix socket paths under it must stay below 108 bytes.
  const tmp = await Deno.makeTempDir({ dir: "/tmp", prefix: "be2e." });
  try {
    await using berth = await spawnRegistry(["--data", `${tmp}/berth`, "--tags-page-max", "50"]);
    const host = new URL(berth.url).host;
    await writeClientConfigs(tmp, [host]);
    const env: Env = {
      ...clientEnv(tmp, "berth", { E2E_REG: host }),
      host,
      url: berth.url,
      digests: { small: "", big: "", multi: "", amd64: "", arm64: "" },
    };
    const made = await lib(
      env,
      'make_test_images 50 >&2; printf \'{"small":"%s","big":"%s","multi":"%s","amd64":"%s","arm64":"%s"}\' ' +
        '"$E2E_SMALL_DIGEST" "$E2E_BIG_DIGEST" "$E2E_MULTI_DIGEST" "$E2E_MULTI_AMD64_DIGEST" "$E2E_MULTI_ARM64_DIGEST"',
    );
    env.digests = JSON.parse(made.stdout);
    // dockerd (and its containerd, for ctr) once for the file; a missing one fails its steps.
    await using _dockerd = which("dockerd") && which("docker")
      ? await startDockerd(env, ["--insecure-registry", host])
      : null;

    await t.step(
      "skopeo copy of an OCI layout to Berth and back, in OCI and in Docker v2s2 format, digests identical to the source",
      async () => {
        need("skopeo");
        await skopeoLayoutRoundTrips(env);
      },
    );
    await t.step(
      "a two-platform index pushed with buildah manifest push --all and copied with skopeo copy --all; docker pull --platform of the index",
      async () => {
        need("skopeo", "buildah", "dockerd", "docker");
        await twoPlatformIndex(env);
      },
    );
    await t.step(
      "docker, podman and buildah push and pull by tag and by digest; ctr push and pull",
      async () => {
        need("skopeo", "dockerd", "docker", "podman", "buildah", "ctr");
        await pushPullByTagAndDigest(env);
      },
    );
    await t.step(
      'cross-repository mount seen from the clients (docker reports "Mounted from")',
      async () => {
        need("skopeo", "dockerd", "docker");
        await crossRepositoryMount(env);
      },
    );
    await t.step(
      "skopeo list-tags over more than 100 tags (Link pagination), skopeo delete, then a clean failure on pull",
      async () => {
        need("skopeo", "dockerd", "docker");
        await manyTagsAndDelete(env);
      },
    );
    await t.step(
      "an artifact with a subject pushed by @sigstore/oci is found through the referrers API, with no fallback tag written",
      async () => {
        need("skopeo");
        await sigstoreReferrer(env);
      },
    );
    await t.step(
      "clean, quick failures for missing tags, digests and repositories",
      async () => {
        need("skopeo", "dockerd", "docker", "podman", "buildah", "ctr");
        await cleanFailures(env);
      },
    );
  } finally {
    await removeTree(tmp);
  }
});

async function skopeoLayoutRoundTrips(env: Env): Promise<void> {
  const source = env.digests.big;
  const src = `oci:${env.layout}:big`;
  const sourceManifest = (await assertLayoutBlob(env.layout, source))!;
  assert.ok((sourceManifest.layers ?? []).some((l) => l.size >= 50 * 1024 * 1024), "50 MiB layer");

  // OCI: the manifest goes up and comes back byte for byte.
  await ok(
    skopeoCopy(env, src, `docker://${env.host}/sk/oci:big`, ["--format", "oci"]),
    "skopeo copy --format oci to Berth",
  );
  const up = await remoteManifest(env, "sk/oci", "big");
  assert.equal(up.digest, source);
  assert.equal(up.type, OCI_MANIFEST);
  await assertBlobsPresent(env, "sk/oci", up.json);
  const back = `${env.tmp}/back-oci`;
  await ok(
    skopeoCopy(env, `docker://${env.host}/sk/oci:big`, `oci:${back}:big`),
    "skopeo copy from Berth to an OCI layout",
  );
  assert.equal(await layoutDigest(back, "big"), source);
  const backManifest = (await assertLayoutBlob(back, source))!;
  for (const blob of [backManifest.config!, ...backManifest.layers!]) {
    await assertLayoutBlob(back, blob.digest);
  }

  // Docker v2s2: skopeo converts the manifest (new digest, same config and layers);
  // Berth must store and serve exactly what skopeo wrote.
  const converted = `${env.tmp}/v2s2-local`;
  await ok(
    skopeoCopy(env, src, `dir:${converted}`, ["--format", "v2s2"]),
    "skopeo copy --format v2s2 to dir:",
  );
  const v2s2 = await Deno.readTextFile(`${converted}/manifest.json`);
  await ok(
    skopeoCopy(env, src, `docker://${env.host}/sk/v2s2:big`, ["--format", "v2s2"]),
    "skopeo copy --format v2s2 to Berth",
  );
  const upV2 = await remoteManifest(env, "sk/v2s2", "big");
  assert.equal(upV2.type, DOCKER_MANIFEST);
  assert.equal(upV2.digest, sha256(v2s2), "Berth serves the v2s2 manifest skopeo wrote");
  assert.equal(upV2.json.config!.digest, sourceManifest.config!.digest);
  assert.deepEqual(
    upV2.json.layers!.map((l) => l.digest),
    sourceManifest.layers!.map((l) => l.digest),
  );
  await assertBlobsPresent(env, "sk/v2s2", upV2.json);
  const backV2 = `${env.tmp}/back-v2s2`;
  await ok(
    skopeoCopy(env, `docker://${env.host}/sk/v2s2:big`, `dir:${backV2}`),
    "skopeo copy from Berth to dir: (v2s2 kept)",
  );
  assert.equal(sha256(await Deno.readTextFile(`${backV2}/manifest.json`)), upV2.digest);
  for (const blob of [upV2.json.config!, ...upV2.json.layers!]) {
    const bytes = await Deno.readFile(`${backV2}/${blob.digest.slice("sha256:".length)}`);
    assert.equal(sha256(bytes), blob.digest);
  }
  await removeTree(back);
  await removeTree(backV2);
  await removeTree(converted);
}

async function twoPlatformIndex(env: Env): Promise<void> {
  // buildah: two images from scratch (busybox + random layer), one per platform.
  await lib(env, "buildah_image bh-amd64 amd64 1; buildah_image bh-arm64 arm64 1");
  await ok(buildah(env, ["manifest", "create", "localhost/bh-list"]), "buildah manifest create");
  for (const image of ["localhost/bh-amd64", "localhost/bh-arm64"]) {
    await ok(
      buildah(env, ["manifest", "add", "localhost/bh-list", image]),
      `buildah manifest add ${image}`,
    );
  }
  const digestFile = `${env.tmp}/bh-list.digest`;
  await ok(
    buildah(env, [
      "manifest",
      "push",
      "--all",
      "--tls-verify=false",
      "--signature-policy",
      `${env.tmp}/policy.json`,
      "--digestfile",
      digestFile,
      "localhost/bh-list",
      `docker://${env.host}/idx/bh:list`,
    ]),
    "buildah manifest push --all",
  );
  const index = await remoteManifest(env, "idx/bh", "list");
  assert.equal(index.digest, (await Deno.readTextFile(digestFile)).trim());
  const children = index.json.manifests ?? [];
  assert.deepEqual(children.map((m) => m.platform?.architecture).sort(), ["amd64", "arm64"]);
  for (const child of children) {
    const manifest = await remoteManifest(env, "idx/bh", child.digest);
    await assertBlobsPresent(env, "idx/bh", manifest.json);
  }

  // skopeo copy --all: registry to registry keeps the index digest, and so does
  // the layout's own index, to Berth and back.
  await ok(
    skopeoCopy(env, `docker://${env.host}/idx/bh:list`, `docker://${env.host}/idx/copy:list`, [
      "--all",
    ]),
    "skopeo copy --all registry to registry",
  );
  assert.equal(await remoteDigest(env, "idx/copy", "list"), index.digest);
  for (const child of children) {
    assert.equal(await remoteDigest(env, "idx/copy", child.digest), child.digest);
  }
  await ok(
    skopeoCopy(env, `oci:${env.layout}:multi`, `docker://${env.host}/idx/layout:multi`, ["--all"]),
    "skopeo copy --all of the layout's index",
  );
  assert.equal(await remoteDigest(env, "idx/layout", "multi"), env.digests.multi);
  const back = `${env.tmp}/back-multi`;
  await ok(
    skopeoCopy(env, `docker://${env.host}/idx/layout:multi`, `oci:${back}:multi`, ["--all"]),
    "skopeo copy --all from Berth to an OCI layout",
  );
  assert.equal(await layoutDigest(back, "multi"), env.digests.multi);
  for (const digest of [env.digests.amd64, env.digests.arm64]) await assertLayoutBlob(back, digest);
  await removeTree(back);

  // docker pull --platform picks the child of the index.
  const pulls = [
    { repo: "idx/bh", tag: "list", arch: "arm64", digest: index.digest },
    { repo: "idx/copy", tag: "list", arch: "amd64", digest: index.digest },
    { repo: "idx/layout", tag: "multi", arch: "arm64", digest: env.digests.multi },
  ];
  for (const { repo, tag, arch, digest } of pulls) {
    const ref = `${env.host}/${repo}:${tag}`;
    await ok(
      docker(env, ["pull", "-q", "--platform", `linux/${arch}`, ref]),
      `docker pull --platform linux/${arch} ${ref}`,
    );
    const format = "{{.Architecture}} {{index .RepoDigests 0}}";
    const inspect = await ok(docker(env, ["image", "inspect", "--format", format, ref]), "inspect");
    assert.equal(inspect.stdout.trim(), `${arch} ${env.host}/${repo}@${digest}`);
  }
}

async function pushPullByTagAndDigest(env: Env): Promise<void> {
  // docker: the 50 MiB image, loaded from a docker-archive.
  await ok(docker(env, ["load", "-q", "-i", `${env.tmp}/img/big.docker.tar`]), "docker load");
  const dockerRef = `${env.host}/pp/docker`;
  await ok(docker(env, ["tag", "berth-e2e/big:latest", `${dockerRef}:1`]), "docker tag");
  const imageId = (await ok(
    docker(env, ["image", "inspect", "--format", "{{.Id}}", `${dockerRef}:1`]),
    "inspect",
  ))
    .stdout.trim();
  const pushed = await ok(docker(env, ["push", `${dockerRef}:1`]), "docker push");
  const pushedDigest = /digest: (sha256:[0-9a-f]{64})/.exec(pushed.stdout)?.[1];
  assert.equal(pushedDigest, await remoteDigest(env, "pp/docker", "1"), pushed.stdout);
  const dockerManifest = await remoteManifest(env, "pp/docker", "1");
  assert.equal(dockerManifest.type, DOCKER_MANIFEST);
  await assertBlobsPresent(env, "pp/docker", dockerManifest.json);
  for (const ref of [`${dockerRef}:1`, `${dockerRef}@${pushedDigest}`]) {
    await ok(docker(env, ["rmi", "-f", imageId]), "docker rmi");
    await ok(docker(env, ["pull", "-q", ref]), `docker pull ${ref}`);
    const id = await ok(docker(env, ["image", "inspect", "--format", "{{.Id}}", ref]), "inspect");
    assert.equal(id.stdout.trim(), imageId, `docker pull ${ref} gives the pushed image`);
  }

  // podman and buildah share one containers-storage; the image comes from the layout.
  const local = "localhost/e2e-small:latest";
  // the image ID is the config digest, unchanged by push and pull
  const localId = (await assertLayoutBlob(env.layout, env.digests.small))!.config!.digest
    .slice("sha256:".length);
  const policy = ["--signature-policy", `${env.tmp}/policy.json`];
  for (const [tool, repo] of [["podman", "pp/podman"], ["buildah", "pp/buildah"]] as const) {
    const cli = tool === "podman" ? podman : buildah;
    await ok(
      skopeoCopy(env, `oci:${env.layout}:small`, `containers-storage:${local}`),
      "skopeo copy to containers-storage",
    );
    const digestFile = `${env.tmp}/${tool}.digest`;
    await ok(
      cli(env, [
        "push",
        "--tls-verify=false",
        ...policy,
        "--digestfile",
        digestFile,
        local,
        `docker://${env.host}/${repo}:1`,
      ]),
      `${tool} push`,
    );
    const digest = (await Deno.readTextFile(digestFile)).trim();
    assert.equal(await remoteDigest(env, repo, "1"), digest);
    await assertBlobsPresent(env, repo, (await remoteManifest(env, repo, digest)).json);
    for (const ref of [`${env.host}/${repo}:1`, `${env.host}/${repo}@${digest}`]) {
      await ok(cli(env, ["rmi", "-a", "-f"]), `${tool} rmi -a`);
      await ok(
        cli(env, ["pull", "-q", "--tls-verify=false", ...policy, ref]),
        `${tool} pull ${ref}`,
      );
      const id = await ok(podman(env, ["image", "inspect", "--format", "{{.Id}}", ref]), "inspect");
      assert.equal(id.stdout.trim(), localId, `${tool} pull ${ref} gives the pushed image`);
    }
  }

  // ctr (containerd 1.6): pull by tag and by digest, push to another repository.
  await ok(
    skopeoCopy(env, `oci:${env.layout}:small`, `docker://${env.host}/pp/ctr-src:1`),
    "skopeo copy for ctr",
  );
  const pull = ["images", "pull", "--plain-http", "--snapshotter", "native"];
  await ok(ctr(env, [...pull, `${env.host}/pp/ctr-src:1`]), "ctr pull by tag");
  await ok(
    ctr(env, [...pull, `${env.host}/pp/ctr-src@${env.digests.small}`]),
    "ctr pull by digest",
  );
  const list = await ok(ctr(env, ["images", "list", "-q"]), "ctr images list");
  assert.ok(list.stdout.includes(`${env.host}/pp/ctr-src@${env.digests.small}`), list.stdout);
  await ok(
    ctr(env, [
      "images",
      "push",
      "--plain-http",
      `${env.host}/pp/ctr-dst:1`,
      `${env.host}/pp/ctr-src:1`,
    ]),
    "ctr push",
  );
  assert.equal(await remoteDigest(env, "pp/ctr-dst", "1"), env.digests.small);
  await assertBlobsPresent(env, "pp/ctr-dst", (await remoteManifest(env, "pp/ctr-dst", "1")).json);
}

async function crossRepositoryMount(env: Env): Promise<void> {
  // small and big share the busybox layer: after small went to mnt/a, docker
  // mounts that layer into mnt/b instead of uploading it again.
  for (const name of ["small", "big"]) {
    await ok(docker(env, ["load", "-q", "-i", `${env.tmp}/img/${name}.docker.tar`]), "docker load");
  }
  await ok(docker(env, ["tag", "berth-e2e/small:latest", `${env.host}/mnt/a:small`]), "docker tag");
  await ok(docker(env, ["push", `${env.host}/mnt/a:small`]), "docker push mnt/a");
  await ok(docker(env, ["tag", "berth-e2e/big:latest", `${env.host}/mnt/b:big`]), "docker tag");
  const out = await ok(docker(env, ["push", `${env.host}/mnt/b:big`]), "docker push mnt/b");
  const from = /: Mounted from (\S+)/.exec(out.stdout)?.[1];
  assert.ok(from, `no "Mounted from" in docker push output:\n${out.stdout}`);
  const b = await remoteManifest(env, "mnt/b", "big");
  await assertBlobsPresent(env, "mnt/b", b.json);
  // docker names the repository it mounted from (the one it knows has the layer).
  const shared = b.json.layers![0]!.digest;
  const source = await api(env, `/v2/${from}/blobs/${shared}`, { method: "HEAD" });
  assert.equal(source.status, 200, `"Mounted from ${from}": HEAD /v2/${from}/blobs/${shared}`);

  // skopeo: after small went to mnt/s1, pushing big to mnt/s2 mounts the shared
  // layer (skopeo's blob-info cache knows where it is); its debug log shows each
  // `POST /v2/mnt/s2/blobs/uploads/?from=...&mount=...` and "... mount OK".
  await ok(
    skopeoCopy(env, `oci:${env.layout}:small`, `docker://${env.host}/mnt/s1:small`),
    "skopeo copy small to mnt/s1",
  );
  const copied = await ok(
    skopeo(env, [
      "--debug",
      "copy",
      "--dest-tls-verify=false",
      "--preserve-digests",
      `oci:${env.layout}:big`,
      `docker://${env.host}/mnt/s2:big`,
    ]),
    "skopeo copy big to mnt/s2",
  );
  const log = copied.stderr.split("\n");
  const tries = log.filter((l) => /Trying to mount \/v2\/mnt\/s2\/blobs\/uploads\/\?from=/.test(l));
  const mounted = log.filter((l) => l.includes("... mount OK"));
  assert.ok(tries.length >= 1, `skopeo tried no mount:\n${tail(copied.stderr, 60)}`);
  assert.equal(mounted.length, tries.length, tail(copied.stderr, 60));
  assert.equal(await remoteDigest(env, "mnt/s2", "big"), env.digests.big);
  await assertBlobsPresent(env, "mnt/s2", (await remoteManifest(env, "mnt/s2", "big")).json);
}

async function manyTagsAndDelete(env: Env): Promise<void> {
  const repo = "tags/many";
  await ok(
    skopeoCopy(env, `oci:${env.layout}:small`, `docker://${env.host}/${repo}:base`),
    "skopeo copy base image",
  );
  const base = await remoteManifest(env, repo, "base");
  // 120 more tags, each on its own manifest (an annotation differs), pushed through the API.
  const tags = Array.from({ length: 120 }, (_, i) => `t${String(i).padStart(3, "0")}`);
  const digests = new Map<string, string>();
  for (let i = 0; i < tags.length; i += 12) {
    await Promise.all(
      tags.slice(i, i + 12).map(async (tag) => {
        const body = JSON.stringify({ ...base.json, annotations: { "org.example.e2e.tag": tag } });
        const res = await api(env, `/v2/${repo}/manifests/${tag}`, {
          method: "PUT",
          headers: { "Content-Type": OCI_MANIFEST },
          body,
        });
        assert.equal(res.status, 201, `PUT ${tag}: ${res.body}`);
        digests.set(tag, sha256(body));
      }),
    );
  }
  const all = ["base", ...tags].sort();
  // Berth really paginates (page max 50), so skopeo must follow Link.
  const page = await api(env, `/v2/${repo}/tags/list`);
  assert.equal(page.status, 200);
  assert.equal((JSON.parse(page.body) as { tags: string[] }).tags.length, 50);
  assert.match(page.headers.get("Link") ?? "", /rel="next"/);
  const listed = await ok(
    skopeo(env, ["list-tags", "--tls-verify=false", `docker://${env.host}/${repo}`]),
    "skopeo list-tags",
  );
  assert.deepEqual((JSON.parse(listed.stdout) as { Tags: string[] }).Tags.sort(), all);

  // skopeo delete of a tag deletes its manifest (by digest): that tag goes, the others stay.
  const victim = "t042";
  const victimDigest = digests.get(victim)!;
  await ok(
    skopeo(env, ["delete", "--tls-verify=false", `docker://${env.host}/${repo}:${victim}`]),
    "skopeo delete",
  );
  const after = await ok(
    skopeo(env, ["list-tags", "--tls-verify=false", `docker://${env.host}/${repo}`]),
    "skopeo list-tags",
  );
  assert.deepEqual(
    (JSON.parse(after.stdout) as { Tags: string[] }).Tags.sort(),
    all.filter((t) => t !== victim),
  );
  const gone = await api(env, `/v2/${repo}/manifests/${victimDigest}`, {
    headers: { Accept: MANIFEST_ACCEPT },
  });
  assert.equal(gone.status, 404, gone.body);
  assert.equal(await remoteDigest(env, repo, "t041"), digests.get("t041"));

  // Pulling the deleted image fails cleanly, by tag and by digest.
  const out = `oci:${env.tmp}/deleted:x`;
  for (const ref of [`${repo}:${victim}`, `${repo}@${victimDigest}`]) {
    const problem = ref.includes("@") ? victimDigest : victim;
    assertCleanFailure(
      await skopeo(env, ["copy", "--src-tls-verify=false", `docker://${env.host}/${ref}`, out]),
      `skopeo copy of deleted ${ref}`,
      problem,
      /manifest unknown/,
    );
    assertCleanFailure(
      await docker(env, ["pull", `${env.host}/${ref}`]),
      `docker pull of deleted ${ref}`,
      problem,
      /manifest unknown/,
    );
  }
  await removeTree(`${env.tmp}/deleted`).catch(() => {});
}

async function sigstoreReferrer(env: Env): Promise<void> {
  const repo = "art/sig";
  await ok(
    skopeoCopy(env, `oci:${env.layout}:small`, `docker://${env.host}/${repo}:small`),
    "skopeo copy subject image",
  );
  const imageName = `${env.host}/${repo}`;
  // No credentials: with any, the client "signs in" with a POST it cannot parse (see README).
  const credentials = undefined as unknown as Credentials;
  const subject = await getImageDigest({ imageName, imageTag: "small", credentials });
  assert.equal(subject, env.digests.small);
  const artifactType = "application/vnd.example.berth-e2e+json";
  const artifact = await attachArtifactToImage({
    imageName,
    imageDigest: subject,
    artifact: Buffer.from(JSON.stringify({ hello: "berth" })),
    mediaType: artifactType,
    annotations: { "org.example.e2e": "1" },
    credentials,
  });

  const stored = await remoteManifest(env, repo, artifact.digest);
  assert.equal((stored.json as { subject?: Descriptor }).subject?.digest, subject);
  const referrers = await api(env, `/v2/${repo}/referrers/${subject}`);
  assert.equal(referrers.status, 200, referrers.body);
  assert.equal(referrers.headers.get("Content-Type"), OCI_INDEX);
  const index = JSON.parse(referrers.body) as Manifest;
  assert.deepEqual(
    index.manifests?.map((m) => [m.digest, m.artifactType, m.annotations?.["org.example.e2e"]]),
    [[artifact.digest, artifactType, "1"]],
  );
  const filtered = await api(
    env,
    `/v2/${repo}/referrers/${subject}?artifactType=${encodeURIComponent(artifactType)}`,
  );
  assert.equal(filtered.headers.get("OCI-Filters-Applied"), "artifactType");
  assert.equal((JSON.parse(filtered.body) as Manifest).manifests?.length, 1);

  // The client saw referrers support, so it wrote no sha256-<hex> fallback tag.
  const tags = await api(env, `/v2/${repo}/tags/list`);
  assert.equal(tags.status, 200);
  assert.deepEqual((JSON.parse(tags.body) as { tags: string[] }).tags, ["small"]);
  assert.ok(!tags.body.includes("sha256-"), tags.body);
  const fallback = await api(env, `/v2/${repo}/manifests/${subject.replace(":", "-")}`);
  assert.equal(fallback.status, 404);
}

async function cleanFailures(env: Env): Promise<void> {
  const repo = "fail/exists";
  await ok(
    skopeoCopy(env, `oci:${env.layout}:small`, `docker://${env.host}/${repo}:1`),
    "skopeo copy",
  );
  const missingDigest = sha256(`no such manifest ${Date.now()}`);
  const cases = [
    {
      what: "missing tag",
      ref: `${repo}:no-such-tag`,
      names: "no-such-tag",
      problem: /manifest unknown/,
    },
    {
      what: "missing digest",
      ref: `${repo}@${missingDigest}`,
      names: missingDigest,
      problem: /manifest unknown/,
    },
    {
      what: "missing repository",
      ref: "fail/no-such-repo:1",
      names: "fail/no-such-repo",
      problem: /name unknown/,
    },
  ];
  const policy = ["--signature-policy", `${env.tmp}/policy.json`];
  for (const c of cases) {
    const ref = `${env.host}/${c.ref}`;
    const clients: [string, () => Promise<Output>][] = [
      ["docker pull", () => docker(env, ["pull", ref])],
      ["podman pull", () => podman(env, ["pull", "--tls-verify=false", ...policy, ref])],
      ["buildah pull", () => buildah(env, ["pull", "--tls-verify=false", ...policy, ref])],
      [
        "skopeo copy",
        () =>
          skopeo(env, [
            "copy",
            "--src-tls-verify=false",
            `docker://${ref}`,
            `oci:${env.tmp}/fail:x`,
          ]),
      ],
      ["skopeo inspect", () => skopeo(env, ["inspect", "--tls-verify=false", `docker://${ref}`])],
    ];
    for (const [label, client] of clients) {
      assertCleanFailure(await client(), `${label} (${c.what})`, c.names, c.problem);
    }
    // containerd only says "not found", naming the full reference.
    assertCleanFailure(
      await ctr(env, ["images", "pull", "--plain-http", "--snapshotter", "native", ref]),
      `ctr pull (${c.what})`,
      ref,
      /not found/,
    );
  }
  await removeTree(`${env.tmp}/fail`).catch(() => {});
}
