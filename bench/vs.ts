/**
 * `deno task bench --vs URL|distribution`: Berth side by side with another
 * registry in one run. Berth runs as a subprocess (connection guard on unless
 * `--berth-args` turns it off); `--vs distribution` starts Debian's
 * `docker-registry` in a temporary directory (see `distribution.ts`). Rounds
 * alternate which side goes first; every measure records throughput, the
 * server's CPU seconds (from `/proc/PID/stat`) per GiB or per 1,000
 * requests, p99 latency where `hey` drives it, and peak RSS. It prints the
 * medians with their spread and the ratio Berth ÷ other, the machine's own
 * limits, PASS/FAIL per target, and writes every raw sample to `--json`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { spawnRegistry } from "../tests/_registry.ts";
import { startDistribution } from "./distribution.ts";
import { measureLimits, stopDrainPeers } from "./limits.ts";
import { MEASURES, type Options, setUp, type Side } from "./measures.ts";
import { cpuSeconds, peakRss, pidListeningOn } from "./proc.ts";
import { printReport, type Sample } from "./report.ts";

const USAGE = `deno task bench --vs URL|distribution [options]
  --vs-pid PID          the other registry's PID (else found from its port)
  --rounds N            rounds, alternating which side goes first (3)
  --json FILE           raw samples (bench-results.json)
  --size-mib N          single push and download size (1024)
  --chunk-mib N         PATCH size of the chunked push (16)
  --concurrent N        concurrent pushes (8)
  --concurrent-mib N    size of each concurrent push (64)
  --hey-seconds N       seconds per hey run (5)
  --hey-concurrency N   hey connections (64)
  --list-tags N         tags in the full-list repository (1000)
  --page-tags N         tags in Berth's large paging repository (100000)
  --settle-ms N         before each sample: sync, then rest this long (2000)
  --only a,b            only these measures (${MEASURES.map((m) => m.id).join(", ")})
  --berth-args "..."    passed to berth serve`;

/**
 * Lets the machine settle before a sample: `sync` writes back what the last
 * one left in the page cache (Distribution never fsyncs its uploads, and the
 * kernel writing them back during Berth's next push had that push pay for
 * them), then a rest lets both servers finish what follows a burst.
 */
