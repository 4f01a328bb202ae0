import assert from "node:assert/strict";
import { fileStream } from "../storage/streams.ts";
import http2 from "node:http2";
import {
  canHandOff,
  type DownState,
  type GuardOptions,
  type HandOff,
  handOffFile,
  relayDown,
  serveGuarded,
} from "./conn_guard.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface RawResponse {
  status: number;
  body: string;
}

/** Reads one response off `conn` (by Content-Length, or to the end); null if closed first. */
async function readResponse(conn: Deno.Conn): Promise<RawResponse | null> {
  let text = "";
  const buffer = new Uint8Array(16 * 1024);
  for (;;) {
    const end = text.indexOf("\r\n\r\n");
    if (end !== -1) {
      const length = /^content-length:\s*(\d+)/im.exec(text.slice(0, end))?.[1];
      if (length !== undefined && text.length >= end + 4 + Number(length)) break;
    }
    const n = await conn.read(buffer).catch(() => null);
    if (n === null) break;
    text += decoder.decode(buffer.subarray(0, n));
  }
  if (!text) return null;
  const end = text.indexOf("\r\n\r\n");
  return { status: Number(text.split(" ")[1]), body: text.slice(end + 4) };
}

async function send(conn: Deno.Conn, path = "/", close = false): Promise<void> {
  const head = `GET ${path} HTTP/1.1\r\nHost: x\r\n${close ? "Connection: close\r\n" : ""}\r\n`;
  await conn.write(encoder.encode(head));
}

function connect(port: number): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: "127.0.0.1", port });
}

/** A guarded server answering each request with the client address it was handed. */
function start(overrides: Partial<GuardOptions> = {}) {
  const events: { event: string; fields: Record<string, unknown> }[] = [];
  let handled = 0;
  const server = serveGuarded(
    {
      hostname: "127.0.0.1",
      port: 0,
      idleTimeoutMs: 10_000,
      maxConnections: 100,
      onError: (event, fields) => events.push({ event, fields }),
      ...overrides,
    },
    (_req, info) => {
      handled++;
      return new Response(`${info.remoteAddr.hostname}:${info.remoteAddr.port}`);
    },
  );
  return {
    server,
    events,
    get handled() {
      return handled;
    },
    port: server.addr.port,
  };
}

Deno.test("serveGuarded() hands the handler the client's address, not the relay's", async () => {
  const { server, port } = start();
  try {
    for (let i = 0; i < 2; i++) {
      using conn = await connect(port);
      await send(conn);
      const res = await readResponse(conn);
      assert.equal(res?.status, 200);
      assert.equal(res.body, `127.0.0.1:${conn.localAddr.port}`);
    }
  } finally {
    await server.shutdown(1000);
  }
});

Deno.test("serveGuarded() refuses a direct connection to its internal server", async () => {
  const guarded = start();
  try {
    const internal = guarded.server.internalAddr;
    assert.ok(internal && internal.port !== guarded.port);
    {
      using conn = await connect(internal.port);
      await send(conn, "/", true);
      const res = await readResponse(conn);
      assert.ok(res === null || res.status === 403, `direct: ${res?.status} ${res?.body}`);
    }
    assert.equal(guarded.handled, 0, "a direct request reached the handler");
    // Through the guard it is served.
    using conn = await connect(guarded.port);
    await send(conn);
    assert.equal((await readResponse(conn))?.status, 200);
    assert.equal(guarded.handled, 1);
  } finally {
    await guarded.server.shutdown(1000);
  }
});

