/**
 * Retention policies (the `retention` key of the JSON `--config` file): per
 * repository glob, which tags to keep and remove, and how long untagged
 * manifests stay. Pure: parsing, matching and the decision; the collector
 * applies it.
 *
 * @module
 */
import { parseDuration } from "../config.ts";

/** One policy, for the repositories its glob matches (the first matching policy applies). */
export interface RetentionPolicy {
  /** Repository glob: `*` matches within a path component, `**` across them. */
  repositories: string;
  /** Keep the newest N tags by push time (among those no `keep` pattern protects). */
  keepLast?: number;
  /** Tag globs always kept (`v*`, `latest`). */
  keep: string[];
  /** Remove tags pushed longer ago than this (and not among the newest `keepLast`). */
  olderThanMs?: number;
  /** Remove untagged manifests nothing holds after this long (overrides `--untagged-ttl`). */
  untaggedMs?: number;
}

/** A glob as a RegExp: `**` any characters, `*` any but `/`, `?` one character. */
export function globRegExp(glob: string): RegExp {
  let source = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*" && glob[i + 1] === "*") {
      source += ".*";
      i++;
    } else if (c === "*") source += "[^/]*";
    else if (c === "?") source += "[^/]";
    else source += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${source}$`);
}

function fail(message: string): never {
  throw new Error(`retention: ${message}`);
}

function duration(value: unknown, where: string): number {
  const ms = typeof value === "string" ? parseDuration(value) : null;
  if (ms === null) fail(`${where} must be a duration such as "30d" or "12h"`);
  return ms;
}

/**
 * Parses the `retention` value of a config file: an array of
 * `{ "repositories", "keep-last", "keep", "older-than", "untagged" }`.
 */
export function parseRetention(value: unknown): RetentionPolicy[] {
  if (!Array.isArray(value)) fail("expected an array of policies");
  return value.map((raw, i) => {
    const where = `policy ${i + 1}`;
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      fail(`${where} must be an object`);
    }
    const known = ["repositories", "keep-last", "keep", "older-than", "untagged"];
    for (const key of Object.keys(raw)) {
      if (!known.includes(key)) fail(`${where}: unknown key "${key}" (known: ${known.join(", ")})`);
    }
    const r = raw as Record<string, unknown>;
    if (typeof r.repositories !== "string" || r.repositories === "") {
      fail(`${where}: "repositories" must be a glob such as "ci/*"`);
    }
    const policy: RetentionPolicy = { repositories: r.repositories, keep: [] };
    if (r["keep-last"] !== undefined) {
      const n = r["keep-last"];
      if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0) {
        fail(`${where}: "keep-last" must be a whole number`);
      }
      policy.keepLast = n;
    }
    if (r.keep !== undefined) {
      if (!Array.isArray(r.keep) || r.keep.some((k) => typeof k !== "string")) {
        fail(`${where}: "keep" must be an array of tag globs`);
      }
      policy.keep = r.keep as string[];
    }
    if (r["older-than"] !== undefined) {
      policy.olderThanMs = duration(r["older-than"], `${where}: "older-than"`);
    }
    if (r.untagged !== undefined) policy.untaggedMs = duration(r.untagged, `${where}: "untagged"`);
    return policy;
  });
}

/** The policy for `name`: the first whose glob matches, or null. */
export function policyFor(policies: RetentionPolicy[], name: string): RetentionPolicy | null {
  return policies.find((p) => globRegExp(p.repositories).test(name)) ?? null;
}

/** A tag as retention sees it. */
export interface TagInfo {
  tag: string;
  /** Push time (ms since epoch). */
  updatedAt: number;
}

/**
 * The tags `policy` removes: not protected by a `keep` glob, not among the
 * newest `keepLast` of the others, and pushed before `now - olderThan`
 * (each condition only when given; with neither count nor age, none).
 */
export function tagsToRemove(policy: RetentionPolicy, tags: TagInfo[], now: number): TagInfo[] {
  if (policy.keepLast === undefined && policy.olderThanMs === undefined) return [];
  const keep = policy.keep.map(globRegExp);
  const candidates = tags.filter((t) => !keep.some((re) => re.test(t.tag)))
    .sort((a, b) => b.updatedAt - a.updatedAt || (a.tag < b.tag ? -1 : 1));
  return candidates.filter((t, i) =>
    (policy.keepLast === undefined || i >= policy.keepLast) &&
    (policy.olderThanMs === undefined || t.updatedAt < now - policy.olderThanMs)
  );
}
