/**
 * Unit tests of the metrics registry and its text exposition.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Registry } from "./registry.ts";

Deno.test("Registry.render() writes counters and gauges with HELP, TYPE and escaped labels", () => {
  const registry = new Registry();
  registry.counter("x_total", "Some\\thing\nnew", { a: 'q"u\\o\nte' }).inc(3);
  const gauge = registry.gauge("g", "A gauge");
  gauge.set(5);
  gauge.dec(2);
  assert.equal(
    registry.render(),
    [
      "# HELP g A gauge",
      "# TYPE g gauge",
      "g 3",
      "# HELP x_total Some\\\\thing\\nnew",
      "# TYPE x_total counter",
      'x_total{a="q\\"u\\\\o\\nte"} 3',
      "",
    ].join("\n"),
  );
});

Deno.test("Registry.histogram() renders cumulative buckets, +Inf, sum and count", () => {
  const registry = new Registry();
  const h = registry.histogram("h_seconds", "H", { op: "x" }, [0.1, 1]);
  for (const value of [0.05, 0.1, 0.5, 3]) h.observe(value);
  assert.equal(h.count, 4);
  const text = registry.render();
  assert.match(text, /^h_seconds_bucket\{op="x",le="0\.1"\} 2$/m);
  assert.match(text, /^h_seconds_bucket\{op="x",le="1"\} 3$/m);
  assert.match(text, /^h_seconds_bucket\{op="x",le="\+Inf"\} 4$/m);
  assert.match(text, /^h_seconds_sum\{op="x"\} 3\.65$/m);
  assert.match(text, /^h_seconds_count\{op="x"\} 4$/m);
});

Deno.test("Registry.counter() returns the same metric for the same name and labels", () => {
  const registry = new Registry();
  const a = registry.counter("c_total", "C", { cache: "tags" });
  const b = registry.counter("c_total", "C", { cache: "tags" });
  const other = registry.counter("c_total", "C", { cache: "manifests" });
  a.inc();
  b.inc(2);
  other.inc();
  assert.equal(a, b);
  assert.equal(a.value, 3);
  const text = registry.render();
  assert.equal(text.match(/# TYPE c_total counter/g)?.length, 1, "one family");
  assert.match(text, /^c_total\{cache="tags"\} 3$/m);
  assert.match(text, /^c_total\{cache="manifests"\} 1$/m);
});

Deno.test("Registry refuses a name used with another type or other label names, and bad names", () => {
  const registry = new Registry();
  registry.counter("n_total", "N", { a: "1" });
  assert.throws(() => registry.gauge("n_total", "N", { a: "1" }), /is a counter, not a gauge/);
  assert.throws(() => registry.counter("n_total", "N", { b: "1" }), /has labels \(a\)/);
  assert.throws(() => registry.counter("bad-name", "N"), /Invalid metric name/);
  assert.throws(() => registry.counter("l_total", "L", { le: "1" }), /invalid label name/);
  assert.throws(() => registry.histogram("h", "H", {}, [1, 1]), /buckets must ascend/);
});

Deno.test("Registry.onCollect() runs before every rendering", () => {
  const registry = new Registry();
  const gauge = registry.gauge("rendered", "Times rendered");
  registry.onCollect(() => gauge.inc());
  registry.render();
  assert.match(registry.render(), /^rendered 2$/m);
});
