/**
 * Seeded fuzzing: mutated manifests PUT to a repository where
 * the referenced blobs exist, and request paths, methods, query strings,
 * headers and bodies built from a grammar of registry-like segments and
 * hostile bytes. Whatever arrives, Berth answers below 500 (also to clients
 * that cannot read the answer), logs no unhandled error, never crashes, and
 * keeps serving.
 *
 * Every case draws from its own PRNG seeded with (seed, case number), so a
 * failure names the seed and the case and reproduces alone:
 *
 *     BERTH_FUZZ_SEED=<seed> deno test -A --unstable-kv tests/fuzz_test.ts
 *
 * `BERTH_FUZZ_CASES` sets the number of cases per test (default 2000). The
 * requests run 16 at a time, so the statuses of cases that race (a DELETE and
 * a GET, say) may differ between runs; the inputs never do.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { ERROR_STATUS } from "../src/oci/errors.ts";
import { concat, encoder, ObservedRegistry, rawExchange } from "./_observed.ts";
import { pushBlob, pushImage } from "./_registry.ts";
import {
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST as DOCKER_LIST,
  OCI_EMPTY,
  OCI_INDEX,
  OCI_MANIFEST,
} from "../src/oci/media_type.ts";

const SEED = envInt("BERTH_FUZZ_SEED", 20261122);
const CASES = envInt("BERTH_FUZZ_CASES", 2000);
const CONCURRENCY = 16;
const MAX_REPORTED = 10;

function envInt(name: string, fallback: number): number {
  const raw = Deno.env.get(name);
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value)) throw new Error(`${name} must be an integer, got "${raw}"`);
  return value;
}

// ---------------------------------------------------------------------------
// A seeded PRNG (mulberry32), one stream per case
// ---------------------------------------------------------------------------

class Rng {
  #state: number;

  constructor(seed: number, index: number) {
    let h = Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35);
    h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
    this.#state = (h ^ (h >>> 15)) >>> 0;
  }

  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  /** Picks by weight from `[weight, value]` pairs. */
  weighted<T>(items: readonly (readonly [number, T])[]): T {
    let roll = this.next() * items.reduce((sum, [w]) => sum + w, 0);
    for (const [weight, value] of items) {
      roll -= weight;
      if (roll < 0) return value;
    }
    return items[items.length - 1]![1];
  }

  bytes(n: number): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }

  hex(n: number): string {
    let out = "";
    for (let i = 0; i < n; i++) out += "0123456789abcdef"[this.int(16)];
    return out;
  }
}

// ---------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------

const MEDIA_TYPES = [
  OCI_MANIFEST,
  OCI_INDEX,
  DOCKER_MANIFEST,
  DOCKER_LIST,
  OCI_EMPTY,
  "application/vnd.docker.distribution.manifest.v1+prettyjws",
  "application/vnd.docker.distribution.manifest.v1+json",
  "application/vnd.oci.image.config.v1+json",
  "application/vnd.oci.image.layer.v1.tar+gzip",
  "application/json",
  "text/plain",
  "application/vnd.example.thing+type",
  "",
  "x",
  "a/b",
  "/",
  "a/",
  "*/*",
  OCI_MANIFEST.toUpperCase(),
  `${OCI_MANIFEST}; charset=utf-8`,
  `${OCI_MANIFEST}\u0000`,
  "ü/ö",
  `${"a".repeat(300)}/b`,
];

/** Pieces that have broken parsers, paths and stores somewhere. */
const HOSTILE = [
  "..",
  "../..",
  "%2e%2e",
  "%2E%2e/",
  "%2f",
  "%2F..%2F",
  "%00",
  "%ff",
  "%",
  "%zz",
  "%25",
  "\\",
  "//",
  ";",
  "?",
  "#",
  "%0d%0a",
  "~",
  "é",
  "🐳",
  "\u202e",
  "__proto__",
  "constructor",
  "sha256:",
  ":",
  "@",
  "*",
  "a".repeat(300),
  "-",
  "_",
  ".",
];

