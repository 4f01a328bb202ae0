/**
 * `berth fsck`: checks a data directory against every promise its metadata
 * makes, and with `--repair` removes (or fixes) what cannot be served.
 *
 * It reads everything once through the stores' interfaces (`scan.ts`: every
 * metadata family through the metadata audit, every blob hashed by streaming
 * it, every manifest parsed, every session's files), judges it (`facts.ts`),
 * then runs the invariants of `invariants.ts` in order, printing one line per
 * finding and, with `--repair`, running its repair right after:
 *
 * 1. the schema is the one this code reads; nothing of schema 1 is left
 *    (`manifest_epochs`); a migration under way is a warning;
 * 2. blob area: only blobs there, and each hashes to its name;
 * 3. `manifests`: bytes present with the recorded size, parse as a manifest,
 *    and agree with the record (media type, subject, artifactType); its
 *    `manifest_refs` are what the bytes reference; no `manifest_refs`
 *    without a record;
 * 4. `tags` and `tags_by_digest`: each tag names a good manifest, repeats its
 *    media type and size, and has its reverse entry; each reverse entry
 *    agrees with its tag;
 * 5. `blob_links` and `blob_repos`: bytes of the linked size; both directions;
 * 6. images that cannot be pulled whole (a referenced blob or child manifest
 *    is not in the repository): warnings, since a client may have deleted the
 *    blob on purpose; not repaired;
 * 7. `referrers`: each entry has a manifest whose subject and artifactType
 *    agree and the descriptor it would get at PUT; each manifest with a
 *    subject has its entry;
 * 8. `uploads`, `upload_parts`, `upload_counts`, `upload_total`: each
 *    session's parts exist in KV and in the store with the recorded sizes and
 *    add up to its offset; no parts without a session; counters equal the
 *    sessions; `tag_clock` entries are counters;
 * 9. `repos`: every repository that has content has its entry;
 * 10. leftovers: files in `uploads/` and `tmp/` that nothing refers to (crash
 *    debris, harmless and invisible; `--repair` removes them). They are
 *    listed but are not problems.
 *
 * A repair that removes a manifest also removes its referrer entry and
 * references, as DELETE does, and that finding covers them; its tags are
 * found pointing at a manifest that cannot be served and removed by their
 * own finding. Counters and reverse indexes are fixed rather than removed.
 * Every repair commits only if what it read is unchanged.
 *
 * Run it on a stopped registry: requests in flight look like problems.
 *
 * Exit code: 0 clean, 1 problems found (with `--repair`, also when all were
 * repaired: run again to confirm), 2 the data directory does not exist.
 *
 * @module
 */
import type { Config } from "../config.ts";
import { SchemaError } from "../meta/schema.ts";
import { openStores } from "../open.ts";
import { rebuildBookkeeping } from "./checks/bookkeeping.ts";
import type { Finding } from "./finding.ts";
import { examine, findings } from "./invariants.ts";
import { Progress } from "./progress.ts";
import { bytesText } from "./values.ts";

/** How {@linkcode fsck} runs and where it writes. */
export interface FsckOptions {
  /** Remove or fix what cannot be served. */
  repair: boolean;
  /** Where report lines go (default: stdout). */
  out?: (line: string) => void;
  /** Where progress lines go (default: stderr). */
  progress?: (line: string) => void;
  /** Least time between two progress lines (default 1000 ms). */
  progressEveryMs?: number;
}

/** What a run found, for the summary. */
interface Tally {
  problems: number;
  repaired: number;
  warnings: number;
  leftovers: number;
  leftoverBytes: number;
}

/** Runs a finding's repair: what it did, or why it did nothing. */
async function runRepair(finding: Finding): Promise<{ done: string } | { not: string }> {
  if (!finding.repair) return { not: "fsck cannot repair this" };
  try {
    const done = await finding.repair();
    return done === null ? { not: "changed meanwhile; not repaired" } : { done };
  } catch (error) {
    return { not: `repair failed: ${error instanceof Error ? error.message : String(error)}` };
  }
}

/** Prints one finding (repairing it with `repair`) and counts it. */
async function report(
  finding: Finding,
  repair: boolean,
  out: (line: string) => void,
  tally: Tally,
): Promise<void> {
  if (finding.kind === "warning") {
    tally.warnings++;
    out(`warning: ${finding.message}`);
    return;
  }
  if (finding.kind === "leftover") {
    tally.leftovers++;
    tally.leftoverBytes += finding.size ?? 0;
    const result = repair ? await runRepair(finding) : null;
    const after = !result ? "" : "done" in result ? " -> removed" : ` (${result.not})`;
    out(`leftover: ${finding.message}${after}`);
    return;
  }
  tally.problems++;
  if (!repair) {
    out(`problem: ${finding.message}`);
    return;
  }
  const result = await runRepair(finding);
  if ("done" in result) {
    tally.repaired++;
    out(`problem: ${finding.message} -> ${result.done}`);
  } else {
    out(`problem: ${finding.message} (${result.not})`);
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/**
 * Checks the stores of `config` and prints one line per problem and a
 * summary; with `repair`, removes or fixes what cannot be served.
 *
 * @returns the exit code: 0 clean, 1 problems found, 2 no data directory
 */
export async function fsck(
  config: Pick<Config, "data" | "kv"> & Partial<Pick<Config, "blobs">>,
  options: FsckOptions,
): Promise<number> {
  const out = options.out ?? ((line: string) => console.log(line));
  const progress = new Progress(
    options.progress ?? ((line: string) => console.error(line)),
    options.progressEveryMs ?? 1000,
  );
  if (!await isDirectory(config.data)) {
    out(`fsck: data directory "${config.data}" does not exist`);
    return 2;
  }
  let stores;
  try {
    stores = await openStores({ blobs: "", ...config });
  } catch (error) {
    if (error instanceof SchemaError) throw error; // main.ts says it as serve does
    out(`fsck: cannot open the stores of "${config.data}": ${(error as Error).message}`);
    return 2;
  }
  try {
    const ctx = await examine(stores.meta.audit(), stores.blobs, progress);
    const tally: Tally = { problems: 0, repaired: 0, warnings: 0, leftovers: 0, leftoverBytes: 0 };
    for (const finding of findings(ctx)) await report(finding, options.repair, out, tally);
    // Repairs that removed records changed what the collector's counters should say.
    if (options.repair && tally.repaired > 0) await rebuildBookkeeping(ctx.audit, ctx.storage);
    const { scan } = ctx;
    const blobBytes = scan.blobs.reduce((n, b) => n + b.size, 0);
    const repaired = options.repair ? `, ${tally.repaired} repaired` : "";
    const leftovers = tally.leftovers
      ? `; ${tally.leftovers} leftover file(s), ${bytesText(tally.leftoverBytes)}${
        options.repair ? " removed" : ""
      }`
      : "";
    out(
      `fsck: ${scan.blobs.length} blobs (${bytesText(blobBytes)}), ` +
        `${scan.meta.manifests.length} manifests, ${scan.meta.tags.length} tags, ` +
        `${scan.meta.blob_links.length} blob links, ${scan.meta.referrers.length} referrers, ` +
        `${scan.meta.uploads.length} uploads, ${scan.meta.repos.length} repositories checked; ` +
        `${tally.problems} problem${tally.problems === 1 ? "" : "s"}${repaired}${leftovers}` +
        `${tally.warnings ? `; ${tally.warnings} warning(s)` : ""}`,
    );
    return tally.problems === 0 ? 0 : 1;
  } finally {
    await stores.close();
  }
}
