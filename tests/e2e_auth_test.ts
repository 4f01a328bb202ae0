/**
 * Real registry clients WITH credentials against Berth (`main.ts serve`), in
 * basic mode (`--htpasswd`) and token mode (`--auth token --htpasswd`, Berth's
 * own `/token` realm), over plain HTTP and over HTTPS with a throwaway CA
 * (tests/_pki.ts) that the clients verify.
 *
 * Each round starts its own Berth and drives docker (a private dockerd),
 * podman, skopeo, ctr and `@sigstore/oci` through login, push and pull; a
 * wrong password must fail with an authentication error and anonymous pushes
 * must be refused. Over plain HTTP on loopback the containers tools need
 * `--tls-verify=false` and ctr `--plain-http` (there is no TLS to verify);
 * over HTTPS they verify the CA (`--cert-dir`, `--dest-cert-dir`,
 * `--tlscacert`). dockerd treats every 127.0.0.0/8 registry as insecure (it
 * always adds that range and then never reads certs.d nor verifies), so
 * docker talks TLS to the HTTPS Berth without verifying it; curl verifies and
 * negotiates HTTP/2. `@sigstore/oci` uses plain HTTP for 127.0.0.1 (not
 * configurable), so it runs in the plain HTTP rounds only.
 * Client versions and gotchas: tests/e2e/README.md.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { attachArtifactToImage, getImageDigest } from "@sigstore/oci";
import { parseChallenge, writeUsers } from "./_auth.ts";
import {
  type ClientEnv,
  clientEnv,
  ctr,
  docker,
  lib,
  ok,
  type Output,
  podman,
  removeTree,
  run,
  sha256,
  skopeo,
  startDockerd,
  tail,
  which,
  writeClientConfigs,
} from "./_e2e.ts";
import { makePki, type Pki } from "./_pki.ts";
import { type RegistryProcess, spawnRegistry } from "./_registry.ts";

const USER = "alice";
const PASSWORD = "correct horse 7";
const WRONG = "wrong horse 7";
/** What clients print when the registry refused the credentials. */
const AUTH_ERROR =
  /unauthorized|no basic auth credentials|authentication required|401 Unauthorized|invalid username\/password/i;

/** State shared by the rounds. */
interface Env extends ClientEnv {
  pki: Pki;
  /** A directory holding the CA as `ca.crt`, for `--cert-dir`. */
  certDir: string;
  users: string;
  /** Digest of the layout's `small` image. */
  small: string;
}

/** One Berth under test and how the clients reach it. */
interface Round {
  env: Env;
  berth: RegistryProcess;
  /** host:port */
  host: string;
  url: string;
  tls: boolean;
  token: boolean;
  /** Flags of the containers tools for this transport: verify the CA, or plain HTTP. */
  verify: { podman: string[]; src: string[]; dest: string[]; ctr: string[] };
}

/** Asserts the client failed, saying the registry refused its credentials. */
async function refused(what: Promise<Output>, label: string): Promise<void> {
  const out = await what;
  const text = `${out.stdout}\n${out.stderr}`;
  assert.notEqual(out.code, 0, `${label} should fail:\n${tail(text)}`);
  assert.match(text, AUTH_ERROR, `${label}: no authentication error in:\n${tail(text)}`);
}

/** The manifest digest of `name:reference` in Berth, fetched with the user's credentials. */
async function remoteDigest(round: Round, name: string, reference: string): Promise<string> {
  const out = await ok(
    skopeo(round.env, [
      "inspect",
      "--raw",
      ...round.verify.podman,
      "--creds",
      `${USER}:${PASSWORD}`,
      `docker://${round.host}/${round.token ? "tok" : "bas"}/${name}:${reference}`,
    ]),
    `skopeo inspect ${name}:${reference}`,
  );
  return sha256(out.stdout);
}

/** The request lines Berth logged (`METHOD path status`). */
function requests(berth: RegistryProcess): string[] {
  return berth.lines.flatMap((line) => {
    try {
      const entry = JSON.parse(line);
      return entry.event === "request" ? [`${entry.method} ${entry.path} ${entry.status}`] : [];
    } catch {
      return [];
    }
  });
}

/**
 * A containerd hosts directory making `host` an HTTPS registry verified by the
 * test CA: containerd 1.6 otherwise talks plain HTTP to loopback hosts (and
 * `--tlscacert` does not change the scheme).
 */
