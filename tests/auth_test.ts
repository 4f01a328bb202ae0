/**
 * Authentication and authorization, black box against a real server: a
 * matrix of caller × repository × action × mode (basic, token, external
 * issuer) over every endpoint family, with the challenge each refusal
 * carries; the catalog filtered; mounts across repositories the caller may
 * and may not read.
 *
 * @module
 */
import assert from "node:assert/strict";
import { exportSPKI, generateKeyPair, SignJWT } from "jose";
import type { Config } from "../src/config.ts";
import { AuthClient, parseChallenge, type Who, writeUsers } from "./_auth.ts";
import { imageManifest, sha256, startRegistry, type TestRegistry } from "./_registry.ts";

const POLICY = {
  groups: { "team-a": ["alice"] },
  rules: [
    { repository: "**", who: ["*"], allow: ["pull"] },
    { repository: "**", who: ["root"], allow: ["pull", "push", "delete"] },
    { repository: "team-a/**", who: ["group:team-a"], allow: ["pull", "push", "delete"] },
    { repository: "public/*", who: ["anonymous"], allow: ["pull"] },
    // Repository specificity comes first: root needs a rule as specific as anonymous's.
    { repository: "public/*", who: ["root"], allow: ["pull", "push", "delete"] },
    { repository: "team-a/secret", who: ["alice"], allow: [] },
  ],
};
const PASSWORDS = { root: "root-pw", alice: "alice-pw", bob: "bob-pw" };
const REPOS = ["team-a/app", "team-a/secret", "public/base", "other/x"];
type Action = "pull" | "push" | "delete";

/** What POLICY grants, written out by hand: the oracle the server is checked against. */
const GRANTS: Record<string, Record<string, Action[]>> = {
  anonymous: { "team-a/app": [], "team-a/secret": [], "public/base": ["pull"], "other/x": [] },
  alice: {
    "team-a/app": ["pull", "push", "delete"],
    "team-a/secret": [],
    "public/base": ["pull"],
    "other/x": ["pull"],
  },
  bob: {
    "team-a/app": ["pull"],
    "team-a/secret": ["pull"],
    "public/base": ["pull"],
    "other/x": ["pull"],
  },
};

interface Setup {
  dir: string;
  overrides: Partial<Config>;
  /** The external issuer (mode external): its realm server and closing. */
  close?: () => Promise<void>;
}

async function files(): Promise<{ dir: string; htpasswd: string; policy: string }> {
  const dir = await Deno.makeTempDir({ prefix: "berth-auth-" });
  const htpasswd = `${dir}/htpasswd`;
  const policy = `${dir}/policy.json`;
  await writeUsers(htpasswd, PASSWORDS);
  await Deno.writeTextFile(policy, JSON.stringify(POLICY));
  return { dir, htpasswd, policy };
}

/**
 * An external token issuer: a realm that checks the same users and grants
 * what the oracle says, signing with its own key; Berth gets only its
 * public key.
 */
async function externalIssuer(dir: string): Promise<Setup> {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  await Deno.writeTextFile(`${dir}/issuer.pem`, await exportSPKI(publicKey));
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    const auth = req.headers.get("authorization");
    let user: string | null = null;
    if (auth) {
      const [name, password] = atob(auth.slice(6)).split(":");
      if (PASSWORDS[name as keyof typeof PASSWORDS] !== password) {
        return new Response("no", { status: 401 });
      }
      user = name!;
    }
    const access = url.searchParams.getAll("scope").map((scope) => {
      const [type, name, actions] = scope.split(":");
      const granted = user === "root"
        ? ["pull", "push", "delete"]
        : GRANTS[user ?? "anonymous"]?.[name!] ?? [];
      return { type, name, actions: actions!.split(",").filter((a) => granted.includes(a)) };
    });
    const token = await new SignJWT({ access })
      .setProtectedHeader({ alg: "ES256" })
      .setIssuer("corp-auth")
      .setAudience("berth")
      .setSubject(user ?? "")
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(privateKey);
    return Response.json({ token });
  });
  return {
    dir,
    overrides: {
      auth: "token",
      tokenPublicKeys: `${dir}/issuer.pem`,
      tokenIssuer: "corp-auth",
      tokenRealm: `http://127.0.0.1:${server.addr.port}/token`,
    },
    close: () => server.shutdown(),
  };
}

