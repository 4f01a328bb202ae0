/**
 * Black-box tests of the referrers API (A8, end-12a/12b) and of `subject` at
 * manifest PUT (A6, A12).
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  assertError,
  pushBlob,
  pushImage,
  sha256,
  sha512,
  startRegistry,
  type TestRegistry,
} from "./_registry.ts";
import { OCI_EMPTY, OCI_INDEX, OCI_MANIFEST } from "../src/oci/media_type.ts";

const SBOM = "application/vnd.example.sbom.v1+json";
const SIG = "application/vnd.example.signature.v1";

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

interface ReferrersIndex {
  schemaVersion: number;
  mediaType: string;
  manifests: Descriptor[];
}

const encoder = new TextEncoder();

/** PUTs a manifest and asserts 201. */
async function put(
  reg: TestRegistry,
  name: string,
  reference: string,
  body: string,
  contentType = OCI_MANIFEST,
): Promise<Response> {
  const res = await reg.fetch(`/v2/${name}/manifests/${reference}`, {
    method: "PUT",
    headers: { "Content-Type": contentType },
    body,
  });
  const text = await res.text();
  assert.equal(res.status, 201, `PUT ${name}:${reference}: ${text}`);
  return res;
}

/**
 * Pushes an artifact manifest referring to `subject`; returns its descriptor
 * as the referrers API should list it.
 */
async function pushReferrer(
  reg: TestRegistry,
  name: string,
  subject: { digest: string; size: number; mediaType?: string },
  options: {
    artifactType?: string;
    configMediaType?: string;
    annotations?: Record<string, string>;
    seed?: number;
    tag?: string;
  } = {},
): Promise<Descriptor> {
  const empty = await pushBlob(reg, name, "{}");
  const layerBytes = `layer ${options.seed ?? 0} for ${subject.digest}`;
  const layer = await pushBlob(reg, name, layerBytes);
  const manifest: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: options.configMediaType ?? OCI_EMPTY, digest: empty, size: 2 },
    layers: [{ mediaType: "application/octet-stream", digest: layer, size: layerBytes.length }],
    subject: { mediaType: subject.mediaType ?? OCI_MANIFEST, ...subject },
  };
  if (options.artifactType) manifest.artifactType = options.artifactType;
  if (options.annotations) manifest.annotations = options.annotations;
  const body = JSON.stringify(manifest);
  const digest = sha256(body);
  const res = await put(reg, name, options.tag ?? digest, body);
  assert.equal(res.headers.get("OCI-Subject"), subject.digest);
  const descriptor: Descriptor = {
    mediaType: OCI_MANIFEST,
    digest,
    size: encoder.encode(body).length,
  };
  const artifactType = options.artifactType ?? options.configMediaType ?? OCI_EMPTY;
  descriptor.artifactType = artifactType;
  if (options.annotations) descriptor.annotations = options.annotations;
  return descriptor;
}

/** GETs a referrers list and checks its shape; returns the response and the index. */
async function referrers(
  reg: TestRegistry,
  path: string,
): Promise<{ res: Response; index: ReferrersIndex }> {
  const res = await reg.fetch(path);
  const text = await res.text();
  assert.equal(res.status, 200, `${path}: ${text}`);
  assert.equal(res.headers.get("Content-Type"), OCI_INDEX);
  const index = JSON.parse(text) as ReferrersIndex;
  assert.equal(index.schemaVersion, 2);
  assert.equal(index.mediaType, OCI_INDEX);
  assert.ok(Array.isArray(index.manifests), "manifests is an array");
  return { res, index };
}

function byDigest(a: Descriptor, b: Descriptor): number {
  return a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0;
}

/** A pushed image to refer to. */
async function subjectImage(reg: TestRegistry, name: string, seed = 1) {
  const image = await pushImage(reg, name, `subject${seed}`, { seed });
  return { digest: image.digest, size: encoder.encode(image.body).length };
}

// ---- end-12a ---------------------------------------------------------------------

Deno.test("end-12a: referrers are an image index served as application/vnd.oci.image.index.v1+json", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  const ref = await pushReferrer(reg, "repo", subject, { artifactType: SBOM });
  const { res, index } = await referrers(reg, `/v2/repo/referrers/${subject.digest}`);
  assert.deepEqual(index, { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [ref] });
  assert.equal(res.headers.get("OCI-Filters-Applied"), null);
});

