/**
 * Unit tests of manifest parsing and validation at PUT (checklist A6, A12,
 * and A8 for the `artifactType` a referrer gets).
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { OciError } from "./errors.ts";
import { parseDescriptor, parseManifest } from "./manifest.ts";
import {
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST,
  DOCKER_SCHEMA1,
  DOCKER_SCHEMA1_SIGNED,
  OCI_EMPTY,
  OCI_INDEX,
  OCI_MANIFEST,
} from "./media_type.ts";

type Json = Record<string, unknown>;

const CONFIG_TYPE = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip";

function sha256(data: string | Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

const CONFIG = { mediaType: CONFIG_TYPE, digest: sha256("config"), size: 6 };
const LAYER_A = { mediaType: LAYER_TYPE, digest: sha256("layer a"), size: 7 };
const LAYER_B = { mediaType: LAYER_TYPE, digest: sha256("layer b"), size: 7 };
const CHILD = { mediaType: OCI_MANIFEST, digest: sha256("child"), size: 5 };
const SUBJECT = { mediaType: OCI_MANIFEST, digest: sha256("subject"), size: 7 };

function encode(body: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(body));
}

function image(extra: Json = {}): Json {
  return {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: CONFIG,
    layers: [LAYER_A, LAYER_B],
    ...extra,
  };
}

function index(extra: Json = {}): Json {
  return { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [CHILD], ...extra };
}

/** Asserts that parsing throws MANIFEST_INVALID (400) with a message matching `message`. */
function assertInvalid(
  body: unknown,
  contentType: string | null,
  message: RegExp,
): OciError {
  const bytes = body instanceof Uint8Array ? body : encode(body);
  let caught: unknown;
  try {
    parseManifest(bytes, contentType);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof OciError, `expected an OciError, got ${String(caught)}`);
  assert.equal(caught.code, "MANIFEST_INVALID");
  assert.equal(caught.status, 400);
  assert.match(caught.message, message);
  return caught;
}

// ---- each media type ------------------------------------------------------

Deno.test("parseManifest() accepts an OCI image manifest", () => {
  const parsed = parseManifest(encode(image()), OCI_MANIFEST);
  assert.deepEqual(parsed, {
    mediaType: OCI_MANIFEST,
    blobs: [CONFIG.digest, LAYER_A.digest, LAYER_B.digest],
    manifests: [],
    artifactType: CONFIG_TYPE,
  });
});

Deno.test("parseManifest() accepts an OCI index", () => {
  const parsed = parseManifest(encode(index()), OCI_INDEX);
  assert.deepEqual(parsed, { mediaType: OCI_INDEX, blobs: [], manifests: [CHILD.digest] });
});

Deno.test("parseManifest() accepts an OCI index with no manifests", () => {
  const parsed = parseManifest(encode(index({ manifests: [] })), OCI_INDEX);
  assert.deepEqual(parsed.manifests, []);
});

Deno.test("parseManifest() accepts a Docker schema2 manifest", () => {
  const body = {
    schemaVersion: 2,
    mediaType: DOCKER_MANIFEST,
    config: {
      mediaType: "application/vnd.docker.container.image.v1+json",
      digest: CONFIG.digest,
      size: 6,
    },
    layers: [{
      mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip",
      digest: LAYER_A.digest,
      size: 7,
    }],
  };
  const parsed = parseManifest(encode(body), DOCKER_MANIFEST);
  assert.equal(parsed.mediaType, DOCKER_MANIFEST);
  assert.deepEqual(parsed.blobs, [CONFIG.digest, LAYER_A.digest]);
  assert.equal(parsed.artifactType, "application/vnd.docker.container.image.v1+json");
});

Deno.test("parseManifest() accepts a Docker manifest list with platforms", () => {
  const body = {
    schemaVersion: 2,
    mediaType: DOCKER_MANIFEST_LIST,
    manifests: [
      { ...CHILD, mediaType: DOCKER_MANIFEST, platform: { architecture: "amd64", os: "linux" } },
      { ...SUBJECT, mediaType: DOCKER_MANIFEST, platform: { architecture: "arm64", os: "linux" } },
    ],
  };
  const parsed = parseManifest(encode(body), DOCKER_MANIFEST_LIST);
  assert.equal(parsed.mediaType, DOCKER_MANIFEST_LIST);
  assert.deepEqual(parsed.manifests, [CHILD.digest, SUBJECT.digest]);
  assert.deepEqual(parsed.blobs, []);
  assert.equal(parsed.artifactType, undefined);
});

