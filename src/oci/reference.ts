/**
 * A manifest reference is a tag or a digest, nothing else (spec §Pulling manifests).
 *
 * @module
 */
import { type Digest, parseDigest } from "./digest.ts";
import { parseTag } from "./name.ts";

/** A parsed `<reference>`. */
export type Reference = { kind: "tag"; tag: string } | { kind: "digest"; digest: Digest };

/**
 * Parses a reference: anything with a `:` must be a digest, anything else a tag.
 * Throws `DIGEST_INVALID` or `TAG_INVALID` (400).
 */
export function parseReference(value: string): Reference {
  if (value.includes(":")) return { kind: "digest", digest: parseDigest(value) };
  return { kind: "tag", tag: parseTag(value) };
}
