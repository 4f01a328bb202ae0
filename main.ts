/**
 * Berth's command line: read the configuration, open the stores, serve (or
 * check them with `fsck`). Nothing else lives here.
 *
 * @module
 */
import { createApp } from "./src/app.ts";
import { ConfigError, helpText, parseCli } from "./src/config.ts";
import { serveGuarded } from "./src/http/conn_guard.ts";
import { createLogger } from "./src/log.ts";
import { kvLocation, openStores } from "./src/open.ts";
import { startSweeper } from "./src/sweeper.ts";

async function serve(config: ReturnType<typeof parseCli>["config"]): Promise<void> {
  const log = createLogger(config.logLevel);
  const stores = await openStores(config);
  const app = createApp({ meta: stores.meta, blobs: stores.blobs, config, log });
  const stopSweeper = startSweeper(stores.meta, stores.blobs, {
    ttlMs: config.uploadTtlMs,
    intervalMs: Math.min(Math.max(config.uploadTtlMs / 10, 1000), 60_000),
    onError: (error) => log.error("sweep failed", { error }),
    onSweep: (report) => log.debug("sweep", { ...report }),
  });
  const onListen = ({ hostname, port }: Deno.NetAddr) => {
    const host = hostname.includes(":") ? `[${hostname}]` : hostname;
    console.log(
      `Berth listening on http://${host}:${port}/ (data ${config.data}, kv ${kvLocation(config)})`,
    );
  };
  const { hostname, port } = config.listen;
  const { idleTimeoutMs, maxConnections } = config;
  // The connection guard bounds idle and total connections; 0 serves directly.
  const server = idleTimeoutMs > 0
    ? serveGuarded({ hostname, port, idleTimeoutMs, maxConnections, onListen }, app)
    : Deno.serve({ hostname, port, onListen }, app);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("shutting down", { signal });
    await server.shutdown();
    await stopSweeper();
    stores.close();
    Deno.exit(0);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => stop(signal));
  }
  await server.finished;
}

async function main(): Promise<number> {
  let cli;
  try {
    cli = parseCli(Deno.args, Deno.env.toObject());
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`berth: ${error.message}`);
    return 2;
  }
  if (cli.help) {
    console.log(helpText());
    return 0;
  }
  if (cli.command === "fsck") {
    const { fsck } = await import("./src/fsck.ts");
    return await fsck(cli.config, { repair: cli.repair });
  }
  await serve(cli.config);
  return 0;
}

if (import.meta.main) Deno.exit(await main());
