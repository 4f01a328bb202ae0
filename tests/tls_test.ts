/**
 * HTTPS, black box: `main.ts serve --tls-cert --tls-key` with a throwaway CA
 * and a certificate for 127.0.0.1 and localhost made with openssl. Clients
 * verify the certificate (no `-k`): curl negotiates HTTP/2 and HTTP/1.1 through
 * ALPN, Deno's fetch pushes and pulls blobs, an HTTP/2 client multiplexes
 * pushes on one connection, through the connection guard and without it. The
 * guard's limits hold over TLS: idle connections (HTTP/2 pings are not
 * traffic), handshakes that never end and plain HTTP are closed, and the
 * connection over the cap gets a 503 in the protocol it chose. A certificate or
 * key that cannot be served stops start-up with one line and exit 2.
 *
 * @module
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import { makePki, type Pki, run } from "./_pki.ts";
import { randomBytes, runMain, sha256, spawnRegistry } from "./_registry.ts";

const CURL = "/usr/bin/curl";
const decoder = new TextDecoder();

/** `main.ts serve` over HTTPS on 127.0.0.1:0 of a fresh data directory. */
interface Berth extends AsyncDisposable {
  url: string;
  port: number;
  pid: number;
  /** Whether the process has exited. */
  readonly exited: boolean;
}

async function spawnTls(pki: Pki, args: string[] = []): Promise<Berth> {
  const dataDir = await Deno.makeTempDir({ prefix: "berth-tls-data-" });
  const berth = await spawnRegistry(
    ["--data", dataDir, "--kv", ":memory:", "--log-level", "error"]
      .concat(["--tls-cert", pki.cert, "--tls-key", pki.key, ...args]),
  );
  return {
    url: berth.url,
    port: Number(new URL(berth.url).port),
    pid: berth.pid,
    get exited() {
      return berth.exited;
    },
    async [Symbol.asyncDispose]() {
      await berth.kill();
      await Deno.remove(dataDir, { recursive: true });
    },
  };
}

/** curl verifying against the test CA: `[http_version, status]` of GET `url`. */
async function curl(pki: Pki, url: string, ...args: string[]): Promise<[string, number]> {
  const out = await run(CURL, [
    "-sS",
    "--cacert",
    pki.caPath,
    "-o",
    "/dev/null",
    "-w",
    "%{http_version} %{http_code}",
    "--max-time",
    "10",
    ...args,
    url,
  ]);
  const [version, status] = out.split(" ");
  return [version!, Number(status)];
}

/** Milliseconds until the server closes `conn` (EOF or a reset), given up on after `limitMs`. */
async function closedAfter(conn: Deno.Conn, limitMs: number): Promise<number> {
  const started = performance.now();
  const timer = setTimeout(() => conn.close(), limitMs);
  const buffer = new Uint8Array(16 * 1024);
  try {
    while (await conn.read(buffer) !== null) { /* discard */ }
  } catch { /* reset, or closed by the timer */ }
  clearTimeout(timer);
  return performance.now() - started;
}

function eachMode(name: string, fn: (pki: Pki, args: string[]) => Promise<void>): void {
  for (
    const [mode, args] of [["through the guard", []], ["served directly", [
      "--idle-timeout",
      "0",
    ]]] as const
  ) {
    Deno.test(`${name} (${mode})`, async () => {
      const pki = await makePki();
      try {
        await fn(pki, [...args]);
      } finally {
        await Deno.remove(pki.dir, { recursive: true });
      }
    });
  }
}

function withPki(name: string, fn: (pki: Pki) => Promise<void>): void {
  Deno.test(name, async () => {
    const pki = await makePki();
    try {
      await fn(pki);
    } finally {
      await Deno.remove(pki.dir, { recursive: true });
    }
  });
}

