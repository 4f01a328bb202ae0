/**
 * The metadata side of fsck: {@linkcode MetadataAudit} scans every key family
 * of `keys.ts` as stored (malformed keys and values included, so that they can
 * be reported) and applies repairs that commit only if what they name is
 * unchanged. {@linkcode KvMetadataAudit} implements it over Deno KV; nothing
 * outside `src/meta/` sees keys, versionstamps or atomic operations: an entry
 * carries an opaque {@linkcode Revision} and is named by its family and parts.
 *
 * @module
 */
import { type Digest, parseDigest } from "../oci/digest.ts";
import {
  blobGoneKey,
  blobHoldersKey,
  blobLinkKey,
  blobReposKey,
  FAMILIES,
  gcBytesKey,
  gcDueKey,
  gcEpochKey,
  gcIntentKey,
  gcRefsKey,
  gcReleaseKey,
  gcUntaggedKey,
  manifestKey,
  manifestRefsKey,
  migrationKey,
  referrerKey,
  repoKey,
  repoVersionKey,
  schemaKey,
  secretKey,
  tagClockKey,
  tagKey,
  tagsByDigestKey,
  uploadCountKey,
  uploadKey,
  uploadPartKey,
  uploadTotalKey,
  usageKey,
  usageTotalKey,
} from "./keys.ts";
import { type Kv, KV_LIMITS } from "./kv.ts";

declare const REVISION: unique symbol;
/** An opaque token of an entry's version: a repair that checks it fails if the entry changed. */
export type Revision = string & { readonly [REVISION]: true };

/** The families an audit scans: those of `keys.ts`, and `manifest_epochs` (schema 1 only). */
export type AuditFamily = typeof FAMILIES[number] | "manifest_epochs";

/** The parts of each family's keys, by name. */
export interface AuditKeyParts {
  repos: { name: string };
  manifests: { name: string; digest: Digest };
  tags: { name: string; tag: string };
  tags_by_digest: { name: string; digest: Digest; tag: string };
  manifest_refs: { name: string; digest: Digest; page: number };
  tag_clock: { name: string };
  repo_version: { name: string };
  blob_links: { name: string; digest: Digest };
  blob_repos: { digest: Digest; name: string };
  referrers: { name: string; subject: Digest; artifactType: string; digest: Digest };
  uploads: { uploadId: string };
  upload_parts: { uploadId: string; index: number };
  upload_counts: { name: string };
  upload_total: Record<never, never>;
  secrets: { name: string };
  gc_refs: { name: string; digest: Digest };
  blob_holders: { digest: Digest };
  blob_gone: { digest: Digest };
  gc_epoch: { name: string };
  gc_due: { kind: string; at: number; name: string; digest: Digest };
  gc_untagged: { name: string; digest: Digest };
  gc_bytes: { at: number; digest: Digest };
  gc_release: { at: number; token: string; page: number };
  gc_intents: { token: string; index: number };
  usage: { name: string };
  usage_total: Record<never, never>;
  schema: Record<never, never>;
  schema_migration: Record<never, never>;
  manifest_epochs: { name: string; digest: Digest };
}

/** A key of family `F`, parsed. */
export type AuditKeyOf<F extends AuditFamily> = { family: F } & AuditKeyParts[F];
/** A key of any family but `manifest_epochs` (which is only ever removed, by its entry). */
export type AuditKey = { [F in Exclude<AuditFamily, "manifest_epochs">]: AuditKeyOf<F> }[
  Exclude<AuditFamily, "manifest_epochs">
];

/** A well-formed 64-bit counter value (`upload_counts`, `upload_total`, `tag_clock`). */
export class Counter {
  readonly value: bigint;
  constructor(value: bigint) {
    if (value < 0n || value >= 1n << 64n) throw new RangeError(`Counter out of range: ${value}`);
    this.value = value;
  }
}

/** One stored entry of family `F`, as it is. */
export interface AuditEntry<F extends AuditFamily = AuditFamily> {
  readonly family: F;
  /** The key's parts after the family name, as stored (for messages; malformed ones too). */
  readonly parts: readonly unknown[];
  /** The parsed key, or null when the key is malformed for its family. */
  readonly key: AuditKeyOf<F> | null;
  /** The stored value; a 64-bit counter is a {@linkcode Counter}. */
  readonly value: unknown;
  readonly revision: Revision;
}