type Mode = "basic" | "token" | "external";

async function setup(mode: Mode): Promise<Setup> {
  const { dir, htpasswd, policy } = await files();
  if (mode === "external") return await externalIssuer(dir);
  return { dir, overrides: { auth: mode, htpasswd, policy } };
}

/** Seeds every repository (as root): an image tagged v1, and one spare blob per later delete. */
async function seed(
  root: AuthClient,
): Promise<Record<string, { digest: string; layer: string; body: string }>> {
  const out: Record<string, { digest: string; layer: string; body: string }> = {};
  for (const repo of REPOS) {
    const config = JSON.stringify({ repo });
    const layer = `layer of ${repo}`;
    for (const bytes of [config, layer]) {
      const res = await root.fetch(`/v2/${repo}/blobs/uploads/?digest=${sha256(bytes)}`, {
        method: "POST",
        body: bytes,
      });
      assert.equal(res.status, 201, `seed ${repo}: ${await res.text()}`);
    }
    const body = imageManifest(
      { digest: sha256(config), size: config.length },
      [{ digest: sha256(layer), size: layer.length }],
    );
    const res = await root.fetch(`/v2/${repo}/manifests/v1`, {
      method: "PUT",
      headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
      body,
    });
    assert.equal(res.status, 201, `seed ${repo}`);
    await res.body?.cancel();
    out[repo] = { digest: sha256(body), layer: sha256(layer), body };
  }
  return out;
}

/** One request of an endpoint family: what it needs, how to send it, its success status. */
interface Probe {
  family: string;
  action: Action;
  ok: number;
  send(client: AuthClient, repo: string, caller: string): Promise<Response>;
}

function probes(fixture: Awaited<ReturnType<typeof seed>>, root: AuthClient): Probe[] {
  const get = (path: string, method = "GET") => (client: AuthClient) =>
    client.fetch(path, { method });
  return [
    { family: "tags", action: "pull", ok: 200, send: (c, r) => get(`/v2/${r}/tags/list`)(c) },
    {
      family: "manifest GET",
      action: "pull",
      ok: 200,
      send: (c, r) => get(`/v2/${r}/manifests/v1`)(c),
    },
    {
      family: "manifest HEAD",
      action: "pull",
      ok: 200,
      send: (c, r) => get(`/v2/${r}/manifests/v1`, "HEAD")(c),
    },
    {
      family: "blob GET",
      action: "pull",
      ok: 200,
      send: (c, r) => get(`/v2/${r}/blobs/${fixture[r]!.layer}`)(c),
    },
    {
      family: "blob HEAD",
      action: "pull",
      ok: 200,
      send: (c, r) => get(`/v2/${r}/blobs/${fixture[r]!.layer}`, "HEAD")(c),
    },
    {
      family: "referrers",
      action: "pull",
      ok: 200,
      send: (c, r) => get(`/v2/${r}/referrers/${fixture[r]!.digest}`)(c),
    },
    {
      family: "upload POST",
      action: "push",
      ok: 202,
      send: (c, r) => c.fetch(`/v2/${r}/blobs/uploads/`, { method: "POST" }),
    },
    {
      family: "monolithic POST",
      action: "push",
      ok: 201,
      send: (c, r, who) =>
        c.fetch(`/v2/${r}/blobs/uploads/?digest=${sha256(`${who} was here`)}`, {
          method: "POST",
          body: `${who} was here`,
        }),
    },
    {
      family: "upload PATCH/PUT/GET/DELETE",
      action: "push",
      ok: 204,
      async send(c, r) {
        // Root opens the session; the caller may touch it only with push rights.
        const started = await root.fetch(`/v2/${r}/blobs/uploads/`, { method: "POST" });
        await started.body?.cancel();
        const location = new URL(started.headers.get("location")!, "http://x").pathname;
        const patch = await c.fetch(location, { method: "PATCH", body: "abc" });
        if (patch.status !== 202) return patch;
        await patch.body?.cancel();
        const status = await c.fetch(location);
        if (status.status !== 204) return status;
        return await c.fetch(location, { method: "DELETE" });
      },
    },
    {
      family: "manifest PUT",
      action: "push",
      ok: 201,
      send: (c, r, who) =>
        c.fetch(`/v2/${r}/manifests/by-${who}`, {
          method: "PUT",
          headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
          body: fixture[r]!.body,
        }),
    },
    {
      family: "blob DELETE",
      action: "delete",
      ok: 202,
      async send(c, r, who) {
        const bytes = `spare for ${who}`;
        const put = await root.fetch(`/v2/${r}/blobs/uploads/?digest=${sha256(bytes)}`, {
          method: "POST",
          body: bytes,
        });
        await put.body?.cancel();
        return await c.fetch(`/v2/${r}/blobs/${sha256(bytes)}`, { method: "DELETE" });
      },
    },
    {
      family: "manifest DELETE",
      action: "delete",
      ok: 202,
      async send(c, r, who) {
        const config = `{"spare":"${who}"}`;
        const put = await root.fetch(`/v2/${r}/blobs/uploads/?digest=${sha256(config)}`, {
          method: "POST",
          body: config,
        });
        await put.body?.cancel();
        const body = imageManifest({ digest: sha256(config), size: config.length }, []);
        const res = await root.fetch(`/v2/${r}/manifests/spare-${who}`, {
          method: "PUT",
          headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
          body,
        });
        await res.body?.cancel();
        return await c.fetch(`/v2/${r}/manifests/${sha256(body)}`, { method: "DELETE" });
      },
    },
  ];
}

