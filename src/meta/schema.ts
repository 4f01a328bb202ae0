/**
 * The KV layout version and the start-up migration to it.
 *
 * `["schema"]` says which layout a KV holds. A KV with no keys at all is new
 * and gets the current version; one with keys but no `["schema"]` was written
 * by a release before versions (schema 1). Schema 1 → 2:
 *
 * 1. step `refs`: every manifest record gets its `manifest_refs` pages, from
 *    its bytes in the blob store (or, if they are missing or do not parse,
 *    from its record: the subject, no blobs), in key order, a batch per commit;
 * 2. step `epochs`: every `manifest_epochs` key (schema 1 only) is deleted, a
 *    batch per commit;
 * 3. one commit sets `["schema"]` and deletes `["schema_migration"]` (or, on
 *    the way to 3, moves on to the steps below).
 *
 * Schema 2 → 3 (the garbage collector's bookkeeping):
 *
 * 1. step `gc-manifests`: for every manifest record, in key order, its
 *    references are counted (`gc_refs`), it holds its bytes (`blob_holders`),
 *    its size counts in its repository's `usage`, and an untagged one is
 *    queued as a candidate (`gc_due`);
 * 2. step `gc-links`: every blob link holds its bytes, counts in `usage` and
 *    is queued as a candidate at the time it was linked;
 * 3. step `gc-total`: every digest with holders counts its size (from the
 *    blob store) once in `usage_total`; then the version is set.
 *
 * Counts are sums, so each batch commits them together with the cursor it
 * reached, checked against the migration record: a batch is counted once.
 *
 * Each commit also saves where it got to in `["schema_migration"]` and checks
 * that record, so a crash between any two commits resumes where it stopped,
 * every step writes the same values when repeated, and two processes
 * migrating at once do not step on each other. Commits stay within Deno KV's
 * limits (checks, mutations, bytes).
 *
 * @module
 */
import { createHash } from "node:crypto";
import { type Digest, digestAlgorithm } from "../oci/digest.ts";
import { parseManifest } from "../oci/manifest.ts";
import type { BlobStore } from "../storage/blob_store.ts";
import { readLimited } from "../storage/streams.ts";
import {
  blobHoldersKey,
  type BlobLink,
  gcDueKey,
  gcRefsKey,
  gcUntaggedKey,
  joinRefs,
  legacyManifestEpochsPrefix,
  type ManifestRecord,
  type ManifestRefs,
  manifestRefsKey,
  manifestRefsPrefix,
  migrationKey,
  type MigrationRecord,
  refsPages,
  schemaKey,
  type SchemaRecord,
  tagsByDigestPrefix,
  usageKey,
  usageTotalKey,
} from "./keys.ts";
import { type Kv, KV_LIMITS } from "./kv.ts";

/** The KV layout this Berth reads and writes. */
export const SCHEMA_VERSION = 3;

/** A KV this Berth cannot use as it is (written by a newer one, or unreadable). */
export class SchemaError extends Error {
  override name = "SchemaError";
}

/** Options of {@linkcode migrate}. */
export interface MigrateOptions {
  /** Most manifests (or legacy keys) one commit handles; default 100. */
  batch?: number;
  /** Receives one line per step, batch and manifest that could not be read. */
  onProgress?: (line: string) => void;
  /** Tests only: throw after this many commits, as a crash would stop the process. */
  stopAfterBatches?: number;
}

/** What {@linkcode migrate} did: the version found and the version now. */
export interface MigrateResult {
  from: number;
  to: number;
}

const DEFAULT_BATCH = 100;
/** Within `KV_LIMITS`, with room for the estimates below being upper bounds. */
const MAX_MUTATIONS = KV_LIMITS.mutations;
const MAX_COMMIT_BYTES = KV_LIMITS.bytes * 0.8;
const MAX_KEY_BYTES = KV_LIMITS.keyBytes * 0.8;
/** The largest manifest any configuration accepts (`--max-manifest-bytes`). */
const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;
const MANIFESTS_PREFIX = ["manifests"] as const;

