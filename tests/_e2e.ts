/**
 * The client harness shared by the end-to-end tests (tests/e2e_test.ts,
 * tests/e2e_auth_test.ts): finding and running the real registry clients
 * (skopeo, docker, ctr, buildah, podman) with private configs under one temp
 * dir, the tests/e2e/clients.sh helpers, and a private dockerd (with the
 * containerd it starts, used by `ctr` too) stopped by PID.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";

/** tests/e2e/clients.sh, sourced by {@linkcode lib}. */
export const CLIENTS_SH: string = new URL("./e2e/clients.sh", import.meta.url).pathname;
/** Where {@linkcode which} looks: PATH, plus the sbin directories (dockerd lives there). */
export const SEARCH_PATH: string[] = [
  ...(Deno.env.get("PATH") ?? "").split(":"),
  "/usr/sbin",
  "/sbin",
];

/** A finished client command. */
export interface Output {
  code: number;
  stdout: string;
  stderr: string;
  /** Wall time, in milliseconds. */
  ms: number;
}

/** What every client needs: the temp dir, its environment and the private daemons' sockets. */
export interface ClientEnv {
  /** The temp dir holding every client config and store. */
  tmp: string;
  /** Environment for every client (private configs under `tmp`). */
  vars: Record<string, string>;
  /** The docker CLI matching the private dockerd. */
  dockerBin: string;
  dockerSock: string;
  containerdSock: string;
  /** The containerd namespace `ctr` works in. */
  containerdNamespace: string;
  /** OCI layout written by clients.sh `make_test_images`. */
  layout: string;
}

/** The absolute path of executable `name` on {@linkcode SEARCH_PATH}, or null. */
export function which(name: string): string | null {
  for (const dir of SEARCH_PATH) {
    if (!dir) continue;
    try {
      const info = Deno.statSync(`${dir}/${name}`);
      if (info.isFile && (info.mode ?? 0o111) & 0o111) return `${dir}/${name}`;
    } catch { /* not here */ }
  }
  return null;
}

/** Whether `path` exists. */
export function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The last `lines` lines of `text`. */
export function tail(text: string, lines = 25): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/** A sha256 digest (`sha256:<hex>`) of bytes or a string. */
export function sha256(bytes: Uint8Array | string): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/**
 * The base client environment for temp dir `tmp`: config paths, sockets and
 * the test images' layout. `extraVars` are added to the clients' environment.
 */
export function clientEnv(
  tmp: string,
  containerdNamespace: string,
  extraVars: Record<string, string> = {},
): ClientEnv {
  return {
    tmp,
    vars: {
      CONTAINERS_REGISTRIES_CONF: `${tmp}/registries.conf`,
      CONTAINERS_STORAGE_CONF: `${tmp}/storage.conf`,
      CONTAINERS_CONF: `${tmp}/containers.conf`,
      REGISTRY_AUTH_FILE: `${tmp}/auth.json`,
      DOCKER_CONFIG: `${tmp}/docker-config`,
      TMPDIR: `${tmp}/tmp`,
      E2E_TMP: tmp,
      E2E_IMG: `${tmp}/img`,
      ...extraVars,
    },
    // Debian's docker CLI matches its dockerd (another one may come first on PATH).
    dockerBin: existsSync("/usr/bin/docker") ? "/usr/bin/docker" : which("docker") ?? "docker",
    dockerSock: `${tmp}/dk/docker.sock`,
    containerdSock: `${tmp}/dk/x/containerd/containerd.sock`,
    containerdNamespace,
    layout: `${tmp}/img/oci`,
  };
}

