/**
 * This machine's own limits, measured in the same run as the registries so
 * every figure can be read as a share of them: sha256 alone, a request body
 * drained and hashed (over `Deno.serve` and over a raw socket, by a peer
 * process), writing a file with fdatasync, and reading a cached file.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { PATTERN, rawSend, TestBlob } from "./client.ts";

/** The limits, in MB/s (10^6 bytes per second). */
export interface Limits {
  hash: number;
  drainHashHttp: number;
  drainHashTcp: number;
  fdatasyncWrite: number;
  rawRead: number;
}

const mbps = (bytes: number, ms: number) => bytes / (ms / 1000) / 1e6;

function hashRate(size: number): number {
  const start = performance.now();
  const hash = createHash("sha256");
  for (let done = 0; done < size; done += PATTERN.length) hash.update(PATTERN);
  hash.digest();
  return mbps(size, performance.now() - start);
}

async function writeRate(path: string, size: number): Promise<number> {
  const start = performance.now();
  using file = await Deno.open(path, { create: true, write: true, truncate: true });
  const buf = new Uint8Array(256 * 1024).map((_, i) => i & 0xff);
  for (let done = 0; done < size; done += buf.length) {
    for (let written = 0; written < buf.length;) {
      written += await file.write(buf.subarray(written));
    }
  }
  await file.syncData();
  return mbps(size, performance.now() - start);
}

async function readRate(path: string): Promise<number> {
  const start = performance.now();
  using file = await Deno.open(path, { read: true });
  const buf = new Uint8Array(1024 * 1024);
  let total = 0;
  for (let n = await file.read(buf); n !== null; n = await file.read(buf)) total += n;
  return mbps(total, performance.now() - start);
}

/** Drain peers running now, so an interrupted run can stop them. */
const peers = new Set<Deno.ChildProcess>();

/** Stops any drain peer still running (by its PID). */
export function stopDrainPeers(): void {
  for (const child of peers) {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
  }
}

async function drainRates(size: number): Promise<{ http: number; tcp: number }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./_drain.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  peers.add(child);
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    while (!out.includes("\n")) {
      const { done, value } = await reader.read();
      if (done) throw new Error("drain peer exited");
      out += value;
    }
    reader.releaseLock();
    const [httpPort, tcpPort] = out.trim().split(" ");
    const rate = async (port: string) => {
      const blob = new TestBlob(size);
      const start = performance.now();
      const url = `http://127.0.0.1:${port}/drain?digest=${blob.digest}`;
      const res = await rawSend(url, "POST", size, blob.pieces(0, size));
      if (res.status !== 201) throw new Error(`drain peer: ${res.status}`);
      return mbps(size, performance.now() - start);
    };
    await rate(httpPort!); // warm-up
    return { http: await rate(httpPort!), tcp: await rate(tcpPort!) };
  } finally {
    child.kill("SIGTERM");
    await child.status;
    peers.delete(child);
    await child.stdout.cancel().catch(() => {});
  }
}

/** Measures the limits with `size` bytes each, using `dir` for the scratch file. */
export async function measureLimits(dir: string, size: number): Promise<Limits> {
  const hash = hashRate(size);
  const drain = await drainRates(size);
  const path = `${dir}/limits-scratch`;
  const fdatasyncWrite = await writeRate(path, size);
  const rawRead = await readRate(path);
  await Deno.remove(path);
  return { hash, drainHashHttp: drain.http, drainHashTcp: drain.tcp, fdatasyncWrite, rawRead };
}