/** A repair target: an entry as scanned, or a key by its parts. */
export type AuditTarget = AuditEntry | AuditKey;

/** One repair: one atomic commit, made only if every check holds. */
export interface AuditRepair {
  /** Entries that must be unchanged since they were scanned, and keys that must be absent. */
  check: (AuditEntry | { absent: AuditKey })[];
  /** Values to write (a {@linkcode Counter} is written as a counter). */
  set?: [AuditTarget, unknown][];
  delete?: AuditTarget[];
  /** Amounts to add to counters (negative subtracts; sums wrap modulo 2^64 as the server's do). */
  add?: [AuditKey, bigint][];
}

/** Checks one repair may make (Deno KV's limit). */
export const MAX_REPAIR_CHECKS = KV_LIMITS.checks;
/** Writes one repair may make (under Deno KV's 1000 mutations). */
export const MAX_REPAIR_WRITES = KV_LIMITS.mutations;

/** What fsck needs of the metadata: scans of each family, and checked repairs. */
export interface MetadataAudit {
  /** Every entry of `family`, in key order. */
  scan<F extends AuditFamily>(family: F): AsyncIterable<AuditEntry<F>>;
  /** Commits `changes` if every check holds; false when something changed meanwhile. */
  repair(changes: AuditRepair): Promise<boolean>;
}

type PartKind = "string" | "digest" | "index" | "kind";

/** Each family's key parts in order, with what each must be. */
const LAYOUT: { [F in AuditFamily]: readonly [keyof AuditKeyParts[F], PartKind][] } = {
  repos: [["name", "string"]],
  manifests: [["name", "string"], ["digest", "digest"]],
  tags: [["name", "string"], ["tag", "string"]],
  tags_by_digest: [["name", "string"], ["digest", "digest"], ["tag", "string"]],
  manifest_refs: [["name", "string"], ["digest", "digest"], ["page", "index"]],
  tag_clock: [["name", "string"]],
  repo_version: [["name", "string"]],
  blob_links: [["name", "string"], ["digest", "digest"]],
  blob_repos: [["digest", "digest"], ["name", "string"]],
  referrers: [
    ["name", "string"],
    ["subject", "digest"],
    ["artifactType", "string"],
    ["digest", "digest"],
  ],
  uploads: [["uploadId", "string"]],
  upload_parts: [["uploadId", "string"], ["index", "index"]],
  upload_counts: [["name", "string"]],
  upload_total: [],
  secrets: [["name", "string"]],
  gc_refs: [["name", "string"], ["digest", "digest"]],
  blob_holders: [["digest", "digest"]],
  blob_gone: [["digest", "digest"]],
  gc_epoch: [["name", "string"]],
  gc_due: [["kind", "kind"], ["at", "index"], ["name", "string"], ["digest", "digest"]],
  gc_untagged: [["name", "string"], ["digest", "digest"]],
  gc_bytes: [["at", "index"], ["digest", "digest"]],
  gc_release: [["at", "index"], ["token", "string"], ["page", "index"]],
  gc_intents: [["token", "string"], ["index", "index"]],
  usage: [["name", "string"]],
  usage_total: [],
  schema: [],
  schema_migration: [],
  manifest_epochs: [["name", "string"], ["digest", "digest"]],
};

function isPart(value: unknown, kind: PartKind): boolean {
  if (kind === "index") {
    return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
  }
  if (typeof value !== "string") return false;
  if (kind === "string") return true;
  if (kind === "kind") return value === "blob" || value === "manifest" || value === "subject";
  try {
    return parseDigest(value) === value;
  } catch {
    return false;
  }
}

/** The parsed key of `parts` in `family`, or null when they are not what the family holds. */
function parseKey<F extends AuditFamily>(
  family: F,
  parts: readonly unknown[],
): AuditKeyOf<F> | null {
  const layout = LAYOUT[family] as readonly [string, PartKind][];
  if (parts.length !== layout.length) return null;
  const key: Record<string, unknown> = { family };
  for (const [i, [field, kind]] of layout.entries()) {
    if (!isPart(parts[i], kind)) return null;
    key[field] = parts[i];
  }
  return key as unknown as AuditKeyOf<F>;
}

