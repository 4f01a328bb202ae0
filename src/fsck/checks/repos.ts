/**
 * Repository invariant: every repository that has content has its `repos`
 * entry (the catalog lists those).
 *
 * @module
 */
import { type Invariant, problem } from "../finding.ts";

/** Repositories with good manifests, tags or links but no entry; added. */
export const repositories: Invariant = {
  name: "repositories with content are listed",
  *check(ctx) {
    const known = new Set<string>();
    for (const entry of ctx.scan.meta.repos) if (entry.key) known.add(entry.key.name);
    for (const name of [...ctx.facts.names].sort()) {
      if (known.has(name)) continue;
      const key = { family: "repos" as const, name };
      yield problem(
        ctx,
        `repository ${name} has content but no repos entry`,
        { check: [{ absent: key }], set: [[key, { createdAt: Date.now() }]] },
        "added it",
      );
    }
  },
};
