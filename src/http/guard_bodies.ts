/**
 * Request bodies the connection guard reads itself. Relaying an upload costs
 * every byte two more copies and a loopback hop before the internal server's
 * own parsing, which bounded a single push at about a third of what the
 * machine can drain and hash. So on a cleartext HTTP/1 connection the guard
 * follows the request framing of what it relays ({@linkcode UpTracker}):
 * when a `PATCH`, `PUT` or `POST` carries a large or chunked body, it passes
 * the internal server the head alone, with `content-length: 0` and a header
 * carrying a random nonce, and holds the body back; the handler wrapper
 * gives the handler a request whose body ({@linkcode TakenBody}) is read
 * straight off the client's socket (chunked framing decoded on the way), and
 * once it is read, the guard reads the next request where the body ended.
 *
 * Safety: the guard must agree with the internal server on where every
 * request starts, or a body could be taken for a request. So it follows a
 * connection only while every head is plainly well formed: a request line
 * `METHOD target HTTP/1.1`, CRLF line ends only, header names that are tokens,
 * no folded lines, at most one `Content-Length` (digits only) or one
 * `Transfer-Encoding: chunked`, never both, no `Upgrade`. At the first head
 * that is not, or a relayed chunked body (whose end it would have to parse),
 * it stops following the connection and relays every byte as it is, as it
 * did before, leaving the internal server to judge. A head carrying
 * `Expect` is relayed with its body (the internal server answers
 * `100 Continue`). A client cannot forge the nonce: it is made per body and
 * never sent to the client, and the guard drops the header from heads it
 * rewrites.
 *
 * A body the handler leaves unread (a request refused before its upload) is
 * read to its end and dropped, as the internal server does with a body it
 * does not read, so the connection serves on; once the answer is out, those
 * reads count as a next request's headers would, so a client that trickles
 * them is closed after the idle timeout (slowloris). A body that breaks (the
 * client goes away, bad chunked framing) ends the connection once its
 * answer is out.
 *
 * @module
 */

/** The header naming a body the guard holds (its value is the nonce). */
export const TAKEN_BODY_HEADER = "berth-guard-upload";
/** Bodies at least this long (or chunked) are read by the guard; smaller ones are relayed. */
export const TAKE_MIN_BYTES = 64 * 1024;
/** A head longer than this is left to the internal server (which refuses it). */
const MAX_HEAD_BYTES = 64 * 1024;
/** Heads with more header lines are relayed (Deno's server takes at most 128). */
const MAX_TAKEN_HEADER_LINES = 100;
/** Chunk-size lines and trailers, bounded. */
const MAX_CHUNK_LINE_BYTES = 4096;
const MAX_TRAILER_BYTES = 16 * 1024;
/** At most 2^48 - 1 per chunk: twelve hex digits. */
const MAX_CHUNK_SIZE_DIGITS = 12;
/** Bytes a default (non-BYOB) reader of a taken body gets per read at most. */
const AUTO_CHUNK_BYTES = 64 * 1024;

const HEADER_END = new TextEncoder().encode("\r\n\r\n");
const windows1252 = new TextDecoder("latin1");
const BEYOND_LATIN1 = /[\u0100-\uffff]/;

/**
 * Bytes as ISO-8859-1 text, one character per byte (`TextDecoder("latin1")`
 * is windows-1252, which maps 0x80-0x9F elsewhere and would not round-trip).
 */
export function decodeLatin1(bytes: Uint8Array): string {
  // Fast for the usual ASCII head: windows-1252 differs from ISO-8859-1 only where it
  // gives characters past U+00FF.
  const fast = windows1252.decode(bytes);
  if (!BEYOND_LATIN1.test(fast)) return fast;
  let text = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    text += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return text;
}

/** The inverse of {@linkcode decodeLatin1}. */
export const encodeLatin1 = (text: string): Uint8Array =>
  Uint8Array.from(text, (c) => c.charCodeAt(0));
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP\/1\.1$/;
const HEADER_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\r\n]*?)[ \t]*$/;
/** A CR not before LF, or an LF not after CR, or a NUL. */
const BARE_CR_LF = /\r(?!\n)|(?<!\r)\n|\0/;

