/**
 * `deno task bench`: with `--vs URL|distribution`, Berth side by side with
 * another registry (`vs.ts`); without, Berth against this machine's limits and
 * a bare `Deno.serve` peer (`against_peer.ts`).
 *
 * @module
 */
if (Deno.args.some((arg) => arg === "--vs" || arg.startsWith("--vs="))) {
  const { runVs } = await import("./vs.ts");
  await runVs(Deno.args);
} else {
  await import("./against_peer.ts");
}
