/**
 * Black-box tests of manifests: the grammar as the API sees it (A3), pull
 * (A4, end-3), push (A6, end-7, end-7b) and the validation done at PUT (A12).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Digest } from "../src/oci/digest.ts";
import {
  assertError,
  imageManifest,
  pushBlob,
  pushImage,
  randomBytes,
  sha256,
  sha512,
  startRegistry,
  type TestRegistry,
} from "./_registry.ts";
import {
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST as DOCKER_LIST,
  OCI_EMPTY,
  OCI_INDEX,
  OCI_MANIFEST,
} from "../src/oci/media_type.ts";

const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
const SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json";
const SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws";

const encoder = new TextEncoder();

/** PUTs a manifest body (text or bytes) with a Content-Type; returns the response. */
function putManifest(
  reg: TestRegistry,
  name: string,
  reference: string,
  body: string | Uint8Array<ArrayBuffer>,
  contentType: string | null = OCI_MANIFEST,
): Promise<Response> {
  const headers: Record<string, string> = {};
  if (contentType !== null) headers["Content-Type"] = contentType;
  return reg.fetch(`/v2/${name}/manifests/${reference}`, { method: "PUT", headers, body });
}

/** PUTs a manifest and asserts 201, consuming the body; returns the response. */
async function putOk(
  reg: TestRegistry,
  name: string,
  reference: string,
  body: string | Uint8Array<ArrayBuffer>,
  contentType: string | null = OCI_MANIFEST,
): Promise<Response> {
  const res = await putManifest(reg, name, reference, body, contentType);
  const detail = await res.text();
  assert.equal(res.status, 201, `PUT ${name}:${reference}: ${detail}`);
  return res;
}

/** Asserts a 400 MANIFEST_INVALID whose message matches `message`. */
async function assertInvalid(res: Response, message?: RegExp): Promise<void> {
  const body = await res.text();
  assert.equal(res.status, 400, body);
  const parsed = JSON.parse(body) as { errors: { code: string; message: string }[] };
  assert.equal(parsed.errors[0]!.code, "MANIFEST_INVALID", body);
  assert.equal(typeof parsed.errors[0]!.message, "string");
  if (message) assert.match(parsed.errors[0]!.message, message);
}

/** Pushes a config and a layer blob; returns their descriptors. */
async function pushParts(reg: TestRegistry, name: string, seed = 7) {
  const configBytes = encoder.encode(JSON.stringify({ os: "linux", seed }));
  const layerBytes = randomBytes(300 + seed, seed);
  return {
    config: {
      mediaType: OCI_CONFIG,
      digest: await pushBlob(reg, name, configBytes),
      size: configBytes.length,
    },
    layer: {
      mediaType: OCI_LAYER,
      digest: await pushBlob(reg, name, layerBytes),
      size: layerBytes.length,
    },
  };
}

/** An OCI index body over child manifests `{digest, size}`. */
function indexBody(
  children: { digest: string; size: number; mediaType?: string }[],
  extra: Record<string, unknown> = {},
  mediaType = OCI_INDEX,
): string {
  return JSON.stringify({
    schemaVersion: 2,
    mediaType,
    manifests: children.map((c) => ({
      mediaType: c.mediaType ?? OCI_MANIFEST,
      digest: c.digest,
      size: c.size,
      platform: { architecture: "amd64", os: "linux" },
    })),
    ...extra,
  });
}

/** An OCI image manifest body: `fields` (descriptors as given) after schemaVersion and mediaType. */
function ociManifest(fields: Record<string, unknown>): string {
  return JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, ...fields });
}

function byteLength(text: string): number {
  return encoder.encode(text).length;
}

// ---- A3: grammar, as seen through the API ----------------------------------

Deno.test("A3: invalid repository names get 400 NAME_INVALID", async (t) => {
  await using reg = await startRegistry();
  const invalid = [
    "Upper",
    "repo/Upper",
    "-lead",
    "_lead",
    ".lead",
    "trail-",
    "trail.",
    "a..b",
    "a._b",
    "a___b",
    "a//b",
    "/lead",
    "a/",
    "a%20b",
    "a".repeat(256),
  ];
  for (const name of invalid) {
    await t.step(
      `"${name.length > 40 ? name.slice(0, 10) + "…" + name.length : name}"`,
      async () => {
        await assertError(await reg.fetch(`/v2/${name}/manifests/latest`), 400, "NAME_INVALID");
        await assertError(await reg.fetch(`/v2/${name}/tags/list`), 400, "NAME_INVALID");
        const put = await putManifest(reg, name, "latest", "{}");
        await assertError(put, 400, "NAME_INVALID");
      },
    );
  }
});

Deno.test("A3: names with `.`, `_`, `__`, runs of `-` and many `/` components are valid", async () => {
  await using reg = await startRegistry();
  for (const name of ["a.b", "a_b", "a__b", "a---b", "a/b/c/d/e/f/g/h", "0/1-2.3__4"]) {
    const { digest } = await pushImage(reg, name, "v1");
    const res = await reg.fetch(`/v2/${name}/manifests/v1`);
    await res.body?.cancel();
    assert.equal(res.status, 200, name);
    assert.equal(res.headers.get("Docker-Content-Digest"), digest);
  }
});

Deno.test("A3: a 255-character repository name works for push and pull", async () => {
  await using reg = await startRegistry();
  const name = ("abcdefghi/".repeat(26)).slice(0, 254) + "z";
  assert.equal(name.length, 255);
  const { digest, body } = await pushImage(reg, name, "v1");
  const res = await reg.fetch(`/v2/${name}/manifests/${digest}`);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), body);
  const tags = await reg.fetch(`/v2/${name}/tags/list`);
  assert.deepEqual(await tags.json(), { name, tags: ["v1"] });
});

Deno.test("A3: names are parsed from the right, so components may be endpoint keywords", async () => {
  await using reg = await startRegistry();
  const name = "x/manifests/blobs/tags/list/referrers/uploads/y";
  const { digest, body } = await pushImage(reg, name, "latest");
  const res = await reg.fetch(`/v2/${name}/manifests/latest`);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), body);
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
  const tags = await reg.fetch(`/v2/${name}/tags/list`);
  assert.deepEqual(await tags.json(), { name, tags: ["latest"] });
  const other = await reg.fetch(`/v2/x/manifests/latest`);
  await assertError(other, 404, "NAME_UNKNOWN");
});

