/**
 * The connection guard: Deno 2.9.6's `Deno.serve` has no keep-alive or
 * header-read timeout and no connection cap, so an idle or half-open
 * connection is held forever. The guard accepts TCP connections itself,
 * refuses those over the cap with 503, relays the rest byte for byte to an
 * internal `Deno.serve` on a loopback port, and closes a connection that has
 * had no request in flight and no bytes either way for `idleTimeoutMs`, or
 * whose request headers trickle in for longer (slowloris).
 *
 * Which front connection a request belongs to: the internal server sees the
 * guard's back connection as the remote address, so its source port names the
 * front connection. That is how the handler gets the client's real address,
 * and how the idle and slowloris bookkeeping knows a request is in flight. It
 * is also the gate: the internal server answers 403, without calling the
 * handler, to anything that is not from 127.0.0.1 on the port of a live back
 * connection to it (the mapping is removed the moment the back connection
 * closes). No other local process can use such a port, as the 4-tuple is
 * taken. A Unix socket in a private directory would keep other processes out
 * too, but over it `Deno.serve` gives a request no remote identity, so requests
 * could not be tied to connections: loopback TCP it is.
 *
 * Nothing here may cost the server its life, and running out of descriptors
 * would: Deno's `Deno.serve` stops for good on an accept error, and Deno itself
 * can panic when a descriptor is missing (its stack probe opens
 * `/proc/self/maps`). A client may cost five descriptors (front, back, the
 * internal server's end, and two files its request holds), so the cap is also
 * bounded by the open-file limit: `floor((limit - 64) / 5)`, the 64 kept for
 * KV, listeners and refusals in progress. A back connection that cannot be
 * opened gets the client the 503. An accept error other than "listener closed"
 * is reported and accepting resumes with back-off (10 ms doubling to 1 s). If the
 * internal server ends anyway (Deno's accept loop stops for good on any error,
 * EMFILE included, and rejects `finished`), the guard reports it, starts
 * another one, and answers 503 until it is up.
 *
 * The relay costs some throughput (see the README's benchmarks); `--idle-timeout 0`
 * serves directly instead.
 *
 * @module
 */

/** A running guarded server, shaped like `Deno.HttpServer` where it matters. */
export interface GuardedServer {
  addr: Deno.NetAddr;
  /** Stops accepting new connections (open ones keep being served). */
  stopAccepting(): Promise<void>;
  /**
   * Stops accepting, lets responses in flight reach their clients (up to
   * `graceMs`), then closes every connection.
   */
  shutdown(graceMs?: number): Promise<void>;
  finished: Promise<void>;
  /** Connections open now (for tests and metrics). */
  readonly connections: number;
  /** The cap in force: `maxConnections`, or less if the open-file limit says so. */
  readonly maxConnections: number;
  /** The internal server's address, null while it is being restarted (for tests). */
  readonly internalAddr: Deno.NetAddr | null;
}

