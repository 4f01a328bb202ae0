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
 * With TLS the internal server is `Deno.serve` with the certificate (it offers
 * `h2` and `http/1.1` through ALPN and serves `https:` URLs) and the guard
 * relays the encrypted bytes. It does not terminate TLS itself because
 * Deno 2.9.6 cannot abort a server handshake: closing a `Deno.TlsConn` whose
 * client never finishes it leaves the socket open as long as the client
 * likes, one descriptor each. Owning the plain TCP connection, the guard closes
 * a handshake that stalls like any idle or slow connection (the internal
 * server then sees its end close). A connection over the cap is relayed too,
 * and the internal server answers its requests 503 without calling the handler
 * (in HTTP/2 if the client chose it); it is closed once the answer is out.
 * When there is no internal server or no descriptor for the relay, a TLS
 * client only sees its connection close.
 *
 * What counts as traffic for the idle and slowloris bookkeeping: every byte of
 * HTTP/1 and of TLS (the guard cannot see inside); of cleartext HTTP/2 (prior
 * knowledge, known by its preface), the frames of requests and responses
 * (HEADERS, CONTINUATION, DATA, RST_STREAM, PUSH_PROMISE), not the preface nor
 * the frames that keep the connection itself going (SETTINGS, PING,
 * WINDOW_UPDATE, PRIORITY, GOAWAY). Over TLS an HTTP/2 client that keeps
 * pinging is therefore not idle (as one repeating a request would not be);
 * headers that trickle in are still caught, as nothing else may be sent in the
 * middle of a header block. A request is in flight from the moment its handler
 * is called, whichever stream of a multiplexed connection it comes on.
 *
 * File bodies skip the relay. Relaying a blob download costs two more copies
 * of every byte and a loopback hop on top of the internal server's own, so on
 * a cleartext HTTP/1 connection a handler may hand the file to the guard
 * ({@linkcode handOffFile}): it answers with the headers only, marked with a
 * header carrying a random nonce, and the guard, when it meets that marker in
 * the bytes it relays, drops it, puts the real `content-length` in place of
 * Deno's `content-length: 0`, and writes the file to the client itself after
 * the headers, before relaying anything further from the internal server (an
 * HTTP/1 server answers requests in order). A body cannot forge the marker:
 * the nonce is made after every byte before it was written, and one the
 * connection is not waiting for is relayed as it is. Over TLS or HTTP/2 the
 * guard cannot see headers, and the handler streams the body as before.
 *
 * The relay costs some small-request rate (see the README's Performance section);
 * `--idle-timeout 0` serves directly instead.
 *
 * @module
 */

import {
  concat,
  decodeLatin1,
  encodeLatin1,
  indexOf,
  TAKEN_BODY_HEADER,
  TakenBody,
  takenHead,
  UpTracker,
} from "./guard_bodies.ts";

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
    options: { hostname: string; port: number; onListen(): void; cert?: string; key?: string },
    handler: (req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => Promise<Response>,
  ): Deno.HttpServer<Deno.NetAddr>;
}

