/**
 * What a {@linkcode Scan} says, judged once: which blobs are good, which
 * manifests, tags, links and upload sessions can be served (and if not, why),
 * and what each repair of a bad one takes along. The invariants turn these
 * judgements into findings; keeping them here means each rule is written once
 * and every check that depends on it agrees.
 *
 * Each judgement relies only on earlier ones: blobs, then manifests (their
 * bytes), then tags (their manifest), links (their bytes), sessions.
 *
 * @module
 */
import { isDeepStrictEqual } from "node:util";
import { type AuditEntry, type AuditKeyOf, Counter } from "../meta/audit.ts";
import {
  type ManifestRecord,
  type ManifestRefs,
  type ReferrerDescriptor,
  refsPages,
  type UploadRecord,
} from "../meta/keys.ts";
import { referrerEntry } from "../meta/metadata_store.ts";
import type { Digest } from "../oci/digest.ts";
import type { ParsedManifest } from "../oci/manifest.ts";
import { contentId, type Scan } from "./scan.ts";
import { asDigest, id, isObject, isSize } from "./values.ts";

/** What an upload session id may be (the store accepts nothing else as a folder name). */
import { UPLOAD_ID_REGEXP } from "../storage/blob_store.ts";
export { UPLOAD_ID_REGEXP };

/** A referrer entry a manifest implies: its key and descriptor. */
export interface ReferrerFact {
  key: AuditKeyOf<"referrers">;
  value: ReferrerDescriptor;
}

/** A manifest whose verified bytes parse: it can be served. */
export interface GoodManifest {
  ok: true;
  entry: AuditEntry<"manifests">;
  name: string;
  digest: Digest;
  /** The record its bytes say it should have. */
  expected: ManifestRecord;
  parsed: ParsedManifest;
  /** The referrer entry it needs (it has a subject), or null. */
  referrer: ReferrerFact | null;
  /** The referrer entry its stored record implies, or null (rewriting the record moves it). */
  recordedReferrer: AuditKeyOf<"referrers"> | null;
  /** Where the stored record disagrees with its bytes (none: it agrees). */
  differences: string[];
  /** Its `manifest_refs` pages as the bytes say, and as stored (well-formed keys, in order). */
  pages: ManifestRefs[];
  storedPages: AuditEntry<"manifest_refs">[];
}

/** A manifest record that cannot be served; a repair removes it and what it takes along. */
export interface BadManifest {
  ok: false;
  entry: AuditEntry<"manifests">;
  why: string;
  /** Its referrer entry (as DELETE removes it), or null. */
  referrer: AuditKeyOf<"referrers"> | null;
  /** Its `manifest_refs` pages. */
  storedPages: AuditEntry<"manifest_refs">[];
}

/** A tag and whether it can be served. */
export type TagFact =
  | { ok: true; entry: AuditEntry<"tags">; name: string; tag: string; digest: Digest }
  | {
    ok: false;
    entry: AuditEntry<"tags">;
    why: string;
    /** Its reverse entry, removed with it, or null. */
    reverse: AuditKeyOf<"tags_by_digest"> | null;
  };

/** A blob link and whether it can be served. */
export type LinkFact =
  | { ok: true; entry: AuditEntry<"blob_links">; name: string; digest: Digest; size: number }
  | {
    ok: false;
    entry: AuditEntry<"blob_links">;
    why: string;
    /** Its reverse entry, removed with it, or null. */
    reverse: AuditKeyOf<"blob_repos"> | null;
  };

/** An upload session and what keeps it from being completed. */
export interface SessionFact {
  entry: AuditEntry<"uploads">;
  /** The record, when key and record are well-formed. */
  record: UploadRecord | null;
  /** Why it cannot be completed (none: it can). */
  faults: string[];
  /** Part entries past its part count (removable on their own when there are no faults). */
  extra: AuditEntry<"upload_parts">[];
  /** Every part entry stored under its id. */
  parts: AuditEntry<"upload_parts">[];
  /** The part files its parts name. */
  files: Set<string>;
}

