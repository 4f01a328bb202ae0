/**
 * Test harness: a real Berth on an ephemeral loopback port, in process
 * (`startRegistry`) or as a subprocess that can be killed (`spawnRegistry`),
 * plus small helpers for pushing content.
 *
 * @module
 */
import { createHash } from "node:crypto";
import assert from "node:assert/strict";
import { createApp } from "../src/app.ts";
import { openAuth } from "../src/auth/open.ts";
import { checkSecurity, type Config, defaultConfig } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import { KvMetadataStore } from "../src/meta/metadata_store.ts";
import { FsBlobStore } from "../src/storage/fs_blob_store.ts";
import { bytesOf } from "./_blob_store_suite.ts";

/** A running in-process registry. Dispose it with `await using`. */
export interface TestRegistry extends AsyncDisposable {
  url: string;
  dataDir: string;
  meta: KvMetadataStore;
  /** The registry's KV itself, for tests that inspect every key. */
  kv: Deno.Kv;
  blobs: FsBlobStore;
  /** `fetch` relative to the registry. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
}

/** Starts Berth on 127.0.0.1:0 with an in-memory KV and a temp data dir. */
export async function startRegistry(overrides: Partial<Config> = {}): Promise<TestRegistry> {
  const dataDir = await Deno.makeTempDir({ prefix: "berth-test-" });
  const config = {
    ...defaultConfig(),
    data: dataDir,
    kv: ":memory:",
    logLevel: "error" as const,
    ...overrides,
  };
  const kv = await Deno.openKv(":memory:");
  const meta = new KvMetadataStore(kv);
  const blobs = await FsBlobStore.open(dataDir);
  checkSecurity(config);
  const log = createLogger(config.logLevel);
  const secured = config.auth !== "none" || config.policy !== "";
  const auth = secured ? await openAuth(config, log) : undefined;
  const app = createApp({ meta, blobs, config, log, ...(auth ? { auth } : {}) });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app);
  const url = `http://127.0.0.1:${server.addr.port}`;
  return {
    url,
    dataDir,
    meta,
    kv,
    blobs,
    fetch: (path, init) => fetch(path.startsWith("http") ? path : url + path, init),
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      kv.close();
      await Deno.remove(dataDir, { recursive: true });
    },
  };
}

/** The sha256 digest of `bytes`. */
export function sha256(bytes: Uint8Array | string): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** The sha512 digest of `bytes`. */
export function sha512(bytes: Uint8Array | string): string {
  return `sha512:${createHash("sha512").update(bytes).digest("hex")}`;
}

/** Deterministic pseudo-random bytes (xorshift), so failures reproduce. */
export const randomBytes = bytesOf;

/** Whether a file or directory exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Reads and discards a response body, returning its text. */
export async function text(res: Response): Promise<string> {
  return await res.text();
}

/** Asserts an OCI error response with `status` and `code`, consuming the body. */
export async function assertError(res: Response, status: number, code: string): Promise<void> {
  const body = await res.text();
  assert.equal(res.status, status, `expected ${status} ${code}, got ${res.status}: ${body}`);
  if (res.status === 405 && !body) return;
  const parsed = JSON.parse(body) as { errors: { code: string; message?: string }[] };
  assert.ok(Array.isArray(parsed.errors) && parsed.errors.length > 0, `no errors array in ${body}`);
  assert.equal(parsed.errors[0]!.code, code, body);
}

/** Pushes a blob monolithically (POST ?digest=) and returns its digest. */
export async function pushBlob(
  reg: TestRegistry,
  name: string,
  bytes: Uint8Array<ArrayBuffer> | string,
): Promise<string> {
  const digest = sha256(bytes);
  const res = await reg.fetch(`/v2/${name}/blobs/uploads/?digest=${digest}`, {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream" },
    body: typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes,
  });
  await res.body?.cancel();
  assert.equal(res.status, 201, `push blob ${digest} to ${name}`);
  return digest;
}

/** An OCI image manifest over the given config and layers (their bytes). */
export function imageManifest(
  config: { digest: string; size: number; mediaType?: string },
  layers: { digest: string; size: number }[],
  extra: Record<string, unknown> = {},
): string {
  return JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {
      mediaType: config.mediaType ?? "application/vnd.oci.image.config.v1+json",
      digest: config.digest,
      size: config.size,
    },
    layers: layers.map((l) => ({
      mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
      digest: l.digest,
      size: l.size,
    })),
    ...extra,
  });
}

/** PUTs the OCI image manifest `body` under each of `tags`, asserting 201. */
export async function tagAll(
  reg: TestRegistry,
  name: string,
  body: string,
  tags: string[],
): Promise<void> {
  for (const tag of tags) {
    const res = await reg.fetch(`/v2/${name}/manifests/${tag}`, {
      method: "PUT",
      headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
      body,
    });
    await res.body?.cancel();
    assert.equal(res.status, 201, tag);
  }
}

