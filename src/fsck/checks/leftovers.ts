/**
 * Leftovers: files nothing refers to (session folders of no session, files
 * of a session that are not its parts, temporary files). Crash debris,
 * harmless and invisible: listed, not problems; `--repair` removes them, and
 * so does the running server's sweeper once they are old.
 *
 * @module
 */
import type { Finding, Invariant } from "../finding.ts";
import { bytesText } from "../values.ts";

function leftover(
  where: string,
  what: string,
  size: number,
  remove: () => Promise<void>,
): Finding {
  return {
    kind: "leftover",
    message: `${where} (${what}, ${bytesText(size)})`,
    where,
    size,
    repair: async () => (await remove(), "removed"),
  };
}

/** Every leftover of the store. */
export const leftovers: Invariant = {
  name: "leftover files",
  *check({ scan, facts, storage }) {
    const owned = new Map<unknown, Set<string>>();
    for (const s of facts.sessions) owned.set(s.entry.parts[0], s.files);
    for (const [uploadId, files] of scan.sessionFiles) {
      const parts = owned.get(uploadId);
      if (!parts) {
        const size = [...files.values()].reduce((a, b) => a + b, 0);
        yield leftover(
          `uploads/${uploadId}`,
          "no upload session",
          size,
          () => storage.removeUpload(uploadId),
        );
        continue;
      }
      for (const [file, size] of files) {
        if (parts.has(file)) continue;
        yield leftover(
          `uploads/${uploadId}/${file}`,
          "not a part of its session",
          size,
          () => storage.removePart(uploadId, file),
        );
      }
    }
    for (const debris of scan.debris) {
      if (debris.kind !== "leftover") continue;
      yield leftover(debris.where, debris.what, debris.size, () => debris.remove());
    }
  },
};