Deno.test("serveGuarded() keeps accepting after an accept error, and reports it", async () => {
  let failures = 1;
  const { server, port, events } = start({
    system: {
      listen(options) {
        const listener = Deno.listen(options);
        const accept = listener.accept.bind(listener);
        listener.accept = () => {
          if (failures-- > 0) return Promise.reject(new Error("Too many open files (os error 24)"));
          return accept();
        };
        return listener;
      },
    },
  });
  try {
    using conn = await connect(port);
    await send(conn);
    // Without accepting, the read would wait forever: give up after 3 s.
    const timer = setTimeout(() => conn.close(), 3000);
    const res = await readResponse(conn);
    clearTimeout(timer);
    assert.equal(res?.status, 200, "the connection was never served");
    assert.deepEqual(events.map((e) => e.event), ["accept failed; retrying"]);
    assert.match(String(events[0]!.fields.error), /Too many open files/);
  } finally {
    await server.shutdown(1000);
  }
});

Deno.test("serveGuarded() answers 503 when the back connection cannot be opened, then recovers", async () => {
  let failures = 1;
  const { server, port, events } = start({
    system: {
      connect(options) {
        if (failures-- > 0) return Promise.reject(new Error("Too many open files (os error 24)"));
        return Deno.connect(options);
      },
    },
  });
  try {
    {
      using conn = await connect(port);
      const res = await readResponse(conn);
      assert.equal(res?.status, 503);
      assert.equal(JSON.parse(res.body).errors[0].code, "UNAVAILABLE");
    }
    assert.equal(events[0]?.event, "cannot open a connection to the internal server");
    using conn = await connect(port);
    await send(conn);
    assert.equal((await readResponse(conn))?.status, 200);
    assert.equal(server.connections, 1);
  } finally {
    await server.shutdown(1000);
  }
});

Deno.test("serveGuarded() refuses connections past maxConnections with 503 and frees slots on close", async () => {
  const { server, port } = start({ maxConnections: 2 });
  const held: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const conn = await connect(port);
      held.push(conn);
      await send(conn);
      assert.equal((await readResponse(conn))?.status, 200);
    }
    assert.equal(server.maxConnections, 2);
    {
      using extra = await connect(port);
      assert.equal((await readResponse(extra))?.status, 503);
    }
    held.shift()!.close();
    for (let tries = 0; server.connections > 1 && tries < 100; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    using next = await connect(port);
    await send(next);
    assert.equal((await readResponse(next))?.status, 200);
  } finally {
    for (const conn of held) conn.close();
    await server.shutdown(1000);
  }
});

Deno.test("serveGuarded() caps connections by the open-file limit, 64 kept and five for each", async () => {
  const { server, port, events } = start({ maxConnections: 1000, openFileLimit: 64 + 5 * 2 + 4 });
  const held: Deno.TcpConn[] = [];
  try {
    assert.equal(server.maxConnections, 2);
    assert.equal(events[0]?.event, "connection cap lowered to fit the open-file limit");
    for (let i = 0; i < 2; i++) {
      const conn = await connect(port);
      held.push(conn);
      await send(conn);
      assert.equal((await readResponse(conn))?.status, 200);
    }
    using extra = await connect(port);
    assert.equal((await readResponse(extra))?.status, 503);
  } finally {
    for (const conn of held) conn.close();
    await server.shutdown(1000);
  }
});

Deno.test("serveGuarded() closes a connection idle after its response, and one stalled in its headers", async () => {
  const { server, port } = start({ idleTimeoutMs: 200 });
  try {
    {
      using conn = await connect(port);
      await send(conn);
      assert.equal((await readResponse(conn))?.status, 200);
      const started = performance.now();
      assert.equal(await readResponse(conn), null, "data on an idle connection");
      const waited = performance.now() - started;
      assert.ok(waited >= 150 && waited < 2000, `closed after ${Math.round(waited)} ms`);
    }
    {
      using conn = await connect(port);
      await conn.write(encoder.encode("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "));
      const started = performance.now();
      for (let i = 0; i < 5; i++) {
        await new Promise((resolve) => setTimeout(resolve, 60));
        await conn.write(encoder.encode("a")).catch(() => {});
      }
      assert.equal(await readResponse(conn), null, "a response to trickling headers");
      const waited = performance.now() - started;
      assert.ok(waited < 2000, `closed after ${Math.round(waited)} ms`);
    }
    assert.equal(server.connections, 0);
  } finally {
    await server.shutdown(1000);
  }
});