/** The KV key of `key`, built by the `keys.ts` builders. */
function kvKey(key: AuditKey): Deno.KvKey {
  switch (key.family) {
    case "repos":
      return repoKey(key.name);
    case "manifests":
      return manifestKey(key.name, key.digest);
    case "tags":
      return tagKey(key.name, key.tag);
    case "tags_by_digest":
      return tagsByDigestKey(key.name, key.digest, key.tag);
    case "manifest_refs":
      return manifestRefsKey(key.name, key.digest, key.page);
    case "tag_clock":
      return tagClockKey(key.name);
    case "repo_version":
      return repoVersionKey(key.name);
    case "blob_links":
      return blobLinkKey(key.name, key.digest);
    case "blob_repos":
      return blobReposKey(key.digest, key.name);
    case "referrers":
      return referrerKey(key.name, key.subject, key.artifactType, key.digest);
    case "uploads":
      return uploadKey(key.uploadId);
    case "upload_parts":
      return uploadPartKey(key.uploadId, key.index);
    case "upload_counts":
      return uploadCountKey(key.name);
    case "upload_total":
      return uploadTotalKey();
    case "secrets":
      return secretKey(key.name);
    case "gc_refs":
      return gcRefsKey(key.name, key.digest);
    case "blob_holders":
      return blobHoldersKey(key.digest);
    case "blob_gone":
      return blobGoneKey(key.digest);
    case "gc_epoch":
      return gcEpochKey(key.name);
    case "gc_untagged":
      return gcUntaggedKey(key.name, key.digest);
    case "gc_due":
      return gcDueKey(key.kind as "blob", key.at, key.name, key.digest);
    case "gc_bytes":
      return gcBytesKey(key.at, key.digest);
    case "gc_release":
      return gcReleaseKey(key.at, key.token, key.page);
    case "gc_intents":
      return gcIntentKey(key.token, key.index);
    case "usage":
      return usageKey(key.name);
    case "usage_total":
      return usageTotalKey();
    case "schema":
      return schemaKey();
    case "schema_migration":
      return migrationKey();
  }
}

function isEntry(target: AuditTarget): target is AuditEntry {
  return "revision" in target;
}

/** The stored key of a target: an entry's exactly as scanned (malformed ones too). */
function targetKey(target: AuditTarget): Deno.KvKey {
  return isEntry(target) ? [target.family, ...target.parts] as Deno.KvKey : kvKey(target);
}

function encode(value: unknown): unknown {
  return value instanceof Counter ? new Deno.KvU64(value.value) : value;
}

function decode(value: unknown): unknown {
  return value instanceof Deno.KvU64 ? new Counter(value.value) : value;
}

/** {@linkcode MetadataAudit} over Deno KV. */
export class KvMetadataAudit implements MetadataAudit {
  readonly #kv: Kv;

  constructor(kv: Kv) {
    this.#kv = kv;
  }

  async *scan<F extends AuditFamily>(family: F): AsyncIterable<AuditEntry<F>> {
    const entry = (raw: Deno.KvEntry<unknown>): AuditEntry<F> => {
      const parts = raw.key.slice(1);
      return {
        family,
        parts,
        key: parseKey(family, parts),
        value: decode(raw.value),
        revision: raw.versionstamp as Revision,
      };
    };
    // A prefix scan leaves out the prefix itself: the family's bare key is read apart.
    const bare = await this.#kv.get<unknown>([family]);
    if (bare.versionstamp !== null) yield entry(bare as Deno.KvEntry<unknown>);
    for await (const raw of this.#kv.scan<unknown>([family])) yield entry(raw);
  }

  async repair(changes: AuditRepair): Promise<boolean> {
    const { check, set = [], add = [] } = changes;
    const deletes = changes.delete ?? [];
    if (check.length > MAX_REPAIR_CHECKS) {
      throw new RangeError(`A repair checks at most ${MAX_REPAIR_CHECKS} entries`);
    }
    if (set.length + deletes.length + add.length > MAX_REPAIR_WRITES) {
      throw new RangeError(`A repair writes at most ${MAX_REPAIR_WRITES} entries`);
    }
    const versionstamp = await this.#kv.commit((op) => {
      for (const one of check) {
        op.check(
          "absent" in one
            ? { key: kvKey(one.absent), versionstamp: null }
            : { key: targetKey(one), versionstamp: one.revision },
        );
      }
      for (const [target, value] of set) op.set(targetKey(target), encode(value));
      for (const target of deletes) op.delete(targetKey(target));
      for (const [key, amount] of add) {
        op.sum(kvKey(key), BigInt.asUintN(64, amount));
      }
      return op;
    });
    return versionstamp !== null;
  }
}