const CALLERS: Record<string, Who> = {
  anonymous: null,
  alice: { user: "alice", password: PASSWORDS.alice },
  bob: { user: "bob", password: PASSWORDS.bob },
};

for (const mode of ["basic", "token", "external"] as const) {
  Deno.test(`${mode} mode: every caller × repository × endpoint family gets exactly what the policy grants`, async (t) => {
    const env = await setup(mode);
    await using reg = await startRegistry(env.overrides);
    try {
      const root = new AuthClient(reg.url, { user: "root", password: PASSWORDS.root });
      const fixture = await seed(root);
      for (const [caller, who] of Object.entries(CALLERS)) {
        const client = new AuthClient(reg.url, who);
        for (const repo of REPOS) {
          for (const probe of probes(fixture, root)) {
            await t.step(`${caller} ${probe.family} ${repo}`, async () => {
              const res = await probe.send(client, repo, caller);
              await res.body?.cancel();
              const granted = GRANTS[caller]![repo]!.includes(probe.action);
              if (granted) {
                assert.equal(res.status, probe.ok);
                return;
              }
              // Refused: anonymous callers and tokens that lack the scope get a challenge.
              const expected = who === null || mode === "external" ? 401 : 403;
              assert.equal(res.status, expected);
              if (expected === 401) {
                const challenge = parseChallenge(res.headers.get("www-authenticate"));
                assert.equal(challenge?.scheme, mode === "basic" ? "Basic" : "Bearer");
                if (mode !== "basic") {
                  const actions = probe.action === "push" ? "pull,push" : probe.action;
                  assert.equal(challenge?.params.scope, `repository:${repo}:${actions}`);
                }
              }
            });
          }
        }
      }
    } finally {
      await env.close?.();
    }
  });
}

Deno.test("wrong passwords and forged credentials are refused with the mode's challenge", async () => {
  for (const mode of ["basic", "token"] as const) {
    const env = await setup(mode);
    await using reg = await startRegistry(env.overrides);
    for (
      const authorization of [
        "Basic " + btoa("alice:wrong"),
        "Basic " + btoa("nobody:alice-pw"),
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.",
        "Bearer garbage",
        "Digest username=alice",
      ]
    ) {
      for (const path of ["/v2/", "/v2/public/base/tags/list", "/v2/team-a/app/manifests/v1"]) {
        const res = await reg.fetch(path, { headers: { Authorization: authorization } });
        await res.body?.cancel();
        assert.equal(res.status, 401, `${mode} ${authorization} ${path}`);
        const challenge = parseChallenge(res.headers.get("www-authenticate"));
        assert.equal(challenge?.scheme, mode === "basic" ? "Basic" : "Bearer", `${mode} ${path}`);
      }
    }
  }
});

