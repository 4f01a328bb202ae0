/**
 * Blob link invariants: each link is over verified bytes of the linked size;
 * links and `blob_repos` entries come in pairs.
 *
 * @module
 */
import type { BlobLink } from "../../meta/keys.ts";
import { type Invariant, problem, removal } from "../finding.ts";
import { id, isObject, show } from "../values.ts";

/** Links whose bytes are gone or corrupt (removed with `blob_repos`) or of the wrong size. */
export const blobLinks: Invariant = {
  name: "blob links over verified bytes of their size",
  *check(ctx) {
    for (const link of ctx.facts.links) {
      const where = `blob link ${show(link.entry.parts[0])}@${show(link.entry.parts[1])}`;
      if (!link.ok) {
        yield problem(ctx, `${where}: ${link.why}`, {
          check: [link.entry],
          delete: [link.entry, ...(link.reverse ? [link.reverse] : [])],
        }, "removed the link");
        continue;
      }
      const value = link.entry.value;
      if (isObject(value) && value.size === link.size) continue;
      const recorded = isObject(value) ? JSON.stringify(value.size) : "malformed";
      const fixed: BlobLink = {
        size: link.size,
        linkedAt: isObject(value) && typeof value.linkedAt === "number"
          ? value.linkedAt
          : Date.now(),
      };
      yield problem(
        ctx,
        `${where}: recorded size ${recorded}, the verified bytes have ${link.size}`,
        { check: [link.entry], set: [[link.entry, fixed]] },
        "recorded the real size",
      );
    }
  },
};

/** `blob_repos` entries without their link; removed. */
export const blobRepos: Invariant = {
  name: "blob_repos entries have their link",
  *check(ctx) {
    for (const entry of ctx.scan.meta.blob_repos) {
      const key = entry.key;
      if (key && ctx.facts.removedBlobRepos.has(id(key.digest, key.name))) continue;
      if (key && ctx.facts.goodLinks.has(id(key.name, key.digest))) continue;
      yield removal(
        ctx,
        `blob_repos ${show(entry.parts[0])} ${show(entry.parts[1])}: no such blob link`,
        [entry],
        "removed the entry",
      );
    }
  },
};

/** Good links without their `blob_repos` entry; added. */
export const linksIndexed: Invariant = {
  name: "every blob link has its blob_repos entry",
  *check(ctx) {
    const reverse = new Set<string>();
    for (const entry of ctx.scan.meta.blob_repos) {
      if (entry.key) reverse.add(id(entry.key.name, entry.key.digest));
    }
    for (const link of ctx.facts.links) {
      if (!link.ok || reverse.has(id(link.name, link.digest))) continue;
      const key = { family: "blob_repos" as const, digest: link.digest, name: link.name };
      yield problem(
        ctx,
        `blob link ${link.name}@${link.digest} has no blob_repos entry`,
        { check: [{ absent: key }], set: [[key, true]] },
        "added it",
      );
    }
  },
};
