/**
 * Tag invariants: each tag names a manifest that can be served and repeats
 * its media type and size; each has its `tags_by_digest` entry and each such
 * entry agrees with its tag.
 *
 * @module
 */
import type { AuditEntry } from "../../meta/audit.ts";
import type { Facts } from "../facts.ts";
import { type Invariant, problem, removal } from "../finding.ts";
import { id, isObject, show } from "../values.ts";

/** Whether a `tags_by_digest` entry is the reverse entry of a good tag. */
function indexesGoodTag(facts: Facts, entry: AuditEntry<"tags_by_digest">): boolean {
  const key = entry.key;
  return key !== null && facts.goodTags.get(id(key.name, key.tag)) === key.digest;
}

/** Tags that cannot be served (removed with their reverse entry) or disagree with their manifest. */
export const tags: Invariant = {
  name: "tags name a manifest that can be served",
  *check(ctx) {
    for (const t of ctx.facts.tags) {
      const where = `tag ${show(t.entry.parts[0])}:${show(t.entry.parts[1])}`;
      if (!t.ok) {
        yield problem(ctx, `${where}: ${t.why}`, {
          check: [t.entry],
          delete: [t.entry, ...(t.reverse ? [t.reverse] : [])],
        }, "removed the tag");
        continue;
      }
      const value = t.entry.value;
      const { expected } = ctx.facts.goodManifests.get(id(t.name, t.digest))!;
      const shape = { mediaType: expected.mediaType, size: expected.size };
      if (!isObject(value) || (value.mediaType === shape.mediaType && value.size === shape.size)) {
        continue;
      }
      yield problem(
        ctx,
        `${where}: says ${JSON.stringify(value.mediaType)} ${JSON.stringify(value.size)}, ` +
          `its manifest is ${shape.mediaType} ${shape.size}`,
        { check: [t.entry], set: [[t.entry, { ...value, ...shape }]] },
        "rewrote the tag's media type and size from its manifest",
      );
    }
  },
};

/** `tags_by_digest` entries whose tag does not point at their digest; removed. */
export const tagReverseEntries: Invariant = {
  name: "tags_by_digest entries agree with their tag",
  *check(ctx) {
    for (const entry of ctx.scan.meta.tags_by_digest) {
      const key = entry.key;
      if (key && ctx.facts.removedReverse.has(id(key.name, key.digest, key.tag))) continue;
      if (indexesGoodTag(ctx.facts, entry)) continue;
      const [name, digest, tag] = entry.parts;
      const current = ctx.facts.goodTags.get(id(name, tag));
      yield removal(
        ctx,
        `tags_by_digest ${show(name)} ${show(digest)} ${show(tag)}: the tag ${
          current ? `points at ${current}` : "does not exist"
        }`,
        [entry],
        "removed the entry",
      );
    }
  },
};

/** Good tags without their `tags_by_digest` entry; added. */
export const taggedManifestsIndexed: Invariant = {
  name: "every tag has its tags_by_digest entry",
  *check(ctx) {
    const indexed = new Set<string>();
    for (const entry of ctx.scan.meta.tags_by_digest) {
      if (indexesGoodTag(ctx.facts, entry)) indexed.add(id(entry.key!.name, entry.key!.tag));
    }
    for (const t of ctx.facts.tags) {
      if (!t.ok || indexed.has(id(t.name, t.tag))) continue;
      const key = { family: "tags_by_digest" as const, name: t.name, digest: t.digest, tag: t.tag };
      yield problem(
        ctx,
        `tag ${t.name}:${t.tag} -> ${t.digest} has no tags_by_digest entry`,
        // The tag itself is checked too: it must not have moved since it was read.
        { check: [t.entry, { absent: key }], set: [[key, true]] },
        "added it",
      );
    }
  },
};