Deno.test("A3: a 128-character tag works; 129 characters get 400 TAG_INVALID on PUT, 404 on GET", async () => {
  await using reg = await startRegistry();
  const tag128 = "T" + "a1._-".repeat(26).slice(0, 127);
  assert.equal(tag128.length, 128);
  const { digest, body } = await pushImage(reg, "repo", tag128);
  const res = await reg.fetch(`/v2/repo/manifests/${tag128}`);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), body);
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
  const tag129 = tag128 + "x";
  await assertError(await putManifest(reg, "repo", tag129, body), 400, "TAG_INVALID");
  // No manifest can have that tag: GET is 404, as Distribution and the conformance suite expect.
  await assertError(await reg.fetch(`/v2/repo/manifests/${tag129}`), 404, "MANIFEST_UNKNOWN");
  const tags = await reg.fetch("/v2/repo/tags/list");
  assert.deepEqual(await tags.json(), { name: "repo", tags: [tag128] });
});

Deno.test("A3: a tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]*; others get 400 TAG_INVALID on PUT, 404 on GET", async (t) => {
  await using reg = await startRegistry();
  const { body } = await pushImage(reg, "repo", "ok");
  for (const tag of ["-lead", ".lead", "a+b", "a%2Fb", "tag%20x", "%C3%A9"]) {
    await t.step(tag, async () => {
      await assertError(await putManifest(reg, "repo", tag, body), 400, "TAG_INVALID");
      await assertError(await reg.fetch(`/v2/repo/manifests/${tag}`), 404, "MANIFEST_UNKNOWN");
    });
  }
  for (const tag of ["_lead", "UPPER", "9", "a.b-c_d", "A_"]) {
    await t.step(tag, async () => {
      await putOk(reg, "repo", tag, body);
    });
  }
});

Deno.test("A3: a reference with a `:` must be a valid digest (400 DIGEST_INVALID)", async (t) => {
  await using reg = await startRegistry();
  const { digest, body } = await pushImage(reg, "repo", "ok");
  const hex = digest.slice("sha256:".length);
  const bad = [
    `sha256:${hex.toUpperCase()}`,
    `sha256:${hex.slice(1)}`,
    `sha256:${hex}0`,
    `sha512:${hex}`,
    `md5:${"a".repeat(32)}`,
    `sha256+b64u:${"a".repeat(43)}`,
    "sha256:",
    ":abc",
    "tag:colon",
  ];
  for (const ref of bad) {
    await t.step(ref, async () => {
      await assertError(await reg.fetch(`/v2/repo/manifests/${ref}`), 400, "DIGEST_INVALID");
      await assertError(await putManifest(reg, "repo", ref, body), 400, "DIGEST_INVALID");
    });
  }
});

Deno.test("A3: sha512 digests work for manifest PUT and GET", async () => {
  await using reg = await startRegistry();
  const { body } = await pushImage(reg, "repo", "v1");
  const digest = sha512(body);
  const put = await putOk(reg, "repo", digest, body);
  assert.equal(put.headers.get("Docker-Content-Digest"), digest);
  assert.equal(put.headers.get("Location"), `/v2/repo/manifests/${digest}`);
  const res = await reg.fetch(`/v2/repo/manifests/${digest}`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
  assert.equal(await res.text(), body);
});

// ---- A4 / end-3: pull --------------------------------------------------------

/** A manifest body with odd whitespace and key order, which a re-serialisation would change. */
async function pushOddManifest(reg: TestRegistry, name: string, reference: string) {
  const { config, layer } = await pushParts(reg, name);
  const body = `{
      "layers" : [ {"size":${layer.size},   "digest":"${layer.digest}",
        "mediaType":"${OCI_LAYER}"} ],\t"schemaVersion":2,
   "annotations":{"z":"last","a":"first \\u00e9 ünïcödé"},
  "config":{"digest":"${config.digest}","mediaType":"${OCI_CONFIG}","size":${config.size}},
  "mediaType" :   "${OCI_MANIFEST}"
}
\n`;
  assert.notEqual(JSON.stringify(JSON.parse(body)), body);
  const put = await putOk(reg, name, reference, body);
  return { body, bytes: encoder.encode(body), digest: sha256(body), put };
}

Deno.test("end-3: GET by tag returns the bytes as pushed, with Content-Type, Content-Length and Docker-Content-Digest", async () => {
  await using reg = await startRegistry();
  const { bytes, digest } = await pushOddManifest(reg, "repo", "latest");
  const res = await reg.fetch("/v2/repo/manifests/latest");
  assert.equal(res.status, 200);
  const got = new Uint8Array(await res.arrayBuffer());
  assert.deepEqual(got, bytes);
  assert.equal(res.headers.get("Content-Type"), OCI_MANIFEST);
  assert.equal(res.headers.get("Content-Length"), String(bytes.length));
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
  assert.equal(sha256(got), digest);
});

Deno.test("end-3: GET by digest returns the bytes as pushed, with the same headers", async () => {
  await using reg = await startRegistry();
  const { bytes, digest } = await pushOddManifest(reg, "repo", "latest");
  const res = await reg.fetch(`/v2/repo/manifests/${digest}`);
  assert.equal(res.status, 200);
  assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes);
  assert.equal(res.headers.get("Content-Type"), OCI_MANIFEST);
  assert.equal(res.headers.get("Content-Length"), String(bytes.length));
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
});

Deno.test("end-3: HEAD by tag and by digest answers 200 with the headers of GET", async () => {
  await using reg = await startRegistry();
  const { bytes, digest } = await pushOddManifest(reg, "repo", "latest");
  for (const ref of ["latest", digest]) {
    const res = await reg.fetch(`/v2/repo/manifests/${ref}`, { method: "HEAD" });
    await res.body?.cancel(); // fetch() exposes no body after HEAD: nothing to check
    assert.equal(res.status, 200, ref);
    assert.equal(res.headers.get("Content-Type"), OCI_MANIFEST);
    assert.equal(res.headers.get("Content-Length"), String(bytes.length));
    assert.equal(res.headers.get("Docker-Content-Digest"), digest);
  }
});