Deno.test("A8: each entry has the referrer's mediaType, digest and size", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  const ref = await pushReferrer(reg, "repo", subject, { artifactType: SBOM });
  const { index } = await referrers(reg, `/v2/repo/referrers/${subject.digest}`);
  const [entry] = index.manifests;
  assert.equal(entry!.mediaType, OCI_MANIFEST);
  assert.equal(entry!.digest, ref.digest);
  assert.equal(entry!.size, ref.size);
  const pulled = await reg.fetch(`/v2/repo/manifests/${entry!.digest}`);
  assert.equal((await pulled.arrayBuffer()).byteLength, entry!.size);
});

Deno.test("A8: artifactType is the referrer's own artifactType", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  await pushReferrer(reg, "repo", subject, {
    artifactType: SIG,
    configMediaType: "application/vnd.example.config+json",
  });
  const { index } = await referrers(reg, `/v2/repo/referrers/${subject.digest}`);
  assert.equal(index.manifests[0]!.artifactType, SIG);
});

Deno.test("A8: an image manifest without artifactType is listed with its config.mediaType", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  const configType = "application/vnd.example.legacy-artifact.config.v1+json";
  await pushReferrer(reg, "repo", subject, { configMediaType: configType });
  const { index } = await referrers(reg, `/v2/repo/referrers/${subject.digest}`);
  assert.equal(index.manifests[0]!.artifactType, configType);
});

Deno.test("A8: an index referrer uses its artifactType, and omits the field when it has none", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  const child = await subjectImage(reg, "repo", 2);
  const make = (extra: Record<string, unknown>) =>
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, ...child }],
      subject: { mediaType: OCI_MANIFEST, ...subject },
      ...extra,
    });
  const typed = make({ artifactType: SBOM });
  const untyped = make({ annotations: { "org.example.kind": "untyped" } });
  for (const body of [typed, untyped]) {
    const res = await put(reg, "repo", sha256(body), body, OCI_INDEX);
    assert.equal(res.headers.get("OCI-Subject"), subject.digest);
  }
  const { index } = await referrers(reg, `/v2/repo/referrers/${subject.digest}`);
  const expected: Descriptor[] = [
    {
      mediaType: OCI_INDEX,
      digest: sha256(typed),
      size: encoder.encode(typed).length,
      artifactType: SBOM,
    },
    {
      mediaType: OCI_INDEX,
      digest: sha256(untyped),
      size: encoder.encode(untyped).length,
      annotations: { "org.example.kind": "untyped" },
    },
  ];
  assert.deepEqual([...index.manifests].sort(byDigest), expected.sort(byDigest));
  const bare = index.manifests.find((d) => d.digest === sha256(untyped))!;
  assert.ok(!("artifactType" in bare), "an index without artifactType has none in its descriptor");
});

Deno.test("A8: the referrer's annotations are copied into its descriptor", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  const annotations = {
    "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
    "org.example.note": 'ünïcödé, "quotes" and spaces',
  };
  await pushReferrer(reg, "repo", subject, { artifactType: SBOM, annotations });
  await pushReferrer(reg, "repo", subject, { artifactType: SIG, seed: 2 });
  const { index } = await referrers(reg, `/v2/repo/referrers/${subject.digest}`);
  const sbom = index.manifests.find((d) => d.artifactType === SBOM)!;
  const sig = index.manifests.find((d) => d.artifactType === SIG)!;
  assert.deepEqual(sbom.annotations, annotations);
  assert.ok(!("annotations" in sig), "no annotations, no field");
});

Deno.test("A8: every referrer of the subject is listed, and only those", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  const other = await subjectImage(reg, "repo", 2);
  const refs = [
    await pushReferrer(reg, "repo", subject, { artifactType: SBOM, seed: 1 }),
    await pushReferrer(reg, "repo", subject, { artifactType: SIG, seed: 2 }),
    await pushReferrer(reg, "repo", subject, { artifactType: SBOM, seed: 3, tag: "sbom-tagged" }),
  ];
  const unrelated = await pushReferrer(reg, "repo", other, { artifactType: SBOM, seed: 4 });
  const { index } = await referrers(reg, `/v2/repo/referrers/${subject.digest}`);
  assert.deepEqual([...index.manifests].sort(byDigest), refs.sort(byDigest));
  const { index: others } = await referrers(reg, `/v2/repo/referrers/${other.digest}`);
  assert.deepEqual(others.manifests, [unrelated]);
  // The subject's own listing does not include the subject, and a referrer has no referrers.
  const { index: none } = await referrers(reg, `/v2/repo/referrers/${refs[0]!.digest}`);
  assert.deepEqual(none.manifests, []);
});