/** Bytes only a raw socket can send in a request line. */
const RAW_ONLY = ["\x00", "\xff", " ", "\t", "\x7f", "/../", "/./", "/%2e%2e/"];

const JUNK_KEYS = [
  "annotations",
  "subject",
  "artifactType",
  "urls",
  "data",
  "manifests",
  "layers",
  "config",
  "platform",
  "schemaVersion",
  "mediaType",
  "digest",
  "size",
  "__proto__",
  "",
];

const WEIRD_NUMBERS = [
  -1,
  -0,
  0,
  1.5,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  2 ** 53 + 2,
  2 ** 64,
  1e308,
  -1e308,
  Number.MIN_VALUE,
];
const WEIRD_NUMBER_TEXT = ["1e400", "-0", "01", "1.0", "0x10", "Infinity", "NaN", "-1", "1e-400"];
const HOSTILE_BYTES = [
  [0x00],
  [0xff],
  [0xc0, 0x80],
  [0xed, 0xa0, 0x80],
  [0xef, 0xbb, 0xbf],
  [0x22],
  [0x5c],
  [0x7b],
  [0x5b],
  [0x2c],
  [0x3a],
  [0x5c, 0x75, 0x64, 0x38, 0x30, 0x30],
];

function hostile(rng: Rng): string {
  return rng.pick(HOSTILE);
}

function junkValue(rng: Rng, depth = 0): unknown {
  const kind = rng.int(depth > 3 ? 6 : 9);
  switch (kind) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick(WEIRD_NUMBERS);
    case 3:
      return hostile(rng);
    case 4:
      return rng.pick(MEDIA_TYPES);
    case 5:
      return "x".repeat(rng.int(2000));
    case 6:
      return Array.from({ length: rng.int(5) }, () => junkValue(rng, depth + 1));
    case 7: {
      const out: Record<string, unknown> = {};
      for (let i = rng.int(5); i > 0; i--) {
        setOwn(out, rng.pick(JUNK_KEYS), junkValue(rng, depth + 1));
      }
      return out;
    }
    default:
      return nested(rng, 1 + rng.int(3000));
  }
}

/** Sets an own property, even `__proto__` (which JSON.stringify then sends as a key). */
function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

function nested(rng: Rng, depth: number): unknown {
  let value: unknown = rng.chance(0.5) ? "x" : 1;
  for (let i = 0; i < depth; i++) value = rng.chance(0.5) ? [value] : { a: value };
  return value;
}

// ---------------------------------------------------------------------------
// Running cases
// ---------------------------------------------------------------------------

/**
 * Runs `count` cases, `concurrency` at a time. A case that throws does not
 * stop the others (they would run on into the next test); the first error is
 * thrown once all are done.
 */
async function runCases(
  count: number,
  concurrency: number,
  run: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const errors: Error[] = [];
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const index = next++;
        try {
          await run(index);
        } catch (cause) {
          errors.push(
            new Error(`BERTH_FUZZ_SEED=${SEED} case ${index} threw: ${cause}`, { cause }),
          );
        }
      }
    }),
  );
  if (errors.length) throw errors[0];
}

/** What a case sent, for the failure report. */
function describe(
  index: number,
  request: { method: string; path: string; contentType?: string | null; body?: Uint8Array },
): string {
  const body = request.body
    ? ` body(${request.body.length} bytes, base64 of first 200)=${
      btoa(String.fromCharCode(...request.body.subarray(0, 200)))
    }`
    : "";
  return `BERTH_FUZZ_SEED=${SEED} case ${index}: ${request.method} ${
    JSON.stringify(request.path.slice(0, 300))
  } Content-Type=${JSON.stringify(request.contentType ?? null)}${body}`;
}

/** Checks an answer: no 5xx, and an error body (if JSON) names a known code. */
function checkAnswer(status: number | null, body: string): string | null {
  if (status !== null && status >= 500) return `answered ${status}: ${body.slice(0, 300)}`;
  if (status === null || status < 400 || !body.startsWith("{")) return null;
  try {
    const code = (JSON.parse(body) as { errors?: { code?: string }[] }).errors?.[0]?.code;
    if (code === undefined || !(code in ERROR_STATUS)) return `unknown error code in ${body}`;
  } catch {
    return `error body is not JSON: ${body.slice(0, 300)}`;
  }
  return null;
}