Deno.test("end-3: Content-Type is the stored type for every manifest type, with no parameters", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const docker = JSON.stringify({
    schemaVersion: 2,
    mediaType: DOCKER_MANIFEST,
    config: { ...config, mediaType: DOCKER_CONFIG },
    layers: [{ ...layer, mediaType: DOCKER_LAYER }],
  });
  await putOk(reg, "repo", "docker", docker, `${DOCKER_MANIFEST}; charset=utf-8`);
  const res = await reg.fetch("/v2/repo/manifests/docker");
  assert.equal(await res.text(), docker);
  assert.equal(res.headers.get("Content-Type"), DOCKER_MANIFEST);
  const head = await reg.fetch(`/v2/repo/manifests/${sha256(docker)}`, { method: "HEAD" });
  await head.body?.cancel();
  assert.equal(head.headers.get("Content-Type"), DOCKER_MANIFEST);
});

Deno.test("end-3: an unknown manifest in a known repository gets 404 MANIFEST_UNKNOWN", async () => {
  await using reg = await startRegistry();
  await pushImage(reg, "repo", "latest");
  await assertError(await reg.fetch("/v2/repo/manifests/nope"), 404, "MANIFEST_UNKNOWN");
  const digest = sha256("not pushed");
  await assertError(await reg.fetch(`/v2/repo/manifests/${digest}`), 404, "MANIFEST_UNKNOWN");
  for (const ref of ["nope", digest]) {
    const head = await reg.fetch(`/v2/repo/manifests/${ref}`, { method: "HEAD" });
    assert.equal(head.status, 404);
    assert.equal(await head.text(), "");
  }
});

Deno.test("end-3: a blob digest is not a manifest: GET manifests/<blob digest> gets 404 MANIFEST_UNKNOWN", async () => {
  await using reg = await startRegistry();
  const { config } = await pushImage(reg, "repo", "latest");
  await assertError(await reg.fetch(`/v2/repo/manifests/${config}`), 404, "MANIFEST_UNKNOWN");
});

Deno.test("end-3: a manifest of one repository is not visible from another (404)", async () => {
  await using reg = await startRegistry();
  const { digest } = await pushImage(reg, "one", "latest");
  await pushImage(reg, "two", "other", { seed: 2 });
  await assertError(await reg.fetch(`/v2/two/manifests/${digest}`), 404, "MANIFEST_UNKNOWN");
  await assertError(await reg.fetch(`/v2/two/manifests/latest`), 404, "MANIFEST_UNKNOWN");
});

Deno.test("end-3: an unknown repository gets 404 NAME_UNKNOWN", async () => {
  await using reg = await startRegistry();
  await assertError(await reg.fetch("/v2/nothere/manifests/latest"), 404, "NAME_UNKNOWN");
  const digest = sha256("x");
  await assertError(await reg.fetch(`/v2/nothere/manifests/${digest}`), 404, "NAME_UNKNOWN");
  const head = await reg.fetch("/v2/nothere/manifests/latest", { method: "HEAD" });
  assert.equal(head.status, 404);
  assert.equal(await head.text(), "");
});

Deno.test("A10/end-3: GET manifests/sha256:totallywrong gets 400 DIGEST_INVALID with an OCI JSON body", async () => {
  await using reg = await startRegistry();
  await pushImage(reg, "repo", "latest");
  for (const name of ["repo", "nothere"]) {
    const res = await reg.fetch(`/v2/${name}/manifests/sha256:totallywrong`);
    assert.equal(res.status, 400);
    assert.match(res.headers.get("Content-Type") ?? "", /^application\/json/);
    const body = await res.json() as { errors: { code: string; message: string }[] };
    assert.equal(body.errors.length, 1);
    assert.equal(body.errors[0]!.code, "DIGEST_INVALID");
    assert.equal(typeof body.errors[0]!.message, "string");
  }
});

Deno.test("A4: blobs may be fetched before the manifest that names them is pushed", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const res = await reg.fetch(`/v2/repo/blobs/${layer.digest}`);
  assert.equal(res.status, 200);
  assert.equal((await res.arrayBuffer()).byteLength, layer.size);
  await putOk(reg, "repo", "v1", imageManifest(config, [layer]));
});

// ---- A6 / end-7: push ---------------------------------------------------------

Deno.test("end-7: PUT by tag answers 201 with Location and Docker-Content-Digest of the raw body", async () => {
  await using reg = await startRegistry();
  const { put, digest, body } = await pushOddManifest(reg, "ns/repo", "v1");
  assert.equal(put.headers.get("Docker-Content-Digest"), digest);
  const location = put.headers.get("Location");
  assert.ok(location, "Location");
  const res = await reg.fetch(location);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), body);
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
});

Deno.test("end-7: PUT by digest answers 201 with Location and Docker-Content-Digest", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const body = imageManifest(config, [layer]);
  const digest = sha256(body);
  const put = await putOk(reg, "repo", digest, body);
  assert.equal(put.headers.get("Docker-Content-Digest"), digest);
  assert.equal(put.headers.get("Location"), `/v2/repo/manifests/${digest}`);
  const res = await reg.fetch(put.headers.get("Location")!);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), body);
  const tags = await reg.fetch("/v2/repo/tags/list");
  assert.deepEqual(await tags.json(), { name: "repo", tags: [] });
});

Deno.test("end-7: PUT by a digest the body does not hash to gets 400 DIGEST_INVALID and stores nothing", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const body = imageManifest(config, [layer]);
  const wrong = sha256(body + " ");
  await assertError(await putManifest(reg, "repo", wrong, body), 400, "DIGEST_INVALID");
  await assertError(await reg.fetch(`/v2/repo/manifests/${wrong}`), 404, "MANIFEST_UNKNOWN");
  await assertError(
    await reg.fetch(`/v2/repo/manifests/${sha256(body)}`),
    404,
    "MANIFEST_UNKNOWN",
  );
});

Deno.test("end-7: PUT of the same manifest twice is idempotent", async () => {
  await using reg = await startRegistry();
  const first = await pushImage(reg, "repo", "v1");
  const again = await putOk(reg, "repo", "v1", first.body);
  assert.equal(again.headers.get("Docker-Content-Digest"), first.digest);
  const res = await reg.fetch("/v2/repo/manifests/v1");
  assert.equal(await res.text(), first.body);
});

