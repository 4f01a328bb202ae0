import assert from "node:assert/strict";

/** Runs `code` (with `createLogger` in scope) in a fresh process; its stdout lines, parsed. */
async function run(code: string): Promise<{ stdout: Record<string, unknown>[]; stderr: string }> {
  const logModule = new URL("./log.ts", import.meta.url).href;
  const script = `import { createLogger } from ${JSON.stringify(logModule)};\n${code}`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  return {
    stdout: text.split("\n").filter((line) => line).map((line) => JSON.parse(line)),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("createLogger() writes one JSON line per event, all of them even when the process exits at once", async () => {
  const { stdout } = await run(`
    const log = createLogger("info");
    log.debug("hidden");
    for (let i = 0; i < 1500; i++) log.info("request", { i });
    Deno.exit(0);
  `);
  assert.equal(stdout.length, 1500);
  assert.deepEqual(stdout.map((line) => line.i), Array.from({ length: 1500 }, (_, i) => i));
  assert.equal(stdout[0]!.event, "request");
  assert.equal(stdout[0]!.level, "info");
});

Deno.test("createLogger() writes warnings and errors to stderr at once, info lines to stdout, none lost", async () => {
  const { stdout, stderr } = await run(`
    const log = createLogger("info");
    log.info("first");
    log.error("failed", { error: new Error("boom") });
    // stdout must already hold the first line when the error is written.
    await new Promise((r) => setTimeout(r, 50));
    log.info("later");
  `);
  assert.deepEqual(stdout.map((line) => line.event), ["first", "later"]);
  const error = JSON.parse(stderr.trim());
  assert.equal(error.event, "failed");
  assert.equal(error.error.message, "boom");
});