Deno.test("serveGuarded() survives its internal server ending: reports it, starts another, serves on", async () => {
  let fail: ((error: Error) => void) | undefined;
  const { server, port, events } = start({
    idleTimeoutMs: 300,
    system: {
      serve(options, handler) {
        const real = Deno.serve(options, handler);
        if (fail) return real;
        // The first one ends as Deno's does when its accept loop hits EMFILE.
        const failed = new Promise<never>((_, reject) => (fail = reject));
        return Object.assign(Object.create(real), {
          addr: real.addr,
          finished: Promise.race([real.finished, failed]),
          shutdown: () => real.shutdown(),
        });
      },
    },
  });
  try {
    using before = await connect(port);
    await send(before);
    assert.equal((await readResponse(before))?.status, 200);
    const first = server.internalAddr;
    fail!(new Error("Http: Too many open files (os error 24)"));
    for (let tries = 0; server.internalAddr?.port === first?.port && tries < 100; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.notEqual(server.internalAddr?.port, first?.port, "no new internal server");
    assert.equal(events[0]?.event, "internal server ended; restarting it");
    using after = await connect(port);
    await send(after);
    assert.equal((await readResponse(after))?.status, 200);
    // The connection to the ended one cannot be served any more: it is closed.
    assert.equal(await readResponse(before), null);
  } finally {
    await server.shutdown(1000);
  }
});

/** A throwaway CA and a certificate for 127.0.0.1 it signed (openssl). */
async function certificates(): Promise<{ ca: string; cert: string; key: string }> {
  const dir = await Deno.makeTempDir({ prefix: "berth-guard-tls-" });
  const ssl = async (...args: string[]) => {
    const out = await new Deno.Command("/usr/bin/openssl", {
      args,
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.ok(out.success, decoder.decode(out.stderr));
  };
  try {
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    await ssl("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=CA");
    await ssl("req", ...ec, "-keyout", "key.pem", "-out", "req.csr", "-subj", "/CN=127.0.0.1");
    await Deno.writeTextFile(`${dir}/ext`, "subjectAltName=IP:127.0.0.1\n");
    await ssl(
      ...["x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "1"],
      ...["-CAcreateserial", "-extfile", "ext", "-out", "cert.pem"],
    );
    const read = (name: string) => Deno.readTextFile(`${dir}/${name}`);
    return { ca: await read("ca.pem"), cert: await read("cert.pem"), key: await read("key.pem") };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("serveGuarded() with TLS hands the handler the client's address and the https URL, over HTTP/1.1 and HTTP/2", async () => {
  const { ca, cert, key } = await certificates();
  const server = serveGuarded(
    {
      hostname: "127.0.0.1",
      port: 0,
      idleTimeoutMs: 10_000,
      maxConnections: 10,
      tls: { cert, key },
    },
    (req, info) => new Response(`${req.url} ${info.remoteAddr.port}`),
  );
  const port = server.addr.port;
  try {
    {
      using conn = await Deno.connectTls({
        hostname: "127.0.0.1",
        port,
        caCerts: [ca],
        alpnProtocols: ["http/1.1"],
      });
      await send(conn, "/one");
      const res = await readResponse(conn);
      assert.equal(res?.status, 200);
      assert.equal(res.body, `https://x/one ${conn.localAddr.port}`);
    }
    {
      // Deno's fetch speaks HTTP/2 when the server offers it.
      using client = Deno.createHttpClient({ caCerts: [ca], http1: false, http2: true });
      const res = await fetch(`https://127.0.0.1:${port}/two`, { client });
      const [url, clientPort] = (await res.text()).split(" ");
      assert.equal(url, `https://127.0.0.1:${port}/two`);
      assert.notEqual(Number(clientPort), server.internalAddr?.port);
      assert.ok(Number(clientPort) > 0);
    }
    // Plain HTTP on the TLS port is not served, and the guard serves on.
    {
      using conn = await connect(port);
      await send(conn, "/", true);
      const res = await readResponse(conn);
      assert.ok(
        res === null || !(res.status >= 200 && res.status < 300),
        `plain HTTP: ${res?.status}`,
      );
    }
    using conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [ca] });
    await send(conn, "/three");
    assert.equal((await readResponse(conn))?.status, 200);
  } finally {
    await server.shutdown(1000);
  }
});

/** Cleartext HTTP/2 (prior knowledge) to the guard. */
function h2Session(port: number): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.once("connect", () => resolve(session));
    session.once("error", reject);
  });
}

function h2Get(session: http2.ClientHttp2Session, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":path": path });
    let body = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => (body += chunk));
    stream.on("end", () => resolve(body));
    stream.on("error", reject);
    stream.end();
  });
}