/** Options of {@linkcode serveGuarded}. */
export interface GuardOptions {
  hostname: string;
  port: number;
  idleTimeoutMs: number;
  maxConnections: number;
  /** Serve HTTPS with this certificate chain and key (PEM), HTTP/2 offered through ALPN. */
  tls?: { cert: string; key: string } | undefined;
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

/** A file the guard writes to the client after the headers of the response naming it. */
export interface HandOff {
  file: Deno.FsFile;
  start: number;
  length: number;
}

interface Connection {
  front: Deno.TcpConn;
  /** Whether it is TLS (the guard cannot see inside). */
  tls: boolean;
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
  /** Whether the client speaks HTTP/2; null until its first bytes tell. */
  h2: boolean | null;
  /** How much of the HTTP/2 preface the client has sent so far. */
  prefaceMatched: number;
  upFrames: FrameScanner;
  downFrames: FrameScanner;
  /** Over the cap: its requests get 503 and it is closed once quiet. */
  refused: boolean;
  closed: boolean;
  /** Files handed to the guard whose response headers have not been relayed yet, by nonce. */
  handOffs: Map<string, HandOff>;
  /** Bytes from the server held back while looking for a hand-off marker that may straddle reads. */
  heldDown: Uint8Array | null;
  /** Follows the client's requests on cleartext HTTP/1, to read large bodies itself. */
  up: UpTracker;
  /** Bodies the guard holds whose request has not reached its handler yet, by nonce. */
  bodies: Map<string, TakenBody>;
  /** A body it held broke: closed once its answer is out (quiet for ENDING_QUIET_MS). */
  ending: boolean;
  /** Settled when the connection is closed. */
  whenClosed: PromiseWithResolvers<null>;
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
/**
 * A relay reads into a small buffer first and takes a large one (kept for
 * reuse) only once a read fills the small one: small requests on many
 * connections hold 16 KiB per direction, not 256 KiB, and large transfers
 * still move 256 KiB per read.
 */
const RELAY_SMALL_BYTES = 16 * 1024;
const RELAY_BUFFER_BYTES = 256 * 1024;
/** Size of the reads of a handed-off file (see `sendFile`). */
const FILE_BUFFER_BYTES = 1024 * 1024;
/** File buffers kept for reuse. */
const SPARE_FILE_BUFFERS = 16;
const spareFileBuffers: Uint8Array[] = [];
/** The header that marks a response whose body the guard writes (its value is the nonce). */
const HAND_OFF_HEADER = "berth-guard-body";
const HAND_OFF_MARKER = new TextEncoder().encode(`\r\n${HAND_OFF_HEADER}: `);
const HEADER_END = new TextEncoder().encode("\r\n\r\n");
/** Header bytes held back while looking for their end; past it the connection is closed. */
const MAX_HELD_HEADER_BYTES = 64 * 1024;
/** The connection a request came on, for {@linkcode handOffFile}. */
const requestConnections = new WeakMap<Request, Connection>();
/** The nonce of a request's hand-off, until its handler has returned. */
const requestHandOffs = new WeakMap<Request, string>();
/** Relay buffers kept for reuse: a fresh 256 KiB per direction per connection costs. */
const SPARE_BUFFERS = 64;
const spareBuffers: Uint8Array[] = [];

/**
 * A connection whose taken body broke is closed once the server has been quiet
 * this long with no request in flight (its answer is out): Deno's server does
 * not close a connection for a `Connection: close` answer.
 */
const ENDING_QUIET_MS = 200;
/** A refused TLS connection (its handshake included) is cut off after this long. */
const TLS_REFUSAL_MS = 5000;
/** ...and closed once quiet this long (its answer is out). */
const TLS_REFUSAL_QUIET_MS = 200;
/**
 * Refusals relayed at once over TLS: each holds three descriptors (front, back,
 * the internal server's end) of the reserve.
 */
const MAX_TLS_REFUSING = 8;

const DENO_SYSTEM: GuardSystem = {
  listen: (options) => Deno.listen(options),
  connect: (options) => Deno.connect(options),
  serve: (options, handler) =>
    Deno.serve(options as Deno.ServeTcpOptions & Partial<Deno.TlsCertifiedKeyPem>, handler),
};

const REFUSAL_BODY =
  '{"errors":[{"code":"UNAVAILABLE","message":"Too many open connections; retry shortly"}]}';
const REFUSAL = new TextEncoder().encode(
  "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n" +
    `Connection: close\r\nContent-Length: ${REFUSAL_BODY.length}\r\n\r\n${REFUSAL_BODY}`,
);
const INVALID_HOST_BODY = '{"errors":[{"code":"UNSUPPORTED","message":"Invalid Host header"}]}';
const FORBIDDEN_BODY =
  '{"errors":[{"code":"DENIED","message":"Connect through the public address"}]}';

/** The client connection preface of HTTP/2 (RFC 9113 section 3.4). */
const H2_PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** HTTP/2 frame types that belong to a request or response; the rest keep the connection going. */
const STREAM_FRAMES = new Set([
  0x0, // DATA
  0x1, // HEADERS
  0x3, // RST_STREAM
  0x5, // PUSH_PROMISE
  0x9, // CONTINUATION
]);

/** Follows the frame boundaries of one direction of an HTTP/2 connection. */
class FrameScanner {
  #head = new Uint8Array(9);
  #filled = 0;
  #left = 0;
  #stream = false;

