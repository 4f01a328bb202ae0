/**
 * The side-by-side bench's output: per measure the medians with their spread,
 * the ratio Berth ÷ other, server CPU per GiB or per 1,000 requests, p99
 * latency and peak RSS; the machine's limits; and PASS/FAIL per target.
 *
 * @module
 */
import type { Limits } from "./limits.ts";
import type { Measure, Options } from "./measures.ts";

/** One run of one measure against one side. */
export interface Sample {
  measure: string;
  side: "berth" | "other";
  round: number;
  /** MB/s or requests/s. */
  value: number;
  seconds: number;
  bytes?: number;
  requests?: number;
  p99Ms?: number;
  clientCpuS?: number;
  serverCpuS?: number;
  peakRssMib?: number;
  /** RSS when the measure began: the peak includes what earlier measures left. */
  startRssMib?: number;
}

/** The median of some numbers (`NaN` for none). */
export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const GIB = 1024 ** 3;

/** CPU seconds per GiB moved or per 1,000 requests served. */
function cpuPerUnit(sample: Sample, cpu: number | undefined): number | undefined {
  if (cpu === undefined) return undefined;
  return sample.bytes !== undefined ? cpu / (sample.bytes / GIB) : cpu / (sample.requests! / 1000);
}

/** Summary of one measure on one side. */
interface Summary {
  median: number;
  min: number;
  max: number;
  cpu?: number;
  clientCpu?: number;
  p99?: number;
  peakRss?: number;
  /** The most a measure's peak rose above the RSS it started at. */
  growth?: number;
}

function summarize(samples: Sample[]): Summary | undefined {
  if (samples.length === 0) return undefined;
  const values = samples.map((s) => s.value);
  const pick = (f: (s: Sample) => number | undefined) => {
    const xs = samples.map(f).filter((x): x is number => x !== undefined);
    return xs.length ? median(xs) : undefined;
  };
  const rss = samples.map((s) => s.peakRssMib).filter((x): x is number => x !== undefined);
  const summary: Summary = {
    median: median(values),
    min: Math.min(...values),
    max: Math.max(...values),
  };
  const cpu = pick((s) => cpuPerUnit(s, s.serverCpuS));
  const clientCpu = pick((s) => cpuPerUnit(s, s.clientCpuS));
  const p99 = pick((s) => s.p99Ms);
  if (cpu !== undefined) summary.cpu = cpu;
  if (clientCpu !== undefined) summary.clientCpu = clientCpu;
  if (p99 !== undefined) summary.p99 = p99;
  if (rss.length) summary.peakRss = Math.max(...rss);
  const growth = samples
    .filter((s) => s.peakRssMib !== undefined && s.startRssMib !== undefined)
    .map((s) => s.peakRssMib! - s.startRssMib!);
  if (growth.length) summary.growth = Math.max(...growth);
  return summary;
}

const f0 = (x: number | undefined) => x === undefined ? "–" : x.toFixed(0);
const f2 = (x: number | undefined) => x === undefined ? "–" : x.toFixed(2);
const f1 = (x: number | undefined) => x === undefined ? "–" : x.toFixed(1);

function table(head: string[], rows: string[][]): void {
  console.log(`| ${head.join(" | ")} |`);
  console.log(`|${head.map(() => " --- ").join("|")}|`);
  for (const row of rows) console.log(`| ${row.join(" | ")} |`);
}

/** A target and whether this run met it. */
interface Verdict {
  target: string;
  measured: string;
  pass: boolean;
}