/** A token character: how a request line starts. */
const TOKEN_START = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
/** Bytes that are in no request head: controls other than tab, CR and LF. */
// deno-lint-ignore no-control-regex -- finding control characters is the point
const NOT_IN_HEAD = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/;

/** Whether `held` (ending with the newly read `latest`) may still become a request head. */
function mayBeginHead(held: Uint8Array, latest: Uint8Array): boolean {
  return TOKEN_START.test(String.fromCharCode(held[0]!)) &&
    !NOT_IN_HEAD.test(decodeLatin1(latest));
}

/** A request head the guard can follow. */
export interface RequestHead {
  method: string;
  /** The body's framing: its length, or chunked. */
  length: number | "chunked";
  /** Whether the guard reads its body (see the module comment). */
  take: boolean;
  /** Its header lines, as sent, without the request line. */
  lines: string[];
  requestLine: string;
}

/**
 * `bytes` (a head through its blank line) as the guard can follow it, or null
 * when anything about it is unusual (see the module comment).
 */
export function parseRequestHead(bytes: Uint8Array): RequestHead | null {
  const text = decodeLatin1(bytes);
  if (!text.endsWith("\r\n\r\n")) return null;
  const body = text.slice(0, -4);
  if (BARE_CR_LF.test(body)) return null;
  const [requestLine, ...lines] = body.split("\r\n");
  const request = REQUEST_LINE.exec(requestLine!);
  if (!request) return null;
  const method = request[1]!;
  if (method === "CONNECT") return null;
  let contentLength: number | undefined;
  let chunked = false;
  let expect = false;
  for (const line of lines) {
    const header = HEADER_LINE.exec(line);
    if (!header) return null;
    const name = header[1]!.toLowerCase();
    const value = header[2]!;
    if (name === "content-length") {
      if (contentLength !== undefined || !/^\d{1,15}$/.test(value)) return null;
      contentLength = Number(value);
    } else if (name === "transfer-encoding") {
      if (chunked || value.toLowerCase() !== "chunked") return null;
      chunked = true;
    } else if (name === "upgrade") return null;
    else if (name === "expect") expect = true;
  }
  if (chunked && contentLength !== undefined) return null;
  const length = chunked ? "chunked" : contentLength ?? 0;
  // The rewrite adds a header line: a head near the internal server's limit is relayed.
  const take = !expect && (method === "PATCH" || method === "PUT" || method === "POST") &&
    (length === "chunked" || length >= TAKE_MIN_BYTES) && lines.length <= MAX_TAKEN_HEADER_LINES;
  // A chunked body the guard does not read would have to be parsed to find its end.
  if (chunked && !take) return null;
  return { method, length, take, lines, requestLine: requestLine! };
}

/** The head the internal server gets for a body the guard holds: no body, and the nonce. */
export function takenHead(head: RequestHead, nonce: string): Uint8Array {
  const kept = head.lines.filter((line) => {
    const name = line.slice(0, line.indexOf(":")).toLowerCase();
    return name !== "content-length" && name !== "transfer-encoding" &&
      name !== TAKEN_BODY_HEADER;
  });
  return encodeLatin1(
    [head.requestLine, ...kept, "content-length: 0", `${TAKEN_BODY_HEADER}: ${nonce}`, "", ""]
      .join("\r\n"),
  );
}