Deno.test("serveGuarded() closes an HTTP/2 connection that only pings, not one with a multiplexed request in flight", async () => {
  const server = serveGuarded(
    { hostname: "127.0.0.1", port: 0, idleTimeoutMs: 300, maxConnections: 10 },
    async (req, info) => {
      if (req.url.endsWith("/slow")) await new Promise((resolve) => setTimeout(resolve, 1200));
      return new Response(`${info.remoteAddr.port}`);
    },
  );
  try {
    {
      const session = await h2Session(server.addr.port);
      session.on("error", () => {});
      const closed = new Promise((resolve) => session.once("close", resolve));
      const started = performance.now();
      assert.equal(
        await h2Get(session, "/"),
        String((session.socket as { localPort?: number }).localPort),
      );
      const pinger = setInterval(() => {
        if (!session.destroyed) session.ping(() => {});
      }, 50);
      closed.then(() => clearInterval(pinger));
      const timer = setTimeout(() => session.destroy(), 5000);
      await closed;
      clearInterval(pinger);
      clearTimeout(timer);
      const waited = performance.now() - started;
      assert.ok(
        waited >= 250 && waited < 2000,
        `pinging connection closed after ${Math.round(waited)} ms`,
      );
    }
    {
      const session = await h2Session(server.addr.port);
      try {
        // Quick requests beside a slow one on the same connection: still open when it answers.
        const slow = h2Get(session, "/slow");
        for (let i = 0; i < 3; i++) await h2Get(session, `/quick${i}`);
        assert.ok(Number(await slow) > 0);
        assert.equal(session.closed || session.destroyed, false);
      } finally {
        session.close();
      }
    }
  } finally {
    await server.shutdown(1000);
  }
});

/** Reads raw bytes off `conn` until `done(text)` holds or it closes. */
async function readUntil(conn: Deno.Conn, done: (text: string) => boolean): Promise<string> {
  let text = "";
  const buffer = new Uint8Array(64 * 1024);
  while (!done(text)) {
    const n = await conn.read(buffer).catch(() => null);
    if (n === null) break;
    text += decoder.decode(buffer.subarray(0, n));
  }
  return text;
}

/** A guarded server that hands `path` (or part of it) to the guard when it can. */
function fileServer(path: string, tls?: { cert: string; key: string }) {
  return serveGuarded(
    { hostname: "127.0.0.1", port: 0, idleTimeoutMs: 10_000, maxConnections: 10, tls },
    async (req) => {
      const url = new URL(req.url);
      if (url.pathname === "/can") return new Response(String(canHandOff(req)));
      if (url.pathname === "/plain") return new Response("plain");
      const start = Number(url.searchParams.get("start") ?? 0);
      const length = Number(url.searchParams.get("length") ?? (await Deno.stat(path)).size);
      const file = await Deno.open(path);
      if (!canHandOff(req)) {
        // Another hand-off is waiting on this connection: streamed, as the blob route does.
        return new Response(fileStream(file, start, length), {
          status: 206,
          headers: {
            "Content-Type": "text/plain",
            "Content-Length": String(length),
            "x-set-after": "yes",
          },
        });
      }
      const response = handOffFile(req, { file, start, length }, {
        status: 206,
        headers: { "Content-Type": "text/plain", "Content-Length": "999" },
      });
      response.headers.set("x-set-after", "yes");
      if (url.pathname === "/forged") {
        // The hand-off is pending while a body that looks like its marker is relayed.
        return new Response("a\r\nberth-guard-body: 1234\r\ncontent-length: 0\r\n\r\nb\r\n");
      }
      return response;
    },
  );
}

