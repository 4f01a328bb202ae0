/**
 * Berth's command line: read the configuration, open the stores, serve (or
 * check them with `fsck`). Nothing else lives here.
 *
 * @module
 */
import { createApp } from "./src/app.ts";
import { openAuth } from "./src/auth/open.ts";
import { ConfigError, helpText, parseCli } from "./src/config.ts";
import { serveGuarded } from "./src/http/conn_guard.ts";
import { Drain } from "./src/http/drain.ts";
import { IdleCollector } from "./src/idle_gc.ts";
import { loadTls } from "./src/http/tls.ts";
import { createLogger } from "./src/log.ts";
import { kvLocation, openStores } from "./src/open.ts";
import { blobsLocation } from "./src/storage/open.ts";
import { SchemaError } from "./src/meta/schema.ts";
import {
  type CollectorCrons,
  type CollectorWork,
  scheduleCollectorCrons,
  startCollector,
} from "./src/gc/collector.ts";

/** A start-up failure the user can fix (a path, a port): reported in one line. */
class StartupError extends Error {}

async function startup<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    // A newer schema says all there is to say; anything else gets what was being done.
    if (error instanceof SchemaError) throw new StartupError(error.message);
    throw new StartupError(`${what}: ${(error as Error).message}`);
  }
}

type Config = ReturnType<typeof parseCli>["config"];

/**
 * Deploy mode's collector jobs, registered while this module's top level runs: Deno Deploy
 * finds `Deno.cron` jobs only then. Null when not serving in deploy mode (or the command
 * line is wrong: `main` says so); an error when `Deno.cron` is missing.
 */
function deployCrons(): CollectorCrons | Error | null {
  let cli;
  try {
    cli = parseCli(Deno.args, Deno.env.toObject());
  } catch {
    return null;
  }
  if (cli.help || cli.command !== "serve" || !cli.config.deploy) return null;
  try {
    return scheduleCollectorCrons(cli.config);
  } catch (error) {
    return error as Error;
  }
}