Deno.test("parseManifest() accepts an image manifest with zero layers (artifacts)", () => {
  const parsed = parseManifest(
    encode(image({ layers: [], artifactType: "application/x.example" })),
    OCI_MANIFEST,
  );
  assert.deepEqual(parsed.blobs, [CONFIG.digest]);
  assert.equal(parsed.artifactType, "application/x.example");
});

Deno.test("parseManifest() accepts unknown config, layer and child media types", () => {
  const body = image({
    config: { ...CONFIG, mediaType: "application/vnd.unknown.config.v1+json" },
    layers: [{ ...LAYER_A, mediaType: "application/x-whatever" }],
  });
  const parsed = parseManifest(encode(body), OCI_MANIFEST);
  assert.equal(parsed.artifactType, "application/vnd.unknown.config.v1+json");
  const list = parseManifest(
    encode(index({ manifests: [{ ...CHILD, mediaType: "application/x-odd" }] })),
    OCI_INDEX,
  );
  assert.deepEqual(list.manifests, [CHILD.digest]);
});

// ---- schema1 and schemaVersion --------------------------------------------

Deno.test("parseManifest() rejects Docker schema1 by Content-Type", () => {
  for (const type of [DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED]) {
    assertInvalid(image(), type, /schema1 manifests are not supported/);
  }
});

Deno.test("parseManifest() rejects Docker schema1 by schemaVersion 1", () => {
  const body = { schemaVersion: 1, name: "x", tag: "latest", fsLayers: [], history: [] };
  assertInvalid(body, null, /schemaVersion 1\) are not supported/);
  assertInvalid(body, "application/json", /schemaVersion 1\) are not supported/);
});

Deno.test("parseManifest() rejects a schemaVersion other than the number 2", () => {
  for (const schemaVersion of [undefined, 0, 3, "2", 2.5, null]) {
    assertInvalid(image({ schemaVersion }), OCI_MANIFEST, /^schemaVersion must be 2$/);
  }
});

// ---- JSON itself ----------------------------------------------------------

Deno.test("parseManifest() rejects bytes that are not UTF-8", () => {
  assertInvalid(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), OCI_MANIFEST, /not valid UTF-8/);
});

Deno.test("parseManifest() rejects text that is not JSON", () => {
  assertInvalid(new TextEncoder().encode("{"), OCI_MANIFEST, /not valid JSON/);
  assertInvalid(new Uint8Array(), OCI_MANIFEST, /not valid JSON/);
});

Deno.test("parseManifest() rejects JSON that is not an object", () => {
  for (const body of [[], "manifest", 2, null, true]) {
    assertInvalid(body, OCI_MANIFEST, /must be a JSON object/);
  }
});

// ---- mediaType and Content-Type -------------------------------------------

Deno.test("parseManifest() rejects a mediaType that differs from Content-Type", () => {
  assertInvalid(image(), OCI_INDEX, /mediaType ".*manifest\.v1\+json" does not match Content-Type/);
  assertInvalid(image(), DOCKER_MANIFEST, /does not match Content-Type/);
  assertInvalid(image(), "application/json", /does not match Content-Type/);
});

Deno.test("parseManifest() ignores Content-Type parameters and case", () => {
  const a = parseManifest(encode(image()), `${OCI_MANIFEST}; charset=utf-8`);
  assert.equal(a.mediaType, OCI_MANIFEST);
  const b = parseManifest(encode(image()), OCI_MANIFEST.toUpperCase());
  assert.equal(b.mediaType, OCI_MANIFEST);
  const c = parseManifest(encode(image()), `  ${OCI_MANIFEST}  `);
  assert.equal(c.mediaType, OCI_MANIFEST);
});