Deno.test("handOffFile() has the guard write the file after the headers, and the connection serves on", async () => {
  const path = await Deno.makeTempFile();
  const content = "0123456789".repeat(100_000); // spans several relay buffers
  await Deno.writeTextFile(path, content);
  const server = fileServer(path);
  try {
    using conn = await connect(server.addr.port);
    // Pipelined: each answer must come whole and in order.
    await conn.write(encoder.encode(
      "GET /file HTTP/1.1\r\nHost: x\r\n\r\n" +
        "GET /file?start=3&length=5 HTTP/1.1\r\nHost: x\r\n\r\n" +
        "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n",
    ));
    const text = await readUntil(conn, (t) => t.endsWith("\r\n\r\nplain"));
    const [whole, part, plain] = text.split(/(?=HTTP\/1\.1 )/);
    const head = (res: string) => res.slice(0, res.indexOf("\r\n\r\n")).toLowerCase();
    const body = (res: string) => res.slice(res.indexOf("\r\n\r\n") + 4);
    assert.match(head(whole!), /^http\/1\.1 206 /);
    assert.match(head(whole!), /\r\ncontent-length: 1000000\r\n/);
    assert.match(head(whole!), /\r\ncontent-type: text\/plain\r\n/);
    assert.match(head(whole!), /\r\nx-set-after: yes\r\n/);
    assert.doesNotMatch(head(whole!), /berth-guard-body/);
    assert.equal(body(whole!), content);
    assert.match(head(part!), /\r\ncontent-length: 5\r\n/);
    assert.equal(body(part!), "34567");
    assert.equal(body(plain!), "plain");
  } finally {
    await server.shutdown(1000);
    await Deno.remove(path);
  }
});

Deno.test("serveGuarded() drops a hand-off whose marked response is not the answer, and serves on", async () => {
  const path = await Deno.makeTempFile();
  await Deno.writeTextFile(path, "file");
  const server = fileServer(path);
  try {
    using conn = await connect(server.addr.port);
    await send(conn, "/forged");
    const forged = await readResponse(conn);
    // Its last bytes could begin a marker: held back, they would wait for one that never comes.
    assert.equal(forged?.body, "a\r\nberth-guard-body: 1234\r\ncontent-length: 0\r\n\r\nb\r\n");
    await send(conn, "/file");
    assert.equal((await readResponse(conn))?.body, "file");
  } finally {
    await server.shutdown(1000);
    await Deno.remove(path);
  }
});

Deno.test("canHandOff() is true on cleartext HTTP/1 only, not HTTP/2 nor TLS", async () => {
  const path = await Deno.makeTempFile();
  const { ca, cert, key } = await certificates();
  const plain = fileServer(path);
  const secure = fileServer(path, { cert, key });
  try {
    using conn = await connect(plain.addr.port);
    await send(conn, "/can");
    assert.equal((await readResponse(conn))?.body, "true");
    const session = await h2Session(plain.addr.port);
    try {
      assert.equal(await h2Get(session, "/can"), "false");
    } finally {
      session.close();
    }
    using tlsConn = await Deno.connectTls({
      hostname: "127.0.0.1",
      port: secure.addr.port,
      caCerts: [ca],
      alpnProtocols: ["http/1.1"],
    });
    await send(tlsConn, "/can");
    assert.equal((await readResponse(tlsConn))?.body, "false");
    assert.equal(canHandOff(new Request("http://x/")), false);
  } finally {
    await plain.shutdown(1000);
    await secure.shutdown(1000);
    await Deno.remove(path);
  }
});

