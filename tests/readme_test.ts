/**
 * Keeps the README true: every option and every endpoint id is documented.
 *
 * @module
 */
import assert from "node:assert/strict";
import { envName, OPTIONS } from "../src/config.ts";

const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));

Deno.test("README's configuration table lists every option with its environment variable", () => {
  for (const option of OPTIONS) {
    assert.match(readme, new RegExp("\\| `--" + option.flag + "[ `]"), `--${option.flag}`);
    assert.ok(readme.includes("`" + envName(option.flag) + "`"), envName(option.flag));
  }
});

Deno.test("README's API coverage table names every endpoint id of the spec", () => {
  for (
    const id of [
      "end-1",
      "end-2",
      "end-3",
      "end-4a",
      "end-4b",
      "end-4c",
      "end-5",
      "end-6",
      "end-7",
      "end-7b",
      "end-8a",
      "end-9",
      "end-10",
      "end-11",
      "end-12a",
      "end-13",
      "end-14",
    ]
  ) {
    assert.match(readme, new RegExp(`^\\| ${id}[ /]`, "m"), id);
  }
});

Deno.test("README pins Deno 2.9.6 in its quick start, as .ci/run does", async () => {
  assert.ok(readme.includes("npx -y deno@2.9.6 task start"));
  const ci = await Deno.readTextFile(new URL("../.ci/run", import.meta.url));
  assert.ok(ci.includes("DENO_VERSION=2.9.6"));
});