async function serve(config: Config, crons: CollectorCrons | Error | null): Promise<void> {
  if (config.deploy && !crons) crons = new Error("Deploy mode needs its cron jobs registered");
  if (crons instanceof Error) throw new StartupError(crons.message);
  const tls = config.tlsCert === ""
    ? undefined
    : await startup("Cannot serve HTTPS", () => loadTls(config.tlsCert, config.tlsKey));
  const log = createLogger(config.logLevel);
  const stores = await startup(
    `Cannot open the data directory "${config.data}", KV "${kvLocation(config)}" or blobs "${
      blobsLocation(config)
    }"`,
    () => openStores(config, { onProgress: (line) => log.info("schema migration", { line }) }),
  );
  const { from, to, ms } = stores.schema;
  if (from !== to) log.info("schema migrated", { from, to, ms });
  const auth = await startup("Cannot set up authentication", async () => {
    try {
      return await openAuth(config, log, stores.meta);
    } catch (error) {
      await stores.close();
      throw error;
    }
  });
  const drain = new Drain();
  const app = drain.wrap(createApp({ meta: stores.meta, blobs: stores.blobs, config, log, auth }));
  const onListen = ({ hostname, port }: Deno.NetAddr) => {
    const host = hostname.includes(":") ? `[${hostname}]` : hostname;
    console.log(
      `Berth listening on ${tls ? "https" : "http"}://${host}:${port}/ (${
        config.deploy ? "deploy mode" : `data ${config.data}`
      }, kv ${kvLocation(config)}, blobs ${stores.blobs.location})`,
    );
  };
  const { hostname, port } = config.listen;
  const { idleTimeoutMs, maxConnections } = config;
  // Deploy mode serves where the platform says unless --listen was given: PORT, else
  // Deno.serve's default.
  const envPort = Deno.env.get("PORT");
  const platform = config.deploy && !config.listenGiven;
  const deployListen = platform ? (envPort === undefined ? {} : { port: Number(envPort) }) : {
    hostname,
    port,
  };
  // The connection guard bounds idle and total connections; 0 serves directly (and so does
  // deploy mode: the platform owns the connections). Listening can fail synchronously
  // (address in use): nothing else is started before it succeeds, and the stores are closed.
  const server = await startup(`Cannot listen on ${hostname}:${port}`, async () => {
    try {
      if (config.deploy) return Deno.serve({ ...deployListen, ...tls, onListen }, app);
      return idleTimeoutMs > 0
        ? serveGuarded({
          hostname,
          port,
          idleTimeoutMs,
          maxConnections,
          tls,
          onListen,
          onError: (event, fields) => log.warn(event, fields),
        }, app)
        : Deno.serve({ hostname, port, ...tls, onListen }, app);
    } catch (error) {
      await stores.close();
      throw error;
    }
  });
  const work: CollectorWork = {
    meta: stores.meta,
    storage: stores.blobs,
    collect: {
      graceMs: config.gcGraceMs,
      untaggedTtlMs: config.untaggedTtlMs,
      policies: config.retention,
      uploadTtlMs: config.uploadTtlMs,
    },
    onError: (error) => log.error("collection failed", { error }),
    onCollect: (report) => {
      const { removed: _, ...summary } = report;
      log.info("collection", { ...summary });
    },
    onSweep: (report) => log.debug("sweep", { ...report }),
  };
  if (crons) {
    // Deploy mode: the platform stops instances itself; no signals, no timers.
    crons.start(work);
    await server.finished;
    return;
  }
  const { meta: _meta, storage: _storage, ...hooks } = work;
  const stopSweeper = startCollector(stores.meta, stores.blobs, {
    ...hooks,
    gcIntervalMs: config.gcIntervalMs,
    sweepIntervalMs: Math.min(Math.max(config.uploadTtlMs / 10, 1000), 60_000),
  });
  // Memory given back after bursts, when the process may open an inspector session.
  const idleGc = IdleCollector.permitted() ? new IdleCollector(drain).start() : null;
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      log.warn("second signal: exiting now", { signal });
      Deno.exit(0);
    }
    stopping = true;
    log.info("shutting down", { signal, inFlight: drain.inFlight });
    // Stop taking connections, let every request in flight finish (uploads too),
    // then let responses finish streaming: Deno's shutdown alone drops bodies in flight.
    // The whole of it is bounded by --shutdown-timeout.
    const deadline = Date.now() + config.shutdownTimeoutMs;
    const left = () => Math.max(deadline - Date.now(), 0);
    if ("stopAccepting" in server) await server.stopAccepting();
    const drained = await drain.drain(left());
    let timer: ReturnType<typeof setTimeout> | undefined;
    const closed = await Promise.race([
      server.shutdown(left()).then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), left()))),
    ]);
    clearTimeout(timer);
    if (!drained || !closed) {
      log.warn("shutdown timeout: what was still in flight is cut off", {
        inFlight: drain.inFlight,
      });
    }
    idleGc?.stop();
    await stopSweeper();
    await stores.close();
    Deno.exit(0);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => stop(signal));
  }
  await server.finished;
}

async function main(crons: CollectorCrons | Error | null): Promise<number> {
  // `berth user …` manages an htpasswd file; it has options of its own.
  if (Deno.args[0] === "user") {
    const { userCommand } = await import("./src/cli/user.ts");
    return await userCommand(Deno.args.slice(1));
  }
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
    const { fsck } = await import("./src/fsck/fsck.ts");
    try {
      return await fsck(cli.config, { repair: cli.repair });
    } catch (error) {
      if (!(error instanceof SchemaError)) throw error;
      console.error(`berth: ${error.message}`);
      return 2;
    }
  }
  if (cli.command === "gc" || cli.command === "du") {
    const { gcCommand, duCommand } = await import("./src/gc/command.ts");
    try {
      return cli.command === "gc"
        ? await gcCommand(cli.config, { dryRun: cli.dryRun, json: cli.json, full: cli.full })
        : await duCommand(cli.config, { json: cli.json });
    } catch (error) {
      if (!(error instanceof SchemaError)) throw error;
      console.error(`berth: ${error.message}`);
      return 2;
    }
  }
  try {
    await serve(cli.config, crons);
  } catch (error) {
    if (!(error instanceof StartupError)) throw error;
    console.error(`berth: ${error.message}`);
    return 2;
  }
  return 0;
}

if (import.meta.main) {
  const crons = deployCrons();
  Deno.exit(await main(crons));
}