/** Ends a fuzz test: nothing above 499 even unseen, nothing unhandled, still serving. */
async function assertHealthy(reg: ObservedRegistry, failures: string[]): Promise<void> {
  await reg.idle();
  const base = await reg.fetch("/v2/");
  await base.body?.cancel();
  assert.equal(base.status, 200, "GET /v2/ after fuzzing");
  const fives = reg.seen.filter((s) => s.status >= 500);
  assert.deepEqual(
    failures.slice(0, MAX_REPORTED),
    [],
    `${failures.length} failing case(s); first ones above`,
  );
  assert.deepEqual(fives.slice(0, MAX_REPORTED), [], `Berth answered ${fives.length} 5xx`);
  assert.deepEqual(reg.unhandled.slice(0, MAX_REPORTED), [], "Berth logged unhandled errors");
}

function histogram(statuses: (number | null)[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const status of statuses) out[String(status)] = (out[String(status)] ?? 0) + 1;
  return out;
}

// ---------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------

interface ManifestFixture {
  bases: { doc: Record<string, unknown>; mediaType: string }[];
  digests: string[];
}

async function manifestFixture(reg: ObservedRegistry): Promise<ManifestFixture> {
  const test = reg.asTestRegistry();
  const image = await pushImage(test, "fuzz/app", "base", { seed: 3 });
  const empty = await pushBlob(test, "fuzz/app", "{}");
  const configSize = (JSON.parse(image.body) as { config: { size: number } }).config.size;
  const layerSize = (JSON.parse(image.body) as { layers: { size: number }[] }).layers[0]!.size;
  const imageDoc = JSON.parse(image.body) as Record<string, unknown>;
  const docker = {
    schemaVersion: 2,
    mediaType: DOCKER_MANIFEST,
    config: {
      mediaType: "application/vnd.docker.container.image.v1+json",
      digest: image.config,
      size: configSize,
    },
    layers: [{
      mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip",
      digest: image.layer,
      size: layerSize,
    }],
  };
  const index = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [{
      mediaType: OCI_MANIFEST,
      digest: image.digest,
      size: image.body.length,
      platform: { architecture: "amd64", os: "linux" },
    }],
    annotations: { "org.example": "index" },
  };
  const artifact = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType: "application/vnd.example.sbom",
    config: { mediaType: OCI_EMPTY, digest: empty, size: 2, data: "e30=" },
    layers: [],
    subject: { mediaType: OCI_MANIFEST, digest: image.digest, size: image.body.length },
    annotations: { "org.opencontainers.image.created": "2026-01-01T00:00:00Z" },
  };
  return {
    bases: [
      { doc: imageDoc, mediaType: OCI_MANIFEST },
      { doc: docker, mediaType: DOCKER_MANIFEST },
      { doc: index, mediaType: OCI_INDEX },
      { doc: artifact, mediaType: OCI_MANIFEST },
    ],
    digests: [image.digest, image.config, image.layer, empty],
  };
}

type Slot = { parent: Record<string, unknown> | unknown[]; key: string | number };

/** Every (parent, key) in `doc`, down to a modest depth. */
function slots(doc: unknown, out: Slot[] = [], depth = 0): Slot[] {
  if (depth > 6 || typeof doc !== "object" || doc === null) return out;
  const entries: [string | number, unknown][] = Array.isArray(doc)
    ? doc.map((v, i) => [i, v])
    : Object.entries(doc);
  for (const [key, value] of entries) {
    out.push({ parent: doc as Record<string, unknown>, key });
    slots(value, out, depth + 1);
  }
  return out;
}

function objects(doc: unknown, out: Record<string, unknown>[] = []): Record<string, unknown>[] {
  if (typeof doc !== "object" || doc === null) return out;
  if (!Array.isArray(doc)) out.push(doc as Record<string, unknown>);
  for (const value of Object.values(doc)) objects(value, out);
  return out;
}