Deno.test("A12: all four manifest types are accepted and served with their type", async (t) => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const oci = imageManifest(config, [layer]);
  const docker = JSON.stringify({
    schemaVersion: 2,
    mediaType: DOCKER_MANIFEST,
    config: { mediaType: DOCKER_CONFIG, digest: config.digest, size: config.size },
    layers: [{ mediaType: DOCKER_LAYER, digest: layer.digest, size: layer.size }],
  });
  const cases: [string, string, () => string][] = [
    ["OCI image manifest", OCI_MANIFEST, () => oci],
    ["Docker v2 manifest", DOCKER_MANIFEST, () => docker],
    [
      "OCI image index",
      OCI_INDEX,
      () => indexBody([{ digest: sha256(oci), size: byteLength(oci) }]),
    ],
    [
      "Docker manifest list",
      DOCKER_LIST,
      () =>
        indexBody(
          [{ digest: sha256(docker), size: byteLength(docker), mediaType: DOCKER_MANIFEST }],
          {},
          DOCKER_LIST,
        ),
    ],
  ];
  for (const [label, type, make] of cases) {
    await t.step(label, async () => {
      const body = make();
      const tag = type.replace(/[^a-z0-9]/g, "_");
      const put = await putOk(reg, "repo", tag, body, type);
      assert.equal(put.headers.get("Docker-Content-Digest"), sha256(body));
      const res = await reg.fetch(`/v2/repo/manifests/${tag}`);
      assert.equal(res.status, 200);
      assert.equal(await res.text(), body);
      assert.equal(res.headers.get("Content-Type"), type);
    });
  }
});

Deno.test("A12: Docker schema1 (both media types) gets 400 MANIFEST_INVALID naming schema1", async (t) => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const schema1 = JSON.stringify({
    schemaVersion: 1,
    name: "repo",
    tag: "v1",
    architecture: "amd64",
    fsLayers: [{ blobSum: layer.digest }],
    history: [{ v1Compatibility: "{}" }],
  });
  for (const type of [SCHEMA1, SCHEMA1_SIGNED]) {
    await t.step(type, async () => {
      await assertInvalid(await putManifest(reg, "repo", "v1", schema1, type), /schema ?1/i);
    });
  }
  await t.step("a schemaVersion 2 body sent as schema1 is refused too", async () => {
    const body = imageManifest(config, [layer]);
    const { mediaType: _drop, ...rest } = JSON.parse(body);
    await assertInvalid(
      await putManifest(reg, "repo", "v1", JSON.stringify(rest), SCHEMA1),
      /schema ?1/i,
    );
  });
  await assertError(await reg.fetch("/v2/repo/manifests/v1"), 404, "MANIFEST_UNKNOWN");
});

Deno.test("A12: a schemaVersion 1 body gets 400 MANIFEST_INVALID whatever its Content-Type", async (t) => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const body = JSON.parse(imageManifest(config, [layer]));
  for (const type of [OCI_MANIFEST, DOCKER_MANIFEST, "application/json", null]) {
    await t.step(String(type), async () => {
      const { mediaType: _drop, ...rest } = body;
      const v1 = JSON.stringify({ ...rest, schemaVersion: 1 });
      await assertInvalid(await putManifest(reg, "repo", "v1", v1, type), /schema ?(version ?)?1/i);
    });
  }
});

Deno.test('A12: schemaVersion must be 2 (missing, 3, "2" get 400 MANIFEST_INVALID)', async (t) => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const body = JSON.parse(imageManifest(config, [layer]));
  for (const version of [undefined, 3, "2", 2.5, null]) {
    await t.step(String(version), async () => {
      const put = await putManifest(
        reg,
        "repo",
        "v1",
        JSON.stringify({ ...body, schemaVersion: version }),
      );
      await assertInvalid(put, /schemaVersion/);
    });
  }
});

Deno.test("A6: a mediaType field that differs from Content-Type gets 400 MANIFEST_INVALID", async (t) => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const oci = imageManifest(config, [layer]);
  await t.step("OCI manifest sent as Docker v2", async () => {
    await assertInvalid(await putManifest(reg, "repo", "v1", oci, DOCKER_MANIFEST), /mediaType/);
  });
  await t.step("OCI manifest sent as OCI index", async () => {
    await assertInvalid(await putManifest(reg, "repo", "v1", oci, OCI_INDEX));
  });
  await t.step("an index sent as an image manifest", async () => {
    const index = indexBody([]);
    await assertInvalid(await putManifest(reg, "repo", "v1", index, OCI_MANIFEST));
  });
  await assertError(await reg.fetch("/v2/repo/manifests/v1"), 404, "MANIFEST_UNKNOWN");
});

Deno.test("A6: parameters on the request Content-Type are ignored", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const body = imageManifest(config, [layer]);
  const put = await putOk(reg, "repo", "v1", body, `${OCI_MANIFEST}; charset=utf-8; q=1`);
  assert.equal(put.headers.get("Docker-Content-Digest"), sha256(body));
  const res = await reg.fetch("/v2/repo/manifests/v1");
  assert.equal(await res.text(), body);
  assert.equal(res.headers.get("Content-Type"), OCI_MANIFEST);
});

Deno.test("A6: an unsupported manifest media type gets 400 MANIFEST_INVALID", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const body = JSON.parse(imageManifest(config, [layer]));
  const odd = JSON.stringify({ ...body, mediaType: "application/vnd.example.thing+json" });
  await assertInvalid(
    await putManifest(reg, "repo", "v1", odd, "application/vnd.example.thing+json"),
  );
});

Deno.test("A6: a missing config blob gets 400 MANIFEST_BLOB_UNKNOWN", async () => {
  await using reg = await startRegistry();
  const { layer } = await pushParts(reg, "repo");
  const missing = { mediaType: OCI_CONFIG, digest: sha256("no such config"), size: 14 };
  const res = await putManifest(reg, "repo", "v1", imageManifest(missing, [layer]));
  await assertError(res, 400, "MANIFEST_BLOB_UNKNOWN");
  await assertError(await reg.fetch("/v2/repo/manifests/v1"), 404, "MANIFEST_UNKNOWN");
});

