/**
 * The garbage collector's bookkeeping, written by the very commits that
 * change what it describes (see the README's "Garbage collection and
 * retention"): reference counts (`gc_refs`), holders of each digest's bytes
 * (`blob_holders`), usage counters, and the due queue of candidates. Counts
 * use KV `sum`, which needs no check; these helpers add their mutations (and
 * the few checks they need) to an atomic operation being built.
 *
 * @module
 */
import type { Digest } from "../oci/digest.ts";
import {
  blobHoldersKey,
  type DueKind,
  gcBytesKey,
  gcDueKey,
  gcEpochKey,
  gcRefsKey,
  gcUntaggedKey,
  repoVersionKey,
  usageKey,
  usageTotalKey,
} from "./keys.ts";

export const ONE = 1n;
/** Adding 2^64 − 1 subtracts one: KV sums wrap modulo 2^64. */
export const MINUS_ONE = 0xffffffffffffffffn;

/** `-n` as a KV sum operand (modulo 2^64). */
export function minus(n: number): bigint {
  return BigInt.asUintN(64, -BigInt(n));
}

/**
 * A new holder (link or manifest record) of `digest`'s bytes. The first one
 * (no `blob_holders` key) counts the bytes in `usage_total`, checked so that
 * two first holders cannot both count them.
 */
export function holdBytes(
  op: Deno.AtomicOperation,
  digest: Digest,
  holders: Deno.KvEntryMaybe<unknown>,
  size: number,
): void {
  if (holders.versionstamp === null) {
    op.check({ key: blobHoldersKey(digest), versionstamp: null });
    op.sum(usageTotalKey(), BigInt(size));
  }
  op.sum(blobHoldersKey(digest), ONE);
}

/** A holder of `digest`'s bytes goes: if it was the last, the bytes become a candidate. */
export function releaseBytes(op: Deno.AtomicOperation, digest: Digest, now: number): void {
  op.sum(blobHoldersKey(digest), MINUS_ONE).set(gcBytesKey(now, digest), true);
}

/** Bytes that `name` holds: added when a link or manifest record appears, taken when it goes. */
export function addUsage(op: Deno.AtomicOperation, name: string, bytes: number): void {
  if (bytes !== 0) op.sum(usageKey(name), bytes > 0 ? BigInt(bytes) : minus(-bytes));
}

/** A candidate for collection, examined once `at` is older than its kind's delay. */
export function enqueue(
  op: Deno.AtomicOperation,
  kind: DueKind,
  at: number,
  name: string,
  digest: Digest,
): void {
  op.set(gcDueKey(kind, at, name, digest), true);
  // A manifest's newest queuing: an older entry of it (pushed untagged, tagged, untagged
  // again) must not count its TTL from then.
  if (kind === "manifest") op.set(gcUntaggedKey(name, digest), at);
}

/** Something of `name` was removed: manifest PUTs that validated before it go round again. */
export function bumpEpoch(op: Deno.AtomicOperation, name: string): void {
  op.sum(gcEpochKey(name), ONE);
}

/**
 * What `name` shows changed (a tag, a manifest record, a referrer): sets its
 * `repo_version`, whose new versionstamp tells every process's read cache
 * (`src/registry/read_cache.ts`) that what it holds of `name` is stale. A set,
 * not a check: it costs none of the commit's ten checks and never conflicts.
 */
export function touchRepo(op: Deno.AtomicOperation, name: string, now = Date.now()): void {
  op.set(repoVersionKey(name), now);
}

/** Counts references of a new manifest record (or of an intent) in `name`. */
export function countRefs(op: Deno.AtomicOperation, name: string, digests: Digest[]): void {
  for (const digest of digests) op.sum(gcRefsKey(name, digest), ONE);
}

/**
 * Uncounts references (a release or an undone intent) and queues each as a
 * candidate: a blob at 0 (its link's age decides), a child manifest now.
 */
export function uncountRefs(
  op: Deno.AtomicOperation,
  name: string,
  refs: { blobs: Digest[]; manifests: Digest[] },
  now: number,
): void {
  for (const digest of refs.blobs) {
    op.sum(gcRefsKey(name, digest), MINUS_ONE);
    enqueue(op, "blob", 0, name, digest);
  }
  for (const digest of refs.manifests) {
    op.sum(gcRefsKey(name, digest), MINUS_ONE);
    enqueue(op, "manifest", now, name, digest);
  }
}

const encoder = new TextEncoder();

/** An upper bound of the key bytes of `gc_refs` sums for `digests` in `name`. */
export function refsKeyBytes(name: string, digests: Digest[]): number {
  const nameBytes = encoder.encode(name).length * 2;
  return digests.reduce((n, d) => n + nameBytes + d.length * 2 + 24, 0);
}