Deno.test("A8: re-pushing a referrer lists it once", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  const first = await pushReferrer(reg, "repo", subject, { artifactType: SBOM });
  const again = await pushReferrer(reg, "repo", subject, { artifactType: SBOM, tag: "again" });
  assert.deepEqual(first, again);
  const { index } = await referrers(reg, `/v2/repo/referrers/${subject.digest}`);
  assert.deepEqual(index.manifests, [first]);
});

Deno.test("A6/A8: a referrer pushed before its subject is accepted and listed", async () => {
  await using reg = await startRegistry();
  const missing = { digest: sha256("a subject pushed later"), size: 22 };
  const ref = await pushReferrer(reg, "repo", missing, { artifactType: SIG });
  const { index } = await referrers(reg, `/v2/repo/referrers/${missing.digest}`);
  assert.deepEqual(index.manifests, [ref]);
  await assertError(
    await reg.fetch(`/v2/repo/manifests/${missing.digest}`),
    404,
    "MANIFEST_UNKNOWN",
  );
});

Deno.test("A8: a sha512 subject digest works", async () => {
  await using reg = await startRegistry();
  const subject = { digest: sha512("subject by sha512"), size: 17 };
  const ref = await pushReferrer(reg, "repo", subject, { artifactType: SBOM });
  const { index } = await referrers(reg, `/v2/repo/referrers/${subject.digest}`);
  assert.deepEqual(index.manifests, [ref]);
});

Deno.test('A8: an unknown subject gets 200 with "manifests": []', async () => {
  await using reg = await startRegistry();
  await subjectImage(reg, "repo");
  const digest = sha256("nothing refers to this");
  const res = await reg.fetch(`/v2/repo/referrers/${digest}`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("Content-Type"), OCI_INDEX);
  const text = await res.text();
  assert.match(text, /"manifests":\s*\[\]/);
  assert.deepEqual(JSON.parse(text), { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
});

Deno.test("A8: an unknown repository gets 200 with an empty index", async () => {
  await using reg = await startRegistry();
  const { index } = await referrers(reg, `/v2/nothere/referrers/${sha256("x")}`);
  assert.deepEqual(index.manifests, []);
});

Deno.test("A8: a syntactically invalid digest gets 400", async (t) => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  for (
    const digest of [
      "sha256:totallywrong",
      subject.digest.toUpperCase(),
      subject.digest.slice(0, -1),
      "latest",
      `md5:${"a".repeat(32)}`,
    ]
  ) {
    await t.step(digest, async () => {
      await assertError(await reg.fetch(`/v2/repo/referrers/${digest}`), 400, "DIGEST_INVALID");
    });
  }
});

Deno.test("A8: referrers in another repository are not listed", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "one");
  await pushImage(reg, "two", "subject1", { seed: 1 }); // same subject digest in "two"
  const ref = await pushReferrer(reg, "one", subject, { artifactType: SBOM });
  await pushReferrer(reg, "one/nested", subject, { artifactType: SIG });
  assert.deepEqual((await referrers(reg, `/v2/one/referrers/${subject.digest}`)).index.manifests, [
    ref,
  ]);
  assert.deepEqual(
    (await referrers(reg, `/v2/two/referrers/${subject.digest}`)).index.manifests,
    [],
  );
});

// ---- end-12b: artifactType filter ------------------------------------------------

Deno.test("end-12b: ?artifactType= lists only that type and sends OCI-Filters-Applied: artifactType", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  const sboms = [
    await pushReferrer(reg, "repo", subject, { artifactType: SBOM, seed: 1 }),
    await pushReferrer(reg, "repo", subject, { artifactType: SBOM, seed: 2 }),
  ];
  await pushReferrer(reg, "repo", subject, { artifactType: SIG, seed: 3 });
  const path = `/v2/repo/referrers/${subject.digest}?artifactType=${encodeURIComponent(SBOM)}`;
  const { res, index } = await referrers(reg, path);
  assert.equal(res.headers.get("OCI-Filters-Applied"), "artifactType");
  assert.deepEqual([...index.manifests].sort(byDigest), sboms.sort(byDigest));
});