function randomDigest(rng: Rng, known: string[]): string {
  return rng.weighted<() => string>([
    [4, () => rng.pick(known)],
    [2, () => `sha256:${rng.hex(64)}`],
    [1, () => `sha512:${rng.hex(128)}`],
    [1, () => rng.pick(known).toUpperCase()],
    [1, () => `sha256:${rng.hex(rng.int(70))}`],
    [1, () => `md5:${rng.hex(32)}`],
    [1, () => `sha256:${hostile(rng)}`],
  ])();
}

/** One structural mutation of a manifest document, in place. */
function mutateDoc(rng: Rng, doc: Record<string, unknown>, known: string[]): void {
  const all = slots(doc);
  const objs = objects(doc);
  const slot = all.length ? rng.pick(all) : null;
  const obj = rng.pick(objs);
  const set = (value: unknown) => {
    if (!slot) return;
    (slot.parent as Record<string | number, unknown>)[slot.key] = value;
  };
  switch (rng.int(11)) {
    case 0: // delete a field
      if (slot && Array.isArray(slot.parent)) slot.parent.splice(Number(slot.key), 1);
      else if (slot) delete (slot.parent as Record<string, unknown>)[slot.key];
      break;
    case 1: // swap a type
      set(junkValue(rng));
      break;
    case 2: // a huge or odd number
      if (rng.chance(0.5)) obj.size = rng.pick(WEIRD_NUMBERS);
      else set(rng.pick(WEIRD_NUMBERS));
      break;
    case 3: // nested junk
      set(nested(rng, 1 + rng.int(3000)));
      break;
    case 4: // a random media type
      obj[rng.chance(0.8) ? "mediaType" : "artifactType"] = rng.pick(MEDIA_TYPES);
      break;
    case 5: // a random digest
      obj.digest = randomDigest(rng, known);
      break;
    case 6: // an unknown or misplaced field
      setOwn(obj, rng.chance(0.7) ? rng.pick(JUNK_KEYS) : `x-${hostile(rng)}`, junkValue(rng));
      break;
    case 7: { // a long array
      const arrays = all.map((s) => (s.parent as Record<string | number, unknown>)[s.key])
        .filter((v): v is unknown[] => Array.isArray(v) && v.length > 0);
      if (arrays.length) {
        const array = rng.pick(arrays);
        // The same element again (not a clone: it may be nested thousands deep),
        // bounded, or repeated duplications would multiply past any string length.
        const size = JSON.stringify(array[0] ?? null)?.length ?? 4;
        for (let n = Math.min(rng.int(500), Math.floor(1e6 / size)); n > 0; n--) {
          array.push(array[0]);
        }
      }
      break;
    }
    case 8: { // big or many annotations
      const annotations: Record<string, unknown> = {};
      for (let n = rng.int(200); n > 0; n--) {
        setOwn(annotations, `${hostile(rng)}${n}`, rng.chance(0.9) ? "v".repeat(rng.int(1000)) : n);
      }
      obj.annotations = annotations;
      break;
    }
    case 9: // a subject, real or not
      doc.subject = {
        mediaType: rng.pick(MEDIA_TYPES),
        digest: randomDigest(rng, known),
        size: rng.pick([0, 1, 527, -1, 2 ** 60]),
      };
      break;
    default: // schemaVersion
      doc.schemaVersion = rng.pick([1, 2, 3, "2", 2.0, null, -2]);
  }
}

/** One byte-level mutation. */
function mutateBytes(rng: Rng, bytes: Uint8Array): Uint8Array {
  if (bytes.length === 0) return rng.bytes(rng.int(10));
  const at = rng.int(bytes.length);
  switch (rng.int(5)) {
    case 0: { // flip bits
      const out = bytes.slice();
      for (let n = 1 + rng.int(8); n > 0; n--) out[rng.int(out.length)]! ^= 1 << rng.int(8);
      return out;
    }
    case 1: // truncate
      return bytes.slice(0, at);
    case 2: // insert hostile bytes
      return concat(
        bytes.subarray(0, at),
        Uint8Array.from(rng.pick(HOSTILE_BYTES)),
        bytes.subarray(at),
      );
    case 3: { // an odd number literal
      const text = new TextDecoder().decode(bytes);
      const numbers = [...text.matchAll(/-?\d+/g)];
      if (!numbers.length) return bytes;
      const match = rng.pick(numbers);
      return encoder.encode(
        text.slice(0, match.index) + rng.pick(WEIRD_NUMBER_TEXT) +
          text.slice(match.index + match[0].length),
      );
    }
    default: { // duplicate a slice
      const end = at + rng.int(Math.min(200, bytes.length - at) + 1);
      return concat(bytes.subarray(0, end), bytes.subarray(at, end), bytes.subarray(end));
    }
  }
}

