/**
 * `deno task bench` (without `--vs`): Berth's throughput measured against this machine's own
 * limits and against a bare `Deno.serve` peer, all in one run, so every figure
 * is a ratio that carries across machines.
 *
 * - upload: a large blob pushed monolithically and in 8 MiB chunks, against
 *   the raw cost of hashing with node:crypto and writing + fsyncing the file;
 *   the server's peak RSS shows that memory stays flat.
 * - download: a large blob pulled, against reading the file raw.
 * - manifest GET: requests/s against a bare `Deno.serve` returning the same
 *   bytes, with the same client and concurrency; once over kept-alive
 *   connections and once with a new connection for every request, which is
 *   where the connection guard's cost per connection (accept, connect to the
 *   internal server, its accept) shows.
 * - tags list: one page of 100 from a repository of 100 tags and of 10,000.
 * - authentication: the manifest GET with Basic credentials (bcrypt cost 10,
 *   checked once and then remembered) and with a Bearer token (verified once,
 *   then remembered), against the anonymous one.
 *
 * Options: `--size-mib N` (default 512), `--requests N` (default 20000),
 * `--berth-args "..."` (passed to `berth serve`, e.g. `--berth-args="--idle-timeout 0"` to
 * measure without the connection guard). The output says whether the guard was on.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { hashSync } from "bcryptjs";
import { spawnRegistry } from "../tests/_registry.ts";
import { rawSend } from "./client.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "size-mib": { type: "string", default: "512" },
    requests: { type: "string", default: "20000" },
    "berth-args": { type: "string", default: "" },
  },
});
const SIZE = Number(values["size-mib"]) * 1024 * 1024;
const REQUESTS = Number(values.requests);
const CONCURRENCY = 32;
const CHUNK = new Uint8Array(1024 * 1024).map((_, i) => (i * 2654435761) >>> 24);

/** `size` bytes of the pattern, a MiB at a time. */
function* pieces(size: number): Generator<Uint8Array> {
  for (let sent = 0; sent < size; sent += CHUNK.length) {
    yield CHUNK.subarray(0, Math.min(CHUNK.length, size - sent));
  }
}

/** Sends a request with a `size`-byte body over a raw socket (see `rawSend` in `client.ts`). */
function sendBody(
  url: string,
  method: string,
  size: number,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers }> {
  return rawSend(url, method, size, pieces(size), headers);
}

function digestOf(size: number): string {
  const hash = createHash("sha256");
  for (let done = 0; done < size; done += CHUNK.length) {
    hash.update(CHUNK.subarray(0, Math.min(CHUNK.length, size - done)));
  }
  return `sha256:${hash.digest("hex")}`;
}

async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const start = performance.now();
  const result = await fn();
  return [(performance.now() - start) / 1000, result];
}

const mbps = (bytes: number, seconds: number) => bytes / seconds / 1e6;

async function rawHash(size: number): Promise<number> {
  const [s] = await timed(() => Promise.resolve(digestOf(size)));
  return mbps(size, s);
}

async function rawWrite(dir: string, size: number): Promise<number> {
  const path = `${dir}/raw-write`;
  const [s] = await timed(async () => {
    using file = await Deno.open(path, { create: true, write: true, truncate: true });
    const buf = new Uint8Array(256 * 1024).map((_, i) => i & 0xff);
    for (let done = 0; done < size; done += buf.length) await file.write(buf);
    await file.sync();
  });
  return mbps(size, s);
}

async function rawRead(path: string): Promise<number> {
  const [s, size] = await timed(async () => {
    using file = await Deno.open(path, { read: true });
    const buf = new Uint8Array(1024 * 1024);
    let total = 0;
    for (let n = await file.read(buf); n !== null; n = await file.read(buf)) total += n;
    return total;
  });
  return mbps(size, s);
}

function peakRssMib(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

/** Whether `berth serve` with these arguments runs behind the connection guard. */
function guardOn(args: string[]): boolean {
  const i = args.findLastIndex((arg) =>
    arg === "--idle-timeout" || arg.startsWith("--idle-timeout=")
  );
  const value = i === -1
    ? Deno.env.get("BERTH_IDLE_TIMEOUT")
    : args[i]!.split("=")[1] ?? args[i + 1];
  return value === undefined || !/^0+(ms|s|m|h|d)?$/.test(value);
}

async function load(
  urls: string[],
  requests: number,
  init?: RequestInit & { client?: Deno.HttpClient },
): Promise<number> {
  let next = 0;
  const [s] = await timed(async () => {
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < requests) {
        const url = urls[next++ % urls.length]!;
        const res = await fetch(url, init);
        await res.arrayBuffer();
        if (!res.ok) throw new Error(`${url}: ${res.status}`);
      }
    }));
  });
  return requests / s;
}