/** Everything judged, for the invariants. */
export interface Facts {
  /** Blobs whose bytes hash to their digest: digest → size. */
  goodBlobs: Map<Digest, number>;
  manifests: (GoodManifest | BadManifest)[];
  /** id(name, digest) → the good manifest. */
  goodManifests: Map<string, GoodManifest>;
  /** id(name, digest) of every manifest record with a well-formed key, good or bad. */
  recordedManifests: Set<string>;
  /** id(name, digest) of good manifests whose record a repair rewrites (with its referrer entry). */
  rewritten: Set<string>;
  /** id(name, subject, artifactType, digest) of referrer entries removed with a bad manifest. */
  removedReferrers: Set<string>;
  tags: TagFact[];
  /** id(name, tag) → digest of good tags. */
  goodTags: Map<string, Digest>;
  /** id(name, digest, tag) of reverse entries removed with a bad tag. */
  removedReverse: Set<string>;
  links: LinkFact[];
  /** id(name, digest) of good links. */
  goodLinks: Set<string>;
  /** id(digest, name) of blob_repos entries removed with a bad link. */
  removedBlobRepos: Set<string>;
  sessions: SessionFact[];
  /** Well-formed sessions per repository: all of them, and those that can be completed. */
  openSessions: Map<string, number>;
  completableSessions: Map<string, number>;
  /** Repositories whose session counter agrees with {@linkcode openSessions}; and the total. */
  countersAgree: Set<string>;
  totalAgrees: boolean;
  /** Repositories with content (good manifests, tags or links). */
  names: Set<string>;
}

/** The referrer key of a manifest with `subject`. */
function referrerKeyOf(
  name: string,
  digest: Digest,
  subject: Digest,
  artifactType: string | undefined,
): AuditKeyOf<"referrers"> {
  return { family: "referrers", name, subject, artifactType: artifactType ?? "", digest };
}

/** The semantic id of a referrer key. */
export function referrerId(key: AuditKeyOf<"referrers">): string {
  return id(key.name, key.subject, key.artifactType, key.digest);
}

/** Judges everything a scan found. */
export function judge(scan: Scan): Facts {
  const goodBlobs = new Map<Digest, number>();
  for (const blob of scan.blobs) {
    if (blob.actual === blob.digest) goodBlobs.set(blob.digest, blob.size);
  }
  const facts: Facts = {
    goodBlobs,
    manifests: [],
    goodManifests: new Map(),
    recordedManifests: new Set(),
    rewritten: new Set(),
    removedReferrers: new Set(),
    tags: [],
    goodTags: new Map(),
    removedReverse: new Set(),
    links: [],
    goodLinks: new Set(),
    removedBlobRepos: new Set(),
    sessions: [],
    openSessions: new Map(),
    completableSessions: new Map(),
    countersAgree: new Set(),
    totalAgrees: false,
    names: new Set(),
  };
  judgeManifests(scan, facts);
  judgeTags(scan, facts);
  judgeLinks(scan, facts);
  judgeSessions(scan, facts);
  return facts;
}

function judgeManifests(scan: Scan, facts: Facts): void {
  const pagesOf = new Map<string, AuditEntry<"manifest_refs">[]>();
  for (const entry of scan.meta.manifest_refs) {
    if (!entry.key) continue;
    const at = id(entry.key.name, entry.key.digest);
    pagesOf.get(at)?.push(entry) ?? pagesOf.set(at, [entry]);
  }
  for (const entry of scan.meta.manifests) {
    const fact = judgeManifest(scan, facts, entry, pagesOf);
    facts.manifests.push(fact);
    if (entry.key) facts.recordedManifests.add(id(entry.key.name, entry.key.digest));
    if (!fact.ok) {
      if (fact.referrer) facts.removedReferrers.add(referrerId(fact.referrer));
      continue;
    }
    const self = id(fact.name, fact.digest);
    facts.goodManifests.set(self, fact);
    if (fact.differences.length) facts.rewritten.add(self);
    facts.names.add(fact.name);
  }
}

