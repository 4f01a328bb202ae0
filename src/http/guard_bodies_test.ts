import assert from "node:assert/strict";
import {
  BodyCutError,
  ChunkedDecoder,
  ChunkedFramingError,
  parseRequestHead,
  type RequestHead,
  TAKE_MIN_BYTES,
  TakenBody,
  takenHead,
  UpTracker,
} from "./guard_bodies.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (text: string) => encoder.encode(text);

function head(text: string): RequestHead | null {
  return parseRequestHead(bytes(text));
}

Deno.test("parseRequestHead() follows well-formed heads and takes large or chunked upload bodies", () => {
  const get = head("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.deepEqual([get?.method, get?.length, get?.take], ["GET", 0, false]);
  const small = head("PATCH /u HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
  assert.deepEqual([small?.length, small?.take], [100, false]);
  const large = head(`PATCH /u HTTP/1.1\r\ncontent-length:  ${TAKE_MIN_BYTES} \r\n\r\n`);
  assert.deepEqual([large?.length, large?.take], [TAKE_MIN_BYTES, true]);
  const chunked = head("PUT /u?digest=x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n");
  assert.deepEqual([chunked?.length, chunked?.take], ["chunked", true]);
  for (const method of ["POST", "PUT", "PATCH"]) {
    assert.equal(head(`${method} /u HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n`)?.take, true);
  }
  // A client waiting for 100 Continue gets it from the internal server: relayed.
  const expect = head(
    "PATCH /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 9999999\r\n\r\n",
  );
  assert.deepEqual([expect?.length, expect?.take], [9999999, false]);
  // A head near the internal server's header limit is relayed (the rewrite adds a line).
  const many = "X: y\r\n".repeat(100);
  assert.equal(head(`PUT /u HTTP/1.1\r\n${many}Content-Length: 99999\r\n\r\n`)?.take, false);
  assert.equal(head(`PUT /u HTTP/1.1\r\n${many}Transfer-Encoding: chunked\r\n\r\n`), null);
  // Large bodies of other methods are relayed (and followed).
  assert.equal(head("GET /u HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n")?.take, false);
});

Deno.test("parseRequestHead() gives up on anything unusual, leaving it to the internal server", () => {
  const odd = [
    "GET / HTTP/1.1\nHost: x\r\n\r\n", // bare LF
    "GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n", // bare CR
    "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", // obs-fold
    "GET / HTTP/1.0\r\n\r\n",
    "GET  / HTTP/1.1\r\n\r\n",
    "\r\nGET / HTTP/1.1\r\n\r\n",
    "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
    "GET / HTTP/1.1\r\nHost x\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: \0\r\n\r\n",
    "PATCH / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    "PATCH / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
    "PATCH / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
    "PATCH / HTTP/1.1\r\nContent-Length: 1234567890123456\r\n\r\n",
    "PATCH / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "PATCH / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "PATCH / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", // chunked and not taken
    "PATCH / HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
    "GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
    "CONNECT x:1 HTTP/1.1\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: x\r\n", // no blank line
  ];
  for (const text of odd) assert.equal(head(text), null, JSON.stringify(text));
});

Deno.test("takenHead() passes the head without its framing or a forged nonce, with length 0 and the nonce", () => {
  const parsed = head(
    "PATCH /v2/a/blobs/uploads/u HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n" +
      "Berth-Guard-Upload: forged\r\nContent-Range: 0-69999\r\n\r\n",
  )!;
  assert.equal(
    decoder.decode(takenHead(parsed, "n1")),
    "PATCH /v2/a/blobs/uploads/u HTTP/1.1\r\nHost: x\r\nContent-Range: 0-69999\r\n" +
      "content-length: 0\r\nberth-guard-upload: n1\r\n\r\n",
  );
});

/** Chunked-encodes `data` in chunks of `sizes` (cycled), with an extension and a trailer. */
function chunked(data: Uint8Array, sizes: number[]): Uint8Array {
  const parts: string[] = [];
  let at = 0;
  for (let i = 0; at < data.length; i++) {
    const size = Math.min(sizes[i % sizes.length]!, data.length - at);
    const ext = i % 2 ? ";name=value" : "";
    parts.push(
      `${size.toString(16).toUpperCase()}${ext}\r\n`,
      decoder.decode(data.subarray(at, at + size)),
      "\r\n",
    );
    at += size;
  }
  parts.push("0\r\nTrailer-Field: yes\r\n\r\n");
  return bytes(parts.join(""));
}

function decodeSplit(encoded: Uint8Array, split: number): { data: string; after: string } {
  const dec = new ChunkedDecoder();
  let data = "";
  let after = "";
  for (const piece of [encoded.slice(0, split), encoded.slice(split)]) {
    if (dec.done) {
      after += decoder.decode(piece);
      continue;
    }
    const { out, used } = dec.decode(piece, piece.length);
    data += decoder.decode(piece.subarray(0, out));
    after += decoder.decode(piece.subarray(used));
  }
  assert.ok(dec.done);
  return { data, after };
}

Deno.test("ChunkedDecoder decodes chunks, extensions and trailers however the bytes are split", () => {
  const data = bytes("abcdefghijklmnopqrstuvwxyz0123456789".repeat(3));
  const encoded = chunked(data, [1, 7, 16, 30]);
  const withNext = new Uint8Array([...encoded, ...bytes("GET / HTTP/1.1\r\n\r\n")]);
  for (let split = 0; split <= withNext.length; split++) {
    const { data: got, after } = decodeSplit(withNext, split);
    assert.equal(got, decoder.decode(data), `split at ${split}`);
    assert.equal(after, "GET / HTTP/1.1\r\n\r\n", `split at ${split}`);
  }
});

Deno.test("ChunkedDecoder refuses broken framing", () => {
  const broken = [
    "\r\n", // no size
    "x\r\n",
    "5\nabcde\r\n0\r\n\r\n", // bare LF
    "5\r\nabcdef\r\n0\r\n\r\n", // longer than its size
    "5\r\nabcde\n0\r\n\r\n",
    "1234567890abc\r\n", // thirteen digits
    `1;${"e".repeat(5000)}\r\n`,
    "0\r\nTrailer\n\r\n",
    `0\r\n${"T: x\r\n".repeat(4000)}\r\n`,
  ];
  for (const text of broken) {
    const encoded = bytes(text);
    assert.throws(
      () => new ChunkedDecoder().decode(encoded, encoded.length),
      ChunkedFramingError,
      JSON.stringify(text.slice(0, 20)),
    );
  }
});

/** A byte source handing out `pieces` one read each, then the end. */
function source(pieces: Uint8Array[]) {
  let reads = 0;
  return {
    get reads() {
      return reads;
    },
    read(into: Uint8Array): Promise<number | null> {
      reads++;
      const piece = pieces.shift();
      if (!piece) return Promise.resolve(null);
      const n = Math.min(piece.length, into.length);
      into.set(piece.subarray(0, n));
      if (n < piece.length) pieces.unshift(piece.subarray(n));
      return Promise.resolve(n);
    },
  };
}

async function readAll(stream: ReadableStream<Uint8Array>, size = 1000): Promise<string> {
  const reader = stream.getReader({ mode: "byob" });
  let text = "";
  for (;;) {
    const { done, value } = await reader.read(new Uint8Array(size));
    if (value) text += decoder.decode(value);
    if (done) return text;
  }
}

Deno.test("TakenBody reads what came with the head, then the socket, to the body's end and no further", async () => {
  const parsed = head(`PATCH /u HTTP/1.1\r\nContent-Length: ${TAKE_MIN_BYTES}\r\n\r\n`)!;
  const body = "b".repeat(TAKE_MIN_BYTES);
  const src = source([bytes(body.slice(100, 5000)), bytes(body.slice(5000) + "NEXT")]);
  const taken = new TakenBody(parsed, bytes(body.slice(0, 100)), src);
  const req = taken.request(
    new Request("http://x/u", {
      method: "PATCH",
      headers: { "berth-guard-upload": "n", "content-length": "0" },
    }),
  );
  assert.equal(req.headers.get("content-length"), String(TAKE_MIN_BYTES));
  assert.equal(req.headers.has("berth-guard-upload"), false);
  assert.equal(await readAll(req.body!), body);
  // The socket's last read held the next request: the body stops at its length.
  assert.equal(decoder.decode((await taken.finished)!), "");
  assert.equal(taken.abandon(), true);
});

Deno.test("TakenBody decodes a chunked body and hands back what follows it", async () => {
  const parsed = head("PATCH /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")!;
  const data = "chunked body bytes ".repeat(50);
  const encoded = chunked(bytes(data), [3, 100, 17]);
  const src = source([
    encoded.slice(10, 200),
    new Uint8Array([...encoded.slice(200), ...bytes("GET /next")]),
  ]);
  const taken = new TakenBody(parsed, encoded.slice(0, 10), src);
  const req = taken.request(new Request("http://x/u", { method: "PATCH" }));
  assert.equal(req.headers.get("transfer-encoding"), "chunked");
  assert.equal(await readAll(req.body!, 64), data);
  assert.equal(decoder.decode((await taken.finished)!), "GET /next");
});

Deno.test("TakenBody drains a body its handler cancels or leaves, so the connection serves on", async () => {
  const parsed = head(`PUT /u HTTP/1.1\r\nContent-Length: ${TAKE_MIN_BYTES * 3}\r\n\r\n`)!;
  const cancelled = new TakenBody(
    parsed,
    new Uint8Array(0),
    source([new Uint8Array(TAKE_MIN_BYTES * 3 + 4)]),
  );
  await cancelled.stream.cancel();
  assert.equal((await cancelled.finished)?.length, 0);
  const left = new TakenBody(
    parsed,
    new Uint8Array(10),
    source([new Uint8Array(TAKE_MIN_BYTES * 3)]),
  );
  const reader = left.stream.getReader({ mode: "byob" });
  await reader.read(new Uint8Array(100));
  reader.releaseLock();
  assert.equal(left.abandon(), true);
  // The 10 bytes that came with the head were the body's first: the socket's last 10 are not read.
  assert.equal((await left.finished)?.length, 0);
});

Deno.test("TakenBody errors when the client goes away or breaks the framing, and says the connection must end", async () => {
  const parsed = head(`PATCH /u HTTP/1.1\r\nContent-Length: ${TAKE_MIN_BYTES}\r\n\r\n`)!;
  const cut = new TakenBody(parsed, new Uint8Array(0), source([new Uint8Array(100)]));
  await assert.rejects(readAll(cut.stream), BodyCutError);
  assert.equal(await cut.finished, null);
  assert.equal(cut.abandon(), false);
  const bad = new TakenBody(
    head("PATCH /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")!,
    new Uint8Array(0),
    source([bytes("zz\r\n")]),
  );
  await assert.rejects(readAll(bad.stream), ChunkedFramingError);
  assert.equal(bad.abandon(), false);
});

/** Feeds `input` to a tracker in pieces of `size`; what was relayed and which heads were taken. */
async function track(
  input: Uint8Array,
  size: number,
  bodyOf: (head: RequestHead, rest: Uint8Array) => Uint8Array | null,
) {
  const tracker = new UpTracker();
  let relayed = "";
  const taken: string[] = [];
  let pending: Uint8Array | null = null;
  for (let at = 0; at < input.length; at += size) {
    let piece = input.subarray(at, at + size);
    if (pending) piece = new Uint8Array([...pending, ...piece]), pending = null;
    const go = await tracker.relay(
      piece,
      (b) => (relayed += decoder.decode(b), Promise.resolve()),
      (h, rest) => {
        taken.push(h.requestLine);
        const after = bodyOf(h, rest);
        if (after === null) return Promise.resolve(null);
        // The body's remaining bytes are read off the socket: the next pieces.
        return Promise.resolve(after);
      },
    );
    if (!go) return { relayed, taken, stopped: true, following: tracker.following };
  }
  return { relayed, taken, stopped: false, following: tracker.following };
}

Deno.test("UpTracker relays small requests and their bodies as they are, however the bytes are split", async () => {
  const text = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" +
    "PUT /m HTTP/1.1\r\nContent-Length: 31\r\n\r\nGET /not-a-request HTTP/1.1\r\n\r\n" +
    "HEAD /b HTTP/1.1\r\n\r\n";
  for (const size of [1, 2, 5, 13, 64, 1000]) {
    const got = await track(bytes(text), size, () => null);
    assert.equal(got.relayed, text, `pieces of ${size}`);
    assert.deepEqual(got.taken, []);
    assert.equal(got.following, true);
  }
});

Deno.test("UpTracker takes a large body and reads the next request where the body ended", async () => {
  const first = `PATCH /u HTTP/1.1\r\nContent-Length: ${TAKE_MIN_BYTES}\r\n\r\n`;
  const text = first + "x".repeat(TAKE_MIN_BYTES) + "GET /after HTTP/1.1\r\n\r\n";
  const input = bytes(text);
  const got = await track(input, input.length, (_h, rest) => rest.subarray(TAKE_MIN_BYTES));
  assert.deepEqual(got.taken, ["PATCH /u HTTP/1.1"]);
  assert.equal(got.relayed, "GET /after HTTP/1.1\r\n\r\n");
  const stopped = await track(input, input.length, () => null);
  assert.equal(stopped.stopped, true);
});

Deno.test("UpTracker stops following at a head it cannot follow and relays everything after as it is", async () => {
  const text = "GET /a HTTP/1.1\r\n\r\n" + "GET /b HTTP/1.1\nX: y\r\n\r\n" +
    `PATCH /u HTTP/1.1\r\nContent-Length: ${TAKE_MIN_BYTES}\r\n\r\n`;
  const got = await track(bytes(text), 7, () => {
    throw new Error("nothing may be taken once the tracker gave up");
  });
  assert.equal(got.relayed, text);
  assert.equal(got.following, false);
});

Deno.test("UpTracker does not hold back bytes that cannot begin a head (a TLS hello on the cleartext port)", async () => {
  const hello = new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
  for (const input of [hello, new Uint8Array([...bytes("GET / HTTP/1.1\r\nX: "), 0x01])]) {
    const tracker = new UpTracker();
    const relayed: Uint8Array[] = [];
    await tracker.relay(input, (b) => (relayed.push(b.slice()), Promise.resolve()), () => {
      throw new Error("nothing to take");
    });
    assert.deepEqual(relayed, [input]);
    assert.equal(tracker.following, false);
  }
  // A head still arriving is held (the internal server would wait for it too).
  const partial = new UpTracker();
  let wrote = 0;
  await partial.relay(
    bytes("PATCH /u HTTP/1.1\r\nHost: x"),
    () => (wrote++, Promise.resolve()),
    () => {
      throw new Error("nothing to take");
    },
  );
  assert.equal(wrote, 0);
  assert.equal(partial.following, true);
});
