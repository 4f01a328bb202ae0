/**
 * The bench's drain-and-hash peer, run as its own process: how fast this
 * machine can take a request body off the loopback and sha256 it, with no
 * storage at all. Two listeners, printed as "HTTP_PORT TCP_PORT" on stdout:
 * `Deno.serve` (what any Deno server gets: body chunks gathered into 1 MiB,
 * then hashed) and a raw TCP socket read 1 MiB at a time (the machine's
 * ceiling). Both answer 201 when the `?digest=` matches, else 400.
 *
 * @module
 */
import { createHash } from "node:crypto";

const MIB = 1024 * 1024;

const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
  const hash = createHash("sha256");
  const buf = new Uint8Array(MIB);
  let filled = 0;
  for await (const chunk of req.body!) {
    for (let at = 0; at < chunk.length;) {
      const n = Math.min(chunk.length - at, MIB - filled);
      buf.set(chunk.subarray(at, at + n), filled);
      filled += n;
      at += n;
      if (filled === MIB) {
        hash.update(buf);
        filled = 0;
      }
    }
  }
  hash.update(buf.subarray(0, filled));
  const ok = `sha256:${hash.digest("hex")}` === new URL(req.url).searchParams.get("digest");
  return new Response(null, { status: ok ? 201 : 400 });
});

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });

async function rawDrain(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(MIB);
  let filled = 0;
  let head = "";
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buf.subarray(filled));
    if (n === null) return conn.close();
    filled += n;
    head = new TextDecoder().decode(buf.subarray(0, filled));
  }
  const headEnd = head.indexOf("\r\n\r\n") + 4;
  const length = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
  const digest = /[?&]digest=([^ &]+)/.exec(head)?.[1];
  const hash = createHash("sha256");
  buf.copyWithin(0, headEnd, filled);
  filled -= headEnd;
  let received = filled;
  while (received < length) {
    if (filled === MIB) {
      hash.update(buf);
      filled = 0;
    }
    const n = await conn.read(buf.subarray(filled));
    if (n === null) break;
    filled += n;
    received += n;
  }
  hash.update(buf.subarray(0, filled));
  const ok = `sha256:${hash.digest("hex")}` === digest;
  const reply = `HTTP/1.1 ${ok ? "201 Created" : "400 Bad Request"}\r\n` +
    "Content-Length: 0\r\nConnection: close\r\n\r\n";
  await conn.write(new TextEncoder().encode(reply));
  conn.close();
}

console.log(`${server.addr.port} ${(listener.addr as Deno.NetAddr).port}`);
for await (const conn of listener) rawDrain(conn).catch(() => conn.close());
