/**
 * The bench's client, the same for every registry it drives: blob contents
 * that are cheap to make and unique per push, pushes the way docker does them
 * (POST, then one streamed PATCH or several 16 MiB ones, then PUT with the
 * digest) over a raw socket, `hey` for request rates, curl for downloads.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import { childrenCpuSeconds } from "./proc.ts";

const MIB = 1024 * 1024;
/** One MiB of a fixed pattern: every blob is this, repeated, with a unique last MiB. */
export const PATTERN = new Uint8Array(MIB).map((_, i) => (i * 2654435761) >>> 24);

const prefixes = new Map<number, Hash>();

/** A blob of whole MiBs: the pattern repeated, its last MiB starting with 16 random bytes. */
export class TestBlob {
  readonly last: Uint8Array;
  readonly digest: string;
  constructor(readonly size: number) {
    if (size <= 0 || size % MIB !== 0) throw new Error(`blob size must be whole MiBs: ${size}`);
    this.last = PATTERN.slice();
    crypto.getRandomValues(this.last.subarray(0, 16));
    let prefix = prefixes.get(size);
    if (!prefix) {
      prefix = createHash("sha256");
      for (let i = 0; i < size / MIB - 1; i++) prefix.update(PATTERN);
      prefixes.set(size, prefix);
    }
    this.digest = `sha256:${prefix.copy().update(this.last).digest("hex")}`;
  }

  /** The bytes from `offset` (a whole MiB) for `length` bytes, a MiB at a time. */
  *pieces(offset: number, length: number): Generator<Uint8Array> {
    for (let at = offset; at < offset + length; at += MIB) {
      const mib = at + MIB >= this.size ? this.last : PATTERN;
      yield mib.subarray(0, Math.min(MIB, offset + length - at));
    }
  }
}

/** A small blob held in memory (configs, layers of test images). */
export function smallBlob(
  bytes: Uint8Array<ArrayBuffer>,
): { bytes: Uint8Array<ArrayBuffer>; digest: string } {
  return { bytes, digest: `sha256:${createHash("sha256").update(bytes).digest("hex")}` };
}

/**
 * Sends one request whose body is `pieces` (`length` bytes) over a raw socket
 * and reads the response head. Deno's `fetch` with a streamed body runs at a
 * few MB/s, which would measure the client.
 */
export async function rawSend(
  url: string,
  method: string,
  length: number,
  pieces: Iterable<Uint8Array>,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers }> {
  const target = new URL(url);
  const conn = await Deno.connect({ hostname: target.hostname, port: Number(target.port) });
  try {
    const head = [
      `${method} ${target.pathname}${target.search} HTTP/1.1`,
      `Host: ${target.host}`,
      `Content-Length: ${length}`,
      "Connection: close",
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    ];
    const writeAll = async (bytes: Uint8Array) => {
      for (let written = 0; written < bytes.length;) {
        written += await conn.write(bytes.subarray(written));
      }
    };
    await writeAll(new TextEncoder().encode(head.join("\r\n") + "\r\n\r\n"));
    for (const piece of pieces) await writeAll(piece);
    let response = "";
    const buf = new Uint8Array(4096);
    const decoder = new TextDecoder();
    while (!response.includes("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      response += decoder.decode(buf.subarray(0, n));
    }
    const [statusLine, ...lines] = response.split("\r\n\r\n")[0]!.split("\r\n");
    const parsed = new Headers();
    for (const line of lines) {
      const i = line.indexOf(":");
      if (i > 0) parsed.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
    }
    return { status: Number(statusLine?.split(" ")[1]), headers: parsed };
  } finally {
    conn.close();
  }
}

function expect(what: string, status: number, wanted: number): void {
  if (status !== wanted) throw new Error(`${what}: HTTP ${status}, expected ${wanted}`);
}

function locate(base: string, headers: Headers, what: string): string {
  const location = headers.get("Location");
  if (!location) throw new Error(`${what}: no Location`);
  return new URL(location, base).href;
}

function withDigest(location: string, digest: string): string {
  const url = new URL(location);
  url.searchParams.set("digest", digest);
  return url.href;
}

/** `POST /v2/<repo>/blobs/uploads/`: the new session's absolute URL. */
export async function startUpload(base: string, repo: string): Promise<string> {
  const res = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: "POST" });
  await res.body?.cancel();
  expect("POST upload", res.status, 202);
  return locate(base, res.headers, "POST upload");
}

/** `PUT <session>?digest=` closing an upload, with an optional body. */
async function finishUpload(
  location: string,
  digest: string,
  body?: Uint8Array<ArrayBuffer>,
) {
  const res = await fetch(withDigest(location, digest), {
    method: "PUT",
    ...(body ? { body, headers: { "Content-Type": "application/octet-stream" } } : {}),
  });
  await res.body?.cancel();
  expect("PUT upload", res.status, 201);
}

