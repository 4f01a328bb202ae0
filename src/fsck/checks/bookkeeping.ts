/**
 * The garbage collector's bookkeeping agrees with the records it describes:
 * `gc_refs` counts the references of every manifest record (and of pending
 * releases and intents), `blob_holders` the links and manifest records of
 * each digest, `usage` the bytes of each repository's links and records,
 * and `usage_total` the bytes of every digest with holders, once. Queue
 * entries are well-formed; a removal of bytes left under way is a warning
 * (the next collection finishes it).
 *
 * A repair reads the families again (earlier repairs may have removed
 * records), sets every counter that differs, and queues what may have
 * become collectable.
 *
 * @module
 */
import { type AuditEntry, type AuditKey, Counter, type MetadataAudit } from "../../meta/audit.ts";
import type { Digest } from "../../oci/digest.ts";
import type { ManifestRefs } from "../../meta/keys.ts";
import type { Storage } from "../../storage/blob_store.ts";
import { counterValue } from "../facts.ts";
import { type CheckContext, type Finding, type Invariant, removal } from "../finding.ts";
import { id as valueId, isObject, show } from "../values.ts";

type Family = "manifests" | "manifest_refs" | "blob_links" | "gc_release" | "gc_intents";
type Counted = "gc_refs" | "blob_holders" | "usage" | "usage_total";

/** What the counters should say, from the records. */
export interface Expected {
  /** `name\0digest` → references. */
  refs: Map<string, number>;
  holders: Map<Digest, number>;
  usage: Map<string, number>;
}

const id = (...parts: string[]) => parts.join("\0");
const add = <K>(m: Map<K, number>, k: K, n: number) => m.set(k, (m.get(k) ?? 0) + n);

function digests(value: unknown, field: "blobs" | "manifests"): string[] {
  if (!isObject(value) || !Array.isArray(value[field])) return [];
  return (value[field] as unknown[]).filter((d): d is string => typeof d === "string");
}

/**
 * The counts the records, releases and intents imply. A manifest's
 * references are what its bytes say when `pagesFor` knows them (its stored
 * pages may be damaged: another check rewrites them), else its stored pages.
 */
export function expectedCounts(
  meta: { [F in Family]: AuditEntry<F>[] },
  pagesFor: (name: string, digest: Digest) => ManifestRefs[] | undefined = () => undefined,
): Expected {
  const e: Expected = { refs: new Map(), holders: new Map(), usage: new Map() };
  const records = new Set<string>();
  for (const { key, value } of meta.manifests) {
    if (!key) continue;
    records.add(id(key.name, key.digest));
    add(e.holders, key.digest, 1);
    const size = isObject(value) && typeof value.size === "number" ? value.size : 0;
    add(e.usage, key.name, size);
  }
  const pageRefs = new Map<string, Set<string>>();
  for (const { key, value } of meta.manifest_refs) {
    if (!key || !records.has(id(key.name, key.digest))) continue;
    const set = pageRefs.get(id(key.name, key.digest)) ?? new Set();
    for (const d of [...digests(value, "blobs"), ...digests(value, "manifests")]) set.add(d);
    pageRefs.set(id(key.name, key.digest), set);
  }
  for (const owner of records) {
    const [name, digest] = owner.split("\0") as [string, Digest];
    const fromBytes = pagesFor(name, digest);
    const set = fromBytes
      ? new Set(fromBytes.flatMap((p) => [...p.blobs, ...p.manifests]))
      : pageRefs.get(owner) ?? new Set();
    for (const d of set) add(e.refs, id(name, d), 1);
  }
  for (const { key, value } of meta.blob_links) {
    if (!key) continue;
    add(e.holders, key.digest, 1);
    add(e.usage, key.name, isObject(value) && typeof value.size === "number" ? value.size : 0);
  }
  for (const { key, value } of [...meta.gc_release, ...meta.gc_intents]) {
    if (!key || !isObject(value) || typeof value.name !== "string") continue;
    for (const d of [...digests(value, "blobs"), ...digests(value, "manifests")]) {
      add(e.refs, id(value.name, d), 1);
    }
  }
  return e;
}

/** One counter that disagrees: where, what it is, what it should be. */
interface Mismatch {
  where: string;
  actual: bigint | null;
  expected: bigint;
}