/** The system calls the guard makes; tests substitute failing ones. */
export interface GuardSystem {
  listen(options: { hostname: string; port: number }): Deno.TcpListener;
  connect(options: { hostname: string; port: number }): Promise<Deno.TcpConn>;
  serve(
    options: { hostname: string; port: number; onListen(): void },
    handler: (req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => Promise<Response>,
  ): Deno.HttpServer<Deno.NetAddr>;
}

/** Options of {@linkcode serveGuarded}. */
export interface GuardOptions {
  hostname: string;
  port: number;
  idleTimeoutMs: number;
  maxConnections: number;
  onListen?: (addr: Deno.NetAddr) => void;
  /** Told what went wrong and what the guard does about it (at most once a second per event). */
  onError?: (event: string, fields: Record<string, unknown>) => void;
  /** The open-file limit; by default the soft limit in `/proc/self/limits` (none if unreadable). */
  openFileLimit?: number;
  /** Stand-ins for `Deno.listen`, `Deno.connect` and `Deno.serve`. */
  system?: Partial<GuardSystem>;
}

/** The handler's view of a request's connection: the client's address. */
export type GuardedHandler = (
  req: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Response | Promise<Response>;

/** The internal server, one per start (a failed one is replaced). */
interface Inner {
  server: Deno.HttpServer<Deno.NetAddr>;
  addr: Deno.NetAddr;
  /** Back connections by their local port: the only peers it serves. */
  byPort: Map<number, Connection>;
  ended: boolean;
}

interface Connection {
  front: Deno.TcpConn;
  back?: Deno.TcpConn;
  inner: Inner;
  /** Removes the back connection's port from its internal server's map. */
  unmap?: () => void;
  inFlight: number;
  /** Last byte either way. */
  lastActive: number;
  /** Last byte from the server. */
  lastServer: number;
  /**
   * When the client started sending with no request in flight (the headers of
   * its next request), 0 once that request reaches a handler: headers that
   * trickle in for longer than the idle timeout are slowloris.
   */
  waitingSince: number;
  closed: boolean;
}

/**
 * Descriptors a guarded connection may cost: front, back, the internal
 * server's end, and the two files its request may hold open at once (a blob
 * being written and its directory being synced; a part and the blob it is
 * assembled into).
 */
const DESCRIPTORS_PER_CONNECTION = 5;
/** Descriptors left for KV, blob files, listeners and refusals. */
const RESERVED_DESCRIPTORS = 64;
/** Refusals written at once; past it accepting waits (each holds a descriptor). */
const MAX_REFUSING = 16;
const BACKOFF_MIN_MS = 10;
const BACKOFF_MAX_MS = 1000;
/** A connection whose internal server ended is closed once quiet this long. */
const ORPHAN_QUIET_MS = 1000;
const REPORT_INTERVAL_MS = 1000;
const RELAY_BUFFER_BYTES = 256 * 1024;
/** Relay buffers kept for reuse: a fresh 256 KiB per direction per connection costs. */
const SPARE_BUFFERS = 64;
const spareBuffers: Uint8Array[] = [];

const DENO_SYSTEM: GuardSystem = {
  listen: (options) => Deno.listen(options),
  connect: (options) => Deno.connect(options),
  serve: (options, handler) => Deno.serve(options, handler),
};

const REFUSAL_BODY =
  '{"errors":[{"code":"UNAVAILABLE","message":"Too many open connections; retry shortly"}]}';
const REFUSAL = new TextEncoder().encode(
  "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n" +
    `Connection: close\r\nContent-Length: ${REFUSAL_BODY.length}\r\n\r\n${REFUSAL_BODY}`,
);
const FORBIDDEN_BODY =
  '{"errors":[{"code":"DENIED","message":"Connect through the public address"}]}';

/** The soft open-file limit of this process, Infinity when unknown. */
function readOpenFileLimit(): number {
  const path = "/proc/self/limits";
  try {
    if (Deno.build.os !== "linux") return Infinity;
    if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") return Infinity;
    const soft = /^Max open files\s+(\d+|unlimited)/m.exec(Deno.readTextFileSync(path))?.[1];
    return soft === undefined || soft === "unlimited" ? Infinity : Number(soft);
  } catch {
    return Infinity;
  }
}

function closeQuietly(c: Deno.Conn | undefined): void {
  try {
    c?.close();
  } catch { /* already closed */ }
}

function close(conn: Connection): void {
  if (conn.closed) return;
  conn.closed = true;
  conn.unmap?.();
  closeQuietly(conn.front);
  closeQuietly(conn.back);
}

async function relay(
  from: Deno.TcpConn,
  to: Deno.TcpConn,
  conn: Connection,
  direction: "up" | "down",
): Promise<void> {
  const buffer = spareBuffers.pop() ?? new Uint8Array(RELAY_BUFFER_BYTES);
  try {
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) break;
      const now = Date.now();
      conn.lastActive = now;
      if (direction === "down") conn.lastServer = now;
      else if (conn.inFlight === 0 && conn.waitingSince === 0) conn.waitingSince = now;
      for (let written = 0; written < n;) written += await to.write(buffer.subarray(written, n));
    }
    await to.closeWrite().catch(() => {});
  } catch {
    close(conn);
  } finally {
    if (spareBuffers.length < SPARE_BUFFERS) spareBuffers.push(buffer);
  }
}