/** Pushes a blob as docker does: POST, one PATCH streaming the whole body, PUT with the digest. */
export async function pushStreamed(base: string, repo: string, blob: TestBlob): Promise<void> {
  const session = await startUpload(base, repo);
  const res = await rawSend(session, "PATCH", blob.size, blob.pieces(0, blob.size), {
    "Content-Type": "application/octet-stream",
  });
  expect("PATCH", res.status, 202);
  await finishUpload(locate(base, res.headers, "PATCH"), blob.digest);
}

/** Pushes a blob in `chunk`-byte PATCHes with `Content-Range`, then PUT with the digest. */
export async function pushChunked(
  base: string,
  repo: string,
  blob: TestBlob,
  chunk: number,
): Promise<void> {
  let location = await startUpload(base, repo);
  for (let offset = 0; offset < blob.size; offset += chunk) {
    const n = Math.min(chunk, blob.size - offset);
    const res = await rawSend(location, "PATCH", n, blob.pieces(offset, n), {
      "Content-Type": "application/octet-stream",
      "Content-Range": `${offset}-${offset + n - 1}`,
    });
    expect(`PATCH at ${offset}`, res.status, 202);
    location = locate(base, res.headers, "PATCH");
  }
  await finishUpload(location, blob.digest);
}

/** Pushes a small blob in two requests: POST, then PUT with the body and digest. */
export async function pushSmall(
  base: string,
  repo: string,
  blob: { bytes: Uint8Array<ArrayBuffer>; digest: string },
): Promise<void> {
  await finishUpload(await startUpload(base, repo), blob.digest, blob.bytes);
}

/** Result of one `hey` run. */
export interface HeyResult {
  requestsPerSecond: number;
  requests: number;
  p99Ms: number;
  statuses: Record<string, number>;
  clientCpuS: number;
}

/**
 * Runs `hey` for `seconds` at `concurrency` connections and reads its summary.
 * Throws if any response had another status than `status` or any request failed.
 */
export async function hey(
  url: string,
  options: {
    seconds: number;
    concurrency: number;
    method?: string;
    accept?: string;
    status?: number;
  },
): Promise<HeyResult> {
  const args = ["-z", `${options.seconds}s`, "-c", String(options.concurrency)];
  if (options.method) args.push("-m", options.method);
  if (options.accept) args.push("-A", options.accept);
  const before = childrenCpuSeconds();
  const out = await new Deno.Command("/usr/bin/hey", { args: [...args, url] }).output();
  const clientCpuS = childrenCpuSeconds() - before;
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) throw new Error(`hey ${url}: ${new TextDecoder().decode(out.stderr)}`);
  const statuses: Record<string, number> = {};
  for (const [, code, count] of text.matchAll(/\[(\d+)\]\s+(\d+) responses/g)) {
    statuses[code!] = Number(count);
  }
  const requests = Object.values(statuses).reduce((a, b) => a + b, 0);
  const wanted = String(options.status ?? 200);
  if (requests === 0 || requests !== statuses[wanted] || /Error distribution/.test(text)) {
    throw new Error(`hey ${url}: not all ${wanted}:\n${text.slice(text.indexOf("Status"))}`);
  }
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1]);
  const p99 = Number(/99%+ in ([\d.]+) secs/.exec(text)?.[1]) * 1000;
  // hey leaves out the percentiles it has no sample for; then p99 is unknown, not 0.
  return { requestsPerSecond: rps, requests, p99Ms: p99, statuses, clientCpuS };
}

/** Downloads `url` with curl to /dev/null; returns the bytes and curl's own CPU seconds. */
export async function curlDownload(url: string): Promise<{ bytes: number; clientCpuS: number }> {
  const before = childrenCpuSeconds();
  const out = await new Deno.Command("curl", {
    args: ["-sSf", "-o", "/dev/null", "-w", "%{size_download}", url],
  }).output();
  const clientCpuS = childrenCpuSeconds() - before;
  if (!out.success) throw new Error(`curl ${url}: ${new TextDecoder().decode(out.stderr)}`);
  return { bytes: Number(new TextDecoder().decode(out.stdout)), clientCpuS };
}

/** Fetches every page of a tags list (following `Link`); returns the tags and the page count. */
export async function allTags(
  base: string,
  path: string,
): Promise<{ tags: string[]; pages: number }> {
  const tags: string[] = [];
  let pages = 0;
  for (let next: string | undefined = path; next;) {
    const res: Response = await fetch(new URL(next, base));
    if (!res.ok) throw new Error(`GET ${next}: ${res.status}`);
    tags.push(...((await res.json()).tags ?? []));
    pages++;
    next = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get("Link") ?? "")?.[1];
  }
  return { tags, pages };
}