/** Runs a command to completion (killed after `timeoutMs`), output captured. */
export async function run(
  env: Pick<ClientEnv, "vars">,
  cmd: string,
  args: string[],
  timeoutMs = 120_000,
): Promise<Output> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  const start = performance.now();
  try {
    const out = await new Deno.Command(cmd, {
      args,
      env: env.vars,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: abort.signal,
    }).output();
    const decoder = new TextDecoder();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
      ms: Math.round(performance.now() - start),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** The command line, exit code, time and output tails of a finished command. */
export function describe(cmd: string, args: string[], out: Output): string {
  return `${cmd} ${args.join(" ")}\n  exit ${out.code} after ${out.ms} ms\n` +
    `  stdout: ${tail(out.stdout)}\n  stderr: ${tail(out.stderr)}`;
}

/** Runs a command and throws (with its output) unless it exits 0. */
export async function must(
  env: Pick<ClientEnv, "vars">,
  cmd: string,
  args: string[],
  timeoutMs?: number,
): Promise<Output> {
  const out = await run(env, cmd, args, timeoutMs);
  if (out.code !== 0) throw new Error(`Command failed: ${describe(cmd, args, out)}`);
  return out;
}

/** Asserts exit 0 and returns the output. */
export async function ok(what: Promise<Output>, label: string): Promise<Output> {
  const out = await what;
  assert.equal(
    out.code,
    0,
    `${label} failed (exit ${out.code}, ${out.ms} ms):\n${tail(out.stdout + out.stderr)}`,
  );
  return out;
}

/**
 * Runs a bash snippet with tests/e2e/clients.sh sourced (E2E_TMP, E2E_IMG and
 * any other `env.vars` set), throwing unless it exits 0. Its e2e_skopeo gets
 * `--tmpdir` too: skopeo 1.9 ignores TMPDIR for some temp files.
 */
export function lib(env: Pick<ClientEnv, "vars">, script: string): Promise<Output> {
  const skopeoFn =
    'e2e_skopeo() { skopeo --tmpdir "$E2E_TMP/tmp" --policy "$E2E_TMP/policy.json" ' +
    '--registries-conf "$E2E_TMP/registries.conf" "$@"; }';
  return must(env, "bash", [
    "-c",
    `set -euo pipefail; source "${CLIENTS_SH}"; ${skopeoFn}; ${script}`,
  ]);
}

/** skopeo with the private policy and registries.conf. */
export function skopeo(env: ClientEnv, args: string[]): Promise<Output> {
  // --tmpdir: skopeo 1.9 writes some temp files to /var/tmp despite TMPDIR
  return run(env, "skopeo", [
    "--tmpdir",
    `${env.tmp}/tmp`,
    "--policy",
    `${env.tmp}/policy.json`,
    "--registries-conf",
    `${env.tmp}/registries.conf`,
    ...args,
  ]);
}

/** The docker CLI against the private dockerd. */
export function docker(env: ClientEnv, args: string[]): Promise<Output> {
  return run(env, env.dockerBin, ["-H", `unix://${env.dockerSock}`, ...args]);
}

/** ctr against the private dockerd's containerd, in `env.containerdNamespace`. */
export function ctr(env: ClientEnv, args: string[]): Promise<Output> {
  return run(env, "ctr", [
    "--address",
    env.containerdSock,
    "--namespace",
    env.containerdNamespace,
    ...args,
  ]);
}

/** The private containers-storage (vfs) flags shared by buildah and podman. */
export function storageFlags(env: ClientEnv): string[] {
  return [
    "--root",
    `${env.tmp}/cs/root`,
    "--runroot",
    `${env.tmp}/cs/run`,
    "--storage-driver",
    "vfs",
  ];
}

/** buildah on the private containers-storage. */
export function buildah(env: ClientEnv, args: string[]): Promise<Output> {
  return run(env, "buildah", [...storageFlags(env), ...args]);
}

/** podman on the private containers-storage, without systemd or a shared tmpdir. */
export function podman(env: ClientEnv, args: string[]): Promise<Output> {
  return run(env, "podman", [
    ...storageFlags(env),
    "--cgroup-manager",
    "cgroupfs",
    "--events-backend",
    "file",
    "--tmpdir",
    `${env.tmp}/cs/tmp`,
    ...args,
  ]);
}

/** A private dockerd (and the containerd it starts itself), stopped by PID. */
export interface Dockerd extends AsyncDisposable {
  pid: number;
}

/**
 * Starts a private dockerd on `env.dockerSock` (vfs storage, no networking
 * changes, state under `env.tmp/dk`, log in `env.tmp/log/dockerd.log`) and
 * waits until it answers. `extraArgs` are added to its command line (e.g.
 * `--insecure-registry host:port`). Disposing stops it and its containerd.
 */
export async function startDockerd(env: ClientEnv, extraArgs: string[] = []): Promise<Dockerd> {
  const dir = `${env.tmp}/dk`;
  const log = `${env.tmp}/log/dockerd.log`;
  // daemon.json: /etc/docker/daemon.json is never read, the libtrust key stays here.
  await Deno.writeTextFile(
    `${dir}/daemon.json`,
    JSON.stringify({ "deprecated-key-path": `${dir}/key.json` }),
  );
  // `exec` keeps the PID: child.pid is dockerd's own; its output goes to the log file.
  const child = new Deno.Command("bash", {
    args: [
      "-c",
      'exec "$@" >"$0" 2>&1',
      log,
      which("dockerd")!,
      "-H",
      `unix://${env.dockerSock}`,
      "--config-file",
      `${dir}/daemon.json`,
      "--data-root",
      `${dir}/data`,
      "--exec-root",
      `${dir}/x`,
      "--pidfile",
      `${dir}/docker.pid`,
      "--storage-driver",
      "vfs",
      "--bridge=none",
      "--iptables=false",
      "--ip6tables=false",
      "--userland-proxy=false",
      ...extraArgs,
    ],
    env: env.vars,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const stop = async () => {
    const containerdPid = await Deno.readTextFile(`${dir}/x/containerd/containerd.pid`).then(
      (text) => Number(text.trim()),
      () => 0,
    );
    if (!exited) {
      child.kill("SIGTERM");
      const force = setTimeout(() => child.kill("SIGKILL"), 30_000);
      await status;
      clearTimeout(force);
    }
    // dockerd stops its containerd on SIGTERM; make sure (by its pid file).
    if (containerdPid > 0) await reapStray(containerdPid, dir);
  };
  const deadline = Date.now() + 60_000;
  while (true) {
    const out = await docker(env, ["version", "--format", "{{.Server.Version}}"]);
    if (out.code === 0) break;
    if (exited || Date.now() > deadline) {
      await stop();
      const logText = await Deno.readTextFile(log).catch(() => "");
      throw new Error(`dockerd did not start (exited: ${exited}):\n${tail(logText)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { pid: child.pid, [Symbol.asyncDispose]: stop };
}

/** Waits for a leftover process (ours: its command line names `marker`), then SIGKILLs it. */
export async function reapStray(pid: number, marker: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
    if (!cmdline.includes(marker) || / Z /.test(stat)) return;
    if (i === 49) Deno.kill(pid, "SIGKILL");
    else await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Writes the private client configs under `tmp` (same as clients.sh
 * e2e_setup). Registries in `insecureHosts` are marked insecure (plain HTTP,
 * no TLS verification) in registries.conf; any other one is verified.
 */
export async function writeClientConfigs(tmp: string, insecureHosts: string[] = []): Promise<void> {
  for (const sub of ["log", "img", "cs/root", "cs/run", "cs/tmp", "dk", "tmp", "docker-config"]) {
    await Deno.mkdir(`${tmp}/${sub}`, { recursive: true });
  }
  await Deno.writeTextFile(
    `${tmp}/policy.json`,
    JSON.stringify({
      default: [{ type: "insecureAcceptAnything" }],
      transports: { "docker-daemon": { "": [{ type: "insecureAcceptAnything" }] } },
    }),
  );
  await Deno.writeTextFile(
    `${tmp}/registries.conf`,
    `unqualified-search-registries = []\nshort-name-mode = "disabled"\n` +
      insecureHosts.map((host) => `[[registry]]\nlocation = "${host}"\ninsecure = true\n`)
        .join(""),
  );
  await Deno.writeTextFile(
    `${tmp}/storage.conf`,
    `[storage]\ndriver = "vfs"\ngraphroot = "${tmp}/cs/root"\nrunroot = "${tmp}/cs/run"\n`,
  );
  await Deno.writeTextFile(
    `${tmp}/containers.conf`,
    `[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n` +
      `events_logfile_path = "${tmp}/log/podman-events.log"\ntmp_dir = "${tmp}/cs/tmp"\n` +
      `[containers]\nnetns = "none"\n` +
      // podman and buildah otherwise create /etc/cni/net.d/cni.lock
      `[network]\nnetwork_config_dir = "${tmp}/cni"\n`,
  );
  await Deno.writeTextFile(`${tmp}/auth.json`, "{}");
  await Deno.writeTextFile(`${tmp}/docker-config/config.json`, "{}");
}

/** Removes a tree (read-only dirs from container storage are made writable first). */
export async function removeTree(dir: string): Promise<void> {
  try {
    await Deno.remove(dir, { recursive: true });
  } catch {
    await new Deno.Command("chmod", { args: ["-R", "u+w", dir], stdout: "null", stderr: "null" })
      .output();
    await Deno.remove(dir, { recursive: true });
  }
}
