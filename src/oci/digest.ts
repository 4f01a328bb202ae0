/**
 * Digests (image-spec `descriptor.md`): `algorithm ":" encoded`. Berth supports
 * sha256 (64 lowercase hex) and sha512 (128 lowercase hex); any other digest,
 * well-formed or not, is refused with `DIGEST_INVALID` (spec main: 400 for an
 * algorithm the registry does not support).
 *
 * @module
 */
import { OciError } from "./errors.ts";

/** The digest algorithms Berth can verify. */
export type Algorithm = "sha256" | "sha512";

/** A validated digest string such as `sha256:<64 hex>`. */
export type Digest = string & { readonly __digest: unique symbol };

/** Hex length of each supported algorithm. */
export const HEX_LENGTH: Record<Algorithm, number> = { sha256: 64, sha512: 128 };

/** The digest grammar of the image-spec. */
export const DIGEST_GRAMMAR_REGEXP = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const SHA256_REGEXP = /^sha256:[a-f0-9]{64}$/;
const SHA512_REGEXP = /^sha512:[a-f0-9]{128}$/;

/** Whether `value` names a supported algorithm. */
export function isAlgorithm(value: string): value is Algorithm {
  return value === "sha256" || value === "sha512";
}

/**
 * Validates a digest, throwing `DIGEST_INVALID` (400) if it is malformed or
 * uses an algorithm Berth does not support.
 *
 * @example
 * ```ts
 * import { parseDigest } from "./digest.ts";
 * parseDigest("sha256:" + "a".repeat(64));
 * ```
 */
export function parseDigest(value: string): Digest {
  if (SHA256_REGEXP.test(value) || SHA512_REGEXP.test(value)) return value as Digest;
  const shown = value.length > 200 ? value.slice(0, 200) + "…" : value;
  if (!DIGEST_GRAMMAR_REGEXP.test(value)) {
    throw new OciError("DIGEST_INVALID", `Cannot parse digest "${shown}"`, {
      detail: { digest: shown },
    });
  }
  const algorithm = value.slice(0, value.indexOf(":"));
  const reason = isAlgorithm(algorithm)
    ? `${algorithm} needs ${HEX_LENGTH[algorithm]} lowercase hex characters`
    : `unsupported algorithm "${algorithm}" (sha256 and sha512 are supported)`;
  throw new OciError("DIGEST_INVALID", `Invalid digest "${shown}": ${reason}`, {
    detail: { digest: shown },
  });
}

/** The algorithm part of a validated digest. */
export function digestAlgorithm(digest: Digest): Algorithm {
  return digest.startsWith("sha512:") ? "sha512" : "sha256";
}

/** The hex part of a validated digest. */
export function digestHex(digest: Digest): string {
  return digest.slice(digest.indexOf(":") + 1);
}

/** Builds a digest from an algorithm and hex as `node:crypto` returns it. */
export function makeDigest(algorithm: Algorithm, hex: string): Digest {
  return `${algorithm}:${hex}` as Digest;
}

/**
 * Parses `?digest-algorithm=`: throws `DIGEST_INVALID` for an algorithm Berth
 * cannot compute.
 */
export function parseAlgorithm(value: string): Algorithm {
  if (isAlgorithm(value)) return value;
  throw new OciError("DIGEST_INVALID", `Unsupported digest algorithm "${value.slice(0, 64)}"`, {
    detail: { algorithm: value.slice(0, 64) },
  });
}
