/**
 * Removing a digest's bytes, the one step of a collection that touches the
 * blob store, and the wait a push makes while it is under way. The protocol
 * (see the README's "Garbage collection and retention"):
 *
 * 1. a commit claims the removal (`blob_gone` = `removing`, checked against
 *    the digest's holders being none and its `blob_gone` entry as read);
 * 2. the bytes are deleted, only while the claim's lease is young;
 * 3. a commit checked against the claim marks them `removed`.
 *
 * Every commit that links a digest checks the `blob_gone` entry it read
 * before it placed (or found) the bytes, so a claim in between makes it place
 * them again after the removal. A claim whose lease ran out (its collector
 * died) is taken over by the next collection or push.
 *
 * @module
 */
import type { Digest } from "../oci/digest.ts";
import type { Revision } from "../meta/audit.ts";
import type { BytesEntry, KvGcStore } from "../meta/gc_store.ts";
import type { MetadataStore } from "../meta/metadata_store.ts";
import type { BlobStore } from "../storage/blob_store.ts";

/** How long a claim to remove bytes holds before others may take it over. */
export const DEFAULT_LEASE_MS = 60_000;
/** How long a `removed` marker stays (pushes that read before it still see it). */
export const FORGET_MS = 24 * 3600_000;

/**
 * Deletes the bytes of a claimed digest and marks them removed. Nothing is
 * deleted once half the lease has passed since the claim (another process
 * may take it over after the lease): the claim is left to expire instead.
 */
export async function removeClaimed(
  gc: KvGcStore,
  blobs: Pick<BlobStore, "delete">,
  digest: Digest,
  claim: { revision: Revision; at: number },
  options: { leaseMs: number; entry?: BytesEntry },
): Promise<boolean> {
  if (Date.now() - claim.at > options.leaseMs / 2) return false;
  // Taken over meanwhile (by a process whose clock runs ahead of ours): not ours to delete.
  if (!await gc.holdsClaim(digest, claim.revision)) return false;
  await blobs.delete(digest);
  const entry = options.entry ?? null;
  return await gc.finishBytes(entry, digest, claim.revision, Date.now(), FORGET_MS);
}

/**
 * Waits until no collection is removing the bytes of `digest` (taking over a
 * claim whose lease ran out) and returns the `blob_gone` revision a linking
 * commit must check.
 */
export async function settledBytes(
  meta: MetadataStore,
  blobs: Pick<BlobStore, "delete">,
  digest: Digest,
  leaseMs = DEFAULT_LEASE_MS,
): Promise<Revision | null> {
  for (let round = 0;; round++) {
    const state = await meta.bytesState(digest);
    if (state.gone?.state !== "removing") return state.revision;
    if (Date.now() - state.gone.at > leaseMs) {
      const gc = meta.gc();
      const at = Date.now();
      const revision = await gc.reclaimBytes(digest, state.revision!, at);
      if (revision) await removeClaimed(gc, blobs, digest, { revision, at }, { leaseMs });
      continue;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(5 * 2 ** Math.min(round, 6), 200)));
  }
}