eachMode(
  "curl gets /v2/ over HTTP/2 and HTTP/1.1, verifying the certificate",
  async (pki, args) => {
    await using berth = await spawnTls(pki, args);
    for (const host of ["127.0.0.1", "localhost"]) {
      const url = `https://${host}:${berth.port}/v2/`;
      assert.deepEqual(await curl(pki, url, "--http2"), ["2", 200], url);
      assert.deepEqual(await curl(pki, url, "--http1.1"), ["1.1", 200], url);
    }
    // Plain HTTP to the TLS port is not served, and breaks nothing.
    await assert.rejects(
      run(CURL, ["-sS", "--max-time", "5", `http://127.0.0.1:${berth.port}/v2/`]),
    );
    assert.deepEqual(await curl(pki, `${berth.url}/v2/`, "--http2"), ["2", 200]);
    assert.equal(berth.exited, false);
  },
);

eachMode(
  "Deno's fetch pushes and pulls a blob over HTTPS, monolithic and chunked",
  async (pki, args) => {
    await using berth = await spawnTls(pki, args);
    using client = Deno.createHttpClient({ caCerts: [pki.ca] });
    const get = (path: string, init: RequestInit = {}) =>
      fetch(berth.url + path, { ...init, client });
    const bytes = randomBytes(3 * 1024 * 1024 + 17, 7);
    const digest = sha256(bytes);
    const pushed = await get(`/v2/tls/blobs/uploads/?digest=${digest}`, {
      method: "POST",
      body: bytes,
    });
    await pushed.body?.cancel();
    assert.equal(pushed.status, 201);
    const pulled = await get(`/v2/tls/blobs/${digest}`);
    assert.equal(pulled.status, 200);
    assert.equal(sha256(new Uint8Array(await pulled.arrayBuffer())), digest);

    const started = await get("/v2/tls/blobs/uploads/", { method: "POST" });
    await started.body?.cancel();
    assert.equal(started.status, 202);
    let location = started.headers.get("location")!;
    const half = bytes.length >> 1;
    const patched = await get(location, {
      method: "PATCH",
      headers: { "Content-Range": `0-${half - 1}`, "Content-Type": "application/octet-stream" },
      body: bytes.subarray(0, half),
    });
    await patched.body?.cancel();
    assert.equal(patched.status, 202);
    location = patched.headers.get("location")!;
    const sep = location.includes("?") ? "&" : "?";
    const done = await get(`${location}${sep}digest=${digest}`, {
      method: "PUT",
      headers: { "Content-Type": "application/octet-stream" },
      body: bytes.subarray(half),
    });
    await done.body?.cancel();
    assert.equal(done.status, 201);
  },
);

/** One request on an HTTP/2 session: status and body. */
function h2Request(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: Uint8Array,
): Promise<{ status: number; body: Uint8Array }> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers);
    const chunks: Uint8Array[] = [];
    let status = 0;
    stream.on("response", (h) => (status = Number(h[":status"])));
    stream.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    stream.on("end", () => {
      const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
      chunks.reduce((at, c) => (all.set(c, at), at + c.length), 0);
      resolve({ status, body: all });
    });
    stream.on("error", reject);
    stream.end(body);
  });
}

function h2Connect(pki: Pki, url: string): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url, { ca: pki.ca });
    session.once("connect", () => resolve(session));
    session.once("error", reject);
  });
}

eachMode(
  "an HTTP/2 client pushes and pulls blobs multiplexed on one connection",
  async (pki, args) => {
    await using berth = await spawnTls(pki, args);
    const session = await h2Connect(pki, berth.url);
    try {
      const blobs = Array.from({ length: 8 }, (_, i) => randomBytes(256 * 1024 + i, 100 + i));
      const pushes = await Promise.all(blobs.map((bytes) =>
        h2Request(session, {
          ":method": "POST",
          ":path": `/v2/multiplexed/blobs/uploads/?digest=${sha256(bytes)}`,
          "content-type": "application/octet-stream",
        }, bytes)
      ));
      assert.deepEqual(pushes.map((r) => r.status), blobs.map(() => 201));
      const pulls = await Promise.all(
        blobs.map((bytes) =>
          h2Request(session, { ":path": `/v2/multiplexed/blobs/${sha256(bytes)}` })
        ),
      );
      assert.deepEqual(
        pulls.map((r) => r.status),
        blobs.map(() => 200),
      );
      assert.deepEqual(pulls.map((r) => sha256(r.body)), blobs.map((b) => sha256(b)));
    } finally {
      session.close();
    }
  },
);

