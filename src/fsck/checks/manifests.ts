/**
 * Manifest invariants: each record is over verified bytes that parse as a
 * manifest and says what they say; its `manifest_refs` are what they
 * reference; no `manifest_refs` without a record.
 *
 * @module
 */
import type { AuditEntry, AuditTarget } from "../../meta/audit.ts";
import { referrerId, refsAgree } from "../facts.ts";
import { type Invariant, problem, removal } from "../finding.ts";
import { id, show } from "../values.ts";

function where(entry: AuditEntry<"manifests">): string {
  return `manifest ${show(entry.parts[0])}@${show(entry.parts[1])}`;
}

/**
 * Records that cannot be served (removed with their referrer entry and
 * references, as DELETE removes them) and records that disagree with their
 * bytes (rewritten from them, with their referrer entry and references).
 */
export const manifestRecords: Invariant = {
  name: "manifest records over bytes that say what they say",
  *check(ctx) {
    for (const m of ctx.facts.manifests) {
      if (!m.ok) {
        yield problem(ctx, `${where(m.entry)}: ${m.why}`, {
          check: [m.entry],
          delete: [m.entry, ...(m.referrer ? [m.referrer] : []), ...m.storedPages],
        }, "removed the record");
        continue;
      }
      if (m.differences.length === 0) continue;
      const set: [AuditTarget, unknown][] = [[m.entry, m.expected]];
      const remove: AuditTarget[] = m.storedPages.slice(m.pages.length);
      // The referrer entry moves with the record, as a PUT would have written it.
      if (
        m.recordedReferrer &&
        (!m.referrer || referrerId(m.recordedReferrer) !== referrerId(m.referrer.key))
      ) {
        remove.push(m.recordedReferrer);
      }
      if (m.referrer) set.push([m.referrer.key, m.referrer.value]);
      m.pages.forEach((page, i) =>
        set.push([{ family: "manifest_refs", name: m.name, digest: m.digest, page: i }, page])
      );
      yield problem(
        ctx,
        `${where(m.entry)}: record disagrees with its bytes: ${m.differences.join(", ")}`,
        { check: [m.entry], set, delete: remove },
        "rewrote the record (and its referrer entry) from the bytes",
      );
    }
  },
};

/** Good manifests whose `manifest_refs` are not what their bytes reference; rewritten. */
export const manifestRefs: Invariant = {
  name: "manifest_refs are what the bytes reference",
  *check(ctx) {
    for (const m of ctx.facts.goodManifests.values()) {
      if (m.differences.length || refsAgree(m)) continue; // a rewritten record takes them along
      yield problem(
        ctx,
        `${where(m.entry)}: its manifest_refs ${
          m.storedPages.length ? "disagree with its bytes" : "are missing"
        }`,
        {
          check: [m.entry],
          set: m.pages.map((page, i) => [
            { family: "manifest_refs", name: m.name, digest: m.digest, page: i },
            page,
          ]),
          delete: m.storedPages.filter((p) => (p.key?.page ?? 0) >= m.pages.length),
        },
        "rewrote them from its bytes",
      );
    }
  },
};

/** `manifest_refs` of no manifest record, or with malformed keys; removed. */
export const strayManifestRefs: Invariant = {
  name: "no manifest_refs without a manifest",
  *check(ctx) {
    const orphans = new Map<string, AuditEntry<"manifest_refs">[]>();
    for (const entry of ctx.scan.meta.manifest_refs) {
      if (!entry.key) {
        yield removal(
          ctx,
          `manifest_refs ${entry.parts.map(show).join(" ")}: malformed key`,
          [entry],
          "removed it",
        );
        continue;
      }
      const self = id(entry.key.name, entry.key.digest);
      if (ctx.facts.recordedManifests.has(self)) continue; // judged with its record
      orphans.get(self)?.push(entry) ?? orphans.set(self, [entry]);
    }
    for (const pages of orphans.values()) {
      const { name, digest } = pages[0]!.key!;
      yield removal(
        ctx,
        `manifest_refs of ${name}@${digest}: no such manifest`,
        pages,
        "removed them",
      );
    }
  },
};
