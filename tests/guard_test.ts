/**
 * The connection guard under descriptor pressure: `main.ts serve` with an
 * open-file limit of 256 takes a burst of 600 concurrent connections without
 * dying (the excess get 503 or are refused), then serves normally again.
 *
 * @module
 */
import assert from "node:assert/strict";
import { spawnRegistry } from "./_registry.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** `main.ts serve` under `ulimit -n <limit>`, on port 0 of a fresh data directory. */
async function spawnLimited(limit: number, args: string[] = []) {
  const dataDir = await Deno.makeTempDir({ prefix: "berth-guard-" });
  const berth = await spawnRegistry(["--data", dataDir, ...args], {}, {
    openFileLimit: limit,
    captureStderr: true,
  });
  return {
    berth,
    port: Number(new URL(berth.url).port),
    async [Symbol.asyncDispose]() {
      await berth.kill();
      await Deno.remove(dataDir, { recursive: true });
    },
  };
}

/** One `GET /v2/` on a connection of its own: the status, or how it failed. */
async function burstRequest(port: number): Promise<string> {
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch (error) {
    return `refused (${(error as Error).name})`;
  }
  const timer = setTimeout(() => conn.close(), 15_000);
  try {
    await conn.write(encoder.encode("GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    let head = "";
    const buffer = new Uint8Array(4096);
    while (!head.includes("\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) break;
      head += decoder.decode(buffer.subarray(0, n));
    }
    return head ? head.split(" ")[1]! : "closed";
  } catch (error) {
    return `closed (${(error as Error).name})`;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
}

Deno.test("guard: under ulimit -n 256 a burst of 600 connections gets 200 or 503 (or is refused), the server lives and serves again", async () => {
  await using limited = await spawnLimited(256);
  const { berth, port } = limited;
  let code: number;
  try {
    // Deno reads another process's /proc files only with --allow-all: cat them.
    const { stdout } = await new Deno.Command("cat", { args: [`/proc/${berth.pid}/limits`] })
      .output();
    const limits = decoder.decode(stdout);
    assert.match(limits, /^Max open files\s+256\s/m, "the limit did not apply");

    const results = await Promise.all(Array.from({ length: 600 }, () => burstRequest(port)));
    const counts: Record<string, number> = {};
    for (const result of results) counts[result] = (counts[result] ?? 0) + 1;
    const detail = `${Deno.inspect(counts)}; stderr: ${berth.exited ? await berth.stderr : ""}`;
    assert.equal(berth.exited, false, `the server died: ${detail}`);
    assert.ok((counts["200"] ?? 0) >= 32, `too few served: ${detail}`);
    for (const result of Object.keys(counts)) {
      assert.match(result, /^(200|503|closed|refused)/, `unexpected outcome: ${detail}`);
    }

    // Accepting resumes, and every new connection is served.
    for (let i = 0; i < 50; i++) {
      const res = await fetch(`${berth.url}/v2/`, { headers: { Connection: "close" } });
      await res.body?.cancel();
      assert.equal(res.status, 200, `GET /v2/ #${i} after the burst`);
    }
    // And so is a second burst, after the first one's connections are gone.
    const again = await Promise.all(Array.from({ length: 600 }, () => burstRequest(port)));
    assert.equal(berth.exited, false, "the server died in the second burst");
    assert.ok(again.filter((r) => r === "200").length >= 32, "too few served in the second burst");
  } finally {
    code = await berth.stop();
  }
  assert.equal(code, 0, `exit code after SIGTERM; stderr: ${await berth.stderr}`);
});

Deno.test("guard: hundreds of pipelined blob GETs that the client does not read hold a few files, not one each", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "berth-guard-" });
  await using berth = await spawnRegistry(["--data", dataDir]);
  try {
    const blob = new Uint8Array(4 * 1024 * 1024).fill(7);
    const digest = `sha256:${
      Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", blob)), (b) =>
        b.toString(16).padStart(2, "0")).join("")
    }`;
    const put = await fetch(`${berth.url}/v2/pipe/blobs/uploads/?digest=${digest}`, {
      method: "POST",
      body: blob,
    });
    await put.body?.cancel();
    assert.equal(put.status, 201);
    // Through ls: Deno wants --allow-all to read /proc.
    const descriptors = async () => {
      const out = await new Deno.Command("/bin/ls", { args: [`/proc/${berth.pid}/fd`] }).output();
      return new TextDecoder().decode(out.stdout).split("\n").filter(Boolean).length;
    };
    const before = await descriptors();
    const { hostname, port } = new URL(berth.url);
    const conn = await Deno.connect({ hostname, port: Number(port) });
    try {
      const request = `GET /v2/pipe/blobs/${digest} HTTP/1.1\r\nHost: ${hostname}\r\n\r\n`;
      const all = new TextEncoder().encode(request.repeat(500));
      for (let written = 0; written < all.length;) {
        written += await conn.write(all.subarray(written));
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const during = await descriptors();
      assert.ok(during <= before + 8, `descriptors: ${before} before, ${during} while stalled`);
    } finally {
      conn.close();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
