/**
 * An in-process Berth whose every request is observed (its status even when
 * the client has gone, and every error Berth logs as unhandled), a snapshot of
 * everything it has written, and raw HTTP/1.1 over a socket. Shared by
 * `hostile_test.ts` and `fuzz_test.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createApp } from "../src/app.ts";
import { type Config, defaultConfig } from "../src/config.ts";
import type { Logger } from "../src/log.ts";
import { KvMetadataStore } from "../src/meta/metadata_store.ts";
import { FsBlobStore } from "../src/storage/fs_blob_store.ts";
import type { TestRegistry } from "./_registry.ts";

/** What Berth answered to one request, whether or not the client was there to read it. */
export interface Seen {
  method: string;
  url: string;
  status: number;
}

/** A registry on 127.0.0.1:0 whose every request and unhandled error is recorded. */
export class ObservedRegistry implements AsyncDisposable {
  readonly seen: Seen[] = [];
  readonly unhandled: unknown[] = [];
  started = 0;
  finished = 0;
  #waiters = new Set<() => void>();
  #server!: Deno.HttpServer<Deno.NetAddr>;
  kv!: Deno.Kv;
  meta!: KvMetadataStore;
  blobs!: FsBlobStore;
  dataDir = "";
  url = "";
  port = 0;

  /** Starts Berth on 127.0.0.1:0 with an in-memory KV and a temp data dir. */
  static async start(overrides: Partial<Config> = {}): Promise<ObservedRegistry> {
    const reg = new ObservedRegistry();
    reg.dataDir = await Deno.makeTempDir({ prefix: "berth-observed-" });
    reg.kv = await Deno.openKv(":memory:");
    reg.meta = new KvMetadataStore(reg.kv);
    reg.blobs = await FsBlobStore.open(reg.dataDir);
    const config = { ...defaultConfig(), data: reg.dataDir, kv: ":memory:", ...overrides };
    const quiet = () => {};
    const log: Logger = {
      debug: quiet,
      info: quiet,
      warn: quiet,
      error: (event, fields) => reg.unhandled.push({ event, ...fields }),
    };
    const app = createApp({
      meta: reg.meta,
      blobs: reg.blobs,
      config,
      log,
    });
    reg.#server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      reg.started++;
      reg.#changed();
      try {
        const res = await app(req);
        reg.seen.push({ method: req.method, url: req.url.slice(0, 200), status: res.status });
        return res;
      } finally {
        reg.finished++;
        reg.#changed();
      }
    });
    reg.port = reg.#server.addr.port;
    reg.url = `http://127.0.0.1:${reg.port}`;
    return reg;
  }

  #changed(): void {
    for (const waiter of this.#waiters) waiter();
  }

  /** Resolves once `condition()` holds, re-checked on every request start and end. */
  async until(condition: () => boolean, what: string): Promise<void> {
    if (condition()) return;
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const check = () => condition() && resolve();
    this.#waiters.add(check);
    const guard = setTimeout(() => reject(new Error(`Timed out waiting for ${what}`)), 10_000);
    try {
      await promise;
    } finally {
      clearTimeout(guard);
      this.#waiters.delete(check);
    }
  }

  /** Resolves once no request is being handled. */
  idle(): Promise<void> {
    return this.until(() => this.started === this.finished, "the server to go idle");
  }

  fetch(path: string, init?: RequestInit): Promise<Response> {
    return fetch(this.url + path, init);
  }

  /** This registry in the shape the `_registry.ts` push helpers take. */
  asTestRegistry(): TestRegistry {
    return {
      url: this.url,
      dataDir: this.dataDir,
      meta: this.meta,
      kv: this.kv,
      blobs: this.blobs,
      fetch: (path, init) => this.fetch(path, init),
      [Symbol.asyncDispose]: () => this[Symbol.asyncDispose](),
    };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#server.shutdown();
    this.kv.close();
    await Deno.remove(this.dataDir, { recursive: true });
  }
}