withPki(
  "the guard closes idle TLS connections, HTTP/2 ones too, not busy ones",
  async (pki) => {
    await using berth = await spawnTls(pki, ["--idle-timeout", "1s"]);
    {
      const conn = await Deno.connectTls({
        hostname: "127.0.0.1",
        port: berth.port,
        caCerts: [pki.ca],
      });
      await conn.handshake();
      const waited = await closedAfter(conn, 10_000);
      assert.ok(waited > 700 && waited < 5000, `idle TLS connection closed after ${waited} ms`);
    }
    {
      const session = await h2Connect(pki, berth.url);
      const started = performance.now();
      const closed = new Promise((resolve) => session.once("close", resolve));
      session.on("error", () => {});
      assert.equal((await h2Request(session, { ":path": "/v2/" })).status, 200);
      const timer = setTimeout(() => session.destroy(), 10_000);
      await closed;
      clearTimeout(timer);
      const waited = performance.now() - started;
      assert.ok(
        waited > 700 && waited < 5000,
        `idle HTTP/2 connection closed after ${waited} ms`,
      );
    }
    {
      // A pull that takes longer than the idle timeout, its bytes flowing, is not cut.
      const bytes = randomBytes(4 * 1024 * 1024, 3);
      using client = Deno.createHttpClient({ caCerts: [pki.ca] });
      const pushed = await fetch(`${berth.url}/v2/busy/blobs/uploads/?digest=${sha256(bytes)}`, {
        method: "POST",
        body: bytes,
        client,
      });
      await pushed.body?.cancel();
      assert.equal(pushed.status, 201);
      const session = await h2Connect(pki, berth.url);
      try {
        const stream = session.request({ ":path": `/v2/busy/blobs/${sha256(bytes)}` });
        let total = 0;
        let paused = 0;
        // Read slowly: a 100 ms pause every 256 KiB, 1.6 s in all.
        stream.on("data", (chunk: Uint8Array) => {
          total += chunk.length;
          if (total - paused < 256 * 1024) return;
          paused = total;
          stream.pause();
          setTimeout(() => stream.resume(), 100);
        });
        const started = performance.now();
        await new Promise((
          resolve,
          reject,
        ) => (stream.on("end", resolve), stream.on("error", reject)));
        assert.equal(total, bytes.length);
        assert.ok(
          performance.now() - started > 1000,
          "the pull was not slower than the idle timeout",
        );
      } finally {
        session.close();
      }
    }
    assert.equal(berth.exited, false);
  },
);

withPki(
  "the guard closes a connection that never finishes its TLS handshake, and plain HTTP",
  async (pki) => {
    await using berth = await spawnTls(pki, ["--idle-timeout", "1s"]);
    {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: berth.port });
      const waited = await closedAfter(conn, 10_000);
      assert.ok(waited > 700 && waited < 5000, `silent connection closed after ${waited} ms`);
    }
    {
      // Twenty at once, and none of them costs a descriptor once closed.
      // (Through ls: Deno wants --allow-all to read /proc.)
      const descriptors = async () =>
        (await run("/bin/ls", [`/proc/${berth.pid}/fd`])).split("\n").filter(Boolean).length;
      const before = await descriptors();
      const conns = await Promise.all(
        Array.from({ length: 20 }, () => Deno.connect({ hostname: "127.0.0.1", port: berth.port })),
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.ok(await descriptors() >= before + 20, "the connections were not accepted");
      const waits = await Promise.all(conns.map((conn) => closedAfter(conn, 10_000)));
      assert.ok(Math.max(...waits) < 5000, `silent connections closed after ${waits} ms`);
      let after = await descriptors();
      for (let tries = 0; tries < 30 && after > before + 2; tries++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        after = await descriptors();
      }
      assert.ok(after <= before + 2, `descriptors: ${before} before, ${after} after`);
    }
    {
      // Half a ClientHello, then nothing.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: berth.port });
      await conn.write(new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]));
      const waited = await closedAfter(conn, 10_000);
      assert.ok(waited > 700 && waited < 5000, `stalled handshake closed after ${waited} ms`);
    }
    {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: berth.port });
      await conn.write(new TextEncoder().encode("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"));
      const waited = await closedAfter(conn, 10_000);
      assert.ok(waited < 700, `plain HTTP closed after ${waited} ms`);
    }
    assert.deepEqual(await curl(pki, `${berth.url}/v2/`, "--http2"), ["2", 200]);
  },
);

