/**
 * Referrer invariants: each `referrers` entry belongs to a manifest whose
 * subject and artifactType it is filed under and holds the descriptor a PUT
 * writes; each manifest with a subject has its entry.
 *
 * @module
 */
import type { AuditEntry } from "../../meta/audit.ts";
import { type Facts, referrerId } from "../facts.ts";
import { type Invariant, problem, removal } from "../finding.ts";
import { id, quote, show } from "../values.ts";

/** Whether an entry is filed where its manifest needs it. */
function filedRight(facts: Facts, entry: AuditEntry<"referrers">): boolean {
  const needed = facts.goodManifests.get(id(entry.parts[0], entry.parts[3]))?.referrer;
  return !!needed && entry.key !== null && referrerId(entry.key) === referrerId(needed.key);
}

/** Whether a repair of its manifest already takes care of an entry. */
function takenCare(facts: Facts, entry: AuditEntry<"referrers">): boolean {
  return (entry.key !== null && facts.removedReferrers.has(referrerId(entry.key))) ||
    facts.rewritten.has(id(entry.parts[0], entry.parts[3]));
}

/** Entries of no manifest or filed wrong (removed), or with a wrong descriptor (rewritten). */
export const referrers: Invariant = {
  name: "referrers entries agree with their manifest",
  *check(ctx) {
    const { facts } = ctx;
    for (const entry of ctx.scan.meta.referrers) {
      if (takenCare(facts, entry)) continue;
      const [name, subject, artifactType, digest] = entry.parts;
      const where = `referrer ${show(name)} ${show(subject)} ${quote(artifactType)} ${
        show(digest)
      }`;
      const manifest = facts.goodManifests.get(id(name, digest));
      if (!manifest) {
        yield removal(ctx, `${where}: no such manifest`, [entry], "removed the entry");
      } else if (!filedRight(facts, entry)) {
        yield removal(
          ctx,
          `${where}: the manifest has another subject or artifactType`,
          [entry],
          "removed the entry",
        );
      } else if (JSON.stringify(entry.value) !== JSON.stringify(manifest.referrer!.value)) {
        yield problem(
          ctx,
          `${where}: the descriptor disagrees with the manifest`,
          { check: [entry], set: [[entry, manifest.referrer!.value]] },
          "rewrote it",
        );
      }
    }
  },
};

/** Manifests with a subject but no referrers entry; added. */
export const subjectsIndexed: Invariant = {
  name: "every manifest with a subject has its referrers entry",
  *check(ctx) {
    const { facts } = ctx;
    const found = new Set<string>();
    for (const entry of ctx.scan.meta.referrers) {
      if (filedRight(facts, entry)) found.add(id(entry.parts[0], entry.parts[3]));
    }
    for (const [self, m] of facts.goodManifests) {
      if (!m.referrer || found.has(self) || facts.rewritten.has(self)) continue;
      yield problem(
        ctx,
        `manifest ${m.name}@${m.digest} has a subject but no referrers entry`,
        { check: [{ absent: m.referrer.key }], set: [[m.referrer.key, m.referrer.value]] },
        "added it",
      );
    }
  },
};
