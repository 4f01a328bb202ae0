/**
 * What an invariant yields: a {@linkcode Finding} (a problem, a warning or a
 * leftover, with the repair `--repair` runs), and the context every
 * {@linkcode Invariant} checks.
 *
 * @module
 */
import {
  type AuditEntry,
  type AuditRepair,
  MAX_REPAIR_CHECKS,
  type MetadataAudit,
} from "../meta/audit.ts";
import type { Storage } from "../storage/blob_store.ts";
import type { Facts } from "./facts.ts";
import type { Scan } from "./scan.ts";

/** One thing an invariant found. */
export interface Finding {
  /**
   * `problem`: something the metadata promises is not so (exit code 1);
   * `warning`: worth knowing, not wrong; `leftover`: crash debris nothing
   * refers to (harmless, invisible).
   */
  kind: "problem" | "warning" | "leftover";
  message: string;
  /** Leftovers: where the debris is, relative to the store, and its size. */
  where?: string;
  size?: number;
  /**
   * Runs the repair: what it did, or null when the store changed meanwhile and
   * nothing was done. Absent: fsck cannot repair this.
   */
  repair?: () => Promise<string | null>;
}

/** What an invariant checks: the scan, what was judged of it, and the stores for repairs. */
export interface CheckContext {
  scan: Scan;
  facts: Facts;
  audit: MetadataAudit;
  storage: Storage;
}

/** One named rule over the scanned stores. */
export interface Invariant {
  /** What it checks, in a few words. */
  name: string;
  check(ctx: CheckContext): Iterable<Finding>;
}

/** A problem whose repair is one metadata commit; `done` says what it did. */
export function problem(
  ctx: CheckContext,
  message: string,
  changes: AuditRepair,
  done: string,
): Finding {
  return {
    kind: "problem",
    message,
    repair: async () => (await ctx.audit.repair(changes)) ? done : null,
  };
}

/**
 * Removes `entries`, each only if unchanged, in as many commits as the
 * checks need. True when every commit went through.
 */
export async function removeEntries(ctx: CheckContext, entries: AuditEntry[]): Promise<boolean> {
  let ok = true;
  for (let i = 0; i < entries.length; i += MAX_REPAIR_CHECKS) {
    const batch = entries.slice(i, i + MAX_REPAIR_CHECKS);
    ok = await ctx.audit.repair({ check: batch, delete: batch }) && ok;
  }
  return ok;
}

/** A problem whose repair removes `entries` (each only if unchanged). */
export function removal(
  ctx: CheckContext,
  message: string,
  entries: AuditEntry[],
  done: string,
): Finding {
  return {
    kind: "problem",
    message,
    repair: async () => (await removeEntries(ctx, entries)) ? done : null,
  };
}