/**
 * Downloads `url` and discards the body, with curl when it is installed: Deno's
 * `fetch` reads large bodies slowly enough to measure itself rather than the server.
 */
async function download(url: string): Promise<void> {
  try {
    const out = await new Deno.Command("curl", { args: ["-sSf", "-o", "/dev/null", url] }).output();
    if (!out.success) throw new Error(`curl ${url}: ${new TextDecoder().decode(out.stderr)}`);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    const res = await fetch(url);
    const reader = res.body!.getReader();
    while (!(await reader.read()).done) { /* drain */ }
  }
}

/** Starts bench/_peer.ts as a subprocess and returns its base URL and a stop function. */
async function startPeer(
  dir: string,
  manifest: string,
): Promise<{ url: string } & AsyncDisposable> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./_peer.ts", import.meta.url).pathname, dir, manifest],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { done, value } = await reader.read();
    if (done) break;
    out += value;
  }
  reader.releaseLock();
  return {
    url: `http://127.0.0.1:${out.trim()}`,
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      await child.status;
      await child.stdout.cancel().catch(() => {});
    },
  };
}

async function main() {
  const dir = await Deno.makeTempDir({ prefix: "berth-bench-" });
  const rows: string[][] = [];
  const row = (what: string, berth: string, limit: string, ratio: number) =>
    rows.push([what, berth, limit, `${(ratio * 100).toFixed(0)}%`]);
  const extra = values["berth-args"]!.split(" ").filter(Boolean);
  await using reg = await spawnRegistry(["--data", `${dir}/data`, ...extra], {
    BERTH_LOG_LEVEL: "warn",
  });
  try {
    const hashRate = await rawHash(SIZE);
    const writeRate = await rawWrite(dir, SIZE);
    const limit = 1 / (1 / hashRate + 1 / writeRate); // hashing then writing, one after the other
    const ceiling = Math.min(hashRate, writeRate); // perfectly overlapped
    const digest = digestOf(SIZE);
    const config = new TextEncoder().encode("{}");
    const cfgDigest = `sha256:${createHash("sha256").update(config).digest("hex")}`;
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: cfgDigest, size: 2 },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest, size: SIZE }],
    });
    await using peer = await startPeer(dir, manifest);

    const [upS, up] = await timed(() =>
      sendBody(`${reg.url}/v2/bench/blobs/uploads/?digest=${digest}`, "POST", SIZE)
    );
    if (up.status !== 201) throw new Error(`upload: ${up.status}`);
    const upRate = mbps(SIZE, upS);
    row(
      `monolithic upload ${SIZE >> 20} MiB`,
      `${upRate.toFixed(0)} MB/s`,
      `hash+write ${limit.toFixed(0)} MB/s (overlapped ${ceiling.toFixed(0)})`,
      upRate / limit,
    );
    const [peerUpS, peerUp] = await timed(() =>
      sendBody(`${peer.url}/upload?digest=${digest}`, "POST", SIZE)
    );
    if (peerUp.status !== 201) throw new Error(`peer upload: ${peerUp.status}`);
    const peerUpRate = mbps(SIZE, peerUpS);
    row(
      `monolithic upload ${SIZE >> 20} MiB, against the obvious server`,
      `${upRate.toFixed(0)} MB/s`,
      `peer (hash+write each chunk) ${peerUpRate.toFixed(0)} MB/s`,
      upRate / peerUpRate,
    );

    const post = await fetch(`${reg.url}/v2/bench/blobs/uploads/`, { method: "POST" });
    await post.body?.cancel();
    let location = post.headers.get("Location")!;
    const chunk = 8 * 1024 * 1024;
    const [chS] = await timed(async () => {
      for (let offset = 0; offset < SIZE; offset += chunk) {
        const n = Math.min(chunk, SIZE - offset);
        const res = await sendBody(reg.url + location, "PATCH", n, {
          "Content-Range": `${offset}-${offset + n - 1}`,
        });
        if (res.status !== 202) throw new Error(`PATCH: ${res.status}`);
        location = res.headers.get("Location")!;
      }
      // Chunks differ from the monolithic body (each restarts the pattern): finish with their digest.
      const hash = createHash("sha256");
      for (let offset = 0; offset < SIZE; offset += chunk) {
        const n = Math.min(chunk, SIZE - offset);
        for (let done = 0; done < n; done += CHUNK.length) {
          hash.update(CHUNK.subarray(0, Math.min(CHUNK.length, n - done)));
        }
      }
      const res = await fetch(`${reg.url}${location}?digest=sha256:${hash.digest("hex")}`, {
        method: "PUT",
      });
      await res.body?.cancel();
      if (res.status !== 201) throw new Error(`chunked upload: ${res.status}`);
    });
    const chRate = mbps(SIZE, chS);
    row(
      `chunked upload (8 MiB PATCHes) + assembly`,
      `${chRate.toFixed(0)} MB/s`,
      `hash+write ${limit.toFixed(0)} MB/s`,
      chRate / limit,
    );
    const rss = peakRssMib(reg.pid);
    rows.push([
      `server peak RSS after ${2 * (SIZE >> 20)} MiB uploaded`,
      `${rss.toFixed(0)} MiB`,
      "blob size",
      `${(rss / (SIZE / 1048576) * 100).toFixed(0)}%`,
    ]);

    const hex = digest.slice(7);
    const readRate = await rawRead(`${dir}/data/blobs/sha256/${hex.slice(0, 2)}/${hex}`);
    const [downS] = await timed(() => download(`${reg.url}/v2/bench/blobs/${digest}`));
    const downRate = mbps(SIZE, downS);
    row(
      `blob download ${SIZE >> 20} MiB`,
      `${downRate.toFixed(0)} MB/s`,
      `raw file read ${readRate.toFixed(0)} MB/s`,
      downRate / readRate,
    );
    const blobPath = `${dir}/data/blobs/sha256/${hex.slice(0, 2)}/${hex}`;
    const [peerDownS] = await timed(() =>
      download(`${peer.url}/download?path=${encodeURIComponent(blobPath)}`)
    );
    const peerDownRate = mbps(SIZE, peerDownS);
    row(
      `blob download ${SIZE >> 20} MiB, against the obvious server`,
      `${downRate.toFixed(0)} MB/s`,
      `peer (new Response(file.readable)) ${peerDownRate.toFixed(0)} MB/s`,
      downRate / peerDownRate,
    );

    // Manifest GET against the peer serving the same bytes.
    await (await fetch(`${reg.url}/v2/bench/blobs/uploads/?digest=${cfgDigest}`, {
      method: "POST",
      body: config,
    })).body?.cancel();
    await (await fetch(`${reg.url}/v2/bench/manifests/latest`, {
      method: "PUT",
      headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
      body: manifest,
    })).body?.cancel();
    const peerUrl = `${peer.url}/manifest`;
    await load([peerUrl], 2000);
    const peerRate = await load([peerUrl], REQUESTS);
    await load([`${reg.url}/v2/bench/manifests/latest`], 2000);
    const tagRate = await load([`${reg.url}/v2/bench/manifests/latest`], REQUESTS);
    row(
      "manifest GET by tag",
      `${tagRate.toFixed(0)} req/s`,
      `peer (fixed bytes) ${peerRate.toFixed(0)} req/s`,
      tagRate / peerRate,
    );
    // A new connection for every request (fewer of them: each leaves sockets in TIME_WAIT).
    {
      using client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
      const fresh = Math.min(REQUESTS, 4000);
      const peerFresh = await load([peerUrl], fresh, { client });
      const tagFresh = await load([`${reg.url}/v2/bench/manifests/latest`], fresh, { client });
      row(
        "manifest GET by tag, a new connection each",
        `${tagFresh.toFixed(0)} req/s`,
        `peer (fixed bytes) ${peerFresh.toFixed(0)} req/s`,
        tagFresh / peerFresh,
      );
    }
    const headRate = await load([`${reg.url}/v2/bench/blobs/${digest}`], REQUESTS, {
      method: "HEAD",
    });
    row(
      "blob HEAD",
      `${headRate.toFixed(0)} req/s`,
      `peer (fixed bytes) ${peerRate.toFixed(0)} req/s`,
      headRate / peerRate,
    );

    // Tags list: a page of 100 costs the same in a repository of 100 tags and of 10,000.
    const putTags = async (name: string, count: number) => {
      await (await fetch(`${reg.url}/v2/${name}/blobs/uploads/?mount=${cfgDigest}&from=bench`, {
        method: "POST",
      })).body?.cancel();
      await (await fetch(`${reg.url}/v2/${name}/blobs/uploads/?mount=${digest}&from=bench`, {
        method: "POST",
      })).body?.cancel();
      let i = 0;
      await Promise.all(Array.from({ length: 16 }, async () => {
        while (i < count) {
          const tag = `t${String(i++).padStart(6, "0")}`;
          const res = await fetch(`${reg.url}/v2/${name}/manifests/${tag}`, {
            method: "PUT",
            headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
            body: manifest,
          });
          await res.body?.cancel();
        }
      }));
    };
    await putTags("small", 100);
    await putTags("large", 10_000);
    const small = await load([`${reg.url}/v2/small/tags/list?n=100`], 2000);
    const large = await load([`${reg.url}/v2/large/tags/list?n=100&last=t005000`], 2000);
    row(
      "tags list page of 100: repo of 10,000 tags",
      `${large.toFixed(0)} req/s`,
      `repo of 100 tags ${small.toFixed(0)} req/s`,
      large / small,
    );

    // Authentication: the same manifest GET with credentials, against the anonymous one.
    const users = `${dir}/htpasswd`;
    await Deno.writeTextFile(users, `bench:${hashSync("bench-pw", 10)}\n`);
    const basicAuth = `Basic ${btoa("bench:bench-pw")}`;
    for (const mode of ["basic", "token"] as const) {
      const args = ["--data", `${dir}/${mode}`, "--htpasswd", users, ...extra];
      await using secured = await spawnRegistry(
        mode === "token" ? [...args, "--auth", "token"] : args,
        {
          BERTH_LOG_LEVEL: "warn",
        },
      );
      let authorization = basicAuth;
      if (mode === "token") {
        const res = await fetch(
          `${secured.url}/token?service=berth&scope=repository:bench:pull,push`,
          {
            headers: { Authorization: basicAuth },
          },
        );
        authorization = `Bearer ${(await res.json()).token}`;
      }
      const headers = { Authorization: authorization };
      await (await fetch(`${secured.url}/v2/bench/blobs/uploads/?digest=${cfgDigest}`, {
        method: "POST",
        headers,
        body: config,
      })).body?.cancel();
      const put = await fetch(`${secured.url}/v2/bench/manifests/latest`, {
        method: "PUT",
        headers: { ...headers, "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
        body: JSON.stringify({ ...JSON.parse(manifest), layers: [] }),
      });
      await put.body?.cancel();
      if (put.status !== 201) throw new Error(`${mode} manifest PUT: ${put.status}`);
      const url = `${secured.url}/v2/bench/manifests/latest`;
      const anonymousUrl = `${reg.url}/v2/bench/manifests/latest`;
      await load([url], 2000, { headers });
      // Interleaved, best of two each, so a busy moment of the machine hurts neither side.
      let rate = 0;
      let anonymous = 0;
      for (let round = 0; round < 2; round++) {
        anonymous = Math.max(anonymous, await load([anonymousUrl], REQUESTS));
        rate = Math.max(rate, await load([url], REQUESTS, { headers }));
      }
      row(
        `manifest GET by tag, ${mode === "basic" ? "Basic credentials" : "a Bearer token"}`,
        `${rate.toFixed(0)} req/s`,
        `anonymous, no authentication ${anonymous.toFixed(0)} req/s`,
        rate / anonymous,
      );
      await secured.stop();
    }
  } finally {
    await reg.stop();
    await Deno.remove(dir, { recursive: true });
  }
  const guard = guardOn(extra) ? "on" : "off";
  console.log(
    `\nBerth bench (Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores, ${
      new Date().toISOString()
    }; connection guard ${guard}, berth args: ${extra.join(" ") || "none"})\n`,
  );
  console.log("| measure | Berth | reference (same run) | ratio |");
  console.log("| --- | --- | --- | --- |");
  for (const r of rows) console.log(`| ${r.join(" | ")} |`);
}

await main();