function mismatches(
  meta: { [F in Family | Counted]: AuditEntry<F>[] },
  sizeOf: (digest: Digest) => number,
  pagesFor: (name: string, digest: Digest) => ManifestRefs[] | undefined,
): Mismatch[] {
  const e = expectedCounts(meta, pagesFor);
  const found: Mismatch[] = [];
  const compare = <K>(
    entries: AuditEntry[],
    keyOf: (entry: AuditEntry) => K | null,
    expected: Map<K, number>,
    where: (k: K) => string,
  ) => {
    const seen = new Set<K>();
    for (const entry of entries) {
      const k = keyOf(entry);
      if (k === null) continue;
      seen.add(k);
      const actual = counterValue(entry.value);
      const want = BigInt(expected.get(k) ?? 0);
      if (actual !== want) found.push({ where: where(k), actual, expected: want });
    }
    for (const [k, n] of expected) {
      if (!seen.has(k) && n !== 0) found.push({ where: where(k), actual: 0n, expected: BigInt(n) });
    }
  };
  compare(
    meta.gc_refs,
    (
      en,
    ) => (en.key && "name" in en.key && "digest" in en.key ? id(en.key.name, en.key.digest) : null),
    e.refs,
    (k) => `gc_refs ${k.replace("\0", " ")}`,
  );
  compare(
    meta.blob_holders,
    (en) => (en.key && "digest" in en.key ? en.key.digest as Digest : null),
    e.holders,
    (k) => `blob_holders ${k}`,
  );
  compare(
    meta.usage,
    (en) => (en.key && "name" in en.key ? en.key.name : null),
    e.usage,
    (k) => `usage ${k}`,
  );
  let total = 0;
  for (const entry of meta.blob_holders) if (entry.key) total += sizeOf(entry.key.digest);
  const stored = meta.usage_total.find((en) => en.key !== null);
  const actual = counterValue(stored?.value);
  if (actual !== BigInt(total)) {
    found.push({ where: "usage_total", actual, expected: BigInt(total) });
  }
  return found;
}

const FAMILIES = [
  "manifests",
  "manifest_refs",
  "blob_links",
  "gc_release",
  "gc_intents",
  "gc_refs",
  "blob_holders",
  "usage",
  "usage_total",
] as const;

async function rescan(audit: MetadataAudit) {
  const meta = {} as { [F in typeof FAMILIES[number]]: AuditEntry<F>[] };
  for (const family of FAMILIES) {
    const entries: AuditEntry[] = [];
    for await (const entry of audit.scan(family)) entries.push(entry);
    (meta as Record<string, AuditEntry[]>)[family] = entries;
  }
  return meta;
}

/** Sets every counter to what the records say now; queues what may have become collectable. */
export function rebuildBookkeeping(audit: MetadataAudit, storage: Storage): Promise<boolean> {
  return rebuild(audit, storage);
}

async function rebuild(audit: MetadataAudit, storage: Storage): Promise<boolean> {
  const meta = await rescan(audit);
  const e = expectedCounts(meta);
  const sizes = new Map<Digest, number>();
  const sizeOf = async (d: Digest) => {
    if (!sizes.has(d)) sizes.set(d, (await storage.stat(d))?.size ?? 0);
    return sizes.get(d)!;
  };
  const writes: [AuditKey, unknown][] = [];
  const now = Date.now();
  const refsKeys = new Set([
    ...e.refs.keys(),
    ...meta.gc_refs.flatMap((en) => en.key ? [id(en.key.name, en.key.digest)] : []),
  ]);
  for (const k of refsKeys) {
    const [name, digest] = k.split("\0") as [string, Digest];
    writes.push([{ family: "gc_refs", name, digest }, new Counter(BigInt(e.refs.get(k) ?? 0))]);
  }
  const holderKeys = new Set([
    ...e.holders.keys(),
    ...meta.blob_holders.flatMap((en) => en.key ? [en.key.digest] : []),
  ]);
  let total = 0;
  for (const digest of holderKeys) {
    const n = e.holders.get(digest) ?? 0;
    writes.push([{ family: "blob_holders", digest }, new Counter(BigInt(n))]);
    total += await sizeOf(digest);
    if (n === 0) writes.push([{ family: "gc_bytes", at: now, digest }, true]);
  }
  for (const { key, value } of meta.blob_links) {
    if (key && (e.refs.get(id(key.name, key.digest)) ?? 0) === 0) {
      const at = isObject(value) && typeof value.linkedAt === "number" ? value.linkedAt : 0;
      writes.push([
        { family: "gc_due", kind: "blob", at, name: key.name, digest: key.digest },
        true,
      ]);
    }
  }
  const usageKeys = new Set([
    ...e.usage.keys(),
    ...meta.usage.flatMap((en) => en.key ? [en.key.name] : []),
  ]);
  for (const name of usageKeys) {
    writes.push([{ family: "usage", name }, new Counter(BigInt(e.usage.get(name) ?? 0))]);
  }
  writes.push([{ family: "usage_total" }, new Counter(BigInt(total))]);
  let ok = true;
  for (let i = 0; i < writes.length; i += 400) {
    ok = await audit.repair({ check: [], set: writes.slice(i, i + 400) }) && ok;
  }
  return ok;
}