Deno.test("end-12b: a filter matching nothing gives an empty list, still with OCI-Filters-Applied", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  await pushReferrer(reg, "repo", subject, { artifactType: SBOM });
  const path = `/v2/repo/referrers/${subject.digest}?artifactType=application/vnd.example.none`;
  const { res, index } = await referrers(reg, path);
  assert.equal(res.headers.get("OCI-Filters-Applied"), "artifactType");
  assert.deepEqual(index.manifests, []);
});

Deno.test("end-12b: the filter matches a type exactly, not by prefix", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  await pushReferrer(reg, "repo", subject, { artifactType: `${SBOM}.extended` });
  const path = `/v2/repo/referrers/${subject.digest}?artifactType=${encodeURIComponent(SBOM)}`;
  const { index } = await referrers(reg, path);
  assert.deepEqual(index.manifests, []);
});

Deno.test("end-12b: the filter also matches an artifactType taken from config.mediaType", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  const configType = "application/vnd.example.cfg+json";
  const ref = await pushReferrer(reg, "repo", subject, { configMediaType: configType });
  await pushReferrer(reg, "repo", subject, { artifactType: SIG, seed: 2 });
  const path = `/v2/repo/referrers/${subject.digest}?artifactType=${
    encodeURIComponent(configType)
  }`;
  assert.deepEqual((await referrers(reg, path)).index.manifests, [ref]);
});

Deno.test("A8: an unfiltered result has no OCI-Filters-Applied header", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  await pushReferrer(reg, "repo", subject, { artifactType: SBOM });
  const { res } = await referrers(reg, `/v2/repo/referrers/${subject.digest}`);
  assert.equal(res.headers.get("OCI-Filters-Applied"), null);
});

// ---- paging -------------------------------------------------------------------------

/** The target of `Link: <url>; rel="next"`, or null. */
function nextLink(res: Response): string | null {
  const link = res.headers.get("Link");
  if (link === null) return null;
  const match = /^<([^>]+)>;\s*rel="next"$/.exec(link);
  assert.ok(match, `Link "${link}" is not <url>; rel="next"`);
  return match[1]!;
}

async function allPages(reg: TestRegistry, path: string): Promise<Descriptor[][]> {
  const pages: Descriptor[][] = [];
  let next: string | null = path;
  while (next !== null) {
    assert.ok(pages.length < 50, "Link never ends");
    const { res, index } = await referrers(reg, new URL(next, reg.url).href);
    pages.push(index.manifests);
    next = nextLink(res);
  }
  return pages;
}

Deno.test('A8: more referrers than a page are paged with Link rel="next", each listed once', async () => {
  await using reg = await startRegistry({ tagsPageMax: 3 });
  const subject = await subjectImage(reg, "repo");
  const refs: Descriptor[] = [];
  for (let i = 0; i < 8; i++) {
    const artifactType = i % 2 ? SBOM : SIG;
    refs.push(await pushReferrer(reg, "repo", subject, { artifactType, seed: i }));
  }
  const first = await referrers(reg, `/v2/repo/referrers/${subject.digest}`);
  assert.equal(first.index.manifests.length, 3);
  assert.ok(nextLink(first.res), "Link");
  const pages = await allPages(reg, `/v2/repo/referrers/${subject.digest}`);
  assert.deepEqual(pages.map((p) => p.length), [3, 3, 2]);
  assert.deepEqual(pages.flat().sort(byDigest), refs.sort(byDigest));
});

Deno.test("A8: paging a filtered list keeps the filter on every page", async () => {
  await using reg = await startRegistry({ tagsPageMax: 2 });
  const subject = await subjectImage(reg, "repo");
  const sboms: Descriptor[] = [];
  for (let i = 0; i < 5; i++) {
    sboms.push(await pushReferrer(reg, "repo", subject, { artifactType: SBOM, seed: i }));
    await pushReferrer(reg, "repo", subject, { artifactType: SIG, seed: 100 + i });
  }
  const path = `/v2/repo/referrers/${subject.digest}?artifactType=${encodeURIComponent(SBOM)}`;
  const pages = await allPages(reg, path);
  assert.deepEqual(pages.map((p) => p.length), [2, 2, 1]);
  assert.deepEqual(pages.flat().sort(byDigest), sboms.sort(byDigest));
});

// ---- deletes ----------------------------------------------------------------------