Deno.test("the base endpoint asks anonymous callers to sign in and lets users in", async () => {
  for (const mode of ["basic", "token"] as const) {
    const env = await setup(mode);
    await using reg = await startRegistry(env.overrides);
    const anonymous = await reg.fetch("/v2/");
    assert.equal(anonymous.status, 401);
    const body = await anonymous.json();
    assert.equal(body.errors[0].code, "UNAUTHORIZED");
    const challenge = parseChallenge(anonymous.headers.get("www-authenticate"));
    if (mode === "basic") assert.equal(challenge?.params.realm, "berth");
    else {
      assert.equal(challenge?.params.realm, `${reg.url}/token`);
      assert.equal(challenge?.params.service, "berth");
    }
    const alice = new AuthClient(reg.url, CALLERS.alice!);
    const res = await alice.fetch("/v2/");
    await res.body?.cancel();
    assert.equal(res.status, 200);
    const health = await reg.fetch("/healthz");
    await health.body?.cancel();
    assert.equal(health.status, 200, "health checks need no credentials");
  }
});

Deno.test("the catalog lists only the repositories the caller may pull", async () => {
  for (const mode of ["basic", "token"] as const) {
    const env = await setup(mode);
    await using reg = await startRegistry(env.overrides);
    const root = new AuthClient(reg.url, { user: "root", password: PASSWORDS.root });
    await seed(root);
    const list = async (who: Who) => {
      const res = await new AuthClient(reg.url, who).fetch("/v2/_catalog");
      return res.status === 200 ? (await res.json()).repositories : res.status;
    };
    assert.deepEqual(await list(CALLERS.alice!), ["other/x", "public/base", "team-a/app"]);
    assert.deepEqual(await list(CALLERS.bob!), [
      "other/x",
      "public/base",
      "team-a/app",
      "team-a/secret",
    ]);
    assert.equal(await list(null), 401);
    // Paging over hidden names still ends, each page holding only visible ones.
    const page = await new AuthClient(reg.url, CALLERS.alice!).fetch("/v2/_catalog?n=1");
    assert.deepEqual((await page.json()).repositories, ["other/x"]);
    assert.match(page.headers.get("link") ?? "", /last=other%2Fx/);
  }
});

Deno.test("a mount needs pull on the source; else it is an upload session that reveals nothing", async () => {
  for (const mode of ["basic", "token"] as const) {
    const env = await setup(mode);
    await using reg = await startRegistry(env.overrides);
    const root = new AuthClient(reg.url, { user: "root", password: PASSWORDS.root });
    const fixture = await seed(root);
    const alice = new AuthClient(reg.url, CALLERS.alice!);
    const secret = fixture["team-a/secret"]!.layer;
    // alice may not pull team-a/secret: named or automatic, the mount becomes an upload.
    for (const query of [`mount=${secret}&from=team-a/secret`, `mount=${secret}`]) {
      const res = await alice.fetch(
        `/v2/team-a/app/blobs/uploads/?${query}`,
        { method: "POST" },
        ["repository:team-a/secret:pull"],
      );
      await res.body?.cancel();
      assert.equal(res.status, 202, `${mode} ${query}`);
      const head = await alice.fetch(`/v2/team-a/app/blobs/${secret}`, { method: "HEAD" });
      assert.equal(head.status, 404, `${mode} ${query}: the blob stays out of team-a/app`);
    }
    // From a repository she may pull, the mount happens.
    const other = fixture["other/x"]!.layer;
    const res = await alice.fetch(
      `/v2/team-a/app/blobs/uploads/?mount=${other}&from=other/x`,
      { method: "POST" },
      ["repository:other/x:pull"],
    );
    await res.body?.cancel();
    assert.equal(res.status, 201, mode);
    const auto = fixture["public/base"]!.layer;
    const automatic = await alice.fetch(
      `/v2/team-a/app/blobs/uploads/?mount=${auto}`,
      { method: "POST" },
      ["repository:public/base:pull"],
    );
    await automatic.body?.cancel();
    assert.equal(automatic.status, 201, `${mode}: automatic mount from a readable repository`);
  }
});

export type { TestRegistry };
