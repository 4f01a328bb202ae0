/**
 * Counter invariants: `upload_counts` and `upload_total` equal the open
 * sessions; `tag_clock` entries are counters.
 *
 * @module
 */
import { type AuditEntry, type AuditKey, type AuditRepair, Counter } from "../../meta/audit.ts";
import { counterValue } from "../facts.ts";
import { type CheckContext, type Finding, type Invariant, removal } from "../finding.ts";
import { show } from "../values.ts";

/**
 * A counter that disagrees with the `open` sessions it counts: set to the
 * sessions that remain once those that cannot be completed are removed.
 */
function counter(
  ctx: CheckContext,
  at: AuditEntry | AuditKey,
  where: string,
  counts: { open: number; remain: number },
): Finding[] {
  const stored = "revision" in at ? at : null;
  const actual = counterValue(stored?.value);
  if (actual === BigInt(counts.open)) return [];
  const value = new Counter(BigInt(counts.remain));
  let changes: AuditRepair | null;
  if (stored) {
    changes = counts.remain === 0
      ? { check: [stored], delete: [stored] }
      : { check: [stored], set: [[stored, value]] };
  } else {
    changes = counts.remain === 0
      ? null
      : { check: [{ absent: at as AuditKey }], set: [[at, value]] };
  }
  return [{
    kind: "problem",
    message: `${where} is ${actual === null ? "malformed" : actual}, but ${counts.open} ${
      counts.open === 1 ? "session is" : "sessions are"
    } open`,
    repair: async () =>
      changes === null || await ctx.audit.repair(changes) ? `set it to ${counts.remain}` : null,
  }];
}

/** `upload_counts` and `upload_total` that disagree with the sessions; set right. */
export const uploadCounters: Invariant = {
  name: "session counters equal the open sessions",
  *check(ctx) {
    const { openSessions, completableSessions } = ctx.facts;
    const counts = (name: string | undefined) => ({
      open: name === undefined ? 0 : openSessions.get(name) ?? 0,
      remain: name === undefined ? 0 : completableSessions.get(name) ?? 0,
    });
    const seen = new Set<string>();
    for (const entry of ctx.scan.meta.upload_counts) {
      const name = entry.key?.name;
      if (name !== undefined) seen.add(name);
      yield* counter(ctx, entry, `upload_counts ${show(entry.parts[0])}`, counts(name));
    }
    for (const name of openSessions.keys()) {
      if (seen.has(name)) continue;
      yield* counter(ctx, { family: "upload_counts", name }, `upload_counts ${name}`, counts(name));
    }
    const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
    yield* counter(
      ctx,
      ctx.scan.meta.upload_total.find((e) => e.key !== null) ?? { family: "upload_total" },
      "upload_total",
      { open: sum(openSessions), remain: sum(completableSessions) },
    );
  },
};

/** `tag_clock` entries that are not counters; removed (the next tag change starts it again). */
export const tagClocks: Invariant = {
  name: "tag clocks are counters",
  *check(ctx) {
    for (const entry of ctx.scan.meta.tag_clock) {
      if (!entry.key) {
        yield removal(
          ctx,
          `tag_clock ${entry.parts.map(show).join(" ")}: malformed key`,
          [entry],
          "removed it",
        );
      } else if (!(entry.value instanceof Counter)) {
        yield removal(ctx, `tag_clock ${entry.key.name} is malformed`, [entry], "removed it");
      }
    }
  },
};