Deno.test("A6: a missing layer blob gets 400 MANIFEST_BLOB_UNKNOWN", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const missing = { digest: sha256("no such layer"), size: 13 };
  const res = await putManifest(reg, "repo", "v1", imageManifest(config, [layer, missing]));
  await assertError(res, 400, "MANIFEST_BLOB_UNKNOWN");
});

Deno.test("A6: a blob that exists only in another repository counts as missing (MANIFEST_BLOB_UNKNOWN)", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "elsewhere");
  await pushImage(reg, "repo", "seed");
  const res = await putManifest(reg, "repo", "v1", imageManifest(config, [layer]));
  await assertError(res, 400, "MANIFEST_BLOB_UNKNOWN");
});

Deno.test("A6: an index whose child manifest is missing gets 400 MANIFEST_BLOB_UNKNOWN", async () => {
  await using reg = await startRegistry();
  const { digest, body } = await pushImage(reg, "repo", "v1");
  const missing = { digest: sha256("no such manifest"), size: 16 };
  const index = indexBody([{ digest, size: byteLength(body) }, missing]);
  await assertError(
    await putManifest(reg, "repo", "idx", index, OCI_INDEX),
    400,
    "MANIFEST_BLOB_UNKNOWN",
  );
  await assertError(await reg.fetch("/v2/repo/manifests/idx"), 404, "MANIFEST_UNKNOWN");
});

Deno.test("A6: an index child that is only a blob, not a manifest, gets MANIFEST_BLOB_UNKNOWN", async () => {
  await using reg = await startRegistry();
  const { config } = await pushParts(reg, "repo");
  const index = indexBody([{ digest: config.digest, size: config.size }]);
  await assertError(
    await putManifest(reg, "repo", "idx", index, OCI_INDEX),
    400,
    "MANIFEST_BLOB_UNKNOWN",
  );
});

Deno.test("A12: a layer with urls (foreign) need not exist in the registry", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const body = JSON.stringify({
    schemaVersion: 2,
    mediaType: DOCKER_MANIFEST,
    config: { mediaType: DOCKER_CONFIG, digest: config.digest, size: config.size },
    layers: [
      {
        mediaType: DOCKER_FOREIGN,
        digest: sha256("foreign layer bytes"),
        size: 19,
        urls: ["https://example.com/layer.tar.gz"],
      },
      { mediaType: DOCKER_LAYER, digest: layer.digest, size: layer.size },
    ],
  });
  await putOk(reg, "repo", "win", body, DOCKER_MANIFEST);
  const res = await reg.fetch("/v2/repo/manifests/win");
  assert.equal(await res.text(), body);
});

Deno.test("A12: invalid descriptors get 400 MANIFEST_INVALID", async (t) => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const cases: [string, Record<string, unknown>][] = [
    ["digest not a digest", { digest: "not-a-digest" }],
    ["digest uppercase hex", { digest: layer.digest.toUpperCase() }],
    ["digest short", { digest: layer.digest.slice(0, -1) }],
    ["digest missing", { digest: undefined }],
    ["digest a number", { digest: 5 }],
    ["negative size", { size: -1 }],
    ["fractional size", { size: 1.5 }],
    ["size a string", { size: String(layer.size) }],
    ["size missing", { size: undefined }],
    ["mediaType without a slash", { mediaType: "layer" }],
    ["mediaType empty", { mediaType: "" }],
    ["mediaType missing", { mediaType: undefined }],
    ["mediaType with spaces", { mediaType: "application/x y" }],
    ["annotations an array", { annotations: ["a"] }],
    ["annotations with a number value", { annotations: { a: 1 } }],
    ["annotations with a null value", { annotations: { a: null } }],
    ["annotations a string", { annotations: "a=b" }],
    ["urls not an array", { urls: "https://example.com/x" }],
    ["urls not URLs", { urls: ["not a url"] }],
  ];
  for (const [label, change] of cases) {
    await t.step(`layer: ${label}`, async () => {
      const bad = { ...layer, ...change };
      const body = ociManifest({ config, layers: [bad] });
      await assertInvalid(await putManifest(reg, "repo", "v1", body));
    });
  }
  await t.step("config: negative size", async () => {
    const body = ociManifest({ config: { ...config, size: -5 }, layers: [layer] });
    await assertInvalid(await putManifest(reg, "repo", "v1", body));
  });
  await t.step("config: not an object", async () => {
    const body = ociManifest({ config: "x", layers: [] });
    await assertInvalid(await putManifest(reg, "repo", "v1", body));
  });
  await t.step("index child: bad digest", async () => {
    const body = indexBody([{ digest: "sha256:zz", size: 3 }]);
    await assertInvalid(await putManifest(reg, "repo", "v1", body, OCI_INDEX));
  });
  await t.step("manifest annotations: not a string map", async () => {
    const body = imageManifest(config, [layer], { annotations: { n: 1 } });
    await assertInvalid(await putManifest(reg, "repo", "v1", body));
  });
  await t.step("subject: bad digest", async () => {
    const body = imageManifest(config, [layer], {
      subject: { mediaType: OCI_MANIFEST, digest: "sha256:nope", size: 1 },
    });
    await assertInvalid(await putManifest(reg, "repo", "v1", body));
  });
  await assertError(await reg.fetch("/v2/repo/manifests/v1"), 404, "MANIFEST_UNKNOWN");
});

Deno.test("A12: an image manifest needs config and layers; an index needs manifests", async (t) => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const cases: [string, Record<string, unknown>, string][] = [
    ["no config", { schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [layer] }, OCI_MANIFEST],
    ["no layers", { schemaVersion: 2, mediaType: OCI_MANIFEST, config }, OCI_MANIFEST],
    [
      "layers an object",
      { schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: layer },
      OCI_MANIFEST,
    ],
    ["index without manifests", { schemaVersion: 2, mediaType: OCI_INDEX }, OCI_INDEX],
    [
      "index manifests an object",
      { schemaVersion: 2, mediaType: OCI_INDEX, manifests: {} },
      OCI_INDEX,
    ],
  ];
  for (const [label, body, type] of cases) {
    await t.step(label, async () => {
      await assertInvalid(await putManifest(reg, "repo", "v1", JSON.stringify(body), type));
    });
  }
  await t.step("an empty layers array and an empty index are valid", async () => {
    const empty = ociManifest({ config, layers: [] });
    await putOk(reg, "repo", "nolayers", empty);
    await putOk(reg, "repo", "emptyindex", indexBody([]), OCI_INDEX);
  });
});