function digestOf(algorithm: "sha256" | "sha512", bytes: Uint8Array): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}`;
}

Deno.test(`fuzz: ${CASES} mutated manifests (seed ${SEED}) get 201 or a clean 4xx, never 5xx`, async () => {
  await using reg = await ObservedRegistry.start();
  const fixture = await manifestFixture(reg);
  const failures: string[] = [];
  const statuses: number[] = [];
  const accepted: { digest: string; bytes: Uint8Array }[] = [];

  await runCases(CASES, CONCURRENCY, async (index) => {
    const rng = new Rng(SEED, index);
    const base = rng.pick(fixture.bases);
    const doc = structuredClone(base.doc);
    for (let n = rng.int(4); n > 0; n--) mutateDoc(rng, doc, fixture.digests);
    let bytes: Uint8Array = encoder.encode(JSON.stringify(doc));
    if (rng.chance(0.4)) bytes = mutateBytes(rng, bytes);
    if (rng.chance(0.005)) bytes = concat(bytes, new Uint8Array(4 * 1024 * 1024).fill(0x20));
    const chosenType = rng.weighted<string | null>([
      [6, typeof doc.mediaType === "string" ? doc.mediaType : base.mediaType],
      [2, rng.pick(MEDIA_TYPES)],
      [1, null],
      [1, `${base.mediaType}; charset=utf-8`],
    ]);
    const contentType = chosenType === null ? null : byteString(chosenType);
    const algorithm = rng.chance(0.2) ? "sha512" as const : "sha256" as const;
    const reference = rng.weighted<string>([
      [9, `t${index}`],
      [4, digestOf(algorithm, bytes)],
      [2, `sha256:${rng.hex(64)}`],
      [2, encodeURIComponent(hostile(rng))],
      [
        2,
        `t${index}?${
          Array.from(
            { length: rng.int(13) },
            (_, i) => `tag=${i ? `q${index}-${i}` : encodeURIComponent(hostile(rng))}`,
          ).join("&")
        }`,
      ],
    ]);
    const path = `/v2/fuzz/app/manifests/${reference}`;
    const request = { method: "PUT", path, contentType, body: bytes };
    // A reference such as ".." is a dot segment: the URL no longer names a manifest.
    const pathname = new URL(reg.url + path).pathname;
    const routed = pathname.startsWith("/v2/fuzz/app/manifests/") &&
      pathname !== "/v2/fuzz/app/manifests/";
    const allowed = routed ? [201, 400, 413, 414] : [404, 405];
    let res: Response;
    try {
      res = await reg.fetch(path, {
        method: "PUT",
        headers: contentType === null ? {} : { "Content-Type": contentType },
        body: bytes as Uint8Array<ArrayBuffer>,
      });
    } catch (error) {
      failures.push(`${describe(index, request)}: fetch failed: ${error}`);
      return;
    }
    const body = await res.text();
    statuses.push(res.status);
    const problem = checkAnswer(res.status, body) ??
      (allowed.includes(res.status) ? null : `unexpected status ${res.status}: ${body}`);
    if (problem) failures.push(`${describe(index, request)}: ${problem}`);
    if (res.status !== 201) return;
    // Accepted: the digest is the hash of exactly these bytes, and they are JSON.
    const expected = digestOf(reference.startsWith("sha512:") ? "sha512" : "sha256", bytes);
    const returned = res.headers.get("Docker-Content-Digest");
    if (returned !== expected) {
      failures.push(`${describe(index, request)}: digest ${returned}, expected ${expected}`);
    }
    try {
      const parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
      if (parsed?.schemaVersion !== 2) throw new Error("schemaVersion is not 2");
    } catch (error) {
      failures.push(`${describe(index, request)}: accepted a manifest that is not valid: ${error}`);
    }
    accepted.push({ digest: expected, bytes });
  });

  // Pull back some of what was accepted: exactly the bytes that were pushed.
  for (const { digest, bytes } of accepted.slice(0, 50)) {
    const res = await reg.fetch(`/v2/fuzz/app/manifests/${digest}`);
    const pulled = new Uint8Array(await res.arrayBuffer());
    assert.equal(res.status, 200, `GET ${digest}`);
    assert.deepEqual(pulled, bytes, `GET ${digest} returns the pushed bytes`);
  }
  await assertHealthy(reg, failures);
  const counts = histogram(statuses);
  console.log(`fuzz manifests, seed ${SEED}: ${JSON.stringify(counts)}`);
  // The mutations must exercise both sides of validation, or the fuzzer is blind.
  assert.ok((counts["201"] ?? 0) >= CASES * 0.05, `too few accepted: ${JSON.stringify(counts)}`);
  assert.ok((counts["400"] ?? 0) >= CASES * 0.3, `too few refused: ${JSON.stringify(counts)}`);
});

// ---------------------------------------------------------------------------
// Request paths
// ---------------------------------------------------------------------------

interface PathFixture {
  digests: string[];
  uploadIds: string[];
  manifest: string;
}

async function pathFixture(reg: ObservedRegistry): Promise<PathFixture> {
  const test = reg.asTestRegistry();
  const image = await pushImage(test, "fuzz/app", "latest", { seed: 5 });
  const other = await pushImage(test, "other/repo", "v1", { seed: 6 });
  const uploadIds: string[] = [];
  for (const name of ["fuzz/app", "fuzz/app", "other/repo"]) {
    const res = await reg.fetch(`/v2/${name}/blobs/uploads/`, { method: "POST" });
    await res.body?.cancel();
    assert.equal(res.status, 202);
    uploadIds.push(res.headers.get("Location")!.split("/").pop()!);
  }
  return {
    digests: [image.digest, image.config, image.layer, other.digest, other.layer],
    uploadIds,
    manifest: image.body,
  };
}

function segment(rng: Rng): string {
  const alnum = "abcdefghijklmnopqrstuvwxyz0123456789";
  let out = "";
  for (let n = 1 + rng.int(8); n > 0; n--) out += alnum[rng.int(alnum.length)];
  return out;
}

function fuzzName(rng: Rng, raw: boolean): string {
  return rng.weighted<() => string>([
    [6, () => "fuzz/app"],
    [2, () => "other/repo"],
    [
      2,
      () =>
        Array.from({ length: 1 + rng.int(4) }, () => segment(rng)).join(
          rng.pick(["/", "/", ".", "_", "__", "-", "--"]),
        ),
    ],
    [1, () => "Fuzz/App"],
    [1, () => `fuzz/${"a".repeat(240 + rng.int(30))}`],
    [1, () => ""],
    [2, () => `fuzz/${hostile(rng)}`],
    [1, () => `fuzz${hostile(rng)}app`],
    [raw ? 2 : 0, () => `fuzz${rng.pick(RAW_ONLY)}app`],
  ])();
}

function fuzzTag(rng: Rng): string {
  return rng.weighted<() => string>([
    [4, () => "latest"],
    [2, () => "v1"],
    [2, () => segment(rng)],
    [1, () => "t".repeat(127 + rng.int(3))],
    [2, () => encodeURIComponent(hostile(rng))],
    [1, () => hostile(rng)],
  ])();
}

function fuzzUploadId(rng: Rng, known: string[]): string {
  return rng.weighted<() => string>([
    [5, () => rng.pick(known)],
    [2, () => crypto.randomUUID()],
    [1, () => rng.pick(known).toUpperCase()],
    [1, () => `put-${rng.pick(known)}`],
    [2, () => hostile(rng)],
  ])();
}

function fuzzQuery(rng: Rng, f: PathFixture): string {
  if (rng.chance(0.5)) return "";
  const keys = [
    "n",
    "last",
    "digest",
    "mount",
    "from",
    "tag",
    "artifactType",
    "digest-algorithm",
    "ns",
    segment(rng),
  ];
  const value = () =>
    rng.weighted<() => string>([
      [3, () => String(rng.pick([-1, 0, 1, 2, 5, 1000, 1001, 99999999999]))],
      [2, () => rng.pick(["1e3", "abc", "", "0x10", "+5", " 1", "1.5"])],
      [3, () => randomDigest(rng, f.digests)],
      [2, () => rng.pick(["fuzz/app", "other/repo", "Nope", "sha256", "sha512", "md5", "a/b"])],
      [2, () => encodeURIComponent(hostile(rng))],
      [1, () => hostile(rng)],
    ])();
  const parts: string[] = [];
  for (let n = 1 + rng.int(4); n > 0; n--) {
    const key = rng.pick(keys);
    parts.push(`${key}=${value()}`);
    if (rng.chance(0.1)) parts.push(`${key}=${value()}`);
  }
  return `?${parts.join("&")}`;
}

function fuzzPath(rng: Rng, f: PathFixture, raw: boolean): string {
  if (rng.chance(0.05)) {
    return rng.pick([
      "/",
      "/v2",
      "/v2/",
      "/healthz",
      "/readyz",
      "/v2/_catalog",
      "/v3/",
      "/v2/_oci/ext/discover",
      "//v2/",
      "/v2/../v2/",
    ]);
  }
  const name = fuzzName(rng, raw);
  const endpoint = rng.weighted<() => string>([
    [4, () => `manifests/${rng.chance(0.6) ? fuzzTag(rng) : randomDigest(rng, f.digests)}`],
    [3, () => `blobs/${randomDigest(rng, f.digests)}`],
    [2, () => rng.pick(["blobs/uploads/", "blobs/uploads"])],
    [3, () => `blobs/uploads/${fuzzUploadId(rng, f.uploadIds)}`],
    [2, () => "tags/list"],
    [2, () => `referrers/${randomDigest(rng, f.digests)}`],
    [1, () => `${segment(rng)}/${segment(rng)}`],
  ])();
  let path = `/v2/${name}/${endpoint}`;
  if (rng.chance(0.1)) {
    const slashes = [...path.matchAll(/\//g)].map((m) => m.index);
    const at = rng.pick(slashes);
    path = path.slice(0, at + 1) + (raw && rng.chance(0.5) ? rng.pick(RAW_ONLY) : hostile(rng)) +
      path.slice(at + 1);
  }
  return path + fuzzQuery(rng, f);
}

/** A header value as bytes can carry it: no CR, LF or NUL, nothing above U+00FF. */
function byteString(value: string): string {
  return Array.from(value, (c) => {
    const code = c.charCodeAt(0);
    return code === 0 || c === "\r" || c === "\n" || code > 0xff ? "?" : c;
  }).join("");
}

function fuzzHeaders(rng: Rng): Record<string, string> {
  const headers: Record<string, string> = {};
  if (rng.chance(0.5)) headers["Content-Type"] = rng.pick(MEDIA_TYPES);
  if (rng.chance(0.2)) {
    headers["Content-Range"] = rng.pick([
      `0-${rng.int(1000)}`,
      `${rng.int(2000)}-${rng.int(2000)}`,
      "bytes 0-9/10",
      "bytes=0-9",
      "-1-5",
      "99999999999999999999-1",
      "0-",
      "abc",
      hostile(rng),
    ]);
  }
  if (rng.chance(0.1)) {
    headers.Range = rng.pick([
      "bytes=0-0",
      "bytes=-1",
      "bytes=5-1",
      "bytes=0-",
      "bytes=99999999999-",
      "items=0-1",
      "bytes=0-1,3-4",
      hostile(rng),
    ]);
  }
  if (rng.chance(0.1)) headers.Accept = rng.pick(MEDIA_TYPES);
  for (const key of Object.keys(headers)) headers[key] = byteString(headers[key]!);
  return headers;
}

function fuzzBody(rng: Rng, f: PathFixture): Uint8Array<ArrayBuffer> | null {
  return rng.weighted<() => Uint8Array<ArrayBuffer> | null>([
    [3, () => null],
    [4, () => rng.bytes(rng.int(600))],
    [2, () => encoder.encode(f.manifest)],
    [1, () => encoder.encode(rng.pick(["{}", "[]", "", "null"]))],
  ])();
}

/** The request as raw HTTP/1.1; the path's characters are written as single bytes. */
function rawRequest(
  method: string,
  path: string,
  headers: Record<string, string>,
  body: Uint8Array | null,
): Uint8Array {
  const head = [`${method} ${path} HTTP/1.1`, "Host: 127.0.0.1", "Connection: close"];
  for (const [key, value] of Object.entries(headers)) head.push(`${key}: ${value}`);
  head.push(`Content-Length: ${body?.length ?? 0}`);
  const text = head.join("\r\n") + "\r\n\r\n";
  return concat(Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff), body ?? new Uint8Array());
}

Deno.test(`fuzz: ${CASES} request paths, methods and queries (seed ${SEED}) never get a 5xx`, async () => {
  await using reg = await ObservedRegistry.start();
  const fixture = await pathFixture(reg);
  const failures: string[] = [];
  const statuses: (number | null)[] = [];
  let refusedByClient = 0;

  await runCases(CASES, CONCURRENCY, async (index) => {
    const rng = new Rng(SEED, index);
    const raw = rng.chance(0.15);
    const method = rng.weighted<string>([
      [30, "GET"],
      [raw ? 0 : 10, "HEAD"],
      [15, "PUT"],
      [15, "POST"],
      [15, "PATCH"],
      [10, "DELETE"],
      [3, "OPTIONS"],
      [2, "FOO"],
      [raw ? 2 : 0, "TRACE"],
      [raw ? 2 : 0, "get"],
    ]);
    const path = fuzzPath(rng, fixture, raw);
    const headers = fuzzHeaders(rng);
    const body = method === "GET" || method === "HEAD" ? null : fuzzBody(rng, fixture);
    const request = {
      method,
      path,
      contentType: headers["Content-Type"] ?? null,
      ...(body ? { body } : {}),
    };
    let status: number | null;
    let text: string;
    if (raw) {
      try {
        const answer = await rawExchange(reg, rawRequest(method, path, headers, body));
        status = answer.status;
        text = answer.body;
      } catch (error) {
        failures.push(`${describe(index, request)} (raw): ${error}`);
        return;
      }
    } else {
      // Never `new URL(path, base)`: "//v2/" would name another host.
      let url: URL;
      try {
        url = new URL(reg.url + path);
      } catch {
        refusedByClient++;
        return;
      }
      if (url.origin !== reg.url) {
        refusedByClient++;
        return;
      }
      try {
        const res = await fetch(url, { method, headers, ...(body ? { body } : {}) });
        status = res.status;
        text = await res.text();
      } catch (error) {
        failures.push(`${describe(index, request)}: fetch failed: ${error}`);
        return;
      }
    }
    statuses.push(status);
    const problem = checkAnswer(status, text);
    if (problem) failures.push(`${describe(index, request)}${raw ? " (raw)" : ""}: ${problem}`);
  });

  await assertHealthy(reg, failures);
  const counts = histogram(statuses);
  console.log(
    `fuzz paths, seed ${SEED}: ${JSON.stringify(counts)}; refused by fetch: ${refusedByClient}`,
  );
  assert.ok(refusedByClient < CASES * 0.05, `fetch refused ${refusedByClient} URLs`);
  assert.ok(Object.keys(counts).length >= 6, `too few distinct answers: ${JSON.stringify(counts)}`);
  const ok = Object.entries(counts).filter(([s]) => s.startsWith("2")).reduce(
    (n, [, c]) => n + c,
    0,
  );
  assert.ok(ok >= CASES * 0.02, `too few successes: ${JSON.stringify(counts)}`);
});
