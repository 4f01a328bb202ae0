/**
 * Starts Distribution (Debian's `docker-registry`, CNCF Distribution 2.8) for
 * the side-by-side bench: a temporary root directory, a config written there
 * (filesystem driver, no authentication, delete enabled, in-memory blob
 * descriptor cache, access log off), a free loopback port. Disposing stops it
 * by its PID (SIGTERM, then SIGKILL) and removes the directory.
 *
 * Run by hand: `deno run -A bench/distribution.ts` prints its URL and PID and
 * serves until Ctrl-C.
 *
 * @module
 */

/** A running Distribution. */
export interface Distribution extends AsyncDisposable {
  url: string;
  pid: number;
  version: string;
}

/** The registry binary; `BENCH_DISTRIBUTION_BIN` overrides it. */
const BINARY = Deno.env.get("BENCH_DISTRIBUTION_BIN") ?? "/usr/bin/docker-registry";

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** The config file's text for a root directory and port. */
export function distributionConfig(root: string, port: number): string {
  return [
    "version: 0.1",
    "log:",
    "  level: error",
    "  accesslog:",
    "    disabled: true",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${root}`,
    "  delete:",
    "    enabled: true",
    "  cache:",
    "    blobdescriptor: inmemory",
    "http:",
    `  addr: 127.0.0.1:${port}`,
    "",
  ].join("\n");
}

/** Starts Distribution and waits until `/v2/` answers. */
export async function startDistribution(): Promise<Distribution> {
  const dir = await Deno.makeTempDir({ prefix: "bench-distribution-" });
  const port = freePort();
  await Deno.writeTextFile(`${dir}/config.yml`, distributionConfig(`${dir}/root`, port));
  const versionOut = await new Deno.Command(BINARY, { args: ["--version"] }).output();
  const version = new TextDecoder().decode(versionOut.stdout).trim().split(" ").pop() ?? "?";
  const child = new Deno.Command(BINARY, {
    args: ["serve", `${dir}/config.yml`],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5000);
    await child.status;
    clearTimeout(timer);
    await Deno.remove(dir, { recursive: true });
  };
  for (const deadline = Date.now() + 10_000; Date.now() < deadline;) {
    try {
      const res = await fetch(`${url}/v2/`);
      await res.body?.cancel();
      if (res.ok) return { url, pid: child.pid, version, [Symbol.asyncDispose]: stop };
    } catch { /* not listening yet */ }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await stop();
  throw new Error(`${BINARY} did not answer on ${url}`);
}

if (import.meta.main) {
  const registry = await startDistribution();
  console.log(`Distribution ${registry.version} at ${registry.url} (PID ${registry.pid})`);
  Deno.addSignalListener("SIGINT", async () => {
    await registry[Symbol.asyncDispose]();
    Deno.exit(0);
  });
}