function verdicts(
  get: (id: string, side: "berth" | "other") => Summary | undefined,
  limits: Limits,
): Verdict[] {
  const out: Verdict[] = [];
  const ratio = (id: string, min: number, what: string) => {
    const b = get(id, "berth"), o = get(id, "other");
    if (!b || !o) return;
    const r = b.median / o.median;
    out.push({
      target: `${what}: Berth ÷ other ≥ ${min}×`,
      measured: `${r.toFixed(2)}×`,
      pass: r >= min,
    });
  };
  const p99 = (id: string, what: string) => {
    const b = get(id, "berth");
    if (b?.p99 === undefined) return;
    out.push({
      target: `${what}: Berth p99 ≤ 20 ms`,
      measured: `${b.p99.toFixed(1)} ms`,
      pass: b.p99 <= 20,
    });
  };
  const rss = (id: string, max: number, what: string) => {
    const b = get(id, "berth");
    if (b?.peakRss === undefined) return;
    out.push({
      target: `${what}: Berth peak RSS ≤ ${max} MiB`,
      measured: `${b.peakRss.toFixed(0)} MiB (+${f0(b.growth)} over its start)`,
      pass: b.peakRss <= max,
    });
  };
  ratio("push-1", 3, "single streamed push");
  const push = get("push-1", "berth");
  if (push) {
    const share = push.median / limits.drainHashHttp;
    out.push({
      target: "single streamed push: ≥ 85% of drain+hash over Deno.serve",
      measured: `${(share * 100).toFixed(0)}% (${
        (push.median / limits.drainHashTcp * 100).toFixed(0)
      }% of raw TCP drain+hash)`,
      pass: share >= 0.85,
    });
  }
  rss("push-1", 128, "single streamed push");
  ratio("push-chunked", 3, "chunked push");
  ratio("push-concurrent", 2, "concurrent pushes");
  rss("push-concurrent", 200, "concurrent pushes");
  ratio("download", 1, "blob download throughput");
  const db = get("download", "berth"), dother = get("download", "other");
  if (db?.cpu !== undefined && dother?.cpu !== undefined) {
    const r = db.cpu / dother.cpu;
    out.push({
      target: "blob download: server CPU per GiB Berth ÷ other ≤ 1.5×",
      measured: `${r.toFixed(2)}×`,
      pass: r <= 1.5,
    });
  }
  ratio("manifest-get", 5, "manifest GET by tag");
  p99("manifest-get", "manifest GET by tag");
  ratio("manifest-head", 5, "manifest HEAD by digest");
  p99("manifest-head", "manifest HEAD by digest");
  ratio("tags-full", 2, "full tag list");
  const small = get("tags-page-small", "berth"), large = get("tags-page-large", "berth");
  if (small && large) {
    const r = small.median / large.median; // time per request, large ÷ small
    out.push({
      target: "tags page at many tags: time ≤ 1.2× a page at 100 tags",
      measured: `${r.toFixed(2)}×`,
      pass: r <= 1.2,
    });
  }
  return out;
}

/** Prints the tables of a run. */
export function printReport(run: {
  meta: {
    date: string;
    deno: string;
    cores: number;
    loadAverage: number[];
    berthArgs: string[];
    rounds: number;
    wallSeconds: number;
    berthIdleRssMib: number | undefined;
  };
  limits: Limits;
  samples: Sample[];
  measures: Measure[];
  options: Options;
  otherName: string;
}): void {
  const { meta, limits, samples, measures, options, otherName } = run;
  const get = (id: string, side: "berth" | "other") =>
    summarize(samples.filter((s) => s.measure === id && s.side === side));
  console.log(
    `\nBerth vs ${otherName} (Deno ${meta.deno}, ${meta.cores} cores, ${meta.date}, ${meta.rounds} rounds, ` +
      `load average at the end ${meta.loadAverage.map((x) => x.toFixed(1)).join(" ")}; ` +
      `berth args: ${meta.berthArgs.join(" ") || "none (connection guard on)"}; ` +
      `Berth RSS idle after setup ${f0(meta.berthIdleRssMib)} MiB; ${
        meta.wallSeconds.toFixed(0)
      } s)\n`,
  );
  table(
    [
      "measure",
      "Berth median (min–max)",
      "other median (min–max)",
      "Berth ÷ other",
      "server CPU Berth / other",
      "client CPU",
      "p99 ms Berth / other",
      "peak RSS MiB (+ most above start) Berth / other",
    ],
    measures.map((m) => {
      const b = get(m.id, "berth"), o = get(m.id, "other");
      const unit = m.unit === "MB/s" ? "s/GiB" : "s/1k req";
      const spread = (s: Summary | undefined) =>
        s ? `${f0(s.median)} (${f0(s.min)}–${f0(s.max)}) ${m.unit}` : "–";
      return [
        m.label(options),
        spread(b),
        spread(o),
        b && o ? `${(b.median / o.median).toFixed(2)}×` : "–",
        `${f2(b?.cpu)} / ${f2(o?.cpu)} ${unit}`,
        b?.clientCpu !== undefined ? `${f2(b.clientCpu)} / ${f2(o?.clientCpu)} ${unit}` : "–",
        b?.p99 !== undefined ? `${f1(b.p99)} / ${f1(o?.p99)}` : "–",
        `${f0(b?.peakRss)} (+${f0(b?.growth)}) / ${f0(o?.peakRss)} (+${f0(o?.growth)})`,
      ];
    }),
  );
  console.log(`\nThis machine's limits (same run, ${options.sizeMib} MiB each):\n`);
  table(["limit", "MB/s"], [
    ["sha256 (node:crypto, 1 MiB pieces)", f0(limits.hash)],
    ["drain + hash a request body, Deno.serve", f0(limits.drainHashHttp)],
    ["drain + hash a request body, raw TCP socket", f0(limits.drainHashTcp)],
    ["write a file + fdatasync", f0(limits.fdatasyncWrite)],
    ["read a cached file", f0(limits.rawRead)],
  ]);
  console.log("\nTargets:\n");
  table(
    ["target", "measured", "result"],
    verdicts(get, limits).map((v) => [v.target, v.measured, v.pass ? "PASS" : "FAIL"]),
  );
}