type Write = [key: Deno.KvKey, value?: unknown, sum?: bigint];

const encoder = new TextEncoder();

/** What a commit's mutations use of Deno KV's limits. */
interface Usage {
  mutations: number;
  bytes: number;
  keys: number;
}

/**
 * Adds upper bounds of what `writes` cost to `usage`: a key part's encoding
 * is its UTF-8 bytes (NUL doubled) plus two, anything else at most 16; a
 * value's V8 serialization is never more than twice its JSON.
 */
function plus(usage: Usage, writes: Write[]): Usage {
  let { mutations, bytes, keys } = usage;
  for (const [key, value] of writes) {
    let keyBytes = 0;
    for (const part of key) {
      keyBytes += typeof part === "string" ? encoder.encode(part).length * 2 + 2 : 16;
    }
    mutations++;
    keys += keyBytes;
    bytes += keyBytes +
      (value === undefined ? 0 : encoder.encode(JSON.stringify(value)).length * 2 + 64);
  }
  return { mutations, bytes, keys };
}

/** The mutations of one commit, kept within Deno KV's limits. */
class Budget {
  #used: Usage = { mutations: 0, bytes: 0, keys: 0 };

  constructor(reserved: Write[]) {
    this.add(reserved);
  }

  /** Whether `writes` fit beside what was added. */
  fits(writes: Write[]): boolean {
    const { mutations, bytes, keys } = plus(this.#used, writes);
    return mutations <= MAX_MUTATIONS && bytes <= MAX_COMMIT_BYTES && keys <= MAX_KEY_BYTES;
  }

  add(writes: Write[]): void {
    this.#used = plus(this.#used, writes);
  }
}

interface Run {
  kv: Kv;
  blobs: Pick<BlobStore, "open" | "stat">;
  batch: number;
  progress: (line: string) => void;
  commits: number;
  stopAfter: number;
}

function readVersion(value: unknown): number {
  const version = (value as Partial<SchemaRecord> | null)?.version;
  if (typeof version !== "number" || !Number.isSafeInteger(version) || version < 1) {
    throw new SchemaError(`The KV's schema record ${JSON.stringify(value)} is not readable`);
  }
  return version;
}

function readMigration(value: unknown): MigrationRecord {
  const record = value as Partial<MigrationRecord> | null;
  if (
    typeof record?.from !== "number" || typeof record.to !== "number" ||
    typeof record.step !== "string" ||
    (record.cursor !== undefined && typeof record.cursor !== "string")
  ) {
    throw new SchemaError(`The KV's migration record ${JSON.stringify(value)} is not readable`);
  }
  return record as MigrationRecord;
}

function newer(version: number): SchemaError {
  return new SchemaError(
    `This data was written by a newer Berth (schema ${version}); this one knows schema ` +
      `${SCHEMA_VERSION} and older: upgrade Berth`,
  );
}

/**
 * Commits `build` checked against the migration record as read; false when
 * another process changed it first. Counts commits for `stopAfterBatches`.
 */
async function commit(
  run: Run,
  checks: Deno.AtomicCheck[],
  build: (op: Deno.AtomicOperation) => Deno.AtomicOperation,
): Promise<boolean> {
  const ok = await run.kv.commit((op) => build(checks.reduce((o, c) => o.check(c), op)));
  if (ok === null) return false;
  run.commits++;
  if (run.commits >= run.stopAfter) {
    throw new Error(`Migration stopped after ${run.commits} commits (stopAfterBatches)`);
  }
  return true;
}

/** The last step of a migration: the schema version reached, the cursor gone, in one commit. */
async function finish(
  run: Run,
  migration: Deno.AtomicCheck,
  schema: Deno.AtomicCheck,
  version: number,
): Promise<void> {
  const record: SchemaRecord = { version, migratedAt: Date.now() };
  const finished = await commit(
    run,
    [migration, schema],
    (op) => op.set(schemaKey(), record).delete(migrationKey()),
  );
  if (finished) run.progress(`schema: schema ${record.version} reached`);
}

async function readBytes(blobs: Pick<BlobStore, "open">, digest: Digest): Promise<Uint8Array> {
  const read = await blobs.open(digest);
  if (!read) throw new Error("its bytes are missing from the blob store");
  if (read.size > MAX_MANIFEST_BYTES) {
    await read.stream.cancel();
    throw new Error(`its bytes are too large for a manifest (${read.size})`);
  }
  const bytes = await readLimited(read.stream, MAX_MANIFEST_BYTES);
  const algorithm = digestAlgorithm(digest);
  const actual = `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}`;
  if (actual !== digest) throw new Error(`its bytes hash to ${actual}`);
  return bytes;
}

/** The `manifest_refs` pages of one manifest, from its bytes, else from its record. */
async function refsOf(
  run: Run,
  name: string,
  digest: Digest,
  record: ManifestRecord,
): Promise<ManifestRefs[]> {
  try {
    const parsed = parseManifest(await readBytes(run.blobs, digest), record.mediaType);
    return refsPages({
      blobs: parsed.blobs,
      manifests: parsed.manifests,
      ...(parsed.subject ? { subject: parsed.subject } : {}),
    });
  } catch (error) {
    run.progress(
      `schema: manifest ${name}@${digest}: ${(error as Error).message}; ` +
        `its references are taken from its record (fsck reports it)`,
    );
    return refsPages({
      blobs: [],
      manifests: [],
      ...(typeof record?.subject === "string" ? { subject: record.subject } : {}),
    });
  }
}

function parseCursor(cursor: string): Deno.KvKey {
  try {
    const [name, digest] = JSON.parse(cursor) as unknown[];
    if (typeof name === "string" && typeof digest === "string") {
      return [...MANIFESTS_PREFIX, name, digest];
    }
  } catch { /* reported below */ }
  throw new SchemaError(`The migration cursor ${JSON.stringify(cursor)} is not readable`);
}

function sameKey(a: Deno.KvKey, b: Deno.KvKey): boolean {
  return a.length === b.length && a.every((part, i) => part === b[i]);
}

function apply(op: Deno.AtomicOperation, writes: Write[]): Deno.AtomicOperation {
  for (const [key, value, sum] of writes) {
    if (sum !== undefined) op.sum(key, sum);
    else if (value === undefined) op.delete(key);
    else op.set(key, value);
  }
  return op;
}

/** Counter increments as writes, merged per key (a batch adds each key once). */
function sums(counts: Map<string, { key: Deno.KvKey; n: bigint }>): Write[] {
  return [...counts.values()].map(({ key, n }) => [key, 0, BigInt.asUintN(64, n)]);
}

function addCount(
  counts: Map<string, { key: Deno.KvKey; n: bigint }>,
  key: Deno.KvKey,
  n: bigint,
): void {
  const id = JSON.stringify(key);
  const current = counts.get(id);
  if (current) current.n += n;
  else counts.set(id, { key, n });
}

/** The three schema-3 steps, in order: what each scans, what it counts, and the next step. */
const GC_STEPS: Record<string, { prefix: Deno.KvKey; next: string | null }> = {
  "gc-manifests": { prefix: ["manifests"], next: "gc-links" },
  "gc-links": { prefix: ["blob_links"], next: "gc-total" },
  "gc-total": { prefix: ["blob_holders"], next: null },
};

/** References of one manifest counted per commit when its counts do not fit one batch. */
const REFS_PER_COMMIT = 200;

/** The bookkeeping of one entry of a schema-3 step (of a manifest: its refs from `offset`). */
async function gcWrites(
  run: Run,
  step: string,
  entry: Deno.KvEntry<unknown>,
  counts: Map<string, { key: Deno.KvKey; n: bigint }>,
  part?: { offset: number },
): Promise<{ writes: Write[]; done: boolean }> {
  const writes: Write[] = [];
  if (step === "gc-manifests") {
    const [, name, digest] = entry.key as [string, string, Digest];
    const record = entry.value as ManifestRecord;
    const [pages, tagged] = await Promise.all([
      run.kv.list<ManifestRefs>({ prefix: manifestRefsPrefix(name, digest) }, 64),
      run.kv.list({ prefix: tagsByDigestPrefix(name, digest) }, 1),
    ]);
    const refs = joinRefs(pages.map((p) => p.value));
    const all = [...new Set([...refs.blobs, ...refs.manifests])];
    const from = part?.offset ?? 0;
    const to = part ? Math.min(from + REFS_PER_COMMIT, all.length) : all.length;
    for (const d of all.slice(from, to)) addCount(counts, gcRefsKey(name, d), 1n);
    if (to < all.length) return { writes, done: false };
    addCount(counts, blobHoldersKey(digest), 1n);
    addCount(counts, usageKey(name), BigInt(record.size ?? 0));
    if (tagged.length === 0) {
      writes.push([gcDueKey("manifest", record.createdAt ?? 0, name, digest), true]);
      writes.push([gcUntaggedKey(name, digest), record.createdAt ?? 0]);
    }
  } else if (step === "gc-links") {
    const [, name, digest] = entry.key as [string, string, Digest];
    const link = entry.value as BlobLink;
    addCount(counts, blobHoldersKey(digest), 1n);
    addCount(counts, usageKey(name), BigInt(link.size ?? 0));
    writes.push([gcDueKey("blob", link.linkedAt ?? 0, name, digest), true]);
  } else {
    const digest = entry.key[1] as Digest;
    const info = await run.blobs.stat(digest);
    addCount(counts, usageTotalKey(), BigInt(info?.size ?? 0));
  }
  return { writes, done: true };
}

/** Where a schema-3 step is: after a key, or within one manifest's references. */
interface GcCursor {
  after?: Deno.KvKey;
  at?: Deno.KvKey;
  offset?: number;
}

function parseGcCursor(cursor: string | undefined): GcCursor {
  if (cursor === undefined) return {};
  try {
    const parsed = JSON.parse(cursor) as GcCursor;
    if (typeof parsed === "object" && parsed !== null) return parsed;
  } catch { /* reported below */ }
  throw new SchemaError(`The migration cursor ${JSON.stringify(cursor)} is not readable`);
}

/**
 * A batch of a schema-3 step after the cursor: its counts and queue entries,
 * with the cursor, in one commit. A manifest whose counts do not fit one
 * commit is counted over several, the cursor saying how far.
 */
async function gcBatch(run: Run, migration: Deno.KvEntry<MigrationRecord>): Promise<void> {
  const state = migration.value;
  const step = GC_STEPS[state.step]!;
  const cursor = parseGcCursor(state.cursor);
  const reserved: Write[] = [[migrationKey(), { ...state, cursor: "x".repeat(1024) }]];
  const save = async (writes: Write[], next: GcCursor, line: string) => {
    const record: MigrationRecord = { ...state, cursor: JSON.stringify(next) };
    if (await commit(run, [migration], (op) => apply(op, writes).set(migrationKey(), record))) {
      run.progress(line);
    }
  };
  if (cursor.at) {
    const entry = await run.kv.get<unknown>(cursor.at);
    const counts = new Map<string, { key: Deno.KvKey; n: bigint }>();
    if (entry.versionstamp === null) return await save([], { after: cursor.at }, "schema: gone");
    const offset = cursor.offset ?? 0;
    const { writes, done } = await gcWrites(
      run,
      state.step,
      entry as Deno.KvEntry<unknown>,
      counts,
      { offset },
    );
    const next = done ? { after: cursor.at } : { at: cursor.at, offset: offset + REFS_PER_COMMIT };
    return await save(
      [...sums(counts), ...writes],
      next,
      `schema: ${state.step}: references of ${JSON.stringify(cursor.at)} from ${offset} counted`,
    );
  }
  const after = cursor.after;
  const listed = await run.kv.list<unknown>(
    after ? { prefix: step.prefix, start: after } : { prefix: step.prefix },
    run.batch + 1,
  );
  const entries = listed.filter((e) => !after || !sameKey(e.key, after)).slice(0, run.batch);
  if (entries.length === 0) {
    if (step.next !== null) {
      const next: MigrationRecord = { from: state.from, to: state.to, step: step.next };
      if (await commit(run, [migration], (op) => op.set(migrationKey(), next))) {
        run.progress(`schema: step ${state.step} done`);
      }
      return;
    }
    const [schema] = await run.kv.getMany<[unknown]>([schemaKey()]);
    await finish(run, migration, schema, state.to);
    return;
  }
  let counts = new Map<string, { key: Deno.KvKey; n: bigint }>();
  let queued: Write[] = [];
  let last: Deno.KvKey | null = null;
  let done = 0;
  for (const entry of entries) {
    const trial = new Map([...counts].map(([k, v]) => [k, { ...v }]));
    const more = (await gcWrites(run, state.step, entry, trial)).writes;
    if (!new Budget(reserved).fits([...sums(trial), ...queued, ...more])) {
      if (done === 0) {
        // One manifest with more references than a commit holds: counted in parts.
        return await save([], { at: entry.key, offset: 0 }, "schema: a large manifest next");
      }
      break;
    }
    counts = trial;
    queued = [...queued, ...more];
    last = entry.key;
    done++;
  }
  await save(
    [...sums(counts), ...queued],
    { after: last! },
    `schema: ${state.step}: ${done} entr(ies) counted`,
  );
}

/** Step `refs`: records the references of the next batch of manifests after the cursor. */
async function refsBatch(run: Run, migration: Deno.KvEntry<MigrationRecord>): Promise<void> {
  const state = migration.value;
  const after = state.cursor === undefined ? undefined : parseCursor(state.cursor);
  const listed = await run.kv.list<ManifestRecord>(
    after ? { prefix: MANIFESTS_PREFIX, start: after } : { prefix: MANIFESTS_PREFIX },
    run.batch + 1,
  );
  const entries = listed.filter((e) => !after || !sameKey(e.key, after)).slice(0, run.batch);
  if (entries.length === 0) {
    const next: MigrationRecord = { from: state.from, to: state.to, step: "epochs" };
    if (await commit(run, [migration], (op) => op.set(migrationKey(), next))) {
      run.progress("schema: the references of every manifest are recorded");
    }
    return;
  }
  // The migration record is rewritten by every commit (with the cursor it reached).
  const reserved: Write[] = [[migrationKey(), { ...state, cursor: "x".repeat(1024) }]];
  const budget = new Budget(reserved);
  const writes: Write[] = [];
  let cursor = "";
  let done = 0;
  for (const entry of entries) {
    const [, name, digest] = entry.key as [string, string, Digest];
    const pages = await refsOf(run, name, digest, entry.value);
    const mine = pages.map((page, i): Write => [manifestRefsKey(name, digest, i), page]);
    if (done > 0 && !budget.fits(mine)) break;
    if (done === 0 && !budget.fits(mine)) {
      // One manifest whose pages do not fit one commit: write them over several; only
      // the last moves the cursor past it (a page written again gets the same value).
      let chunk = new Budget(reserved);
      let pending: Write[] = [];
      for (const write of mine) {
        if (!chunk.fits([write])) {
          const ops = pending;
          if (!(await commit(run, [migration], (op) => apply(op, ops)))) return;
          chunk = new Budget(reserved);
          pending = [];
        }
        chunk.add([write]);
        pending.push(write);
      }
      mine.splice(0, mine.length, ...pending);
    }
    budget.add(mine);
    writes.push(...mine);
    cursor = JSON.stringify([name, digest]);
    done++;
  }
  const next: MigrationRecord = { ...state, cursor };
  if (await commit(run, [migration], (op) => apply(op, writes).set(migrationKey(), next))) {
    run.progress(`schema: references of ${done} manifest(s) recorded, up to ${cursor}`);
  }
}

/** Step `epochs`: deletes a batch of legacy keys, or finishes when none are left. */
async function epochsBatch(
  run: Run,
  migration: Deno.KvEntry<MigrationRecord>,
  schema: Deno.KvEntryMaybe<unknown>,
): Promise<void> {
  const listed = await run.kv.list<unknown>(
    { prefix: legacyManifestEpochsPrefix() },
    Math.min(run.batch, MAX_MUTATIONS),
  );
  if (listed.length === 0) {
    if (migration.value.to >= 3) {
      const next: MigrationRecord = { ...migration.value, step: "gc-manifests" };
      delete next.cursor;
      if (await commit(run, [migration], (op) => op.set(migrationKey(), next))) {
        run.progress("schema: schema 2 layout reached; counting for the garbage collector");
      }
      return;
    }
    await finish(run, migration, schema, migration.value.to);
    return;
  }
  const budget = new Budget([[migrationKey(), migration.value]]);
  const deletes: Write[] = [];
  for (const { key } of listed) {
    if (!budget.fits([[key]])) break;
    budget.add([[key]]);
    deletes.push([key]);
  }
  // The record is rewritten so that its versionstamp moves and a concurrent migrator re-reads.
  const removed = await commit(
    run,
    [migration],
    (op) => apply(op, deletes).set(migrationKey(), migration.value),
  );
  if (removed) run.progress(`schema: ${deletes.length} legacy manifest_epochs key(s) deleted`);
}

/**
 * Brings `kv` to {@linkcode SCHEMA_VERSION}, resuming a migration a crash
 * interrupted. A new (empty) KV just gets the version.
 *
 * @param kv the metadata KV
 * @param blobs where manifest bytes are read from
 * @returns the version found and the version now
 * @throws {SchemaError} when the KV was written by a newer Berth (nothing is changed)
 */
export async function migrate(
  kv: Kv,
  blobs: Pick<BlobStore, "open" | "stat">,
  options: MigrateOptions = {},
): Promise<MigrateResult> {
  const run: Run = {
    kv,
    blobs,
    batch: Math.max(1, Math.floor(options.batch ?? DEFAULT_BATCH)),
    progress: options.onProgress ?? (() => {}),
    commits: 0,
    stopAfter: options.stopAfterBatches ?? Infinity,
  };
  let from: number | undefined;
  for (;;) {
    const [schema, migration] = await kv.getMany<[unknown, MigrationRecord]>([
      schemaKey(),
      migrationKey(),
    ]);
    const version = schema.value === null ? null : readVersion(schema.value);
    if (version !== null && version > SCHEMA_VERSION) throw newer(version);
    const state = migration.value === null ? null : readMigration(migration.value);
    if (state !== null && state.to > SCHEMA_VERSION) throw newer(state.to);
    if (version === SCHEMA_VERSION) return { from: from ?? version, to: version };
    if (state === null) {
      if (version === null && (await kv.list({ prefix: [] }, 1)).length === 0) {
        const record: SchemaRecord = { version: SCHEMA_VERSION, migratedAt: Date.now() };
        await commit(run, [schema, migration], (op) => op.set(schemaKey(), record));
        continue;
      }
      from = version ?? 1;
      if (from !== 1 && from !== 2) {
        throw new SchemaError(`No migration from schema ${from} is known`);
      }
      const start: MigrationRecord = {
        from,
        to: SCHEMA_VERSION,
        step: from === 1 ? "refs" : "gc-manifests",
      };
      run.progress(`schema: migrating from schema ${from} to ${SCHEMA_VERSION}`);
      await commit(run, [schema, migration], (op) => op.set(migrationKey(), start));
      continue;
    }
    const entry = migration as Deno.KvEntry<MigrationRecord>;
    from ??= state.from;
    switch (state.step) {
      case "refs":
        await refsBatch(run, entry);
        break;
      case "epochs":
        await epochsBatch(run, entry, schema);
        break;
      case "gc-manifests":
      case "gc-links":
      case "gc-total":
        await gcBatch(run, entry);
        break;
      default:
        throw new SchemaError(
          `Unknown migration step "${state.step}" in ["schema_migration"]`,
        );
    }
  }
}
