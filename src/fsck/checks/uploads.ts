/**
 * Upload session invariants: each session's parts are stored in KV and by the
 * store, with the recorded sizes, and add up to its offset; no parts of no
 * session.
 *
 * @module
 */
import { type AuditEntry, type AuditKey, MAX_REPAIR_WRITES } from "../../meta/audit.ts";
import { type SessionFact, UPLOAD_ID_REGEXP } from "../facts.ts";
import { type CheckContext, type Invariant, removal } from "../finding.ts";
import { show } from "../values.ts";

/** Deletes `entries` in commits of at most `MAX_REPAIR_WRITES`, each checking `session`. */
async function deleteChecked(
  ctx: CheckContext,
  session: AuditEntry<"uploads">,
  entries: AuditEntry[],
): Promise<boolean> {
  for (let i = 0; i < entries.length; i += MAX_REPAIR_WRITES) {
    const batch = entries.slice(i, i + MAX_REPAIR_WRITES);
    if (!await ctx.audit.repair({ check: [session], delete: batch })) return false;
  }
  return true;
}

/**
 * Ends a session that cannot be completed: its record, parts and files. The
 * counters lose it here when they were right; a counter that was wrong is
 * set by its own finding.
 */
function removeSession(ctx: CheckContext, s: SessionFact): () => Promise<string | null> {
  return async () => {
    const add: [AuditKey, bigint][] = [];
    if (s.record && ctx.facts.countersAgree.has(s.record.name)) {
      add.push([{ family: "upload_counts", name: s.record.name }, -1n]);
    }
    if (s.record && ctx.facts.totalAgrees) add.push([{ family: "upload_total" }, -1n]);
    const inline = s.parts.slice(0, MAX_REPAIR_WRITES - 10);
    const ok = await ctx.audit.repair({ check: [s.entry], delete: [s.entry, ...inline], add });
    if (!ok) return null;
    for (let i = inline.length; i < s.parts.length; i += MAX_REPAIR_WRITES) {
      await ctx.audit.repair({ check: [], delete: s.parts.slice(i, i + MAX_REPAIR_WRITES) });
    }
    const uploadId = s.entry.parts[0];
    if (typeof uploadId === "string" && UPLOAD_ID_REGEXP.test(uploadId)) {
      await ctx.storage.removeUpload(uploadId);
    }
    return "removed the session";
  };
}

/** Sessions that cannot be completed (removed) or have parts past their count (those removed). */
export const uploadSessions: Invariant = {
  name: "upload sessions can be completed",
  *check(ctx) {
    for (const s of ctx.facts.sessions) {
      const where = `upload ${show(s.entry.parts[0])}`;
      if (s.faults.length) {
        yield {
          kind: "problem",
          message: `${where} cannot be completed: ${s.faults.join("; ")}`,
          repair: removeSession(ctx, s),
        };
      } else if (s.extra.length) {
        // Only the surplus is wrong: the session itself can still be completed.
        yield {
          kind: "problem",
          message: `${where}: ${s.extra.length} upload_parts beyond its ${s.record!.parts} parts`,
          repair: async () => (await deleteChecked(ctx, s.entry, s.extra)) ? "removed them" : null,
        };
      }
    }
  },
};

/** `upload_parts` of no session; removed. */
export const orphanParts: Invariant = {
  name: "no upload_parts without a session",
  *check(ctx) {
    const sessions = new Set(ctx.scan.meta.uploads.map((e) => e.parts[0]));
    let group: AuditEntry<"upload_parts">[] = [];
    const flush = () => {
      const uploadId = group[0]?.parts[0];
      const found = group.length
        ? [removal(
          ctx,
          `${group.length} upload_parts of ${show(uploadId)}, which is not a session`,
          group,
          "removed them",
        )]
        : [];
      group = [];
      return found;
    };
    for (const part of ctx.scan.meta.upload_parts) {
      const uploadId = part.parts[0];
      if (group.length && group[0]!.parts[0] !== uploadId) yield* flush();
      if (typeof uploadId !== "string" || !sessions.has(uploadId)) group.push(part);
    }
    yield* flush();
  },
};