Deno.test("A8/A9: deleting a referrer by digest removes it from the list", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  const keep = await pushReferrer(reg, "repo", subject, { artifactType: SBOM, seed: 1 });
  const gone = await pushReferrer(reg, "repo", subject, { artifactType: SIG, seed: 2, tag: "sig" });
  const res = await reg.fetch(`/v2/repo/manifests/${gone.digest}`, { method: "DELETE" });
  await res.body?.cancel();
  assert.equal(res.status, 202);
  assert.deepEqual((await referrers(reg, `/v2/repo/referrers/${subject.digest}`)).index.manifests, [
    keep,
  ]);
  const filtered = `/v2/repo/referrers/${subject.digest}?artifactType=${encodeURIComponent(SIG)}`;
  assert.deepEqual((await referrers(reg, filtered)).index.manifests, []);
});

Deno.test("A8/A9: deleting only a referrer's tag keeps it listed", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  const ref = await pushReferrer(reg, "repo", subject, { artifactType: SBOM, tag: "sbom" });
  const res = await reg.fetch("/v2/repo/manifests/sbom", { method: "DELETE" });
  await res.body?.cancel();
  assert.equal(res.status, 202);
  assert.deepEqual((await referrers(reg, `/v2/repo/referrers/${subject.digest}`)).index.manifests, [
    ref,
  ]);
});

Deno.test("A8: ?n= sets the page size; n=0 gives an empty list and no Link; a bad n gets 400", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  const refs: Descriptor[] = [];
  for (let i = 0; i < 3; i++) {
    refs.push(await pushReferrer(reg, "repo", subject, { artifactType: SBOM, seed: i }));
  }
  const zero = await referrers(reg, `/v2/repo/referrers/${subject.digest}?n=0`);
  assert.deepEqual(zero.index.manifests, []);
  assert.equal(nextLink(zero.res), null);
  const pages = await allPages(reg, `/v2/repo/referrers/${subject.digest}?n=1`);
  assert.deepEqual(pages.map((p) => p.length), [1, 1, 1]);
  assert.deepEqual(pages.flat().sort(byDigest), refs.sort(byDigest));
  for (const n of ["-1", "abc", "1.5"]) {
    const res = await reg.fetch(`/v2/repo/referrers/${subject.digest}?n=${n}`);
    await assertError(res, 400, "PAGINATION_NUMBER_INVALID");
  }
});

Deno.test("A8: paging works across index referrers that have no artifactType", async () => {
  await using reg = await startRegistry({ tagsPageMax: 2 });
  const subject = await subjectImage(reg, "repo");
  const child = await subjectImage(reg, "repo", 2);
  const expected: Descriptor[] = [];
  for (let i = 0; i < 3; i++) {
    const body = JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, ...child }],
      subject: { mediaType: OCI_MANIFEST, ...subject },
      annotations: { i: String(i) },
    });
    await put(reg, "repo", `idx${i}`, body, OCI_INDEX);
    expected.push({
      mediaType: OCI_INDEX,
      digest: sha256(body),
      size: encoder.encode(body).length,
      annotations: { i: String(i) },
    });
  }
  expected.push(await pushReferrer(reg, "repo", subject, { artifactType: SBOM }));
  const pages = await allPages(reg, `/v2/repo/referrers/${subject.digest}`);
  assert.deepEqual(pages.map((p) => p.length), [2, 2]);
  assert.deepEqual(pages.flat().sort(byDigest), expected.sort(byDigest));
});

Deno.test("A8: a filtered request with a cursor of another artifactType answers 200, not 500", async () => {
  await using reg = await startRegistry();
  const subject = await subjectImage(reg, "repo");
  const sbom = await pushReferrer(reg, "repo", subject, { artifactType: SBOM });
  const filter = `artifactType=${encodeURIComponent(SBOM)}`;
  const base = `/v2/repo/referrers/${subject.digest}?${filter}`;
  const before = encodeURIComponent(`application/aaa@${sha256("x")}`);
  const after = encodeURIComponent(`application/zzz@${sha256("x")}`);
  assert.deepEqual((await referrers(reg, `${base}&last=${before}`)).index.manifests, [sbom]);
  assert.deepEqual((await referrers(reg, `${base}&last=${after}`)).index.manifests, []);
  assert.deepEqual((await referrers(reg, `${base}&last=%40`)).index.manifests, [sbom]);
});
