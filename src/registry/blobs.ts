/**
 * Blobs as a repository sees them: present only through a link, served whole
 * or by range, pushed in one request (verified while streaming), mounted
 * from another repository, deleted (unlinked).
 *
 * @module
 */
import { type Digest, digestAlgorithm } from "../oci/digest.ts";
import { settledBytes } from "../gc/bytes.ts";
import { OciError } from "../oci/errors.ts";
import { type ByteRange, parseRange } from "../oci/range.ts";
import type { RegistryContext } from "./context.ts";
import { blobUnknown, requireDeletes } from "./errors.ts";

/**
 * How many repositories holding a blob an automatic mount considers as its
 * source (the first the caller may pull from is used); past them it uploads.
 */
export const AUTO_MOUNT_SOURCES = 100;

/** A blob opened for reading. */
export interface OpenedBlob {
  /** The whole blob's size. */
  size: number;
  /** The requested range, or null for the whole blob. */
  range: ByteRange | null;
  stream: ReadableStream<Uint8Array>;
}

/** The blob operations of the registry. */
export class Blobs {
  readonly #ctx: RegistryContext;

  constructor(ctx: RegistryContext) {
    this.#ctx = ctx;
  }

  /** The size of a blob in `name`; 404 when it is not there. */
  async stat(name: string, digest: Digest): Promise<{ size: number }> {
    const { meta } = this.#ctx;
    const link = await meta.getBlobLink(name, digest) ?? await blobUnknown(meta, name, digest);
    return { size: link.size };
  }

  /**
   * Where a client may GET a blob of `name` straight from the blob store (a
   * presigned URL), or null when the store serves bytes only through Berth.
   */
  async redirect(name: string, digest: Digest): Promise<string | null> {
    const { meta, blobs } = this.#ctx;
    if (!blobs.presign) return null;
    await meta.getBlobLink(name, digest) ?? await blobUnknown(meta, name, digest);
    return await blobs.presign(digest);
  }

  /** Opens a blob of `name`, whole or the range `rangeHeader` asks for (416 when unsatisfiable). */
  async open(name: string, digest: Digest, rangeHeader: string | null): Promise<OpenedBlob> {
    const { meta, blobs } = this.#ctx;
    const link = await meta.getBlobLink(name, digest) ?? await blobUnknown(meta, name, digest);
    const range = parseRange(rangeHeader, link.size);
    const blob = await blobs.open(digest, range ?? undefined) ??
      await blobUnknown(meta, name, digest);
    return { size: blob.size, range, stream: blob.stream };
  }

  /**
   * Stores a whole body as `digest` in `name`, verified while it streams. The
   * body is kept as a scratch part until the link is committed, so that a
   * collection removing the same bytes meanwhile makes it place them again.
   */
  async put(name: string, digest: Digest, body: ReadableStream<Uint8Array> | null): Promise<void> {
    const { meta, blobs } = this.#ctx;
    const scratch = `put-${crypto.randomUUID()}`;
    try {
      const part = await blobs.writePart(scratch, body, { algorithm: digestAlgorithm(digest) });
      for (;;) {
        const bytes = await settledBytes(meta, blobs, digest);
        const result = await blobs.finish(scratch, [part], digest);
        if (!result.ok) {
          throw new OciError("DIGEST_INVALID", `Body hashes to ${result.actual}, not ${digest}`, {
            detail: { expected: digest, actual: result.actual },
          });
        }
        if (await meta.linkBlob(name, digest, result.size, bytes)) return;
      }
    } finally {
      await blobs.removeUpload(scratch);
    }
  }

  /**
   * Mounts `digest` into `name` from `from`, or, without `from` and when
   * automatic mounts are on, from a repository that has it. Only a source
   * the caller may pull from (`canPull`) is used: else, as when there is
   * nothing to mount, false (the client then uploads), revealing nothing.
   */
  async mount(
    name: string,
    digest: Digest,
    from: string | undefined,
    canPull: (repo: string) => boolean,
  ): Promise<boolean> {
    const { meta, config } = this.#ctx;
    if (from === undefined && !config.autoMount) return false;
    const source = from ??
      (await meta.reposLinking(digest, AUTO_MOUNT_SOURCES)).find((repo) => canPull(repo));
    if (source === undefined || !canPull(source)) return false;
    return (await meta.mountBlob(name, digest, source)) !== null;
  }

  /** Unlinks a blob from `name` (its bytes stay for other repositories). */
  async delete(name: string, digest: Digest): Promise<void> {
    const { meta, config } = this.#ctx;
    requireDeletes(config.deleteEnabled);
    if (!(await meta.unlinkBlob(name, digest))) await blobUnknown(meta, name, digest);
  }
}
