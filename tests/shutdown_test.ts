/**
 * Graceful shutdown: on SIGTERM Berth stops accepting, finishes
 * the requests in flight (an upload whose body is still arriving, a download
 * still streaming), closes KV and exits 0; with and without the connection guard.
 *
 * @module
 */
import assert from "node:assert/strict";
import { randomBytes, sha256, spawnRegistry } from "./_registry.ts";

const MiB = 1024 * 1024;
const encoder = new TextEncoder();

async function readResponse(
  conn: Deno.Conn,
): Promise<{ status: number; bodyBytes: number; head: string }> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(256 * 1024);
  for (;;) {
    const n = await conn.read(buffer).catch(() => null);
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
  }
  const all = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    all.set(c, offset);
    offset += c.length;
  }
  const text = new TextDecoder("latin1").decode(all.subarray(0, Math.min(all.length, 4096)));
  const end = text.indexOf("\r\n\r\n");
  return {
    status: Number(text.split(" ")[1]),
    bodyBytes: end === -1 ? 0 : all.length - end - 4,
    head: text.slice(0, end),
  };
}

/** Pushes `bytes` as a blob of shut/app to the registry at `url` in one POST, asserting 201. */
async function pushBlobTo(url: string, bytes: Uint8Array<ArrayBuffer>): Promise<void> {
  const res = await fetch(`${url}/v2/shut/app/blobs/uploads/?digest=${sha256(bytes)}`, {
    method: "POST",
    body: bytes,
  });
  await res.body?.cancel();
  assert.equal(res.status, 201, "push the blob to download");
}

for (const args of [[], ["--idle-timeout", "0"]]) {
  const mode = args.length ? "without the guard" : "with the guard";

  Deno.test(`shutdown ${mode}: SIGTERM mid-upload lets the upload finish, then exits 0`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "berth-shutdown-" });
    try {
      const reg = await spawnRegistry(["--data", dir, ...args]);
      const bytes = randomBytes(4 * MiB, 7);
      const digest = sha256(bytes);
      const { port } = new URL(reg.url);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
      await conn.write(encoder.encode(
        `POST /v2/shut/app/blobs/uploads/?digest=${digest} HTTP/1.1\r\nHost: x\r\n` +
          `Content-Length: ${bytes.length}\r\nConnection: close\r\n\r\n`,
      ));
      const half = bytes.length / 2;
      for (let sent = 0; sent < half;) sent += await conn.write(bytes.subarray(sent, half));
      await new Promise((resolve) => setTimeout(resolve, 300));
      Deno.kill(reg.pid, "SIGTERM");
      await new Promise((resolve) => setTimeout(resolve, 500));
      for (let sent = half; sent < bytes.length;) sent += await conn.write(bytes.subarray(sent));
      const response = await readResponse(conn);
      conn.close();
      assert.equal(response.status, 201, response.head);
      assert.equal(await reg.stop(), 0);
      // Stored for good: a new process serves it.
      await using again = await spawnRegistry(["--data", dir, ...args]);
      const res = await fetch(`${again.url}/v2/shut/app/blobs/${digest}`);
      assert.equal(sha256(new Uint8Array(await res.arrayBuffer())), digest);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`shutdown ${mode}: SIGTERM mid-download lets the download finish, then exits 0`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "berth-shutdown-" });
    try {
      const reg = await spawnRegistry(["--data", dir, ...args]);
      const bytes = randomBytes(32 * MiB, 8);
      const digest = sha256(bytes);
      await pushBlobTo(reg.url, bytes);
      const res = await fetch(`${reg.url}/v2/shut/app/blobs/${digest}`);
      const reader = res.body!.getReader();
      let received = 0;
      const first = await reader.read();
      received += first.value?.length ?? 0;
      Deno.kill(reg.pid, "SIGTERM");
      await new Promise((resolve) => setTimeout(resolve, 300));
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        received += value.length;
        await new Promise((resolve) => setTimeout(resolve, 5)); // a slow reader
      }
      assert.equal(received, bytes.length);
      assert.equal(await reg.stop(), 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("shutdown: --shutdown-timeout bounds the wait for a client that reads too slowly; exit 0", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-shutdown-" });
  try {
    const reg = await spawnRegistry(["--data", dir, "--shutdown-timeout", "2s"]);
    const bytes = randomBytes(64 * MiB, 9);
    const digest = sha256(bytes);
    await pushBlobTo(reg.url, bytes);
    const { port } = new URL(reg.url);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
    await conn.write(
      encoder.encode(`GET /v2/shut/app/blobs/${digest} HTTP/1.1\r\nHost: x\r\n\r\n`),
    );
    await conn.read(new Uint8Array(1024)); // the download has started; read nothing more
    const started = Date.now();
    Deno.kill(reg.pid, "SIGTERM");
    assert.equal(await reg.stop(), 0);
    const took = Date.now() - started;
    assert.ok(took < 8000, `shutdown took ${took} ms`);
    conn.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connection guard: headers that trickle in (slowloris) are cut off after --idle-timeout", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-guard-" });
  try {
    await using reg = await spawnRegistry(["--data", dir, "--idle-timeout", "1s"]);
    const { port } = new URL(reg.url);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
    await conn.write(encoder.encode("GET /v2/ HTTP/1.1\r\nHost: x\r\n"));
    const closed = conn.read(new Uint8Array(1024)).catch(() => null);
    let stillOpen = true;
    closed.then(() => (stillOpen = false));
    const started = Date.now();
    // One header byte every 300 ms: never idle by bytes alone.
    while (stillOpen && Date.now() - started < 8000) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      await conn.write(encoder.encode("X")).catch(() => (stillOpen = false));
    }
    assert.equal(await closed, null);
    const took = Date.now() - started;
    assert.ok(took < 5000, `the trickling connection stayed open ${took} ms`);
    conn.close();
    const res = await fetch(`${reg.url}/v2/`);
    await res.body?.cancel();
    assert.equal(res.status, 200);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