/** Pushes a small image (config + one layer) and its manifest under `reference`; returns digests. */
export async function pushImage(
  reg: TestRegistry,
  name: string,
  reference: string,
  options: { seed?: number; extra?: Record<string, unknown> } = {},
): Promise<{ manifest: string; digest: string; config: string; layer: string; body: string }> {
  const seed = options.seed ?? 1;
  const configBytes = JSON.stringify({ architecture: "amd64", os: "linux", seed });
  const layerBytes = randomBytes(1000 + seed, seed);
  const config = await pushBlob(reg, name, configBytes);
  const layer = await pushBlob(reg, name, layerBytes);
  const body = imageManifest(
    { digest: config, size: new TextEncoder().encode(configBytes).length },
    [{ digest: layer, size: layerBytes.length }],
    options.extra,
  );
  const res = await reg.fetch(`/v2/${name}/manifests/${reference}`, {
    method: "PUT",
    headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
    body,
  });
  const detail = await res.text();
  assert.equal(res.status, 201, `push manifest ${name}:${reference}: ${detail}`);
  return { manifest: body, digest: sha256(body), config, layer, body };
}

/** Runs `main.ts` with `args` to the end (a command, or a start-up that must fail). */
export async function runMain(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const main = new URL("../main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--unstable-kv", "-A", main, ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** A Berth subprocess (`main.ts serve`) on an ephemeral port. */
export interface RegistryProcess extends AsyncDisposable {
  url: string;
  pid: number;
  /** SIGKILL and wait. */
  kill(): Promise<void>;
  /** SIGTERM and wait; returns the exit code. */
  stop(): Promise<number>;
  /** The lines the server has written to stdout since it listened (its log; the last 10,000). */
  readonly lines: string[];
  /** Whether the process has exited. */
  readonly exited: boolean;
  /** Everything it wrote to stderr, once it has exited (with `captureStderr`; else ""). */
  readonly stderr: Promise<string>;
}

/**
 * Starts `main.ts serve` on 127.0.0.1 with `args`, waiting until it listens.
 * `main` runs another checkout's `main.ts` (an older release) instead;
 * `openFileLimit` runs it under `ulimit -n`; `captureStderr` keeps its stderr.
 */
export async function spawnRegistry(
  args: string[],
  env: Record<string, string> = {},
  options: { main?: string; openFileLimit?: number; captureStderr?: boolean } = {},
): Promise<RegistryProcess> {
  const main = options.main ?? new URL("../main.ts", import.meta.url).pathname;
  const argv = [Deno.execPath(), "run", "--unstable-kv", "-A", main, "serve"]
    .concat(["--listen", "127.0.0.1:0", "--log-level", "warn", ...args]);
  // `exec` keeps the PID: signals reach the server itself.
  const quoted = argv.map((word) => `'${word.replaceAll("'", "'\\''")}'`).join(" ");
  const [command, commandArgs] = options.openFileLimit === undefined
    ? [argv[0]!, argv.slice(1)]
    : ["bash", ["-c", `ulimit -n ${options.openFileLimit} && exec ${quoted}`]];
  const child = new Deno.Command(command, {
    args: commandArgs,
    env,
    stdout: "piped",
    stderr: options.captureStderr ? "piped" : "inherit",
  }).spawn();
  const stderr = options.captureStderr ? new Response(child.stderr).text() : Promise.resolve("");
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  let url = "";
  const deadline = Date.now() + 20_000;
  while (!url && Date.now() < deadline) {
    const { done, value } = await reader.read();
    if (done) break;
    seen += value;
    url = /listening on (https?:\/\/[^/ ]+)/.exec(seen)?.[1] ?? "";
  }
  // Keep draining stdout so the child never blocks on a full pipe, keeping the lines.
  const lines: string[] = [];
  let partial = seen.slice(seen.indexOf("\n", seen.indexOf("listening on")) + 1);
  const drain = (async () => {
    try {
      for (let chunk; !(chunk = await reader.read()).done;) {
        partial += chunk.value;
        const complete = partial.split("\n");
        partial = complete.pop()!;
        lines.push(...complete.filter((line) => line !== ""));
        if (lines.length > 10_000) lines.splice(0, lines.length - 10_000);
      }
    } catch { /* closed */ }
  })();
  if (!url) {
    child.kill("SIGKILL");
    await child.status;
    await drain;
    throw new Error(`registry did not start: ${seen}`);
  }
  let exited = false;
  const status = child.status.then((s) => (exited = true, s));
  const wait = () => status;
  const kill = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await wait();
    await drain;
  };
  return {
    url,
    pid: child.pid,
    lines,
    get exited() {
      return exited;
    },
    stderr,
    kill,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const status = await wait();
      await drain;
      return status.code;
    },
    [Symbol.asyncDispose]: kill,
  };
}