/** Where `needle` first occurs in `bytes` from `from`, or -1. */
export function indexOf(bytes: Uint8Array, needle: Uint8Array, from = 0): number {
  const first = needle[0]!;
  const last = bytes.length - needle.length;
  for (let i = bytes.indexOf(first, from); i !== -1 && i <= last; i = bytes.indexOf(first, i + 1)) {
    let j = 1;
    while (j < needle.length && bytes[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
  }
  return -1;
}

/** `a` then `b`, in a new array. */
export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  return joined;
}

/**
 * Takes the body of `head` (whose rewritten head it writes first); resolves
 * with the bytes read past the body's end, or null when the body was not read
 * through (the connection ends).
 */
export type TakeBody = (head: RequestHead, rest: Uint8Array) => Promise<Uint8Array | null>;

/**
 * Follows the requests a client sends on one connection, relaying them, and
 * has `take` read the bodies the guard takes. Stops following (relays as it
 * is) at the first thing it cannot follow.
 */
export class UpTracker {
  #following = true;
  #held: Uint8Array | null = null;
  /** Bytes of a relayed body still to pass. */
  #bodyLeft = 0;

  /** Whether it still follows the requests. */
  get following(): boolean {
    return this.#following;
  }

  /** Stops following: everything from here on is relayed as it is. */
  stop(): Uint8Array | null {
    this.#following = false;
    const held = this.#held;
    this.#held = null;
    return held;
  }

  /**
   * Relays `bytes` through `write`, taking the bodies it should. Resolves
   * false when the connection must not be read further (a taken body was
   * left unread).
   */
  async relay(
    bytes: Uint8Array,
    write: (bytes: Uint8Array) => Promise<void>,
    take: TakeBody,
  ): Promise<boolean> {
    let data = bytes;
    while (data.length > 0) {
      if (!this.#following) {
        await write(data);
        return true;
      }
      if (this.#bodyLeft > 0) {
        const n = Math.min(this.#bodyLeft, data.length);
        await write(data.subarray(0, n));
        this.#bodyLeft -= n;
        data = data.subarray(n);
        continue;
      }
      const heldLength = this.#held?.length ?? 0;
      const joined = this.#held ? concat(this.#held, data) : data;
      this.#held = null;
      const end = indexOf(joined, HEADER_END, Math.max(heldLength - 3, 0));
      if (end === -1) {
        // Not the start of a head (a TLS hello on the cleartext port, say): the internal
        // server answers it at once, so it must not wait here for a blank line.
        if (joined.length > MAX_HEAD_BYTES || !mayBeginHead(joined, data)) {
          this.#following = false;
          await write(joined);
        } else this.#held = joined.slice();
        return true;
      }
      const headEnd = end + HEADER_END.length;
      const head = parseRequestHead(joined.subarray(0, headEnd));
      if (!head) {
        this.#following = false;
        await write(joined);
        return true;
      }
      if (head.take) {
        const rest = await take(head, joined.slice(headEnd));
        if (rest === null) return false;
        data = rest;
        continue;
      }
      await write(joined.subarray(0, headEnd));
      this.#bodyLeft = head.length as number;
      data = joined.subarray(headEnd);
    }
    return true;
  }
}

/** Raised for a chunked body whose framing is broken. */
export class ChunkedFramingError extends Error {
  constructor(what: string) {
    super(`Malformed chunked body: ${what}`);
    this.name = "ChunkedFramingError";
  }
}

const enum Chunked {
  Size,
  Extension,
  SizeLf,
  Data,
  DataCr,
  DataLf,
  TrailerStart,
  TrailerLine,
  TrailerLf,
  EndLf,
  Done,
}

function hexValue(byte: number): number {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  if (byte >= 0x61 && byte <= 0x66) return byte - 0x57;
  if (byte >= 0x41 && byte <= 0x46) return byte - 0x37;
  return -1;
}

/** Decodes `Transfer-Encoding: chunked` in place (RFC 9112 section 7.1). */
export class ChunkedDecoder {
  #state = Chunked.Size;
  #size = 0;
  #digits = 0;
  #lineBytes = 0;
  #trailerBytes = 0;

  /** Whether the last chunk and the trailers have been read. */
  get done(): boolean {
    return this.#state === Chunked.Done;
  }

  /**
   * Decodes `buffer[0, n)`: its data bytes move to `buffer[0, out)`; `used`
   * is how many of the `n` were consumed (fewer only once done: the rest
   * follows the body).
   */
  decode(buffer: Uint8Array, n: number): { out: number; used: number } {
    let out = 0;
    let i = 0;
    while (i < n && this.#state !== Chunked.Done) {
      if (this.#state === Chunked.Data) {
        const take = Math.min(this.#size, n - i);
        if (out !== i) buffer.copyWithin(out, i, i + take);
        out += take;
        i += take;
        this.#size -= take;
        if (this.#size === 0) this.#state = Chunked.DataCr;
        continue;
      }
      const byte = buffer[i++]!;
      switch (this.#state) {
        case Chunked.Size: {
          const digit = hexValue(byte);
          if (digit !== -1) {
            if (++this.#digits > MAX_CHUNK_SIZE_DIGITS) {
              throw new ChunkedFramingError("chunk too large");
            }
            this.#size = this.#size * 16 + digit;
          } else if (this.#digits === 0) throw new ChunkedFramingError("no chunk size");
          else if (byte === 0x0d) this.#state = Chunked.SizeLf;
          else if (byte === 0x3b || byte === 0x20 || byte === 0x09) this.#state = Chunked.Extension;
          else throw new ChunkedFramingError("bad chunk size");
          this.#line();
          break;
        }
        case Chunked.Extension:
          if (byte === 0x0d) this.#state = Chunked.SizeLf;
          else if (byte === 0x0a || byte === 0) throw new ChunkedFramingError("bad extension");
          this.#line();
          break;
        case Chunked.SizeLf:
          if (byte !== 0x0a) throw new ChunkedFramingError("CR without LF");
          this.#lineBytes = 0;
          this.#digits = 0;
          this.#state = this.#size === 0 ? Chunked.TrailerStart : Chunked.Data;
          break;
        case Chunked.DataCr:
          if (byte !== 0x0d) throw new ChunkedFramingError("chunk longer than its size");
          this.#state = Chunked.DataLf;
          break;
        case Chunked.DataLf:
          if (byte !== 0x0a) throw new ChunkedFramingError("CR without LF");
          this.#state = Chunked.Size;
          break;
        case Chunked.TrailerStart:
          this.#state = byte === 0x0d ? Chunked.EndLf : Chunked.TrailerLine;
          this.#trailer(byte);
          break;
        case Chunked.TrailerLine:
          if (byte === 0x0d) this.#state = Chunked.TrailerLf;
          this.#trailer(byte);
          break;
        case Chunked.TrailerLf:
          if (byte !== 0x0a) throw new ChunkedFramingError("CR without LF");
          this.#state = Chunked.TrailerStart;
          break;
        case Chunked.EndLf:
          if (byte !== 0x0a) throw new ChunkedFramingError("CR without LF");
          this.#state = Chunked.Done;
          break;
      }
    }
    return { out, used: i };
  }

  #line(): void {
    if (++this.#lineBytes > MAX_CHUNK_LINE_BYTES) throw new ChunkedFramingError("line too long");
  }

  #trailer(byte: number): void {
    if (byte === 0x0a || byte === 0) throw new ChunkedFramingError("bad trailer");
    if (++this.#trailerBytes > MAX_TRAILER_BYTES) {
      throw new ChunkedFramingError("trailers too long");
    }
  }
}

/** Raised when the client's connection ends in the middle of a taken body. */
export class BodyCutError extends Error {
  constructor() {
    super("The connection closed before the request body ended");
    this.name = "BodyCutError";
  }
}

/** Where a taken body's bytes come from: the client's socket. */
export interface ByteSource {
  read(into: Uint8Array): Promise<number | null>;
}

/** Reads of a body left unread go into this, to find where it ends. */
const DRAIN_BUFFER_BYTES = 64 * 1024;

/**
 * A request body the guard holds, read straight from the client's socket:
 * `rest` (what came with the head) first, then `source`. A body its handler
 * leaves unread, or cancels, is drained (read to its end and dropped), so the
 * connection serves on, as the internal server does with bodies it does not
 * read. `finished` resolves with the bytes read past its end once it is read
 * through, or null when it broke (the client went away, bad framing).
 */
export class TakenBody {
  readonly finished: Promise<Uint8Array | null>;
  readonly stream: ReadableStream<Uint8Array>;
  #settle!: (rest: Uint8Array | null) => void;
  #settled = false;
  #complete = false;
  #draining = false;
  #rest: Uint8Array;
  #left: number;
  #chunked: ChunkedDecoder | null;
  /** The read in progress: one at a time on the socket. */
  #reading: Promise<unknown> = Promise.resolve();

  constructor(
    readonly head: RequestHead,
    rest: Uint8Array,
    private readonly source: ByteSource,
    private readonly onRead: () => void = () => {},
  ) {
    this.finished = new Promise((resolve) => (this.#settle = resolve));
    this.#rest = rest;
    this.#chunked = head.length === "chunked" ? new ChunkedDecoder() : null;
    this.#left = head.length === "chunked" ? Infinity : head.length;
    this.stream = new ReadableStream({
      type: "bytes",
      autoAllocateChunkSize: AUTO_CHUNK_BYTES,
      pull: async (controller: ReadableByteStreamController) => {
        const request = controller.byobRequest!;
        try {
          const { n, ended } = await this.#next(request.view as Uint8Array);
          if (n > 0) request.respond(n);
          if (ended) {
            controller.close();
            if (n === 0) request.respond(0);
          }
        } catch (error) {
          controller.error(error);
        }
      },
      cancel: () => void this.#drain(),
    });
  }

  /**
   * The handler is done with it: what is left unread is drained. False when
   * it broke: the connection must end after the response.
   */
  abandon(): boolean {
    if (!this.#settled) void this.#drain();
    return !this.#settled || this.#complete;
  }

  /** The next body bytes into `view` (one read at a time); `ended` once the body is through. */
  #next(view: Uint8Array): Promise<{ n: number; ended: boolean }> {
    const next = this.#reading.then(() => this.#fill(view));
    this.#reading = next.catch(() => {});
    return next.then(
      (result) => {
        if (result.ended) this.#finish(this.#rest.slice());
        return result;
      },
      (error: unknown) => {
        this.#finish(null);
        throw error;
      },
    );
  }

  async #fill(view: Uint8Array): Promise<{ n: number; ended: boolean }> {
    if (this.#settled) throw new BodyCutError();
    const decoder = this.#chunked;
    if (!decoder) {
      const n = this.#left === 0
        ? 0
        : await this.#raw(view.subarray(0, Math.min(view.length, this.#left)));
      this.#left -= n;
      return { n, ended: this.#left === 0 };
    }
    let n = 0;
    while (n === 0 && !decoder.done) {
      const raw = await this.#raw(view);
      const { out, used } = decoder.decode(view, raw);
      // What follows the last chunk belongs to the next request.
      if (decoder.done) this.#rest = concat(view.slice(used, raw), this.#rest);
      n = out;
    }
    return { n, ended: decoder.done };
  }

  async #raw(view: Uint8Array): Promise<number> {
    if (this.#rest.length > 0) {
      const n = Math.min(view.length, this.#rest.length);
      view.set(this.#rest.subarray(0, n));
      this.#rest = this.#rest.subarray(n);
      return n;
    }
    const n = await this.source.read(view);
    if (n === null) throw new BodyCutError();
    this.onRead();
    return n;
  }

  async #drain(): Promise<void> {
    if (this.#draining || this.#settled) return;
    this.#draining = true;
    const scratch = new Uint8Array(DRAIN_BUFFER_BYTES);
    try {
      while (!(await this.#next(scratch)).ended) { /* dropped */ }
    } catch { /* settled as broken */ }
  }

  #finish(rest: Uint8Array | null): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#complete = rest !== null;
    this.#settle(rest);
  }

  /** `req` (the internal server's view of the head) with this body and its own framing headers. */
  request(req: Request): Request {
    const headers = new Headers(req.headers);
    headers.delete(TAKEN_BODY_HEADER);
    headers.delete("content-length");
    if (this.head.length === "chunked") headers.set("transfer-encoding", "chunked");
    else headers.set("content-length", String(this.head.length));
    return new Request(req.url, {
      method: req.method,
      headers,
      body: this.stream,
    });
  }
}
