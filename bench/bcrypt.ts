/**
 * `deno run -A bench/bcrypt.ts`: the two bcrypt libraries Berth could verify
 * htpasswd passwords with, measured side by side in one run:
 * `npm:bcryptjs@3` (pure JavaScript) and `npm:hash-wasm@4` (WebAssembly).
 *
 * For each: the cold import (a fresh `deno` process importing the module,
 * from the local npm cache), the first verification (which compiles the
 * WebAssembly), verifications per second at cost 10 and 12 (a right and a
 * wrong password alternate), and the longest event-loop stall seen while
 * verifications run, i.e. how long a server's other requests wait behind one
 * (bcryptjs yields every 100 ms; hash-wasm runs each verification in one go).
 *
 * Options: `--seconds N` per measurement (default 3).
 *
 * @module
 */
import { parseArgs } from "node:util";
import bcryptjs from "bcryptjs";
// The peer measured against is no dependency of Berth, so it stays out of deno.json.
// deno-lint-ignore no-import-prefix
import { bcrypt as wasmBcrypt, bcryptVerify } from "npm:hash-wasm@4.13.0";

const { values } = parseArgs({
  args: Deno.args,
  options: { seconds: { type: "string", default: "3" } },
});
const SECONDS = Number(values.seconds);
const PASSWORD = "correct horse battery staple";

interface Library {
  name: string;
  specifier: string;
  verify(password: string, hash: string): Promise<boolean>;
}

const LIBRARIES: Library[] = [
  {
    name: "bcryptjs",
    specifier: "npm:bcryptjs@3.0.3",
    verify: (password, hash) => bcryptjs.compare(password, hash),
  },
  {
    name: "hash-wasm",
    specifier: "npm:hash-wasm@4.13.0",
    verify: (password, hash) => bcryptVerify({ password, hash }),
  },
];

/** Milliseconds a fresh process needs to import `specifier` (median of 5). */
async function coldImportMs(specifier: string): Promise<number> {
  const code = `const t = performance.now(); await import(${
    JSON.stringify(specifier)
  }); console.log(performance.now() - t);`;
  const runs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    runs.push(Number(new TextDecoder().decode(out.stdout).trim()));
  }
  return runs.sort((a, b) => a - b)[2]!;
}

/** Verifications per second and the longest event-loop stall (ms) over `SECONDS`. */
async function throughput(
  lib: Library,
  hash: string,
): Promise<{ perSec: number; stallMs: number }> {
  let stallMs = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    stallMs = Math.max(stallMs, now - last - 10);
    last = now;
  }, 10);
  const start = performance.now();
  let count = 0;
  try {
    while (performance.now() - start < SECONDS * 1000) {
      const ok = await lib.verify(count % 2 === 0 ? PASSWORD : "wrong", hash);
      if (ok !== (count % 2 === 0)) throw new Error(`${lib.name} verified wrongly`);
      count++;
      // Let timers run between verifications, as a server's other requests would.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  } finally {
    clearInterval(timer);
    // A verification that never yields stalls from the last tick to its end.
    stallMs = Math.max(stallMs, performance.now() - last - 10);
  }
  return { perSec: count / ((performance.now() - start) / 1000), stallMs };
}

const salt = crypto.getRandomValues(new Uint8Array(16));
const rows: string[][] = [];
for (const lib of LIBRARIES) {
  const importMs = await coldImportMs(lib.specifier);
  const row = [lib.name, importMs.toFixed(0)];
  for (const cost of [10, 12]) {
    // Hashes made by the other library, so each also proves it reads the other's output.
    const hash = lib.name === "bcryptjs"
      ? await wasmBcrypt({ password: PASSWORD, salt, costFactor: cost, outputType: "encoded" })
      : bcryptjs.hashSync(PASSWORD, cost);
    const t = performance.now();
    await lib.verify(PASSWORD, hash);
    const firstMs = performance.now() - t;
    const { perSec, stallMs } = await throughput(lib, hash);
    row.push(firstMs.toFixed(0), perSec.toFixed(1), stallMs.toFixed(0));
  }
  rows.push(row);
}

const header = [
  "library",
  "cold import ms",
  "c10 first ms",
  "c10 verify/s",
  "c10 stall ms",
  "c12 first ms",
  "c12 verify/s",
  "c12 stall ms",
];
console.log(`Deno ${Deno.version.deno}, ${SECONDS} s per measurement\n`);
console.log(`| ${header.join(" | ")} |`);
console.log(`| ${header.map(() => "---").join(" | ")} |`);
for (const row of rows) console.log(`| ${row.join(" | ")} |`);
const [js, wasm] = rows;
for (const [i, cost] of [[3, 10], [6, 12]] as const) {
  console.log(
    `cost ${cost}: hash-wasm verifies ${(Number(wasm![i]) / Number(js![i])).toFixed(2)}x ` +
      `as fast as bcryptjs`,
  );
}