Deno.test("parseManifest() rejects a mediaType that is not a string", () => {
  assertInvalid(image({ mediaType: 1 }), OCI_MANIFEST, /^mediaType must be a string$/);
  assertInvalid(image({ mediaType: null }), null, /^mediaType must be a string$/);
});

Deno.test("parseManifest() takes the media type from Content-Type when the body has none", () => {
  const body = image({ mediaType: undefined });
  assert.equal(parseManifest(encode(body), DOCKER_MANIFEST).mediaType, DOCKER_MANIFEST);
  assert.equal(parseManifest(encode(body), OCI_MANIFEST).mediaType, OCI_MANIFEST);
});

Deno.test("parseManifest() takes the media type from the body when Content-Type is absent", () => {
  assert.equal(parseManifest(encode(image()), null).mediaType, OCI_MANIFEST);
  assert.equal(parseManifest(encode(image()), "").mediaType, OCI_MANIFEST);
  const list = index({ mediaType: DOCKER_MANIFEST_LIST });
  assert.equal(parseManifest(encode(list), null).mediaType, DOCKER_MANIFEST_LIST);
});

Deno.test("parseManifest() infers index or image when both Content-Type and mediaType are absent", () => {
  const asIndex = parseManifest(encode(index({ mediaType: undefined })), null);
  assert.equal(asIndex.mediaType, OCI_INDEX);
  assert.deepEqual(asIndex.manifests, [CHILD.digest]);
  const asImage = parseManifest(encode(image({ mediaType: undefined })), null);
  assert.equal(asImage.mediaType, OCI_MANIFEST);
});

Deno.test("parseManifest() rejects a media type it does not store, listing the supported ones", () => {
  const error = assertInvalid(
    image({ mediaType: undefined }),
    "application/json",
    /Unsupported manifest media type "application\/json"/,
  );
  const detail = error.options.detail as { supported: string[] };
  assert.deepEqual(
    new Set(detail.supported),
    new Set([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST]),
  );
  assertInvalid(
    image({ mediaType: "application/vnd.oci.artifact.manifest.v1+json" }),
    null,
    /Unsupported manifest media type/,
  );
});

// ---- image manifest fields -------------------------------------------------

Deno.test("parseManifest() rejects an image manifest without config", () => {
  assertInvalid(image({ config: undefined }), OCI_MANIFEST, /^config must be a descriptor object$/);
  assertInvalid(image({ config: [] }), OCI_MANIFEST, /^config must be a descriptor object$/);
  assertInvalid(image({ config: "x" }), OCI_MANIFEST, /^config must be a descriptor object$/);
});

Deno.test("parseManifest() rejects an image manifest without a layers array", () => {
  assertInvalid(image({ layers: undefined }), OCI_MANIFEST, /^layers must be an array$/);
  assertInvalid(image({ layers: {} }), OCI_MANIFEST, /^layers must be an array$/);
});

Deno.test("parseManifest() rejects an image manifest with a manifests field", () => {
  assertInvalid(image({ manifests: [] }), OCI_MANIFEST, /image manifest has no manifests field/);
});

Deno.test("parseManifest() names the bad layer by its index", () => {
  assertInvalid(
    image({ layers: [LAYER_A, { ...LAYER_B, size: -1 }] }),
    OCI_MANIFEST,
    /^layers\[1\]: size must be a non-negative integer$/,
  );
  assertInvalid(image({ layers: [null] }), OCI_MANIFEST, /^layers\[0\] must be a descriptor/);
});

Deno.test("parseManifest() leaves layers with urls out of the blobs to check", () => {
  const foreign = {
    mediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    digest: sha256("foreign"),
    size: 100,
    urls: ["https://example.com/layer.tar.gz"],
  };
  const parsed = parseManifest(encode(image({ layers: [LAYER_A, foreign] })), OCI_MANIFEST);
  assert.deepEqual(parsed.blobs, [CONFIG.digest, LAYER_A.digest]);
  // An empty urls list is not a foreign layer.
  const local = parseManifest(
    encode(image({ layers: [{ ...LAYER_A, urls: [] }] })),
    OCI_MANIFEST,
  );
  assert.deepEqual(local.blobs, [CONFIG.digest, LAYER_A.digest]);
});