async function settle(ms: number): Promise<void> {
  if (ms <= 0) return;
  await new Deno.Command("sync", { stdout: "null", stderr: "null" }).output().catch(() => {});
  await new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs the side-by-side bench with the command line `args`. */
export async function runVs(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      vs: { type: "string" },
      "vs-pid": { type: "string" },
      rounds: { type: "string", default: "3" },
      json: { type: "string", default: "bench-results.json" },
      "size-mib": { type: "string", default: "1024" },
      "chunk-mib": { type: "string", default: "16" },
      concurrent: { type: "string", default: "8" },
      "concurrent-mib": { type: "string", default: "64" },
      "hey-seconds": { type: "string", default: "5" },
      "hey-concurrency": { type: "string", default: "64" },
      "list-tags": { type: "string", default: "1000" },
      "page-tags": { type: "string", default: "100000" },
      only: { type: "string" },
      "berth-args": { type: "string", default: "" },
      "settle-ms": { type: "string", default: "2000" },
      help: { type: "boolean" },
    },
  });
  if (values.help || !values.vs) {
    console.log(USAGE);
    return;
  }
  const o: Options = {
    sizeMib: Number(values["size-mib"]),
    chunkMib: Number(values["chunk-mib"]),
    concurrentPushes: Number(values.concurrent),
    concurrentMib: Number(values["concurrent-mib"]),
    heySeconds: Number(values["hey-seconds"]),
    heyConcurrency: Number(values["hey-concurrency"]),
    listTags: Number(values["list-tags"]),
    pageTags: Number(values["page-tags"]),
  };
  const rounds = Number(values.rounds);
  const only = values.only?.split(",");
  const measures = MEASURES.filter((m) => !only || only.includes(m.id));
  if (only?.includes("download") && !only.includes("push-1")) {
    measures.unshift(MEASURES.find((m) => m.id === "push-1")!);
  }
  const log = (line: string) =>
    console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}`);
  const started = performance.now();

  const dir = await Deno.makeTempDir({ prefix: "berth-bench-" });
  const extra = values["berth-args"]!.split(" ").filter(Boolean);
  await using berthProcess = await spawnRegistry(["--data", `${dir}/data`, ...extra], {
    BERTH_LOG_LEVEL: "warn",
  });
  await using distribution = values.vs === "distribution" ? await startDistribution() : undefined;
  // Ctrl-C or SIGTERM stops the servers this run started, by PID, and removes their data.
  const interrupted = async () => {
    stopDrainPeers();
    await berthProcess.kill();
    await distribution?.[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    Deno.exit(130);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, interrupted);
  try {
    const otherUrl = distribution?.url ?? values.vs.replace(/\/+$/, "");
    const otherPid = values["vs-pid"]
      ? Number(values["vs-pid"])
      : distribution?.pid ?? pidListeningOn(Number(new URL(otherUrl).port || 80));
    const berth: Side = {
      key: "berth",
      name: "Berth",
      url: berthProcess.url,
      pid: berthProcess.pid,
    };
    const other: Side = {
      key: "other",
      name: distribution ? `Distribution ${distribution.version}` : otherUrl,
      url: otherUrl,
      pid: otherPid,
    };
    log(
      `Berth ${berth.url} (PID ${berth.pid}); ${other.name} ${other.url} (PID ${
        other.pid ?? "unknown: no CPU or RSS figures"
      })`,
    );

    log(`machine limits, ${o.sizeMib} MiB each`);
    const limits = await measureLimits(dir, o.sizeMib * 1024 * 1024);
    for (const side of [berth, other]) await setUp(side, o, measures, log);

    const idleRssMib = peakRss(berth.pid).stop();
    log(`Berth RSS after setting up: ${idleRssMib?.toFixed(0)} MiB`);
    const samples: Sample[] = [];
    for (let round = 1; round <= rounds; round++) {
      for (const measure of measures) {
        const order = round % 2 === 1 ? [berth, other] : [other, berth];
        for (const side of order) {
          if (measure.berthOnly && side.key !== "berth") continue;
          // Warmed up just before its first sample, so earlier rows don't run after its load.
          if (round === 1) await measure.warmUp?.(side, o);
          await settle(Number(values["settle-ms"]));
          const cpuBefore = cpuSeconds(side.pid);
          const rss = peakRss(side.pid);
          const startRssMib = rss.start;
          const work = await measure.run(side, o);
          const peakRssMib = rss.stop();
          const cpuAfter = cpuSeconds(side.pid);
          const sample: Sample = {
            measure: measure.id,
            side: side.key,
            round,
            value: work.bytes !== undefined
              ? work.bytes / work.seconds / 1e6
              : work.requests! / work.seconds,
            ...work,
            ...(cpuBefore !== undefined && cpuAfter !== undefined
              ? { serverCpuS: cpuAfter - cpuBefore }
              : {}),
            ...(peakRssMib !== undefined ? { peakRssMib } : {}),
            ...(startRssMib !== undefined ? { startRssMib } : {}),
          };
          samples.push(sample);
          log(
            `round ${round} ${measure.id} ${side.name}: ${sample.value.toFixed(0)} ${measure.unit}`,
          );
        }
      }
    }
    const meta = {
      date: new Date().toISOString(),
      deno: Deno.version.deno,
      cores: navigator.hardwareConcurrency,
      loadAverage: Deno.loadavg(),
      berthArgs: extra,
      other: other.name,
      otherUrl: other.url,
      rounds,
      options: o,
      berthIdleRssMib: idleRssMib,
      wallSeconds: (performance.now() - started) / 1000,
    };
    await Deno.writeTextFile(
      values.json!,
      JSON.stringify({ meta, limits, samples }, null, 2) + "\n",
    );
    printReport({ meta, limits, samples, measures, options: o, otherName: other.name });
    log(`raw samples in ${values.json}; ${meta.wallSeconds.toFixed(0)} s in all`);
  } finally {
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      Deno.removeSignalListener(signal, interrupted);
    }
    await berthProcess.stop();
    await Deno.remove(dir, { recursive: true });
  }
}