  /** Whether `bytes` carry part of a request or response frame (a frame header counts once whole). */
  scan(bytes: Uint8Array): boolean {
    let traffic = false;
    for (let i = 0; i < bytes.length;) {
      if (this.#left > 0) {
        const take = Math.min(this.#left, bytes.length - i);
        this.#left -= take;
        i += take;
        traffic ||= this.#stream;
        continue;
      }
      const take = Math.min(9 - this.#filled, bytes.length - i);
      this.#head.set(bytes.subarray(i, i + take), this.#filled);
      this.#filled += take;
      i += take;
      if (this.#filled < 9) break;
      const head = this.#head;
      this.#filled = 0;
      this.#left = (head[0]! << 16) | (head[1]! << 8) | head[2]!;
      this.#stream = STREAM_FRAMES.has(head[3]!);
      traffic ||= this.#stream;
    }
    return traffic;
  }
}

/** Whether bytes from the client count as traffic; learns from the first ones whether it speaks HTTP/2. */
function clientTraffic(conn: Connection, bytes: Uint8Array): boolean {
  let rest = bytes;
  if (conn.h2 === null) {
    const n = Math.min(H2_PREFACE.length - conn.prefaceMatched, bytes.length);
    for (let i = 0; i < n; i++) {
      if (bytes[i] !== H2_PREFACE[conn.prefaceMatched + i]) {
        conn.h2 = false;
        return true;
      }
    }
    conn.prefaceMatched += n;
    if (conn.prefaceMatched < H2_PREFACE.length) return false;
    conn.h2 = true;
    rest = bytes.subarray(n);
  }
  return conn.h2 ? conn.upFrames.scan(rest) : true;
}

/** Whether bytes from the server count as traffic. */
function serverTraffic(conn: Connection, bytes: Uint8Array): boolean {
  return conn.h2 ? conn.downFrames.scan(bytes) : true;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let written = 0; written < bytes.length;) {
    written += await conn.write(bytes.subarray(written));
  }
}

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

function closeQuietly(c: { close(): void } | undefined): void {
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
  for (const { file } of conn.handOffs.values()) closeQuietly(file);
  conn.handOffs.clear();
  for (const body of conn.bodies.values()) body.abandon();
  conn.bodies.clear();
  conn.whenClosed.resolve(null);
}

/**
 * Whether the guard can write the body of `req`'s response itself: it came
 * through the guard on a cleartext HTTP/1 connection that is still open.
 */
export function canHandOff(req: Request): boolean {
  const conn = requestConnections.get(req);
  // One hand-off waiting at a time: a handed-off answer leaves the internal server at
  // once, so pipelined requests would each open their file while the first is sent.
  // Streamed instead, they wait for the client (backpressure), one file each.
  return conn !== undefined && !conn.closed && !conn.tls && conn.h2 === false &&
    conn.handOffs.size === 0;
}

/**
 * The response to `req` whose body is `length` bytes of `file` from `start`,
 * written to the client by the guard rather than the internal server (see
 * the module comment); `init` gives its status and headers. The guard owns
 * `file` from now on and closes it. Only when {@linkcode canHandOff} says so.
 */
export function handOffFile(
  req: Request,
  body: { file: Deno.FsFile; start: number; length: number },
  init: { status?: number; headers?: HeadersInit },
): Response {
  const conn = requestConnections.get(req);
  if (!conn || !canHandOff(req)) {
    closeQuietly(body.file);
    throw new Error("This request's connection cannot take a file body");
  }
  const nonce = crypto.randomUUID();
  const previous = requestHandOffs.get(req);
  if (previous !== undefined) dropHandOff(conn, previous);
  conn.handOffs.set(nonce, body);
  requestHandOffs.set(req, nonce);
  const headers = new Headers(init.headers);
  headers.delete("content-length");
  headers.set(HAND_OFF_HEADER, nonce);
  const response = new Response(null, { status: init.status ?? 200, headers });
  handedOff.set(response, body.length);
  return response;
}

/** The body length of responses whose file the guard writes (they carry no Content-Length). */
const handedOff = new WeakMap<Response, number>();

/** How many body bytes the guard writes for `response`, if it was handed off (for metrics). */
export function handedOffLength(response: Response): number | undefined {
  return handedOff.get(response);
}

/** Writes `length` bytes of `file` from `start` to the client, then closes the file. */
async function sendFile(conn: Connection, to: Deno.Conn, handOff: HandOff): Promise<void> {
  const { file, start, length } = handOff;
  const pooled = length >= FILE_BUFFER_BYTES;
  const buffer = (pooled ? spareFileBuffers.pop() : undefined) ??
    new Uint8Array(Math.min(length, FILE_BUFFER_BYTES));
  try {
    if (start > 0) await file.seek(start, Deno.SeekMode.Start);
    // One read, then one write, with one buffer: measured cheaper per byte than reading the
    // next chunk while writing this one, and than smaller (or much larger) buffers.
    for (let left = length; left > 0;) {
      const n = await file.read(left < buffer.length ? buffer.subarray(0, left) : buffer);
      if (n === null) throw new Error("File ended early");
      // Every write counts as traffic: a slow reader is not idle.
      for (let written = 0; written < n;) {
        written += await to.write(buffer.subarray(written, n));
        conn.lastActive = conn.lastServer = Date.now();
      }
      left -= n;
    }
  } finally {
    closeQuietly(file);
    if (pooled && spareFileBuffers.length < SPARE_FILE_BUFFERS) spareFileBuffers.push(buffer);
  }
}

/** Where the server-to-client side of a connection stands with hand-offs. */
export interface DownState {
  /** Files handed to the guard whose response headers have not been relayed yet, by nonce. */
  handOffs: Map<string, HandOff>;
  /** Bytes from the server held back: they may begin a hand-off marker. */
  heldDown: Uint8Array | null;
}

/** How many of the last bytes of `data` could begin the marker (a proper prefix of it). */
function markerPrefixAtEnd(data: Uint8Array, from: number): number {
  for (let k = Math.min(HAND_OFF_MARKER.length - 1, data.length - from); k > 0; k--) {
    let j = 0;
    while (j < k && data[data.length - k + j] === HAND_OFF_MARKER[j]) j++;
    if (j === k) return k;
  }
  return 0;
}

/**
 * Relays `bytes` from the server through `write` while files are handed
 * off: each marked response's headers lose the marker and get the real
 * length, and `send` writes the file after them. Bytes that may begin a
 * marker are held back until the next call (a marked response is always on
 * its way then). Throws, and the connection is closed, when the headers are
 * not as Deno writes them.
 */
export async function relayDown(
  state: DownState,
  bytes: Uint8Array,
  write: (bytes: Uint8Array) => Promise<void>,
  send: (handOff: HandOff) => Promise<void>,
): Promise<void> {
  let data = state.heldDown ? concat(state.heldDown, bytes) : bytes;
  state.heldDown = null;
  let from = 0;
  while (state.handOffs.size > 0) {
    const at = indexOf(data, HAND_OFF_MARKER, from);
    if (at === -1) {
      const keep = data.length - markerPrefixAtEnd(data, from);
      await write(data.subarray(0, keep));
      if (keep < data.length) state.heldDown = data.slice(keep);
      return;
    }
    const end = indexOf(data, HEADER_END, at);
    if (end === -1) {
      if (data.length - at > MAX_HELD_HEADER_BYTES) throw new Error("Headers too long");
      await write(data.subarray(0, at));
      state.heldDown = data.slice(at);
      return;
    }
    // From the marker's CRLF to the blank line: the marker line, then the rest of the headers.
    const lines = decodeLatin1(data.subarray(at + 2, end)).split("\r\n");
    const nonce = lines[0]!.slice(HAND_OFF_HEADER.length + 2);
    const handOff = state.handOffs.get(nonce);
    if (!handOff) {
      // Not one this connection waits for (a body can carry anything): relayed as it is.
      from = at + HAND_OFF_MARKER.length;
      continue;
    }
    state.handOffs.delete(nonce);
    const rest = lines.slice(1);
    const lengthLine = rest.findIndex((line) => /^content-length:/i.test(line));
    if (lengthLine === -1 || rest[lengthLine]!.toLowerCase() !== "content-length: 0") {
      closeQuietly(handOff.file);
      throw new Error("Unexpected headers for a handed-off body");
    }
    rest[lengthLine] = `content-length: ${handOff.length}`;
    await write(data.subarray(0, at));
    await write(encodeLatin1(`\r\n${rest.join("\r\n")}\r\n\r\n`));
    await send(handOff);
    data = data.subarray(end + HEADER_END.length);
    from = 0;
  }
  await write(data);
}

/** Drops the hand-off `nonce` of `conn` (its response was not the marked one). */
function dropHandOff(conn: Connection, nonce: string): void {
  const handOff = conn.handOffs.get(nonce);
  if (!handOff) return;
  conn.handOffs.delete(nonce);
  closeQuietly(handOff.file);
}

/**
 * Relays client bytes while the guard follows the requests (see
 * `guard_bodies.ts`); false when the connection must not be read further.
 */
async function relayUp(conn: Connection, back: Deno.Conn, bytes: Uint8Array): Promise<boolean> {
  if (conn.tls || conn.h2 !== false) {
    // Not cleartext HTTP/1, or not known to be yet (these bytes may begin the HTTP/2 preface).
    const held = conn.up.stop();
    if (held) await writeAll(back, held);
    await writeAll(back, bytes);
    return true;
  }
  return await conn.up.relay(bytes, (bytes) => writeAll(back, bytes), async (head, rest) => {
    const nonce = crypto.randomUUID();
    const body = new TakenBody(head, rest, conn.front, () => {
      const now = Date.now();
      conn.lastActive = now;
      // Read once its handler has answered (drained): as the next request's headers would be.
      if (conn.inFlight === 0 && conn.waitingSince === 0) conn.waitingSince = now;
    });
    conn.bodies.set(nonce, body);
    await writeAll(back, takenHead(head, nonce));
    // Whatever becomes of the request, the relay ends with the connection.
    const after = await Promise.race([body.finished, conn.whenClosed.promise]);
    if (after === null) {
      // Broken (cut off, bad framing): nothing more can be read; closed once its answer is out.
      conn.ending = true;
      conn.lastServer = Date.now();
    }
    return after;
  });
}

/** `response` with `Connection: close`: the connection ends once it is out. */
function closingAfter(response: Response): Response {
  if (response.type === "error") return response; // Deno ends the connection for these
  try {
    response.headers.set("connection", "close");
    return response;
  } catch {
    // Immutable headers (Response.error() and the like).
    const headers = new Headers(response.headers);
    headers.set("connection", "close");
    const { status, statusText } = response;
    return new Response(response.body, { status, statusText, headers });
  }
}

async function relay(
  from: Deno.Conn,
  to: Deno.Conn,
  conn: Connection,
  direction: "up" | "down",
): Promise<void> {
  let buffer: Uint8Array = new Uint8Array(RELAY_SMALL_BYTES);
  try {
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) break;
      const full = n === buffer.length && buffer.length < RELAY_BUFFER_BYTES;
      const bytes = buffer.subarray(0, n);
      if (direction === "up" ? clientTraffic(conn, bytes) : serverTraffic(conn, bytes)) {
        const now = Date.now();
        conn.lastActive = now;
        if (direction === "down") conn.lastServer = now;
        else if (conn.inFlight === 0 && conn.waitingSince === 0) conn.waitingSince = now;
      }
      if (direction === "up" && conn.up.following) {
        if (!(await relayUp(conn, to, bytes))) return; // a taken body left unread: no more requests
      } else if (direction === "down" && (conn.handOffs.size > 0 || conn.heldDown)) {
        await relayDown(
          conn,
          bytes,
          (bytes) => writeAll(to, bytes),
          (handOff) => sendFile(conn, to, handOff),
        );
      } else await writeAll(to, bytes);
      // Written: the small buffer may give way to a large one (a big transfer is under way).
      if (full) buffer = spareBuffers.pop() ?? new Uint8Array(RELAY_BUFFER_BYTES);
    }
    if (conn.heldDown) await writeAll(to, conn.heldDown);
    await to.closeWrite().catch(() => {});
  } catch {
    close(conn);
  } finally {
    if (buffer.length === RELAY_BUFFER_BYTES && spareBuffers.length < SPARE_BUFFERS) {
      spareBuffers.push(buffer);
    }
  }
}

/** Serves `handler` behind the guard. */
export function serveGuarded(options: GuardOptions, handler: GuardedHandler): GuardedServer {
  const system: GuardSystem = { ...DENO_SYSTEM, ...options.system };
  const tls = options.tls;
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
  /** Connections over the cap being answered 503 by the internal server (TLS only). */
  const refused = new Set<Connection>();
  const relays = new Set<Promise<void>>();
  const retiring = new Set<Promise<void>>();
  let shuttingDown = false;
  let restartTimer: ReturnType<typeof setTimeout> | undefined;

  function startInner(): Inner {
    const byPort = new Map<number, Connection>();
    const server = system.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {}, ...tls },
      async (req, info) => {
        const { hostname, port } = info.remoteAddr;
        const conn = hostname === "127.0.0.1" ? byPort.get(port) : undefined;
        if (conn?.refused) {
          await req.body?.cancel().catch(() => {});
          return new Response(REFUSAL_BODY, {
            status: 503,
            headers: {
              "Content-Type": "application/json",
              "Retry-After": "1",
              Connection: "close",
            },
          });
        }
        if (!conn) {
          await req.body?.cancel().catch(() => {});
          return new Response(FORBIDDEN_BODY, {
            status: 403,
            headers: { "Content-Type": "application/json", Connection: "close" },
          });
        }
        conn.inFlight++;
        conn.waitingSince = 0;
        // A body the guard holds for this request: the handler reads it off the client's socket.
        const nonce = req.headers.get(TAKEN_BODY_HEADER);
        const taken = nonce === null ? undefined : conn.bodies.get(nonce);
        if (taken) conn.bodies.delete(nonce!);
        let request = req;
        let response: Response | undefined;
        let unread = false;
        try {
          let valid = true;
          try {
            if (taken) request = taken.request(req);
          } catch {
            valid = false; // a Host that makes no URL: the pipeline's own answer to it
          }
          requestConnections.set(request, conn);
          response = valid
            ? await handler(request, {
              remoteAddr: conn.front.remoteAddr,
              get completed() {
                return info.completed;
              },
            })
            : new Response(INVALID_HOST_BODY, {
              status: 400,
              headers: { "Content-Type": "application/json" },
            });
        } finally {
          // A hand-off whose marked response is not the answer never sees its headers.
          const nonce = requestHandOffs.get(request);
          if (nonce !== undefined && response?.headers.get(HAND_OFF_HEADER) !== nonce) {
            dropHandOff(conn, nonce);
          }
          unread = taken !== undefined && !taken.abandon();
          conn.inFlight--;
          conn.lastActive = Date.now();
          if (unread) {
            conn.ending = true;
            conn.lastServer = conn.lastActive; // the quiet period starts now
          }
        }
        return unread ? closingAfter(response) : response;
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

  const { hostname, port } = options;
  const listener = system.listen({ hostname, port });
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
      const ended = conn.ending && conn.lastServer < now - ENDING_QUIET_MS;
      if (idle || slowHeaders || orphan || ended) close(conn);
    }
    for (const conn of refused) {
      if (conn.inFlight === 0 && conn.lastActive < now - TLS_REFUSAL_QUIET_MS) close(conn);
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

  function newConnection(front: Deno.TcpConn, current: Inner, refused: boolean): Connection {
    const now = Date.now();
    return {
      front,
      tls: tls !== undefined,
      inner: current,
      inFlight: 0,
      lastActive: now,
      lastServer: now,
      waitingSince: 0,
      // The guard sees TLS records, not what they carry.
      h2: tls ? false : null,
      prefaceMatched: 0,
      upFrames: new FrameScanner(),
      downFrames: new FrameScanner(),
      refused,
      closed: false,
      handOffs: new Map(),
      heldDown: null,
      up: new UpTracker(),
      bodies: new Map(),
      ending: false,
      whenClosed: Promise.withResolvers(),
    };
  }

  /** Relays `conn` to its internal server until either side is done. */
  async function relayTo(conn: Connection, current: Inner, back: Deno.TcpConn): Promise<void> {
    conn.back = back;
    const port = back.localAddr.port;
    current.byPort.set(port, conn);
    conn.unmap = () => {
      if (current.byPort.get(port) === conn) current.byPort.delete(port);
    };
    const up = relay(conn.front, back, conn, "up");
    // Once the server side is done, so is the connection (its last bytes are relayed).
    await relay(back, conn.front, conn, "down");
    close(conn);
    await up;
  }

  /**
   * Over TLS the guard cannot write the 503 itself: the internal server does,
   * in whichever protocol the client chose; the connection is closed once its
   * answer is out, or after TLS_REFUSAL_MS whatever it does.
   */
  async function refuseOverTls(front: Deno.TcpConn, current: Inner): Promise<void> {
    refusing++;
    const conn = newConnection(front, current, true);
    refused.add(conn);
    const timer = setTimeout(() => close(conn), TLS_REFUSAL_MS);
    try {
      const back = await system.connect({ hostname: "127.0.0.1", port: current.addr.port });
      if (conn.closed) return closeQuietly(back);
      await relayTo(conn, current, back);
    } catch {
      /* no descriptor for it: the client only sees the connection close */
    } finally {
      clearTimeout(timer);
      close(conn);
      refused.delete(conn);
      refusing--;
      wake?.();
    }
  }

  async function handle(front: Deno.TcpConn): Promise<void> {
    const current = inner;
    if (open.size >= cap || current === null) {
      if (!tls) return await refuse(front);
      // Over TLS a refusal needs the internal server.
      return current ? await refuseOverTls(front, current) : closeQuietly(front);
    }
    const conn = newConnection(front, current, false);
    open.add(conn);
    try {
      let back: Deno.TcpConn;
      try {
        back = await system.connect({ hostname: "127.0.0.1", port: current.addr.port });
      } catch (error) {
        // EMFILE or ENFILE most likely: the client is told to retry.
        report("cannot open a connection to the internal server", { error });
        conn.closed = true;
        return await (tls ? closeQuietly(front) : refuse(front));
      }
      if (conn.closed) return closeQuietly(back); // shut down while connecting
      await relayTo(conn, current, back);
    } finally {
      close(conn);
      open.delete(conn);
    }
  }

  let stopped = false;
  const accepting = (async () => {
    let backoffMs = 0;
    while (!stopped) {
      if (refusing >= (tls ? MAX_TLS_REFUSING : MAX_REFUSING)) {
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
      for (const conn of [...open, ...refused]) close(conn);
      await Promise.all(relays);
      await Promise.all([innerDone, ...retiring]);
      clearInterval(sweeper);
      finish();
    },
  };
}