async function ctrHosts(env: Env, host: string): Promise<string> {
  const dir = `${env.tmp}/ctr-hosts`;
  await Deno.mkdir(`${dir}/${host}`, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/${host}/hosts.toml`,
    `server = "https://${host}"\n[host."https://${host}"]\n` +
      `capabilities = ["pull", "resolve", "push"]\nca = "${env.pki.caPath}"\n`,
  );
  return dir;
}

/** Starts Berth in `mode` over HTTP or HTTPS and runs `fn` against it. */
async function withRound(
  env: Env,
  mode: "basic" | "token",
  tls: boolean,
  fn: (round: Round) => Promise<void>,
): Promise<void> {
  const args = ["--data", `${env.tmp}/berth-${mode}-${tls}`, "--log-level", "info"];
  args.push("--htpasswd", env.users);
  if (mode === "token") args.push("--auth", "token");
  if (tls) args.push("--tls-cert", env.pki.cert, "--tls-key", env.pki.key);
  await using berth = await spawnRegistry(args);
  const url = berth.url;
  const host = new URL(url).host;
  const verify = tls
    ? {
      podman: ["--cert-dir", env.certDir],
      src: ["--src-cert-dir", env.certDir],
      dest: ["--dest-cert-dir", env.certDir],
      ctr: ["--hosts-dir", await ctrHosts(env, host)],
    }
    : {
      podman: ["--tls-verify=false"],
      src: ["--src-tls-verify=false"],
      dest: ["--dest-tls-verify=false"],
      ctr: ["--plain-http"],
    };
  await fn({ env, berth, host, url, tls, token: mode === "token", verify });
}

Deno.test("real clients log in, push and pull with credentials, in basic and token mode, over HTTP and verified HTTPS", async (t) => {
  for (const name of ["bash", "skopeo", "podman", "dockerd", "ctr", "curl", "openssl"]) {
    assert.ok(which(name), `${name} missing: see tests/e2e/README.md for the packages`);
  }
  const tmp = await Deno.makeTempDir({ dir: "/tmp", prefix: "bea." });
  const pki = await makePki();
  try {
    // No registry is insecure in registries.conf: the containers tools verify TLS
    // unless a flag says otherwise.
    await writeClientConfigs(tmp);
    const certDir = `${tmp}/certs`;
    await Deno.mkdir(certDir);
    await Deno.copyFile(pki.caPath, `${certDir}/ca.crt`);
    const users = `${tmp}/users.htpasswd`;
    await writeUsers(users, { [USER]: PASSWORD, bob: "bobs password" });
    const env: Env = { ...clientEnv(tmp, "berthauth"), pki, certDir, users, small: "" };
    // small (~2 MiB) is all the rounds push; the "big" layer is kept at 1 MiB.
    env.small = (await lib(env, 'make_test_images 1 >&2; printf %s "$E2E_SMALL_DIGEST"')).stdout;
    // podman pushes from containers-storage, docker from its own store.
    await ok(
      skopeo(env, ["copy", "-q", `oci:${env.layout}:small`, "containers-storage:localhost/e2e:1"]),
      "skopeo copy to containers-storage",
    );
    await using _dockerd = await startDockerd(env);
    await ok(docker(env, ["load", "-q", "-i", `${tmp}/img/small.docker.tar`]), "docker load");

    for (
      const [mode, tls] of [["basic", true], ["token", true], ["basic", false], [
        "token",
        false,
      ]] as const
    ) {
      const transport = tls ? "HTTPS, CA verified" : "plain HTTP";
      await t.step(`${mode} mode over ${transport}`, () => withRound(env, mode, tls, clients));
    }
  } finally {
    await removeTree(tmp);
    await removeTree(pki.dir);
  }
});

/** Every client against one Berth. */
async function clients(r: Round): Promise<void> {
  const { env } = r;
  const creds = `${USER}:${PASSWORD}`;
  const bad = `${USER}:${WRONG}`;
  const repo = (client: string) => `${r.host}/${r.token ? "tok" : "bas"}/${client}`;

  // anonymous: no push, no pull
  await refused(
    skopeo(env, [
      "copy",
      "-q",
      ...r.verify.dest,
      `oci:${env.layout}:small`,
      `docker://${repo("anon")}:1`,
    ]),
    "anonymous skopeo push",
  );
  // skopeo with credentials, and with a wrong password
  await refused(
    skopeo(env, [
      "copy",
      "-q",
      ...r.verify.dest,
      "--dest-creds",
      bad,
      `oci:${env.layout}:small`,
      `docker://${repo("sk")}:1`,
    ]),
    "skopeo push with a wrong password",
  );
  await ok(
    skopeo(env, [
      "copy",
      "-q",
      "--preserve-digests",
      ...r.verify.dest,
      "--dest-creds",
      creds,
      `oci:${env.layout}:small`,
      `docker://${repo("sk")}:1`,
    ]),
    "skopeo copy --dest-creds",
  );
  await ok(
    skopeo(env, [
      "copy",
      "-q",
      ...r.verify.src,
      "--src-creds",
      creds,
      `docker://${repo("sk")}:1`,
      `oci:${env.tmp}/back:sk`,
    ]),
    "skopeo copy --src-creds",
  );
  assert.equal(await remoteDigest(r, "sk", "1"), env.small);
  await refused(
    skopeo(env, ["inspect", ...r.verify.podman, `docker://${repo("sk")}:1`]),
    "anonymous skopeo inspect",
  );

  // podman login, push, pull, logout
  await refused(
    podman(env, ["login", ...r.verify.podman, "-u", USER, "-p", WRONG, r.host]),
    "podman login with a wrong password",
  );
  await ok(
    podman(env, ["login", ...r.verify.podman, "-u", USER, "-p", PASSWORD, r.host]),
    "podman login",
  );
  const policy = ["--signature-policy", `${env.tmp}/policy.json`];
  await ok(
    podman(env, [
      "push",
      "-q",
      ...r.verify.podman,
      ...policy,
      "localhost/e2e:1",
      `docker://${repo("pd")}:1`,
    ]),
    "podman push",
  );
  await ok(
    podman(env, ["pull", "-q", ...r.verify.podman, ...policy, `${repo("pd")}:1`]),
    "podman pull",
  );
  await ok(podman(env, ["rmi", `${repo("pd")}:1`]), "podman rmi");
  await ok(podman(env, ["logout", r.host]), "podman logout");
  await refused(
    podman(env, [
      "push",
      "-q",
      ...r.verify.podman,
      ...policy,
      "localhost/e2e:1",
      `docker://${repo("pd")}:2`,
    ]),
    "podman push after logout",
  );

  // ctr (containerd 1.6) with --user
  const before = requests(r.berth).length;
  await refused(
    ctr(env, [
      "images",
      "pull",
      ...r.verify.ctr,
      "--user",
      bad,
      "--snapshotter",
      "native",
      `${repo("sk")}:1`,
    ]),
    "ctr pull with a wrong password",
  );
  await ok(
    ctr(env, [
      "images",
      "pull",
      ...r.verify.ctr,
      "--user",
      creds,
      "--snapshotter",
      "native",
      `${repo("sk")}:1`,
    ]),
    "ctr pull --user",
  );
  await ok(
    ctr(env, [
      "images",
      "push",
      ...r.verify.ctr,
      "--user",
      creds,
      `${repo("ctr")}:1`,
      `${repo("sk")}:1`,
    ]),
    "ctr push --user",
  );
  const ctrRequests = requests(r.berth).slice(before);
  assert.equal(await remoteDigest(r, "ctr", "1"), env.small);
  if (r.token) {
    // containerd asks for its tokens with the OAuth2 password grant (POST) first,
    // and with the right password needs nothing else.
    const seen = ctrRequests;
    const wrong = seen.indexOf("POST /token 401");
    assert.ok(wrong >= 0, seen.join("\n"));
    const good = seen.slice(seen.indexOf("POST /token 200"));
    assert.ok(good.length > 0 && !good.some((l) => l.startsWith("GET /token")), seen.join("\n"));
  }

  // docker login, push, pull, logout
  const dockerRef = `${repo("dk")}:1`;
  await dockerRefused(
    r,
    ["login", "-u", USER, "-p", WRONG, r.host],
    "docker login with a wrong password",
  );
  await ok(docker(env, ["login", "-u", USER, "-p", PASSWORD, r.host]), "docker login");
  await ok(docker(env, ["tag", "berth-e2e/small:latest", dockerRef]), "docker tag");
  const pushed = await ok(docker(env, ["push", dockerRef]), "docker push");
  const digest = /digest: (sha256:[0-9a-f]{64})/.exec(pushed.stdout)?.[1];
  assert.equal(digest, await remoteDigest(r, "dk", "1"), pushed.stdout);
  await ok(docker(env, ["rmi", dockerRef]), "docker rmi");
  await ok(docker(env, ["pull", "-q", `${repo("dk")}@${digest}`]), "docker pull by digest");
  await ok(docker(env, ["rmi", `${repo("dk")}@${digest}`]), "docker rmi");
  await ok(docker(env, ["logout", r.host]), "docker logout");
  await dockerRefused(r, ["pull", "-q", dockerRef], "anonymous docker pull");
  await ok(docker(env, ["tag", "berth-e2e/small:latest", `${repo("dk")}:2`]), "docker tag");
  await dockerRefused(r, ["push", `${repo("dk")}:2`], "anonymous docker push");
  await ok(docker(env, ["rmi", `${repo("dk")}:2`]), "docker rmi");

  if (r.tls) {
    // the CA is really checked: without it the same request fails on the certificate
    const unverified = await skopeo(env, [
      "inspect",
      "--raw",
      "--creds",
      creds,
      `docker://${repo("sk")}:1`,
    ]);
    assert.notEqual(unverified.code, 0, "skopeo trusted the test CA without --cert-dir");
    assert.match(unverified.stderr, /x509|certificate/, unverified.stderr);
    await curlHttp2(r);
  } else await sigstore(r);
}