// ---- index fields ----------------------------------------------------------

Deno.test("parseManifest() rejects an index without a manifests array", () => {
  assertInvalid(index({ manifests: undefined }), OCI_INDEX, /^manifests must be an array$/);
  assertInvalid(index({ manifests: {} }), OCI_INDEX, /^manifests must be an array$/);
});

Deno.test("parseManifest() rejects an index with config or layers", () => {
  assertInvalid(index({ config: CONFIG }), OCI_INDEX, /index has no config or layers/);
  assertInvalid(index({ layers: [] }), OCI_INDEX, /index has no config or layers/);
  // Inferred as an index (manifests present, no types) with layers.
  assertInvalid(
    { schemaVersion: 2, manifests: [], layers: [] },
    null,
    /index has no config or layers/,
  );
});

Deno.test("parseManifest() names the bad child manifest by its index", () => {
  assertInvalid(
    index({ manifests: [CHILD, { ...CHILD, digest: "sha256:nope" }] }),
    OCI_INDEX,
    /^manifests\[1\]: Invalid digest "sha256:nope": sha256 needs 64 lowercase hex/,
  );
});

// ---- descriptors -----------------------------------------------------------

Deno.test("parseDescriptor() returns mediaType, digest and size", () => {
  assert.deepEqual(parseDescriptor({ ...LAYER_A, extra: "ignored" }, "layer"), LAYER_A);
});

Deno.test("parseDescriptor() rejects a missing or malformed mediaType", () => {
  for (const mediaType of [undefined, 1, "", "text", "text/", "/plain", "a b/c", "a/b;c=d"]) {
    assertInvalid(
      image({ config: { ...CONFIG, mediaType } }),
      OCI_MANIFEST,
      /^config: mediaType must be a media type/,
    );
  }
});

Deno.test("parseDescriptor() rejects a digest that is not a string", () => {
  assertInvalid(
    image({ config: { ...CONFIG, digest: 1 } }),
    OCI_MANIFEST,
    /^config: digest must be a string$/,
  );
  assertInvalid(
    image({ config: { ...CONFIG, digest: undefined } }),
    OCI_MANIFEST,
    /^config: digest must be a string$/,
  );
});

Deno.test("parseDescriptor() rejects an invalid or unsupported digest as MANIFEST_INVALID", () => {
  for (
    const digest of [
      "sha256:abc",
      CONFIG.digest.toUpperCase(),
      `md5:${"a".repeat(32)}`,
      `sha256:${"A".repeat(64)}`,
    ]
  ) {
    assertInvalid(image({ config: { ...CONFIG, digest } }), OCI_MANIFEST, /^config: /);
  }
});

Deno.test("parseDescriptor() accepts a sha512 digest", () => {
  const digest = `sha512:${createHash("sha512").update("x").digest("hex")}`;
  const parsed = parseManifest(encode(image({ layers: [{ ...LAYER_A, digest }] })), OCI_MANIFEST);
  assert.deepEqual(parsed.blobs, [CONFIG.digest, digest]);
});

Deno.test("parseDescriptor() rejects a size that is not a non-negative safe integer", () => {
  for (const size of [undefined, -1, 1.5, "6", null, 2 ** 53, Number.MAX_VALUE]) {
    assertInvalid(
      image({ config: { ...CONFIG, size } }),
      OCI_MANIFEST,
      /^config: size must be a non-negative integer$/,
    );
  }
});

Deno.test("parseDescriptor() accepts size 0 and 2^53 - 1", () => {
  for (const size of [0, Number.MAX_SAFE_INTEGER]) {
    const parsed = parseDescriptor({ ...LAYER_A, size }, "layer");
    assert.equal(parsed.size, size);
  }
});

Deno.test("parseDescriptor() keeps artifactType and rejects a malformed one", () => {
  const parsed = parseDescriptor({ ...CHILD, artifactType: "application/x.sig" }, "m");
  assert.equal(parsed.artifactType, "application/x.sig");
  assertInvalid(
    index({ manifests: [{ ...CHILD, artifactType: "nope" }] }),
    OCI_INDEX,
    /^manifests\[0\]\.artifactType: mediaType must be a media type/,
  );
});