/** Everything written so far: KV keys with versionstamps, and the data directory trees. */
export async function snapshot(reg: ObservedRegistry): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of reg.kv.list({ prefix: [] })) {
    out.push(`kv ${Deno.inspect(entry.key)} @${entry.versionstamp}`);
  }
  async function walk(dir: string, shown: string): Promise<void> {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      if (entry.isDirectory) {
        out.push(`dir ${shown}/${entry.name}`);
        await walk(path, `${shown}/${entry.name}`);
      } else {
        out.push(`file ${shown}/${entry.name} ${(await Deno.stat(path)).size}`);
      }
    }
  }
  for (const dir of ["blobs", "uploads", "tmp"]) await walk(join(reg.dataDir, dir), dir);
  return out.sort();
}

// -- raw HTTP/1.1 --------------------------------------------------------------

export const encoder: TextEncoder = new TextEncoder();
export const decoder: TextDecoder = new TextDecoder();

export function bytesOf(value: string | Uint8Array): Uint8Array {
  return typeof value === "string" ? encoder.encode(value) : value;
}

export function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** A response read off a raw socket; `status` is null when the server closed without one. */
export interface RawResponse {
  status: number | null;
  headers: Headers;
  body: string;
}

export function parseRawResponse(bytes: Uint8Array): RawResponse {
  const text = decoder.decode(bytes);
  const end = text.indexOf("\r\n\r\n");
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(text);
  if (!match || end === -1) return { status: null, headers: new Headers(), body: text };
  const headers = new Headers();
  for (const line of text.slice(0, end).split("\r\n").slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  let body = text.slice(end + 4);
  const length = headers.get("content-length");
  if (length !== null) body = body.slice(0, Number(length));
  return { status: Number(match[1]), headers, body };
}

/**
 * Writes `head` + `body` to a fresh connection, then `late` once Berth has
 * started handling the request. `cut` ends the request early: `closeWrite`
 * half-closes (the answer is still read), `disconnect` closes the socket as
 * soon as Berth has started handling the request.
 */
export async function rawExchange(
  reg: ObservedRegistry,
  bytes: Uint8Array,
  options: { cut?: "closeWrite" | "disconnect"; late?: Uint8Array } = {},
): Promise<RawResponse> {
  const { cut, late } = options;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: reg.port });
  const startedBefore = reg.started;
  try {
    let written = 0;
    while (written < bytes.length) written += await conn.write(bytes.subarray(written));
  } catch {
    // The server may close first (it rejected the head); read what it said.
  }
  if (cut || late) await reg.until(() => reg.started > startedBefore, "Berth to start the request");
  if (late) {
    let written = 0;
    while (written < late.length) written += await conn.write(late.subarray(written));
  }
  if (cut === "disconnect") {
    conn.close();
    return { status: null, headers: new Headers(), body: "" };
  }
  if (cut === "closeWrite") await conn.closeWrite();
  // Read until the answer is complete, not until EOF: Deno keeps a connection
  // open while it still expects a declared body, even after answering.
  const chunks: Uint8Array[] = [];
  let timedOut = false;
  const guard = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, 10_000);
  try {
    const buffer = new Uint8Array(64 * 1024);
    while (!isComplete(concat(...chunks))) {
      const n = await conn.read(buffer);
      if (n === null) break;
      chunks.push(buffer.slice(0, n));
    }
  } catch (error) {
    if (!timedOut && !(error instanceof Deno.errors.ConnectionReset)) throw error;
  } finally {
    clearTimeout(guard);
    if (!timedOut) conn.close();
  }
  assert.ok(!timedOut, "the server neither answered nor closed the connection");
  return parseRawResponse(concat(...chunks));
}

/** Whether `bytes` hold a whole response (head, and a body of its Content-Length). */
export function isComplete(bytes: Uint8Array): boolean {
  const text = decoder.decode(bytes);
  const end = text.indexOf("\r\n\r\n");
  if (end === -1) return false;
  const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))?.[1];
  if (length !== undefined) return encoder.encode(text.slice(end + 4)).length >= Number(length);
  if (/\r\ntransfer-encoding: *chunked/i.test(text.slice(0, end))) {
    return text.endsWith("0\r\n\r\n");
  }
  return false;
}
