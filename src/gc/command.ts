/**
 * `berth gc` and `berth du`: one collection on demand (beside a running
 * server on the same data directory, or alone), and the usage figures. Both
 * print a summary line (or, with `--json`, one JSON object); a long `gc` on a
 * terminal shows progress on stderr.
 *
 * @module
 */
import type { Config } from "../config.ts";
import { openStores } from "../open.ts";
import { collect, type CollectReport } from "./collect.ts";
import { usage } from "./usage.ts";

/** Bytes as people read them. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/** The summary line of a collection. */
export function summaryLine(r: CollectReport): string {
  const verb = r.dryRun ? "would remove" : "removed";
  return `gc: ${verb} ${r.tags} tag(s), ${r.manifests} manifest(s), ${r.links} link(s), ` +
    `${r.blobs} blob(s) (${formatBytes(r.reclaimedBytes)}); ${r.examined} candidate(s) examined ` +
    `in ${r.ms} ms`;
}

/** Runs `berth gc`; the exit code. */
export async function gcCommand(
  config: Config,
  options: { dryRun: boolean; json: boolean; full?: boolean },
  out: (line: string) => void = console.log,
  err: (line: string) => void = console.error,
): Promise<number> {
  if (!await isDirectory(config.data)) {
    err(`gc: data directory "${config.data}" does not exist`);
    return 2;
  }
  const stores = await openStores(config);
  try {
    const tty = Deno.stderr.isTerminal();
    const report = await collect(stores.meta, stores.blobs, {
      graceMs: config.gcGraceMs,
      untaggedTtlMs: config.untaggedTtlMs,
      policies: config.retention,
      dryRun: options.dryRun,
      full: options.full ?? false,
      uploadTtlMs: config.uploadTtlMs,
      ...(tty && !options.json
        ? {
          onProgress: (p) =>
            err(
              `gc: ${p.examined} candidate(s) examined, ${formatBytes(p.reclaimedBytes)} reclaimed`,
            ),
        }
        : {}),
    });
    if (options.json) {
      out(JSON.stringify(report));
    } else {
      if (options.dryRun) { for (const item of report.removed) out(`would remove ${item}`); }
      out(summaryLine(report));
    }
    return 0;
  } finally {
    await stores.close();
  }
}

/** Runs `berth du`; the exit code. */
export async function duCommand(
  config: Config,
  options: { json: boolean },
  out: (line: string) => void = console.log,
  err: (line: string) => void = console.error,
): Promise<number> {
  if (!await isDirectory(config.data)) {
    err(`du: data directory "${config.data}" does not exist`);
    return 2;
  }
  const stores = await openStores(config);
  try {
    const u = await usage(stores.meta, stores.blobs, config);
    if (options.json) {
      out(JSON.stringify({ ...u, repositories: Object.fromEntries(u.repositories) }));
      return 0;
    }
    for (const [name, bytes] of u.repositories) out(`${formatBytes(bytes).padStart(12)}  ${name}`);
    out(
      `du: ${formatBytes(u.total)} in total (each blob once); reclaimable now ` +
        `${formatBytes(u.reclaimableNow)}, after the grace period ${
          formatBytes(u.reclaimableAfterGrace)
        }`,
    );
    return 0;
  } finally {
    await stores.close();
  }
}