/** Feeds `chunks` to relayDown() with one hand-off pending; returns what reached the client. */
async function relayChunks(
  chunks: string[],
  nonce: string,
): Promise<{ out: string; state: DownState }> {
  const file = { close() {} } as unknown as Deno.FsFile;
  const state: DownState = {
    handOffs: new Map([[nonce, { file, start: 0, length: 4 }]]),
    heldDown: null,
  };
  let out = "";
  const write = (bytes: Uint8Array) => (out += decoder.decode(bytes), Promise.resolve());
  const send = (handOff: HandOff) => (out += `FILE${handOff.length}`, Promise.resolve());
  for (const chunk of chunks) await relayDown(state, encoder.encode(chunk), write, send);
  return { out, state };
}

Deno.test("relayDown() rewrites a marked response's headers, sends its file, and relays the rest as it is, however the bytes are split", async () => {
  const forged = "a\r\nberth-guard-body: other\r\ncontent-length: 0\r\n\r\nb";
  const input = `HTTP/1.1 200 OK\r\ncontent-length: ${forged.length}\r\n\r\n${forged}` +
    "HTTP/1.1 206 Partial Content\r\nx-a: 1\r\nberth-guard-body: N1\r\nx-b: 2\r\n" +
    "content-length: 0\r\ndate: D\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
  const expected = `HTTP/1.1 200 OK\r\ncontent-length: ${forged.length}\r\n\r\n${forged}` +
    "HTTP/1.1 206 Partial Content\r\nx-a: 1\r\nx-b: 2\r\n" +
    "content-length: 4\r\ndate: D\r\n\r\nFILE4HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
  for (let i = 0; i <= input.length; i++) {
    for (const j of [i, Math.min(i + 7, input.length), input.length]) {
      const { out, state } = await relayChunks([
        input.slice(0, i),
        input.slice(i, j),
        input.slice(j),
      ], "N1");
      assert.equal(out, expected, `split at ${i} and ${j}`);
      assert.equal(state.handOffs.size, 0);
      assert.equal(state.heldDown, null);
    }
  }
});

Deno.test("relayDown() refuses a marked response whose length is not Deno's 0", async () => {
  await assert.rejects(
    relayChunks(["HTTP/1.1 200 OK\r\nberth-guard-body: N1\r\ncontent-length: 7\r\n\r\n"], "N1"),
    /Unexpected headers/,
  );
});

/** A guarded server that answers with what it read of each request's body (`/ignore`: nothing). */
function bodyServer() {
  const seen: { method: string; headers: Record<string, string> }[] = [];
  const server = serveGuarded(
    { hostname: "127.0.0.1", port: 0, idleTimeoutMs: 60_000, maxConnections: 10 },
    async (req) => {
      seen.push({ method: req.method, headers: Object.fromEntries(req.headers) });
      if (new URL(req.url).pathname === "/ignore") return new Response("ignored");
      try {
        const body = new Uint8Array(await req.arrayBuffer());
        const sum = body.reduce((a, b) => (a * 31 + b) >>> 0, 7);
        return new Response(`${body.length} ${sum}`);
      } catch (error) {
        return new Response(`unread: ${(error as Error).name}`, { status: 400 });
      }
    },
  );
  return { server, seen };
}

function checksum(bytes: Uint8Array): number {
  return bytes.reduce((a, b) => (a * 31 + b) >>> 0, 7);
}