/**
 * Asserts a docker command fails because Berth refused it. Over HTTPS dockerd
 * (every loopback registry is "insecure" to it) retries a refused request
 * over plain HTTP and may report that attempt's error (Berth's TLS alert read
 * as HTTP), so there the refusal is read from Berth's request log: a 401.
 */
async function dockerRefused(r: Round, args: string[], label: string): Promise<void> {
  const before = requests(r.berth).length;
  const out = await docker(r.env, args);
  if (!r.tls) return await refused(Promise.resolve(out), label);
  assert.notEqual(out.code, 0, `${label} should fail:\n${out.stdout}${out.stderr}`);
  const seen = requests(r.berth).slice(before);
  assert.ok(seen.some((line) => / 401$/.test(line)), `${label}: no 401 in\n${seen.join("\n")}`);
  const text = out.stdout + out.stderr;
  assert.ok(AUTH_ERROR.test(text) || /http:\/\/.*malformed HTTP response/.test(text), text);
}

/** curl verifying the CA negotiates HTTP/2 and gets /v2/ with the credentials. */
async function curlHttp2(r: Round): Promise<void> {
  const curl = (args: string[]) =>
    ok(
      run(r.env, "curl", [
        "-sS",
        "--http2",
        "--cacert",
        r.env.pki.caPath,
        "--max-time",
        "10",
        ...args,
      ]),
      `curl ${args.join(" ")}`,
    );
  const status = "%{http_version} %{http_code}";
  assert.equal((await curl(["-o", "/dev/null", "-w", status, `${r.url}/v2/`])).stdout, "2 401");
  let auth = ["-u", `${USER}:${PASSWORD}`];
  if (r.token) {
    // the realm and service come from the challenge, as clients take them
    const head = await curl(["-s", "-D", "-", "-o", "/dev/null", `${r.url}/v2/`]);
    const challenge = parseChallenge(
      /^www-authenticate: (.*?)\r?$/im.exec(head.stdout)?.[1] ?? null,
    );
    assert.equal(challenge?.scheme, "Bearer", head.stdout);
    const realm = new URL(challenge.params.realm!);
    assert.equal(realm.origin, r.url, "the realm is Berth's own /token, over HTTPS");
    realm.searchParams.set("service", challenge.params.service!);
    realm.searchParams.set("scope", "repository:tok/sk:pull");
    const token = JSON.parse((await curl([...auth, realm.href])).stdout).token;
    assert.ok(token, "a token from /token over HTTP/2");
    auth = ["-H", `Authorization: Bearer ${token}`];
  }
  assert.equal(
    (await curl([...auth, "-o", "/dev/null", "-w", status, `${r.url}/v2/`])).stdout,
    "2 200",
  );
}

/** @sigstore/oci attaches an artifact with the user's credentials (it signs in first). */
async function sigstore(r: Round): Promise<void> {
  const imageName = `${r.host}/${r.token ? "tok" : "bas"}/sk`;
  const credentials = { username: USER, password: PASSWORD };
  const subject = await getImageDigest({ imageName, imageTag: "1", credentials });
  assert.equal(subject, r.env.small);
  const artifact = await attachArtifactToImage({
    imageName,
    imageDigest: subject,
    artifact: Buffer.from(JSON.stringify({ hello: "berth" })),
    mediaType: "application/vnd.example.berth-e2e+json",
    credentials,
  });
  await assert.rejects(
    getImageDigest({ imageName, imageTag: "1", credentials: { username: USER, password: WRONG } }),
  );
  assert.match(artifact.digest, /^sha256:/);
}