Deno.test("A12: embedded data that does not match its digest or size gets 400 MANIFEST_INVALID; matching data is accepted", async (t) => {
  await using reg = await startRegistry();
  const configBytes = encoder.encode(JSON.stringify({ os: "linux" }));
  const configDigest = await pushBlob(reg, "repo", configBytes);
  const { layer } = await pushParts(reg, "repo");
  const data = btoa(String.fromCharCode(...configBytes));
  const make = (descriptor: Record<string, unknown>) =>
    ociManifest({ config: descriptor, layers: [layer] });
  const good = { mediaType: OCI_CONFIG, digest: configDigest, size: configBytes.length };
  await t.step("data of other bytes", async () => {
    const put = await putManifest(
      reg,
      "repo",
      "v1",
      make({ ...good, data: btoa("something else") }),
    );
    await assertInvalid(put, /data/);
  });
  await t.step("data right but size wrong", async () => {
    const body = make({ ...good, size: configBytes.length + 1, data });
    await assertInvalid(await putManifest(reg, "repo", "v1", body), /data|size/);
  });
  await t.step("data not base64", async () => {
    await assertInvalid(
      await putManifest(reg, "repo", "v1", make({ ...good, data: "!!!not base64" })),
    );
  });
  await t.step("data not a string", async () => {
    await assertInvalid(await putManifest(reg, "repo", "v1", make({ ...good, data: 12 })));
  });
  await t.step("matching data is accepted and kept as sent", async () => {
    const body = make({ ...good, data });
    await putOk(reg, "repo", "v1", body);
    const res = await reg.fetch("/v2/repo/manifests/v1");
    assert.equal(await res.text(), body);
  });
});

Deno.test("A12: unknown artifactType, config and layer media types are accepted", async () => {
  await using reg = await startRegistry();
  const configBytes = encoder.encode("opaque config");
  const layerBytes = randomBytes(64, 3);
  const config = {
    mediaType: "application/vnd.example.never-heard-of+whatever",
    digest: await pushBlob(reg, "repo", configBytes),
    size: configBytes.length,
  };
  const body = ociManifest({
    artifactType: "application/vnd.example.unknown.artifact.v9",
    config,
    layers: [{
      mediaType: "application/x-totally.unknown",
      digest: await pushBlob(reg, "repo", layerBytes),
      size: layerBytes.length,
    }],
  });
  await putOk(reg, "repo", "art", body);
  const index = indexBody([{
    digest: sha256(body),
    size: byteLength(body),
    mediaType: "application/vnd.example.child",
  }], {
    artifactType: "application/vnd.example.index-kind",
  });
  await putOk(reg, "repo", "artidx", index, OCI_INDEX);
  const res = await reg.fetch("/v2/repo/manifests/artidx");
  assert.equal(await res.text(), index);
});

Deno.test("A12: an artifact with the empty config and no layers is accepted", async () => {
  await using reg = await startRegistry();
  const empty = await pushBlob(reg, "repo", "{}");
  assert.equal(empty, "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
  const body = ociManifest({
    artifactType: "application/vnd.example.sbom",
    config: { mediaType: OCI_EMPTY, digest: empty, size: 2 },
    layers: [],
  });
  await putOk(reg, "repo", "sbom", body);
});

Deno.test("A6: a manifest over maxManifestBytes gets 413 and is not stored", async (t) => {
  await using reg = await startRegistry({ maxManifestBytes: 2048 });
  const { config, layer } = await pushParts(reg, "repo");
  const sized = (length: number) => {
    const base = imageManifest(config, [layer], { annotations: { pad: "" } });
    const body = imageManifest(config, [layer], {
      annotations: { pad: "x".repeat(length - byteLength(base)) },
    });
    assert.equal(byteLength(body), length);
    return body;
  };
  await t.step("exactly the limit is accepted", async () => {
    await putOk(reg, "repo", "fits", sized(2048));
  });
  await t.step("one byte over, with Content-Length, gets 413", async () => {
    const res = await putManifest(reg, "repo", "big", sized(2049));
    const text = await res.text();
    assert.equal(res.status, 413, text);
    assert.ok(JSON.parse(text).errors[0].code.match(/^[A-Z_]+$/));
  });
  await t.step("one byte over, streamed without Content-Length, gets 413", async () => {
    const bytes = encoder.encode(sized(4096));
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 512) controller.enqueue(bytes.slice(i, i + 512));
        controller.close();
      },
    });
    const res = await reg.fetch("/v2/repo/manifests/big", {
      method: "PUT",
      headers: { "Content-Type": OCI_MANIFEST },
      body,
    });
    const text = await res.text();
    assert.equal(res.status, 413, text);
  });
  await assertError(await reg.fetch("/v2/repo/manifests/big"), 404, "MANIFEST_UNKNOWN");
});

Deno.test("A6: a 4 MiB manifest is accepted by default", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const limit = 4 * 1024 * 1024;
  const base = imageManifest(config, [layer], { annotations: { pad: "" } });
  const body = imageManifest(config, [layer], {
    annotations: { pad: "p".repeat(limit - byteLength(base)) },
  });
  assert.equal(byteLength(body), limit);
  const put = await putOk(reg, "repo", "huge", body);
  assert.equal(put.headers.get("Docker-Content-Digest"), sha256(body));
  const res = await reg.fetch("/v2/repo/manifests/huge");
  assert.equal(res.headers.get("Content-Length"), String(limit));
  assert.equal(sha256(new Uint8Array(await res.arrayBuffer())), sha256(body));
});

