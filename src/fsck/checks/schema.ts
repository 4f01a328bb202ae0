/**
 * Schema invariants: the KV layout is the one this code reads, and nothing of
 * an older layout is left.
 *
 * @module
 */
import { type Invariant, removal } from "../finding.ts";
import { SCHEMA_VERSION } from "../../meta/schema.ts";
import { isObject } from "../values.ts";

/** A `["schema"]` record of another version: a problem fsck cannot repair. */
export const schemaVersion: Invariant = {
  name: "the schema is one this code reads",
  *check({ scan }) {
    const entry = scan.meta.schema.find((e) => e.key !== null);
    if (!entry) return;
    const version = isObject(entry.value) ? entry.value.version : undefined;
    if (version === SCHEMA_VERSION) return;
    yield {
      kind: "problem",
      message: typeof version === "number"
        ? `schema version ${version} is not the one this code reads (${SCHEMA_VERSION})`
        : "schema record is malformed",
    };
  },
};

/** A migration left half done: a warning (the server finishes it at start-up). */
export const schemaMigration: Invariant = {
  name: "no schema migration under way",
  *check({ scan }) {
    const entry = scan.meta.schema_migration.find((e) => e.key !== null);
    if (!entry) return;
    const m = isObject(entry.value) ? entry.value : {};
    yield {
      kind: "warning",
      message: `a schema migration from ${String(m.from)} to ${String(m.to)} is under way ` +
        `(step ${String(m.step)}); start the server to finish it`,
    };
  },
};

/** `manifest_epochs` entries, which only schema 1 had; removed. */
export const legacyEpochs: Invariant = {
  name: "nothing left of schema 1",
  *check(ctx) {
    const entries = ctx.scan.meta.manifest_epochs;
    if (entries.length === 0) return;
    yield removal(
      ctx,
      `${entries.length} manifest_epochs ${
        entries.length === 1 ? "entry" : "entries"
      } left over from schema 1`,
      entries,
      "removed them",
    );
  },
};