/** Counters that disagree with the records; set right (all at once, from a fresh read). */
export const bookkeepingCounters: Invariant = {
  name: "the collector's counters agree with the records",
  *check(ctx) {
    const sizes = new Map(ctx.scan.blobs.map((b) => [b.digest, b.size]));
    const pagesFor = (name: string, digest: Digest) =>
      ctx.facts.goodManifests.get(valueId(name, digest))?.pages;
    const found = mismatches(ctx.scan.meta, (d) => sizes.get(d) ?? 0, pagesFor);
    let rebuilt: Promise<boolean> | null = null;
    for (const m of found) {
      yield {
        kind: "problem",
        message: `${m.where} is ${
          m.actual === null ? "malformed" : m.actual
        }, but the records say ${m.expected}`,
        repair: async () => {
          rebuilt ??= rebuild(ctx.audit, ctx.storage);
          return (await rebuilt) ? "set every counter from the records" : null;
        },
      } satisfies Finding;
    }
  },
};

/** Malformed keys or values in the collector's queues; removed. */
export const bookkeepingQueues: Invariant = {
  name: "the collector's queues are well-formed",
  *check(ctx: CheckContext) {
    const { meta } = ctx.scan;
    const families = [
      ["gc_due", meta.gc_due],
      ["gc_untagged", meta.gc_untagged],
      ["gc_bytes", meta.gc_bytes],
      ["gc_release", meta.gc_release],
      ["gc_intents", meta.gc_intents],
      ["gc_refs", meta.gc_refs],
      ["blob_holders", meta.blob_holders],
      ["blob_gone", meta.blob_gone],
      ["gc_epoch", meta.gc_epoch],
      ["usage", meta.usage],
    ] as const;
    for (const [family, entries] of families) {
      for (const entry of entries as AuditEntry[]) {
        if (!entry.key) {
          yield removal(
            ctx,
            `${family} ${entry.parts.map(show).join(" ")}: malformed key`,
            [entry],
            "removed it",
          );
        }
      }
    }
    for (const entry of [...meta.gc_release, ...meta.gc_intents] as AuditEntry[]) {
      const v = entry.value;
      if (
        entry.key && (!isObject(v) || typeof v.name !== "string" || !Array.isArray(v.blobs) ||
          !Array.isArray(v.manifests))
      ) {
        yield removal(
          ctx,
          `${entry.family} ${entry.parts.map(show).join(" ")}: malformed value`,
          [entry],
          "removed it",
        );
      }
    }
    for (const entry of meta.gc_untagged) {
      if (entry.key && typeof entry.value !== "number") {
        yield removal(
          ctx,
          `gc_untagged ${entry.parts.map(show).join(" ")}: malformed value`,
          [entry],
          "removed it",
        );
      }
    }
    for (const entry of meta.blob_gone) {
      const v = entry.value;
      if (!entry.key) continue;
      if (!isObject(v) || (v.state !== "removing" && v.state !== "removed")) {
        yield removal(ctx, `blob_gone ${entry.key.digest}: malformed value`, [entry], "removed it");
      } else if (v.state === "removing") {
        yield {
          kind: "warning",
          message: `the removal of ${entry.key.digest}'s bytes was interrupted; ` +
            `the next collection finishes it`,
        };
      }
    }
  },
};