Deno.test("A12: a body that is not JSON, not UTF-8 or not an object gets 400 MANIFEST_INVALID", async (t) => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const good = imageManifest(config, [layer], { annotations: { k: "XX" } });
  const utf8 = encoder.encode(good);
  const at = new TextDecoder().decode(utf8).indexOf("XX");
  const badUtf8 = utf8.slice();
  badUtf8[at] = 0xff;
  badUtf8[at + 1] = 0xfe;
  const cases: [string, string | Uint8Array<ArrayBuffer>][] = [
    ["not JSON", "this is not json"],
    ["truncated JSON", good.slice(0, -1)],
    ["empty body", ""],
    ["invalid UTF-8", badUtf8],
    ["a JSON array", JSON.stringify([JSON.parse(good)])],
    ["a JSON string", JSON.stringify(good)],
    ["JSON null", "null"],
    ["a JSON number", "2"],
  ];
  for (const [label, body] of cases) {
    await t.step(label, async () => {
      await assertInvalid(await putManifest(reg, "repo", "v1", body));
    });
  }
  await assertError(await reg.fetch("/v2/repo/manifests/v1"), 404, "MANIFEST_UNKNOWN");
});

Deno.test("A6: a re-PUT moves a tag to the new manifest", async () => {
  await using reg = await startRegistry();
  const first = await pushImage(reg, "repo", "latest", { seed: 1 });
  const second = await pushImage(reg, "repo", "latest", { seed: 2 });
  assert.notEqual(first.digest, second.digest);
  const res = await reg.fetch("/v2/repo/manifests/latest");
  assert.equal(res.headers.get("Docker-Content-Digest"), second.digest);
  assert.equal(await res.text(), second.body);
  const old = await reg.fetch(`/v2/repo/manifests/${first.digest}`);
  assert.equal(old.status, 200, "the old manifest stays, by digest");
  assert.equal(await old.text(), first.body);
});

Deno.test("A6: a tag moves from an image manifest to an index and back", async () => {
  await using reg = await startRegistry();
  const image = await pushImage(reg, "repo", "latest");
  const index = indexBody([{ digest: image.digest, size: byteLength(image.body) }]);
  await putOk(reg, "repo", "latest", index, OCI_INDEX);
  let res = await reg.fetch("/v2/repo/manifests/latest");
  assert.equal(res.headers.get("Content-Type"), OCI_INDEX);
  assert.equal(await res.text(), index);
  await putOk(reg, "repo", "latest", image.body, OCI_MANIFEST);
  res = await reg.fetch("/v2/repo/manifests/latest");
  assert.equal(res.headers.get("Content-Type"), OCI_MANIFEST);
  assert.equal(await res.text(), image.body);
  const tags = await reg.fetch("/v2/repo/tags/list");
  assert.deepEqual(await tags.json(), { name: "repo", tags: ["latest"] });
});

Deno.test("A6: a manifest whose subject does not exist is accepted, with OCI-Subject", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const subject = { mediaType: OCI_MANIFEST, digest: sha256("subject not pushed yet"), size: 22 };
  const body = imageManifest(config, [layer], {
    artifactType: "application/vnd.example.sig",
    subject,
  });
  const put = await putOk(reg, "repo", sha256(body), body);
  assert.equal(put.headers.get("OCI-Subject"), subject.digest);
  const res = await reg.fetch(`/v2/repo/manifests/${sha256(body)}`);
  assert.equal(await res.text(), body);
});

Deno.test("A6: an index with a subject is accepted, with OCI-Subject", async () => {
  await using reg = await startRegistry();
  const image = await pushImage(reg, "repo", "v1");
  const subject = { mediaType: OCI_MANIFEST, digest: sha256("missing subject"), size: 15 };
  const index = indexBody([{ digest: image.digest, size: byteLength(image.body) }], { subject });
  const put = await putOk(reg, "repo", "idx", index, OCI_INDEX);
  assert.equal(put.headers.get("OCI-Subject"), subject.digest);
});

Deno.test("A6: a manifest without a subject gets no OCI-Subject header", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const put = await putOk(reg, "repo", "v1", imageManifest(config, [layer]));
  assert.equal(put.headers.get("OCI-Subject"), null);
});

// ---- end-7b: ?tag= -------------------------------------------------------------

function ociTags(res: Response): string[] {
  return (res.headers.get("OCI-Tag") ?? "").split(",").map((t) => t.trim()).filter(Boolean).sort();
}

Deno.test("end-7b: PUT by digest with ?tag=a&tag=b lists them in OCI-Tag and both resolve", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const body = imageManifest(config, [layer]);
  const digest = sha256(body);
  const put = await putOk(reg, "repo", `${digest}?tag=a&tag=b`, body);
  assert.deepEqual(ociTags(put), ["a", "b"]);
  assert.equal(put.headers.get("Docker-Content-Digest"), digest);
  for (const tag of ["a", "b"]) {
    const res = await reg.fetch(`/v2/repo/manifests/${tag}`);
    assert.equal(res.status, 200, tag);
    assert.equal(res.headers.get("Docker-Content-Digest"), digest);
    assert.equal(await res.text(), body);
  }
  const tags = await reg.fetch("/v2/repo/tags/list");
  assert.deepEqual(await tags.json(), { name: "repo", tags: ["a", "b"] });
});

Deno.test("end-7b: ten tags in one PUT are accepted", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const body = imageManifest(config, [layer]);
  const names = Array.from({ length: 10 }, (_, i) => `t${i}`);
  const query = names.map((t) => `tag=${t}`).join("&");
  const put = await putOk(reg, "repo", `${sha256(body)}?${query}`, body);
  assert.deepEqual(ociTags(put), names.sort());
  const tags = await reg.fetch("/v2/repo/tags/list");
  assert.deepEqual((await tags.json()).tags, names.sort());
});

Deno.test("end-7b: eleven tags in one PUT get 414 and set no tag", async (t) => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const body = imageManifest(config, [layer]);
  const eleven = Array.from({ length: 11 }, (_, i) => `tag=t${i}`).join("&");
  const ten = Array.from({ length: 10 }, (_, i) => `tag=t${i}`).join("&");
  await t.step("11 ?tag= on a digest", async () => {
    const res = await putManifest(reg, "repo", `${sha256(body)}?${eleven}`, body);
    await res.body?.cancel();
    assert.equal(res.status, 414);
  });
  await t.step("10 ?tag= plus the path tag", async () => {
    const res = await putManifest(reg, "repo", `path?${ten}`, body);
    await res.body?.cancel();
    assert.equal(res.status, 414);
  });
  await assertError(await reg.fetch("/v2/repo/manifests/t0"), 404, "MANIFEST_UNKNOWN");
});

