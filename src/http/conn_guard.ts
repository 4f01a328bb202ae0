/**
 * The connection guard: Deno 2.9.6's `Deno.serve` has no keep-alive or
 * header-read timeout and no connection cap, so an idle or half-open
 * connection is held forever. The guard accepts TCP connections itself,
 * refuses those over `maxConnections` with 503, relays the rest byte for byte
 * to an internal `Deno.serve` on a loopback port, and closes a connection that
 * has had no request in flight and no bytes either way for `idleTimeoutMs`.
 *
 * It knows which requests belong to which connection through the internal
 * connection's port, which the internal server sees as the remote port.
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
}

/** Options of {@linkcode serveGuarded}. */
export interface GuardOptions {
  hostname: string;
  port: number;
  idleTimeoutMs: number;
  maxConnections: number;
  onListen?: (addr: Deno.NetAddr) => void;
}

interface Connection {
  front: Deno.TcpConn;
  back?: Deno.TcpConn;
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

const REFUSAL_BODY =
  '{"errors":[{"code":"UNAVAILABLE","message":"Too many open connections; retry shortly"}]}';
const REFUSAL = new TextEncoder().encode(
  "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n" +
    `Connection: close\r\nContent-Length: ${REFUSAL_BODY.length}\r\n\r\n${REFUSAL_BODY}`,
);

function close(conn: Connection): void {
  if (conn.closed) return;
  conn.closed = true;
  for (const c of [conn.front, conn.back]) {
    try {
      c?.close();
    } catch { /* already closed */ }
  }
}

async function relay(
  from: Deno.TcpConn,
  to: Deno.TcpConn,
  conn: Connection,
  direction: "up" | "down",
): Promise<void> {
  const buffer = new Uint8Array(256 * 1024);
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
  }
}

/** Serves `handler` behind the guard. */
export function serveGuarded(
  options: GuardOptions,
  handler: (
    req: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ) => Response | Promise<Response>,
): GuardedServer {
  const byPort = new Map<number, Connection>();
  const open = new Set<Connection>();
  const inner = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req, info) => {
    const conn = byPort.get(info.remoteAddr.port);
    if (conn) {
      conn.inFlight++;
      conn.waitingSince = 0;
    }
    try {
      return await handler(req, info);
    } finally {
      if (conn) {
        conn.inFlight--;
        conn.lastActive = Date.now();
      }
    }
  });
  const listener = Deno.listen({ hostname: options.hostname, port: options.port });
  const addr = listener.addr as Deno.NetAddr;
  options.onListen?.(addr);

  const sweeper = setInterval(() => {
    const cutoff = Date.now() - options.idleTimeoutMs;
    for (const conn of open) {
      if (conn.inFlight > 0) continue;
      const idle = conn.lastActive < cutoff;
      const slowHeaders = conn.waitingSince !== 0 && conn.waitingSince < cutoff &&
        conn.lastServer < cutoff;
      if (idle || slowHeaders) close(conn);
    }
  }, Math.max(Math.min(options.idleTimeoutMs / 4, 1000), 50));

  async function handle(front: Deno.TcpConn): Promise<void> {
    if (open.size >= options.maxConnections) {
      try {
        await front.write(REFUSAL);
      } catch { /* gone */ }
      front.close();
      return;
    }
    const now = Date.now();
    const conn: Connection = {
      front,
      inFlight: 0,
      lastActive: now,
      lastServer: now,
      waitingSince: 0,
      closed: false,
    };
    open.add(conn);
    try {
      conn.back = await Deno.connect({ hostname: "127.0.0.1", port: inner.addr.port });
      const port = conn.back.localAddr.port;
      byPort.set(port, conn);
      const up = relay(front, conn.back, conn, "up");
      // Once the server side is done, so is the connection (its last bytes are relayed).
      await relay(conn.back, front, conn, "down");
      close(conn);
      await up;
      byPort.delete(port);
    } catch {
      /* the relay closes on error */
    } finally {
      close(conn);
      open.delete(conn);
    }
  }

  const relays = new Set<Promise<void>>();
  const accepting = (async () => {
    for (;;) {
      let front: Deno.TcpConn;
      try {
        front = await listener.accept() as Deno.TcpConn;
      } catch {
        return; // listener closed
      }
      const task = handle(front);
      relays.add(task);
      task.finally(() => relays.delete(task));
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
    async stopAccepting() {
      try {
        listener.close();
      } catch { /* already closed */ }
      await accepting;
    },
    async shutdown(graceMs = 30_000) {
      await this.stopAccepting();
      // Deno waits for response bodies, then closes its side, which ends each relay
      // once the last bytes have reached the client.
      await inner.shutdown();
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.all(relays),
        new Promise((resolve) => (timer = setTimeout(resolve, graceMs))),
      ]);
      clearTimeout(timer);
      for (const conn of open) close(conn);
      await Promise.all(relays);
      clearInterval(sweeper);
      finish();
    },
  };
}