/** Every response in `text`, in order: status, lower-cased head, body. */
function responses(text: string): { status: number; head: string; body: string }[] {
  const out = [];
  while (text.length > 0) {
    const end = text.indexOf("\r\n\r\n");
    const head = text.slice(0, end).toLowerCase();
    const length = Number(/\r\ncontent-length: (\d+)/.exec(head)?.[1] ?? 0);
    out.push({
      status: Number(head.split(" ")[1]),
      head,
      body: text.slice(end + 4, end + 4 + length),
    });
    text = text.slice(end + 4 + length);
  }
  return out;
}

Deno.test("the guard reads a large upload body itself and serves the next pipelined request where it ended", async () => {
  const { server, seen } = bodyServer();
  try {
    using conn = await connect(server.addr.port);
    const body = crypto.getRandomValues(new Uint8Array(300_000).subarray(0, 65536));
    const big = new Uint8Array(300_000);
    for (let i = 0; i < big.length; i += body.length) big.set(body.subarray(0, big.length - i), i);
    const head = `PATCH /u HTTP/1.1\r\nHost: x\r\nContent-Length: ${big.length}\r\n\r\n`;
    await conn.write(
      new Uint8Array([
        ...encoder.encode(head),
        ...big,
        ...encoder.encode("GET /after HTTP/1.1\r\nHost: x\r\n\r\n"),
      ]),
    );
    const text = await readUntil(conn, (t) => responses(t).length === 2 && t.endsWith(" 7"));
    const [patch, after] = responses(text);
    assert.equal(patch!.body, `${big.length} ${checksum(big)}`);
    assert.equal(after!.body, "0 7");
    // The handler saw the client's framing, not the guard's stand-in head.
    assert.equal(seen[0]!.headers["content-length"], String(big.length));
    assert.equal(seen[0]!.headers["berth-guard-upload"], undefined);
    assert.equal(seen[1]!.method, "GET");
  } finally {
    await server.shutdown(1000);
  }
});

Deno.test("the guard decodes a chunked upload body, and a forged nonce on a small one takes nothing", async () => {
  const { server, seen } = bodyServer();
  try {
    using conn = await connect(server.addr.port);
    const data = crypto.getRandomValues(new Uint8Array(50_000));
    const chunks = [data.subarray(0, 1), data.subarray(1, 40_000), data.subarray(40_000)];
    const parts: Uint8Array[] = [
      encoder.encode("PUT /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ];
    for (const chunk of chunks) {
      parts.push(
        encoder.encode(`${chunk.length.toString(16)};x=1\r\n`),
        chunk,
        encoder.encode("\r\n"),
      );
    }
    parts.push(encoder.encode("0\r\nX-Trailer: 1\r\n\r\n"));
    parts.push(encoder.encode(
      "PATCH /small HTTP/1.1\r\nHost: x\r\nberth-guard-upload: guessed\r\nContent-Length: 3\r\n\r\nabc",
    ));
    for (const part of parts) await conn.write(part);
    const text = await readUntil(
      conn,
      (t) => responses(t).length === 2 && /\r\n\r\n3 \d+$/.test(t),
    );
    const [put, small] = responses(text);
    assert.equal(put!.body, `${data.length} ${checksum(data)}`);
    assert.equal(seen[0]!.headers["transfer-encoding"], "chunked");
    assert.equal(small!.body, `3 ${checksum(encoder.encode("abc"))}`);
  } finally {
    await server.shutdown(1000);
  }
});

Deno.test("the guard drains a large body the handler leaves unread, and the connection serves on", async () => {
  const { server } = bodyServer();
  try {
    using conn = await connect(server.addr.port);
    const big = new Uint8Array(2 * 1024 * 1024);
    const sending = (async () => {
      await conn.write(
        encoder.encode(`PUT /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: ${big.length}\r\n\r\n`),
      );
      for (let sent = 0; sent < big.length;) sent += await conn.write(big.subarray(sent));
      await conn.write(encoder.encode("GET /after HTTP/1.1\r\nHost: x\r\n\r\n"));
    })();
    const text = await readUntil(conn, (t) => responses(t).length === 2);
    await sending;
    const [ignored, after] = responses(text);
    assert.equal(ignored!.body, "ignored");
    assert.doesNotMatch(ignored!.head, /connection: close/);
    assert.equal(after!.body, "0 7");
  } finally {
    await server.shutdown(1000);
  }
});

Deno.test("the guard ends the connection after a taken body that broke (bad chunked framing)", async () => {
  const { server } = bodyServer();
  try {
    using conn = await connect(server.addr.port);
    await conn.write(encoder.encode(
      "PATCH /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcdefgh\r\n0\r\n\r\n" +
        "GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
    ));
    // Read to the end: the connection closes after the one answer (long before the idle timeout).
    const started = Date.now();
    const timer = setTimeout(() => conn.close(), 10_000);
    const text = await readUntil(conn, () => false);
    clearTimeout(timer);
    assert.ok(Date.now() - started < 5000, "closed once the answer was out");
    const [answer, ...more] = responses(text);
    assert.equal(answer!.status, 400);
    assert.match(answer!.head, /\r\nconnection: close/);
    assert.equal(more.length, 0);
  } finally {
    await server.shutdown(1000);
  }
});

Deno.test("a taken body whose Host makes no URL gets 400, and the connection is freed when the client goes", async () => {
  const { server, seen } = bodyServer();
  try {
    const conn = await connect(server.addr.port);
    await conn.write(
      encoder.encode("PUT /x HTTP/1.1\r\nHost: a b\r\nContent-Length: 65536\r\n\r\n"),
    );
    const answer = await readResponse(conn);
    assert.equal(answer?.status, 400);
    assert.match(answer!.body, /UNSUPPORTED/);
    assert.equal(seen.length, 0);
    conn.close();
    for (let i = 0; i < 50 && server.connections > 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(server.connections, 0);
  } finally {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stuck = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error("shutdown hung on a leaked connection")), 5000);
    });
    await Promise.race([server.shutdown(1000), stuck]).finally(() => clearTimeout(timer));
  }
});