Deno.test("end-7b: an invalid ?tag= gets 400 TAG_INVALID and stores nothing", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const body = imageManifest(config, [layer]);
  const res = await putManifest(reg, "repo", `${sha256(body)}?tag=ok&tag=-bad`, body);
  await assertError(res, 400, "TAG_INVALID");
  await assertError(await reg.fetch("/v2/repo/manifests/ok"), 404, "MANIFEST_UNKNOWN");
  await assertError(await reg.fetch(`/v2/repo/manifests/${sha256(body)}`), 404, "MANIFEST_UNKNOWN");
});

Deno.test("end-7b: ?tag= on a PUT by tag sets the path tag and the query tags", async () => {
  await using reg = await startRegistry();
  const { config, layer } = await pushParts(reg, "repo");
  const body = imageManifest(config, [layer]);
  const put = await putOk(reg, "repo", "main?tag=extra", body);
  assert.ok(ociTags(put).includes("extra"));
  for (const tag of ["main", "extra"]) {
    const res = await reg.fetch(`/v2/repo/manifests/${tag}`, { method: "HEAD" });
    await res.body?.cancel();
    assert.equal(res.status, 200, tag);
    assert.equal(res.headers.get("Docker-Content-Digest"), sha256(body));
  }
});

Deno.test("end-3: repeated GETs by tag and digest serve identical bytes (manifest cache)", async () => {
  await using reg = await startRegistry();
  const image = await pushImage(reg, "cache/app", "v1");
  for (let i = 0; i < 3; i++) {
    for (const ref of ["v1", image.digest]) {
      const res = await reg.fetch(`/v2/cache/app/manifests/${ref}`);
      assert.equal(res.status, 200);
      assert.equal(await res.text(), image.body);
    }
  }
});

Deno.test("A6: a manifest with 2,000 layers names exactly the missing ones (MANIFEST_BLOB_UNKNOWN)", async () => {
  await using reg = await startRegistry();
  const config = await pushBlob(reg, "many/layers", "{}");
  const present = await pushBlob(reg, "many/layers", "layer");
  const absent = Array.from({ length: 1000 }, (_, i) => sha256(`absent ${i}`));
  const layers = [...Array.from({ length: 1000 }, () => present), ...absent];
  const body = imageManifest(
    { digest: config, size: 2 },
    layers.map((digest) => ({ digest, size: 5 })),
  );
  const res = await reg.fetch("/v2/many/layers/manifests/v1", {
    method: "PUT",
    headers: { "Content-Type": OCI_MANIFEST },
    body,
  });
  const error = await res.json() as { errors: { code: string; detail: { missing: string[] } }[] };
  assert.equal(res.status, 400);
  assert.equal(error.errors[0]!.code, "MANIFEST_BLOB_UNKNOWN");
  assert.match(JSON.stringify(error.errors[0]), /1000 unknown/);
  assert.deepEqual(error.errors[0]!.detail.missing, absent.slice(0, 50));
});

Deno.test("A4: the same bytes pushed under two media types keep the first, by tag and by digest alike", async () => {
  await using reg = await startRegistry();
  const config = await pushBlob(reg, "twice/app", "{}");
  const body = JSON.stringify({
    schemaVersion: 2,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config, size: 2 },
    layers: [],
  });
  for (const [ref, type] of [["a", OCI_MANIFEST], [sha256(body), DOCKER_MANIFEST]] as const) {
    const res = await reg.fetch(`/v2/twice/app/manifests/${ref}`, {
      method: "PUT",
      headers: { "Content-Type": type },
      body,
    });
    await res.body?.cancel();
    assert.equal(res.status, 201);
  }
  for (const ref of ["a", sha256(body)]) {
    const res = await reg.fetch(`/v2/twice/app/manifests/${ref}`, { method: "HEAD" });
    assert.equal(res.headers.get("Content-Type"), OCI_MANIFEST, ref);
  }
});

Deno.test("end-9: a manifest with 1,001 tags is deleted whole", async () => {
  await using reg = await startRegistry();
  const image = await pushImage(reg, "many/tags", "t0000");
  const tags = Array.from({ length: 1000 }, (_, i) => `t${String(i + 1).padStart(4, "0")}`);
  for (let i = 0; i < tags.length; i += 10) {
    const query = tags.slice(i, i + 10).map((t) => `tag=${t}`).join("&");
    const res = await reg.fetch(`/v2/many/tags/manifests/${image.digest}?${query}`, {
      method: "PUT",
      headers: { "Content-Type": OCI_MANIFEST },
      body: image.body,
    });
    await res.body?.cancel();
    assert.equal(res.status, 201);
  }
  const del = await reg.fetch(`/v2/many/tags/manifests/${image.digest}`, { method: "DELETE" });
  await del.body?.cancel();
  assert.equal(del.status, 202);
  const list = await reg.fetch("/v2/many/tags/tags/list");
  assert.deepEqual((await list.json()).tags, []);
  const get = await reg.fetch(`/v2/many/tags/manifests/${image.digest}`);
  await assertError(get, 404, "MANIFEST_UNKNOWN");
});

Deno.test("A8: a subject-bearing manifest whose annotations exceed 48 KiB in UTF-8 gets 400 and stores nothing", async () => {
  await using reg = await startRegistry();
  const config = await pushBlob(reg, "big/notes", "{}");
  const body = imageManifest({ digest: config, size: 2 }, [], {
    subject: { mediaType: OCI_MANIFEST, digest: sha256("subject"), size: 1 },
    annotations: { note: "€".repeat(20_000) }, // 20,000 characters, 60,000 bytes
  });
  const res = await reg.fetch("/v2/big/notes/manifests/v1", {
    method: "PUT",
    headers: { "Content-Type": OCI_MANIFEST },
    body,
  });
  await assertError(res, 400, "MANIFEST_INVALID");
  assert.equal(await reg.blobs.stat(sha256(body) as Digest), null);
  await assertError(await reg.fetch("/v2/big/notes/manifests/v1"), 404, "MANIFEST_UNKNOWN");
});
