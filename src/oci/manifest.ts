/**
 * Manifest parsing and validation at PUT (image-spec `manifest.md`,
 * `image-index.md`, `descriptor.md`; checklist A6 and A12). Pure: the caller
 * checks that the returned references exist.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { type Digest, digestAlgorithm, parseDigest } from "./digest.ts";
import { OciError } from "./errors.ts";
import {
  bareMediaType,
  DOCKER_SCHEMA1,
  DOCKER_SCHEMA1_SIGNED,
  INDEX_TYPES,
  MANIFEST_TYPES,
  MEDIA_TYPE_REGEXP,
  OCI_INDEX,
  OCI_MANIFEST,
} from "./media_type.ts";

/** A validated content descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  urls?: string[];
}

/** What the registry needs to know of a manifest it accepts. */
export interface ParsedManifest {
  /** The media type stored and served as `Content-Type`. */
  mediaType: string;
  /** Blobs that must be linked in the repository (config and layers without `urls`). */
  blobs: Digest[];
  /** Child manifests that must exist in the repository (indexes). */
  manifests: Digest[];
  /** The `subject` digest, if any. */
  subject?: Digest;
  /** For the referrers API: `artifactType`, else the config media type of an image. */
  artifactType?: string;
  /** The manifest's own annotations. */
  annotations?: Record<string, string>;
}

type Json = Record<string, unknown>;

function invalid(message: string, detail?: unknown): OciError {
  return new OciError("MANIFEST_INVALID", message, detail === undefined ? {} : { detail });
}

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function parseMediaTypeField(value: unknown, where: string): string {
  if (typeof value !== "string" || !MEDIA_TYPE_REGEXP.test(value)) {
    throw invalid(`${where}: mediaType must be a media type such as "type/subtype"`);
  }
  return value;
}

function parseAnnotations(value: unknown, where: string): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (!isObject(value) || !Object.values(value).every((v) => typeof v === "string")) {
    throw invalid(`${where}: annotations must map strings to strings`);
  }
  return value as Record<string, string>;
}

function checkEmbeddedData(data: unknown, digest: Digest, size: number, where: string): void {
  if (data === undefined) return;
  if (typeof data !== "string") throw invalid(`${where}: data must be base64 text`);
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  } catch {
    throw invalid(`${where}: data is not valid base64`);
  }
  const algorithm = digestAlgorithm(digest);
  const actual = `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}`;
  if (bytes.length !== size || actual !== digest) {
    throw invalid(`${where}: embedded data does not match its digest and size`);
  }
}

/** Validates one descriptor (image-spec `descriptor.md`). */
export function parseDescriptor(value: unknown, where: string): Descriptor {
  if (!isObject(value)) throw invalid(`${where} must be a descriptor object`);
  const mediaType = parseMediaTypeField(value.mediaType, where);
  if (typeof value.digest !== "string") throw invalid(`${where}: digest must be a string`);
  let digest: Digest;
  try {
    digest = parseDigest(value.digest);
  } catch (error) {
    throw invalid(`${where}: ${(error as Error).message}`);
  }
  const size = value.size;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
    throw invalid(`${where}: size must be a non-negative integer`);
  }
  const descriptor: Descriptor = { mediaType, digest, size };
  if (value.artifactType !== undefined) {
    descriptor.artifactType = parseMediaTypeField(value.artifactType, `${where}.artifactType`);
  }
  const annotations = parseAnnotations(value.annotations, where);
  if (annotations) descriptor.annotations = annotations;
  if (value.urls !== undefined) {
    if (!Array.isArray(value.urls) || !value.urls.every((u) => typeof u === "string")) {
      throw invalid(`${where}: urls must be an array of strings`);
    }
    for (const url of value.urls as string[]) {
      if (!URL.canParse(url)) throw invalid(`${where}: "${url.slice(0, 200)}" is not a URL`);
    }
    descriptor.urls = value.urls as string[];
  }
  checkEmbeddedData(value.data, digest, size, where);
  return descriptor;
}

function decodeJson(bytes: Uint8Array): Json {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw invalid("Manifest is not valid UTF-8");
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw invalid("Manifest is not valid JSON");
  }
  if (!isObject(body)) throw invalid("Manifest must be a JSON object");
  return body;
}

function resolveMediaType(body: Json, contentType: string): string {
  if (contentType === DOCKER_SCHEMA1 || contentType === DOCKER_SCHEMA1_SIGNED) {
    throw invalid("Docker schema1 manifests are not supported; push schema2 or OCI");
  }
  if (body.schemaVersion === 1) {
    throw invalid(
      "Docker schema1 manifests (schemaVersion 1) are not supported; push schema2 or OCI",
    );
  }
  if (body.schemaVersion !== 2) throw invalid("schemaVersion must be 2");
  const field = body.mediaType;
  if (field !== undefined && typeof field !== "string") throw invalid("mediaType must be a string");
  if (field !== undefined && contentType !== "" && field !== contentType) {
    throw invalid(`mediaType "${field}" does not match Content-Type "${contentType}"`);
  }
  const claimed = field ??
    (contentType || (body.manifests !== undefined ? OCI_INDEX : OCI_MANIFEST));
  if (!MANIFEST_TYPES.has(claimed)) {
    throw invalid(`Unsupported manifest media type "${claimed.slice(0, 200)}"`, {
      supported: [...MANIFEST_TYPES],
    });
  }
  return claimed;
}

function parseImage(body: Json, mediaType: string): ParsedManifest {
  if (body.manifests !== undefined) throw invalid("An image manifest has no manifests field");
  const config = parseDescriptor(body.config, "config");
  if (!Array.isArray(body.layers)) throw invalid("layers must be an array");
  const layers = body.layers.map((layer, i) => parseDescriptor(layer, `layers[${i}]`));
  const blobs = [config, ...layers].filter((d) => !d.urls?.length).map((d) => d.digest);
  const parsed: ParsedManifest = { mediaType, blobs, manifests: [] };
  const artifactType = body.artifactType !== undefined ? body.artifactType : config.mediaType;
  if (artifactType !== undefined) {
    parsed.artifactType = parseMediaTypeField(artifactType, "artifactType");
  }
  return parsed;
}

function parseIndex(body: Json, mediaType: string): ParsedManifest {
  if (body.config !== undefined || body.layers !== undefined) {
    throw invalid("An index has no config or layers fields");
  }
  if (!Array.isArray(body.manifests)) throw invalid("manifests must be an array");
  const children = body.manifests.map((m, i) => parseDescriptor(m, `manifests[${i}]`));
  const parsed: ParsedManifest = { mediaType, blobs: [], manifests: children.map((d) => d.digest) };
  if (body.artifactType !== undefined) {
    parsed.artifactType = parseMediaTypeField(body.artifactType, "artifactType");
  }
  return parsed;
}

/**
 * Parses and validates a manifest body pushed with `contentType`.
 * Throws `MANIFEST_INVALID` (400) with a message that says what is wrong.
 */
export function parseManifest(bytes: Uint8Array, contentType: string | null): ParsedManifest {
  const body = decodeJson(bytes);
  const mediaType = resolveMediaType(body, bareMediaType(contentType));
  const parsed = INDEX_TYPES.has(mediaType)
    ? parseIndex(body, mediaType)
    : parseImage(body, mediaType);
  if (body.subject !== undefined) parsed.subject = parseDescriptor(body.subject, "subject").digest;
  const annotations = parseAnnotations(body.annotations, "manifest");
  if (annotations) parsed.annotations = annotations;
  return parsed;
}