function judgeManifest(
  scan: Scan,
  facts: Facts,
  entry: AuditEntry<"manifests">,
  pagesOf: Map<string, AuditEntry<"manifest_refs">[]>,
): GoodManifest | BadManifest {
  const record = entry.value;
  const key = entry.key;
  const storedPages = key ? pagesOf.get(id(key.name, key.digest)) ?? [] : [];
  // What a removal takes along: the referrer entry the record implies, as DELETE does.
  const recordedReferrer = key && isObject(record) && asDigest(record.subject)
    ? referrerKeyOf(
      key.name,
      key.digest,
      record.subject as Digest,
      typeof record.artifactType === "string" ? record.artifactType : undefined,
    )
    : null;
  const bad = (why: string): BadManifest => ({
    ok: false,
    entry,
    why,
    referrer: recordedReferrer,
    storedPages,
  });
  if (!key) return bad("malformed key");
  if (!isObject(record) || typeof record.mediaType !== "string" || !isSize(record.size)) {
    return bad("malformed record");
  }
  const size = facts.goodBlobs.get(key.digest);
  if (size === undefined) return bad("its bytes are missing or corrupt");
  const parsed = scan.contents.get(contentId(key.digest, record.mediaType));
  if (parsed === undefined || typeof parsed === "string") {
    return bad(`its bytes do not parse as a manifest: ${parsed ?? "not read"}`);
  }
  // The bytes are verified: the record must say what they say.
  const expected: ManifestRecord = {
    mediaType: parsed.mediaType,
    size,
    createdAt: typeof record.createdAt === "number" ? record.createdAt : Date.now(),
  };
  if (parsed.artifactType !== undefined) expected.artifactType = parsed.artifactType;
  if (parsed.subject !== undefined) expected.subject = parsed.subject;
  const differences = (["mediaType", "size", "artifactType", "subject"] as const)
    .filter((field) => record[field] !== expected[field])
    .map((field) =>
      `${field} ${JSON.stringify(record[field])} (bytes say ${JSON.stringify(expected[field])})`
    );
  const refs = { blobs: parsed.blobs, manifests: parsed.manifests };
  return {
    ok: true,
    entry,
    name: key.name,
    digest: key.digest,
    expected,
    parsed,
    referrer: expected.subject === undefined ? null : {
      key: referrerKeyOf(key.name, key.digest, expected.subject, expected.artifactType),
      value: referrerEntry(key.digest, expected, parsed.annotations),
    },
    recordedReferrer,
    differences,
    pages: refsPages(parsed.subject === undefined ? refs : { ...refs, subject: parsed.subject }),
    storedPages,
  };
}

/** Whether a good manifest's stored `manifest_refs` are exactly what its bytes say. */
export function refsAgree(manifest: GoodManifest): boolean {
  const stored = manifest.storedPages;
  return stored.length === manifest.pages.length &&
    stored.every((page, i) =>
      page.key?.page === i && isDeepStrictEqual(page.value, manifest.pages[i])
    );
}

function judgeTags(scan: Scan, facts: Facts): void {
  for (const entry of scan.meta.tags) {
    const key = entry.key;
    const value = entry.value;
    const digest = isObject(value) ? asDigest(value.digest) : null;
    const reverse: AuditKeyOf<"tags_by_digest"> | null = key && digest
      ? { family: "tags_by_digest", name: key.name, digest, tag: key.tag }
      : null;
    const bad = (why: string): TagFact => {
      if (reverse) facts.removedReverse.add(id(reverse.name, reverse.digest, reverse.tag));
      return { ok: false, entry, why, reverse };
    };
    if (!key) {
      facts.tags.push(bad("malformed key"));
    } else if (!digest) {
      facts.tags.push(bad("malformed record"));
    } else if (!facts.goodManifests.has(id(key.name, digest))) {
      const recorded = facts.recordedManifests.has(id(key.name, digest));
      facts.tags.push(
        bad(
          `points at ${digest}, ${recorded ? "a manifest that cannot be served" : "no manifest"}`,
        ),
      );
    } else {
      facts.tags.push({ ok: true, entry, name: key.name, tag: key.tag, digest });
      facts.goodTags.set(id(key.name, key.tag), digest);
      facts.names.add(key.name);
    }
  }
}

function judgeLinks(scan: Scan, facts: Facts): void {
  for (const entry of scan.meta.blob_links) {
    const key = entry.key;
    const bad = (why: string): LinkFact => {
      const reverse = key
        ? { family: "blob_repos" as const, digest: key.digest, name: key.name }
        : null;
      if (reverse) facts.removedBlobRepos.add(id(reverse.digest, reverse.name));
      return { ok: false, entry, why, reverse };
    };
    const size = key ? facts.goodBlobs.get(key.digest) : undefined;
    if (!key) {
      facts.links.push(bad("malformed key"));
    } else if (size === undefined) {
      facts.links.push(bad("its bytes are missing or corrupt"));
    } else {
      facts.links.push({ ok: true, entry, name: key.name, digest: key.digest, size });
      facts.goodLinks.add(id(key.name, key.digest));
      facts.names.add(key.name);
    }
  }
}