Deno.test("parseDescriptor() keeps string annotations and rejects others", () => {
  const annotations = { "org.opencontainers.image.title": "a.txt" };
  assert.deepEqual(parseDescriptor({ ...LAYER_A, annotations }, "l").annotations, annotations);
  for (const bad of [{ n: 1 }, { n: null }, ["a"], "a", null]) {
    assertInvalid(
      image({ layers: [{ ...LAYER_A, annotations: bad }] }),
      OCI_MANIFEST,
      /^layers\[0\]: annotations must map strings to strings$/,
    );
  }
});

Deno.test("parseDescriptor() accepts URLs in urls and rejects anything else", () => {
  const urls = ["https://example.com/a.tar", "http://mirror.example/b"];
  assert.deepEqual(parseDescriptor({ ...LAYER_A, urls }, "l").urls, urls);
  assertInvalid(
    image({ layers: [{ ...LAYER_A, urls: "https://example.com" }] }),
    OCI_MANIFEST,
    /^layers\[0\]: urls must be an array of strings$/,
  );
  assertInvalid(
    image({ layers: [{ ...LAYER_A, urls: [1] }] }),
    OCI_MANIFEST,
    /^layers\[0\]: urls must be an array of strings$/,
  );
  assertInvalid(
    image({ layers: [{ ...LAYER_A, urls: ["not a url"] }] }),
    OCI_MANIFEST,
    /^layers\[0\]: "not a url" is not a URL$/,
  );
});

Deno.test("parseDescriptor() accepts embedded data that matches digest and size", () => {
  const bytes = new TextEncoder().encode("{}");
  const descriptor = { mediaType: OCI_EMPTY, digest: sha256(bytes), size: 2, data: btoa("{}") };
  assert.equal(
    descriptor.digest,
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
  );
  const parsed = parseManifest(
    encode(image({ config: descriptor, artifactType: "application/x.a" })),
    OCI_MANIFEST,
  );
  assert.deepEqual(parsed.blobs[0], descriptor.digest);
  const sha512 = `sha512:${createHash("sha512").update(bytes).digest("hex")}`;
  parseDescriptor({ ...descriptor, digest: sha512 }, "config");
});

Deno.test("parseDescriptor() rejects embedded data that does not match", () => {
  const base = { mediaType: OCI_EMPTY, digest: sha256("{}"), size: 2 };
  assertInvalid(
    image({ config: { ...base, data: btoa("[]") } }),
    OCI_MANIFEST,
    /^config: embedded data does not match its digest and size$/,
  );
  assertInvalid(
    image({ config: { ...base, size: 3, data: btoa("{}") } }),
    OCI_MANIFEST,
    /^config: embedded data does not match/,
  );
  assertInvalid(
    image({ config: { ...base, data: "!!!not base64!!!" } }),
    OCI_MANIFEST,
    /^config: data is not valid base64$/,
  );
  assertInvalid(
    image({ config: { ...base, data: 42 } }),
    OCI_MANIFEST,
    /^config: data must be base64 text$/,
  );
});

// ---- manifest annotations and subject --------------------------------------

Deno.test("parseManifest() returns the manifest's annotations", () => {
  const annotations = { "org.opencontainers.image.created": "2024-01-01T00:00:00Z" };
  assert.deepEqual(
    parseManifest(encode(image({ annotations })), OCI_MANIFEST).annotations,
    annotations,
  );
  assert.deepEqual(
    parseManifest(encode(index({ annotations })), OCI_INDEX).annotations,
    annotations,
  );
  assert.equal(parseManifest(encode(image()), OCI_MANIFEST).annotations, undefined);
});

Deno.test("parseManifest() rejects annotations that are not a string map", () => {
  assertInvalid(
    image({ annotations: { a: 1 } }),
    OCI_MANIFEST,
    /^manifest: annotations must map strings to strings$/,
  );
  assertInvalid(index({ annotations: [] }), OCI_INDEX, /^manifest: annotations must map/);
});