/** Serves `handler` behind the guard. */
export function serveGuarded(options: GuardOptions, handler: GuardedHandler): GuardedServer {
  const system: GuardSystem = { ...DENO_SYSTEM, ...options.system };
  const lastReported = new Map<string, { at: number; suppressed: number }>();
  const report = (event: string, fields: Record<string, unknown>) => {
    const now = Date.now();
    const last = lastReported.get(event);
    if (last && now - last.at < REPORT_INTERVAL_MS) {
      last.suppressed++;
      return;
    }
    const suppressed = last?.suppressed ?? 0;
    lastReported.set(event, { at: now, suppressed: 0 });
    try {
      options.onError?.(event, suppressed ? { ...fields, suppressed } : fields);
    } catch { /* a failing logger must not stop the guard */ }
  };

  const openFileLimit = options.openFileLimit ?? readOpenFileLimit();
  const budget = Math.floor((openFileLimit - RESERVED_DESCRIPTORS) / DESCRIPTORS_PER_CONNECTION);
  const cap = Math.max(Math.min(options.maxConnections, budget), 1);
  if (cap < options.maxConnections) {
    report("connection cap lowered to fit the open-file limit", {
      maxConnections: options.maxConnections,
      openFileLimit,
      cap,
    });
  }

  const open = new Set<Connection>();
  const relays = new Set<Promise<void>>();
  const retiring = new Set<Promise<void>>();
  let shuttingDown = false;
  let restartTimer: ReturnType<typeof setTimeout> | undefined;

  function startInner(): Inner {
    const byPort = new Map<number, Connection>();
    const server = system.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      async (req, info) => {
        const { hostname, port } = info.remoteAddr;
        const conn = hostname === "127.0.0.1" ? byPort.get(port) : undefined;
        if (!conn) {
          await req.body?.cancel().catch(() => {});
          return new Response(FORBIDDEN_BODY, {
            status: 403,
            headers: { "Content-Type": "application/json", Connection: "close" },
          });
        }
        conn.inFlight++;
        conn.waitingSince = 0;
        try {
          return await handler(req, {
            remoteAddr: conn.front.remoteAddr,
            get completed() {
              return info.completed;
            },
          });
        } finally {
          conn.inFlight--;
          conn.lastActive = Date.now();
        }
      },
    );
    const started: Inner = { server, addr: server.addr, byPort, ended: false };
    server.finished.then(
      () => innerEnded(started, null),
      (error: unknown) => innerEnded(started, error),
    );
    return started;
  }

  function innerEnded(ended: Inner, error: unknown): void {
    ended.ended = true;
    if (shuttingDown) return;
    report("internal server ended; restarting it", { error });
    // Frees what is left of it; its connections close once quiet (the sweeper).
    const retired = ended.server.shutdown().catch(() => {});
    retiring.add(retired);
    retired.finally(() => retiring.delete(retired));
    if (inner === ended) inner = null;
    restartInner(BACKOFF_MIN_MS);
  }

  function restartInner(delayMs: number): void {
    restartTimer = undefined;
    if (shuttingDown || inner) return;
    try {
      inner = startInner();
    } catch (error) {
      report("cannot restart the internal server", { error, retryInMs: delayMs });
      restartTimer = setTimeout(
        () => restartInner(Math.min(delayMs * 2, BACKOFF_MAX_MS)),
        delayMs,
      );
    }
  }

  const listener = system.listen({ hostname: options.hostname, port: options.port });
  let inner: Inner | null;
  try {
    inner = startInner();
  } catch (error) {
    listener.close();
    throw error;
  }
  const addr = listener.addr;
  options.onListen?.(addr);

  const sweeper = setInterval(() => {
    const now = Date.now();
    const cutoff = now - options.idleTimeoutMs;
    const orphanCutoff = now - Math.min(options.idleTimeoutMs, ORPHAN_QUIET_MS);
    for (const conn of open) {
      if (conn.inFlight > 0) continue;
      const idle = conn.lastActive < cutoff;
      const slowHeaders = conn.waitingSince !== 0 && conn.waitingSince < cutoff &&
        conn.lastServer < cutoff;
      // No further request on it can reach a handler.
      const orphan = conn.inner.ended && conn.lastActive < orphanCutoff;
      if (idle || slowHeaders || orphan) close(conn);
    }
  }, Math.max(Math.min(options.idleTimeoutMs / 4, 1000), 50));

  let refusing = 0;
  let wake: (() => void) | undefined;
  /** Waits `ms`, or less if woken (a refusal done, accepting stopped). */
  function pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => (wake = undefined, resolve()), ms);
      wake = () => {
        wake = undefined;
        clearTimeout(timer);
        resolve();
      };
    });
  }

  async function refuse(front: Deno.TcpConn): Promise<void> {
    refusing++;
    try {
      await front.write(REFUSAL);
    } catch {
      /* gone */
    } finally {
      closeQuietly(front);
      refusing--;
      wake?.();
    }
  }

  async function handle(front: Deno.TcpConn): Promise<void> {
    const current = inner;
    if (open.size >= cap || current === null) return await refuse(front);
    const now = Date.now();
    const conn: Connection = {
      front,
      inner: current,
      inFlight: 0,
      lastActive: now,
      lastServer: now,
      waitingSince: 0,
      closed: false,
    };
    open.add(conn);
    try {
      let back: Deno.TcpConn;
      try {
        back = await system.connect({ hostname: "127.0.0.1", port: current.addr.port });
      } catch (error) {
        // EMFILE or ENFILE most likely: the client is told to retry.
        report("cannot open a connection to the internal server", { error });
        conn.closed = true;
        return await refuse(front);
      }
      if (conn.closed) return closeQuietly(back); // shut down while connecting
      conn.back = back;
      const port = back.localAddr.port;
      current.byPort.set(port, conn);
      conn.unmap = () => {
        if (current.byPort.get(port) === conn) current.byPort.delete(port);
      };
      const up = relay(front, back, conn, "up");
      // Once the server side is done, so is the connection (its last bytes are relayed).
      await relay(back, front, conn, "down");
      close(conn);
      await up;
    } finally {
      close(conn);
      open.delete(conn);
    }
  }

  let stopped = false;
  const accepting = (async () => {
    let backoffMs = 0;
    while (!stopped) {
      if (refusing >= MAX_REFUSING) {
        await pause(BACKOFF_MAX_MS);
        continue;
      }
      let front: Deno.TcpConn;
      try {
        front = await listener.accept();
        backoffMs = 0;
      } catch (error) {
        if (stopped || error instanceof Deno.errors.BadResource) return; // listener closed
        // EMFILE and the like: the kernel keeps the connection queued; retry.
        backoffMs = Math.min(Math.max(backoffMs * 2, BACKOFF_MIN_MS), BACKOFF_MAX_MS);
        report("accept failed; retrying", { error, retryInMs: backoffMs });
        await pause(backoffMs);
        continue;
      }
      const task = handle(front).catch((error: unknown) => {
        closeQuietly(front);
        report("connection failed", { error });
      });
      relays.add(task);
      task.then(() => relays.delete(task));
    }
  })();

  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  return {
    addr,
    finished,
    get connections() {
      return open.size;
    },
    maxConnections: cap,
    get internalAddr() {
      return inner?.addr ?? null;
    },
    async stopAccepting() {
      stopped = true;
      try {
        listener.close();
      } catch { /* already closed */ }
      wake?.();
      await accepting;
    },
    async shutdown(graceMs = 30_000) {
      await this.stopAccepting();
      shuttingDown = true;
      clearTimeout(restartTimer);
      const current = inner;
      inner = null;
      // Deno waits for response bodies, then closes its side, which ends each relay
      // once the last bytes have reached the client.
      const innerDone = current ? current.server.shutdown().catch(() => {}) : Promise.resolve();
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        innerDone.then(() => Promise.all(relays)),
        new Promise((resolve) => (timer = setTimeout(resolve, graceMs))),
      ]);
      clearTimeout(timer);
      for (const conn of open) close(conn);
      await Promise.all(relays);
      await Promise.all([innerDone, ...retiring]);
      clearInterval(sweeper);
      finish();
    },
  };
}