function judgeSessions(scan: Scan, facts: Facts): void {
  const partsOf = new Map<string, AuditEntry<"upload_parts">[]>();
  for (const part of scan.meta.upload_parts) {
    const uploadId = part.parts[0];
    if (typeof uploadId !== "string") continue;
    partsOf.get(uploadId)?.push(part) ?? partsOf.set(uploadId, [part]);
  }
  for (const entry of scan.meta.uploads) {
    const uploadId = entry.key?.uploadId;
    const parts = uploadId === undefined ? [] : partsOf.get(uploadId) ?? [];
    const fact = judgeSession(scan, entry, parts);
    facts.sessions.push(fact);
    if (!fact.record) continue;
    // A malformed record's share of the counters cannot be known; it counts for nothing.
    const name = fact.record.name;
    facts.openSessions.set(name, (facts.openSessions.get(name) ?? 0) + 1);
    if (fact.faults.length === 0) {
      facts.completableSessions.set(name, (facts.completableSessions.get(name) ?? 0) + 1);
    }
  }
  for (const entry of scan.meta.upload_counts) {
    const name = entry.key?.name;
    if (name === undefined) continue;
    if (counterValue(entry.value) === BigInt(facts.openSessions.get(name) ?? 0)) {
      facts.countersAgree.add(name);
    }
  }
  const total = scan.meta.upload_total.find((e) => e.key !== null);
  const open = [...facts.openSessions.values()].reduce((a, b) => a + b, 0);
  facts.totalAgrees = counterValue(total?.value) === BigInt(open);
}

/** A counter's value: a well-formed counter's, 0 for none, null when malformed. */
export function counterValue(value: unknown): bigint | null {
  if (value === undefined) return 0n;
  return value instanceof Counter ? value.value : null;
}

function judgeSession(
  scan: Scan,
  entry: AuditEntry<"uploads">,
  parts: AuditEntry<"upload_parts">[],
): SessionFact {
  const record = entry.value;
  const uploadId = entry.key?.uploadId;
  const valid = uploadId !== undefined && UPLOAD_ID_REGEXP.test(uploadId) &&
    isObject(record) && typeof record.name === "string" && isSize(record.offset) &&
    isSize(record.parts) && (record.algorithm === "sha256" || record.algorithm === "sha512");
  const fact: SessionFact = {
    entry,
    record: valid ? record as unknown as UploadRecord : null,
    faults: [],
    extra: [],
    parts,
    files: new Set(),
  };
  if (!fact.record || uploadId === undefined) {
    fact.faults.push("malformed key or record");
    return fact;
  }
  const r = fact.record;
  const stored = scan.sessionFiles.get(uploadId) ?? new Map<string, number>();
  let sum = 0;
  let index = 0;
  const ends = furthest(parts);
  for (const part of parts) {
    const at = part.key?.index;
    if (at === undefined || at >= r.parts) {
      fact.extra.push(part);
      continue;
    }
    if (at !== index) {
      fact.faults.push(
        at === index + 1 ? `part ${index} is missing` : `parts ${index}..${at - 1} are missing`,
      );
      index = at;
    }
    index++;
    const p = part.value;
    if (
      !isObject(p) || typeof p.file !== "string" || p.file === "" || !isSize(p.size) ||
      typeof p.digest !== "string"
    ) {
      fact.faults.push(`part ${at} is malformed`);
      continue;
    }
    sum += p.size;
    fact.files.add(p.file);
    const size = stored.get(p.file);
    const digest = scan.partDigests.get(uploadId)?.get(p.file);
    if (size === undefined) fact.faults.push(`part ${at} file ${p.file} is missing`);
    else if (p.through !== undefined) {
      // Appended to one session file: its bytes end at `through`, which the file
      // reaches (past it: a chunk cut off by the next writer); the file was hashed
      // up to the furthest part, whose digest is the running one.
      if (
        !isSize(p.through) || p.through !== sum || size < p.through ||
        (p.through === ends.get(p.file) && digest !== undefined && digest !== p.digest)
      ) {
        fact.faults.push(`part ${at} file ${p.file} does not match its record`);
      }
    } else if (size !== p.size || (digest !== undefined && digest !== p.digest)) {
      fact.faults.push(`part ${at} file ${p.file} does not match its record`);
    }
  }
  if (index < r.parts) fact.faults.push(`parts ${index}..${r.parts - 1} are missing`);
  if (sum !== r.offset) fact.faults.push(`parts add up to ${sum}, offset is ${r.offset}`);
  return fact;
}

/** The furthest `through` of the parts in each file. */
function furthest(parts: AuditEntry<"upload_parts">[]): Map<unknown, number> {
  const ends = new Map<unknown, number>();
  for (const part of parts) {
    const p = part.value as { file?: unknown; through?: unknown } | null;
    if (typeof p?.through === "number") {
      ends.set(p.file, Math.max(ends.get(p.file) ?? 0, p.through));
    }
  }
  return ends;
}