Deno.test("parseManifest() returns the subject digest of an image and of an index", () => {
  assert.equal(
    parseManifest(encode(image({ subject: SUBJECT })), OCI_MANIFEST).subject,
    SUBJECT.digest,
  );
  assert.equal(
    parseManifest(encode(index({ subject: SUBJECT })), OCI_INDEX).subject,
    SUBJECT.digest,
  );
  assert.equal(parseManifest(encode(image()), OCI_MANIFEST).subject, undefined);
});

Deno.test("parseManifest() rejects a subject that is not a valid descriptor", () => {
  assertInvalid(image({ subject: "sha256:x" }), OCI_MANIFEST, /^subject must be a descriptor/);
  assertInvalid(image({ subject: null }), OCI_MANIFEST, /^subject must be a descriptor/);
  assertInvalid(
    image({ subject: { ...SUBJECT, digest: "not a digest" } }),
    OCI_MANIFEST,
    /^subject: Cannot parse digest "not a digest"$/,
  );
  assertInvalid(
    image({ subject: { ...SUBJECT, digest: "sha256:short" } }),
    OCI_MANIFEST,
    /^subject: Invalid digest "sha256:short"/,
  );
  assertInvalid(
    index({ subject: { ...SUBJECT, size: -5 } }),
    OCI_INDEX,
    /^subject: size must be/,
  );
});

// ---- artifactType (A8) ------------------------------------------------------

Deno.test("parseManifest() takes an image's own artifactType first", () => {
  const parsed = parseManifest(
    encode(image({ artifactType: "application/vnd.example.sbom" })),
    OCI_MANIFEST,
  );
  assert.equal(parsed.artifactType, "application/vnd.example.sbom");
});

Deno.test("parseManifest() falls back to config.mediaType for an image", () => {
  assert.equal(parseManifest(encode(image()), OCI_MANIFEST).artifactType, CONFIG_TYPE);
  const withEmpty = image({
    config: { mediaType: OCI_EMPTY, digest: sha256("{}"), size: 2 },
    artifactType: "application/vnd.example.signature",
  });
  assert.equal(
    parseManifest(encode(withEmpty), OCI_MANIFEST).artifactType,
    "application/vnd.example.signature",
  );
});

Deno.test("parseManifest() gives an index its own artifactType, else none", () => {
  assert.equal(parseManifest(encode(index()), OCI_INDEX).artifactType, undefined);
  assert.equal(
    parseManifest(encode(index({ artifactType: "application/x.bundle" })), OCI_INDEX)
      .artifactType,
    "application/x.bundle",
  );
});

Deno.test("parseManifest() rejects a malformed artifactType", () => {
  for (const artifactType of ["", "sbom", 5, "a/b c"]) {
    assertInvalid(image({ artifactType }), OCI_MANIFEST, /^artifactType: mediaType must be/);
    assertInvalid(index({ artifactType }), OCI_INDEX, /^artifactType: mediaType must be/);
  }
});

Deno.test("parseManifest() accepts an unknown artifactType", () => {
  const parsed = parseManifest(
    encode(image({ artifactType: "application/vnd.never.heard.of+json" })),
    OCI_MANIFEST,
  );
  assert.equal(parsed.artifactType, "application/vnd.never.heard.of+json");
});

Deno.test("parseManifest() refuses a null artifactType on an image, as on an index", () => {
  for (
    const [body, type] of [[image({ artifactType: null }), OCI_MANIFEST], [
      index({ artifactType: null }),
      OCI_INDEX,
    ]] as const
  ) {
    assert.throws(
      () => parseManifest(encode(body), type),
      (e: unknown) => e instanceof OciError && e.code === "MANIFEST_INVALID",
    );
  }
});

Deno.test("parseManifest() refuses a body that starts with a byte-order mark", () => {
  const bytes = new Uint8Array([0xef, 0xbb, 0xbf, ...encode(image())]);
  assert.throws(
    () => parseManifest(bytes, OCI_MANIFEST),
    (e: unknown) => e instanceof OciError && e.code === "MANIFEST_INVALID",
  );
});
