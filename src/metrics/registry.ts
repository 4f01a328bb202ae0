/**
 * A small registry of counters, gauges and histograms, rendered in the
 * Prometheus text exposition format (version 0.0.4). Any module may report
 * into the process-wide {@linkcode metrics}:
 *
 * ```ts
 * import { metrics } from "./registry.ts";
 * const hits = metrics.counter("berth_cache_hits_total", "Cache lookups answered", { cache: "tags" });
 * hits.inc();
 * ```
 *
 * A metric is created once (at module load or construction) and kept; its
 * labels are fixed then, so counting is a field increment with no strings
 * built. Asking again for the same name and labels returns the same metric.
 *
 * @module
 */

/** Label names to values, fixed when a metric is created. */
export type Labels = Readonly<Record<string, string>>;

/** A value that only goes up. */
export interface Counter {
  inc(by?: number): void;
  readonly value: number;
}

/** A value that goes up and down. */
export interface Gauge {
  set(value: number): void;
  inc(by?: number): void;
  dec(by?: number): void;
  readonly value: number;
}

/** Observations counted into fixed buckets, with their sum. */
export interface Histogram {
  observe(value: number): void;
  readonly count: number;
  readonly sum: number;
}

/** Latency buckets in seconds: 0.25 ms to 10 s. */
export const SECONDS_BUCKETS: readonly number[] = [
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

const NAME_REGEXP = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_REGEXP = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

type Kind = "counter" | "gauge" | "histogram";

class CounterValue implements Counter {
  value = 0;
  inc(by = 1): void {
    this.value += by;
  }
}

class GaugeValue implements Gauge {
  value = 0;
  set(value: number): void {
    this.value = value;
  }
  inc(by = 1): void {
    this.value += by;
  }
  dec(by = 1): void {
    this.value -= by;
  }
}

class HistogramValue implements Histogram {
  readonly bounds: readonly number[];
  /** Observations per bucket (not cumulative); the last is above every bound. */
  readonly counts: Float64Array;
  count = 0;
  sum = 0;

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i]!++;
    this.count++;
    this.sum += value;
  }
}

type Value = CounterValue | GaugeValue | HistogramValue;

interface Family {
  name: string;
  help: string;
  kind: Kind;
  labelNames: string;
  buckets: readonly number[];
  /** Rendered label pairs (`a="x",b="y"`) to the metric. */
  children: Map<string, Value>;
}

/** Escapes a label value: backslash, double quote and line feed. */
function escapeValue(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`));
}

function escapeHelp(help: string): string {
  return help.replace(/[\\\n]/g, (c) => (c === "\n" ? "\\n" : "\\\\"));
}

function formatNumber(value: number): string {
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** `a="x",b="y"` for `labels` in their given order; checks the names. */
function renderLabels(name: string, labels: Labels): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(labels)) {
    if (!LABEL_REGEXP.test(key) || key.startsWith("__") || key === "le") {
      throw new Error(`Metric "${name}": invalid label name "${key}"`);
    }
    parts.push(`${key}="${escapeValue(value)}"`);
  }
  return parts.join(",");
}

function braces(labels: string): string {
  return labels === "" ? "" : `{${labels}}`;
}

/** Metrics by name, and their text exposition. */
export class Registry {
  readonly #families = new Map<string, Family>();
  readonly #collectors: (() => void)[] = [];

  /** The counter `name` with `labels` (created on first use). Counter names end in `_total`. */
  counter(name: string, help: string, labels: Labels = {}): Counter {
    return this.#child(name, help, "counter", labels, []) as CounterValue;
  }

  /** The gauge `name` with `labels` (created on first use). */
  gauge(name: string, help: string, labels: Labels = {}): Gauge {
    return this.#child(name, help, "gauge", labels, []) as GaugeValue;
  }

  /** The histogram `name` with `labels`; `buckets` (upper bounds, ascending) are the family's. */
  histogram(
    name: string,
    help: string,
    labels: Labels = {},
    buckets: readonly number[] = SECONDS_BUCKETS,
  ): Histogram {
    return this.#child(name, help, "histogram", labels, buckets) as HistogramValue;
  }

  /** Runs `collect` before every rendering (to set gauges that are cheaper to read than to track). */
  onCollect(collect: () => void): void {
    this.#collectors.push(collect);
  }

  #child(
    name: string,
    help: string,
    kind: Kind,
    labels: Labels,
    buckets: readonly number[],
  ): Value {
    let family = this.#families.get(name);
    if (!family) {
      if (!NAME_REGEXP.test(name)) throw new Error(`Invalid metric name "${name}"`);
      if (kind === "histogram" && !buckets.every((b, i) => i === 0 || b > buckets[i - 1]!)) {
        throw new Error(`Metric "${name}": buckets must ascend`);
      }
      family = {
        name,
        help,
        kind,
        labelNames: Object.keys(labels).join(","),
        buckets,
        children: new Map(),
      };
      this.#families.set(name, family);
    }
    if (family.kind !== kind) {
      throw new Error(`Metric "${name}" is a ${family.kind}, not a ${kind}`);
    }
    if (Object.keys(labels).join(",") !== family.labelNames) {
      throw new Error(
        `Metric "${name}" has labels (${family.labelNames}), not (${
          Object.keys(labels).join(",")
        })`,
      );
    }
    const key = renderLabels(name, labels);
    let child = family.children.get(key);
    if (!child) {
      child = kind === "counter"
        ? new CounterValue()
        : kind === "gauge"
        ? new GaugeValue()
        : new HistogramValue(family.buckets);
      family.children.set(key, child);
    }
    return child;
  }

  /** Every metric in the text exposition format, families sorted by name. */
  render(): string {
    for (const collect of this.#collectors) collect();
    const lines: string[] = [];
    const names = [...this.#families.keys()].sort();
    for (const name of names) {
      const family = this.#families.get(name)!;
      lines.push(`# HELP ${name} ${escapeHelp(family.help)}`, `# TYPE ${name} ${family.kind}`);
      for (const [labels, child] of family.children) {
        if (child instanceof HistogramValue) {
          const sep = labels === "" ? "" : ",";
          let cumulative = 0;
          child.bounds.forEach((bound, i) => {
            cumulative += child.counts[i]!;
            lines.push(`${name}_bucket{${labels}${sep}le="${formatNumber(bound)}"} ${cumulative}`);
          });
          lines.push(`${name}_bucket{${labels}${sep}le="+Inf"} ${child.count}`);
          lines.push(`${name}_sum${braces(labels)} ${formatNumber(child.sum)}`);
          lines.push(`${name}_count${braces(labels)} ${child.count}`);
        } else {
          lines.push(`${name}${braces(labels)} ${formatNumber(child.value)}`);
        }
      }
    }
    return lines.join("\n") + "\n";
  }
}

/** The process's registry: what `/metrics` shows. */
export const metrics: Registry = new Registry();

/** The `Content-Type` of {@linkcode Registry.render}'s output. */
export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";