Deno.test("header bytes 0x80-0xFF reach the handler the same whether the guard takes the body or not", async () => {
  const { server, seen } = bodyServer();
  try {
    using conn = await connect(server.addr.port);
    const value = new Uint8Array([0x61, 0xe9, 0x80, 0x86, 0x9b, 0xff]);
    for (const length of [3, 70_000]) {
      await conn.write(
        new Uint8Array([
          ...encoder.encode("PATCH /u HTTP/1.1\r\nHost: x\r\nX-Name: "),
          ...value,
          ...encoder.encode(`\r\nContent-Length: ${length}\r\n\r\n`),
          ...new Uint8Array(length),
        ]),
      );
      assert.equal((await readResponse(conn))?.status, 200);
    }
    assert.equal(seen[1]!.headers["x-name"], seen[0]!.headers["x-name"]);
    assert.equal(seen[0]!.headers["x-name"], String.fromCharCode(...value));
  } finally {
    await server.shutdown(1000);
  }
});

Deno.test("a client trickling an unread body after its answer is closed like a slowloris", async () => {
  const server = serveGuarded(
    { hostname: "127.0.0.1", port: 0, idleTimeoutMs: 600, maxConnections: 10 },
    () => new Response("refused", { status: 401 }),
  );
  try {
    using conn = await connect(server.addr.port);
    await conn.write(
      encoder.encode("PATCH /u HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n"),
    );
    assert.equal((await readResponse(conn))?.status, 401);
    const started = Date.now();
    let open = true;
    while (open && Date.now() - started < 6000) {
      await new Promise((r) => setTimeout(r, 200));
      open = await conn.write(new Uint8Array(1)).then(() => true, () => false);
    }
    assert.ok(!open, "closed while it trickled");
    assert.ok(Date.now() - started < 4000);
  } finally {
    await server.shutdown(1000);
  }
});
