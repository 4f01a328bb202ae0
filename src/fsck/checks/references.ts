/**
 * Images that cannot be pulled whole: a blob or child manifest they
 * reference is not in their repository. A client can cause that (a blob
 * DELETE is allowed while manifests use the blob), and so can a repair that
 * removed corrupt bytes; only the owner can choose between pushing the
 * content again and deleting the image, so these are warnings, never
 * repaired and not problems.
 *
 * @module
 */
import type { Invariant } from "../finding.ts";
import { id } from "../values.ts";

/** Good manifests whose references are not all in their repository: warnings. */
export const pullableImages: Invariant = {
  name: "images can be pulled whole",
  *check({ facts }) {
    for (const m of facts.goodManifests.values()) {
      const missing = [
        ...m.parsed.blobs.filter((d) => !facts.goodLinks.has(id(m.name, d))),
        ...m.parsed.manifests.filter((d) => !facts.goodManifests.has(id(m.name, d))),
      ];
      if (missing.length === 0) continue;
      yield {
        kind: "warning",
        message: `image ${m.name}@${m.digest} cannot be pulled whole: ${missing.length} blob(s) ` +
          `or manifest(s) it references are not in the repository (${
            missing.slice(0, 3).join(", ")
          }${missing.length > 3 ? ", …" : ""}); push them again or delete the image`,
      };
    }
  },
};
