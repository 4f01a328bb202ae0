/**
 * The hashes an upload part is written through, the same for every store:
 * the session's algorithm, and the algorithm of the digest the client gave
 * when it differs (so a closing PUT by another algorithm can be checked).
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import { type Algorithm, makeDigest } from "../oci/digest.ts";
import type { WrittenPart } from "./blob_store.ts";

/** Hashers for one part, and the {@linkcode WrittenPart} they describe once it is written. */
export class PartHashes {
  readonly #algorithm: Algorithm;
  readonly #also: Algorithm | undefined;
  readonly #hash: Hash;
  readonly #other: Hash | undefined;
  /** Every hasher the part's bytes must go through. */
  readonly hashes: Hash[];

  constructor(options: { algorithm: Algorithm; alsoHash?: Algorithm }) {
    this.#algorithm = options.algorithm;
    this.#also = options.alsoHash !== options.algorithm ? options.alsoHash : undefined;
    this.#hash = createHash(this.#algorithm);
    this.#other = this.#also ? createHash(this.#also) : undefined;
    this.hashes = this.#other ? [this.#hash, this.#other] : [this.#hash];
  }

  /** The record of the part `file` of `size` bytes (call once, after every byte went through). */
  part(file: string, size: number): WrittenPart {
    const part: WrittenPart = {
      file,
      size,
      digest: makeDigest(this.#algorithm, this.#hash.digest("hex")),
    };
    if (this.#other) part.expected = makeDigest(this.#also!, this.#other.digest("hex"));
    return part;
  }
}