withPki(
  "over the connection cap a TLS client gets 503 in HTTP/2 or HTTP/1.1, the others go on",
  async (pki) => {
    await using berth = await spawnTls(pki, ["--max-connections", "2"]);
    const held: Deno.TlsConn[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const conn = await Deno.connectTls({
          hostname: "127.0.0.1",
          port: berth.port,
          caCerts: [pki.ca],
        });
        await conn.handshake();
        held.push(conn);
      }
      assert.deepEqual(await curl(pki, `${berth.url}/v2/`, "--http2"), ["2", 503]);
      assert.deepEqual(await curl(pki, `${berth.url}/v2/`, "--http1.1"), ["1.1", 503]);
      // The held ones are served.
      const conn = held[0]!;
      await conn.write(new TextEncoder().encode("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"));
      const buffer = new Uint8Array(4096);
      const n = await conn.read(buffer);
      assert.match(decoder.decode(buffer.subarray(0, n ?? 0)), /^HTTP\/1\.1 200/);
      for (const c of held.splice(0)) c.close();
      // Slots are freed: served again.
      let result: [string, number] = ["", 0];
      for (let tries = 0; tries < 50 && result[1] !== 200; tries++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        result = await curl(pki, `${berth.url}/v2/`, "--http2");
      }
      assert.deepEqual(result, ["2", 200]);
    } finally {
      for (const c of held) c.close();
    }
  },
);

/** Runs `main.ts serve` expecting it to refuse to start: exit code and stderr. */
async function failedStart(args: string[]): Promise<{ code: number; stderr: string }> {
  const dataDir = await Deno.makeTempDir({ prefix: "berth-tls-data-" });
  try {
    const out = await runMain(
      ["serve", "--listen", "127.0.0.1:0", "--data", dataDir, "--kv", ":memory:", ...args],
    );
    return { code: out.code, stderr: out.stderr };
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
}

withPki(
  "a certificate or key that cannot be served stops start-up with one line and exit 2",
  async (pki) => {
    const cases: [string, string, string, RegExp][] = [
      [
        "missing certificate",
        `${pki.dir}/nope.pem`,
        pki.key,
        /cannot read --tls-cert .*nope\.pem.*no such file/,
      ],
      [
        "missing key",
        pki.cert,
        `${pki.dir}/nope.key`,
        /cannot read --tls-key .*nope\.key.*no such file/,
      ],
      ["garbage certificate", pki.garbage, pki.key, /garbage\.pem.* holds no PEM certificate/],
      ["garbage key", pki.cert, pki.garbage, /garbage\.pem.* holds no PEM private key/],
      ["swapped files", pki.key, pki.cert, /holds a private key, not a certificate/],
      ["another key", pki.cert, pki.otherKey, /other\.key.* is not the private key of --tls-cert/],
      ["expired", pki.expired, pki.key, /expired on 2020-01-02 00:00:00 UTC/],
      [
        "not valid yet",
        pki.notYetValid,
        pki.key,
        /not valid yet: valid from 2099-01-01 00:00:00 UTC/,
      ],
    ];
    for (const [what, cert, key, message] of cases) {
      const { code, stderr } = await failedStart(["--tls-cert", cert, "--tls-key", key]);
      assert.equal(code, 2, `${what}: ${stderr}`);
      const lines = stderr.trimEnd().split("\n");
      assert.equal(lines.length, 1, `${what}: ${stderr}`);
      assert.match(lines[0]!, /^berth: Cannot serve HTTPS: /, what);
      assert.match(lines[0]!, message, what);
    }
  },
);
