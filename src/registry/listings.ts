/**
 * Listings: a repository's tags, the catalog, the referrers of a subject.
 * Each reads one page with a KV prefix scan from its cursor: cost grows with
 * the page size `n`, never with the number of tags, repositories or referrers.
 * Pages of tags are kept in the read cache (`read_cache.ts`) and served from
 * it while the repository's version is unchanged.
 *
 * @module
 */
import type { Digest } from "../oci/digest.ts";
import type { Page } from "../meta/metadata_store.ts";
import type { ReferrerDescriptor } from "../meta/keys.ts";
import type { RegistryContext } from "./context.ts";
import { SealedCursors } from "./cursor.ts";
import { nameUnknown } from "./errors.ts";
import { OciError } from "../oci/errors.ts";
import { readCacheOf, type RepoReadCache, stringBytes } from "./read_cache.ts";

/** Most repository names one catalog page reads, shown or hidden. */
export const CATALOG_SCAN = 10_000;

/** One page of a listing and the page size it was read with (for the next page's link). */
export type ListPage<T> = Page<T> & { n: number };

/** The listing operations of the registry. */
export class Listings {
  readonly #ctx: RegistryContext;
  readonly #cursors: SealedCursors;
  readonly #reads: RepoReadCache;

  constructor(ctx: RegistryContext) {
    this.#ctx = ctx;
    this.#cursors = new SealedCursors(ctx.meta);
    this.#reads = readCacheOf(ctx.meta);
  }

  /**
   * The page size for a requested `n`: absent means the largest page, and a
   * larger `n` is capped to it (the answer then links to the rest).
   */
  #size(n: number | undefined): number {
    const max = this.#ctx.config.tagsPageMax;
    return Math.min(n ?? max, max);
  }

  /**
   * One page of the tags of `name`; 404 for an unknown repository. A page
   * is read after the repository's version and kept under it: it shows at
   * least what that version did, so it may be served while the version holds.
   * A page of a repository that does not exist is never kept (repositories are
   * created without a version change); one that exists stays so. The answer
   * may be a kept page: frozen, the same object for every request it serves.
   */
  async tags(
    name: string,
    n: number | undefined,
    last?: string,
  ): Promise<Readonly<ListPage<string>>> {
    const { meta } = this.#ctx;
    const { cache, versions } = this.#reads;
    const size = this.#size(n);
    const key = JSON.stringify(["l", name, size, last ?? null]);
    const version = await versions.version(name);
    const kept = cache.get<ListPage<string>>(key, version);
    if (kept) return kept;
    const [page, exists] = await Promise.all([
      meta.listTags(name, size, last),
      meta.repoExists(name),
    ]);
    if (!exists) throw nameUnknown(name);
    const answer = Object.freeze({
      ...page,
      items: Object.freeze(page.items) as string[],
      n: size,
    });
    cache.set(key, version, answer, stringBytes(key, ...page.items));
    return answer;
  }

  /**
   * One page of the repository names `shows` accepts (the caller may pull
   * them). Hidden names are skipped, but at most {@linkcode CATALOG_SCAN}
   * names are read per page: a caller who may see few of many repositories
   * gets a short page and a link onwards, so a page costs the same for all.
   * That link's cursor is then a hidden name, so it is sealed (see
   * `cursor.ts`); `last` is such a sealed cursor or a name the caller may see.
   */
  async catalog(
    n: number | undefined,
    last: string | undefined,
    shows: (repo: string) => boolean,
  ): Promise<ListPage<string>> {
    const size = this.#size(n);
    if (size === 0) return { items: [], n: size };
    const items: string[] = [];
    let cursor = last;
    if (last !== undefined && SealedCursors.isSealed(last)) {
      cursor = await this.#cursors.open(last) ?? undefined;
      if (cursor === undefined) {
        throw new OciError("PAGINATION_NUMBER_INVALID", "Invalid or expired last cursor");
      }
    } else if (last !== undefined && !shows(last)) {
      // Paging from a hidden name would tell where hidden names are: only sealed cursors may.
      throw new OciError("PAGINATION_NUMBER_INVALID", "Invalid last cursor");
    }
    let scanned = 0;
    while (true) {
      const batch = Math.min(Math.max(size - items.length, 100), CATALOG_SCAN - scanned);
      const page = await this.#ctx.meta.listRepos(batch, cursor);
      for (const repo of page.items) {
        scanned++;
        cursor = repo;
        if (shows(repo)) items.push(repo);
        const more = page.next !== undefined || repo !== page.items.at(-1);
        if (items.length === size || (scanned === CATALOG_SCAN && more)) {
          if (!more) return { items, n: size };
          return { items, next: shows(repo) ? repo : await this.#cursors.seal(repo), n: size };
        }
      }
      if (page.next === undefined) return { items, n: size };
    }
  }

  /**
   * One page of the referrers of `subject` in `name`. An unknown repository
   * or subject has none (the spec forbids a 404 for an unknown subject).
   */
  async referrers(
    name: string,
    subject: Digest,
    options: { artifactType?: string; n?: number; last?: string },
  ): Promise<ListPage<ReferrerDescriptor>> {
    const size = this.#size(options.n);
    const page = await this.#ctx.meta.listReferrers(name, subject, {
      n: size,
      ...(options.artifactType === undefined ? {} : { artifactType: options.artifactType }),
      ...(options.last === undefined ? {} : { last: options.last }),
    });
    return { ...page, n: size };
  }
}
