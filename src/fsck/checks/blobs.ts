/**
 * Blob invariants: nothing but blobs lives in the blob area, and each blob's
 * bytes hash to its name.
 *
 * @module
 */
import type { Invariant } from "../finding.ts";

/** Misplaced or misnamed entries in the blob area; `--repair` removes them. */
export const blobAreaDebris: Invariant = {
  name: "nothing but blobs in the blob area",
  *check({ scan }) {
    for (const debris of scan.debris) {
      if (debris.kind !== "problem") continue;
      yield {
        kind: "problem",
        message: `${debris.where} ${debris.what}`,
        repair: async () => (await debris.remove(), "removed"),
      };
    }
  },
};

/** Blobs whose bytes hash to something else; `--repair` removes the bytes. */
export const blobHashes: Invariant = {
  name: "blobs hash to their digest",
  *check({ scan, storage }) {
    for (const blob of scan.blobs) {
      if (blob.actual === blob.digest) continue;
      yield {
        kind: "problem",
        message: `blob ${blob.digest}: its bytes hash to ${blob.actual}`,
        repair: async () => (await storage.delete(blob.digest), "removed the file"),
      };
    }
  },
};
