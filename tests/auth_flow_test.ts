/**
 * The token endpoint (GET and the OAuth2 POST form, refresh tokens),
 * login throttling, hostile `Authorization` headers, file edits applied
 * without a restart, the audit log, and the secure default, against real
 * servers.
 *
 * @module
 */
import assert from "node:assert/strict";
import { basic, parseChallenge, writeUsers } from "./_auth.ts";
import { runMain, spawnRegistry, startRegistry } from "./_registry.ts";

async function usersDir(users: Record<string, string> = { alice: "alice-pw", bob: "bob-pw" }) {
  const dir = await Deno.makeTempDir({ prefix: "berth-flow-" });
  await writeUsers(`${dir}/htpasswd`, users);
  return { dir, htpasswd: `${dir}/htpasswd`, policy: `${dir}/policy.json` };
}

function claims(token: string): Record<string, unknown> {
  const payload = token.split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(payload));
}

const form = (fields: Record<string, string>) => ({
  method: "POST",
  headers: { "Content-Type": "application/x-www-form-urlencoded" },
  body: new URLSearchParams(fields).toString(),
});

Deno.test("token endpoint: GET with Basic issues a token holding only what the policy grants", async () => {
  const { htpasswd, policy } = await usersDir();
  await Deno.writeTextFile(
    policy,
    JSON.stringify({ rules: [{ repository: "a/*", who: ["alice"], allow: ["pull"] }] }),
  );
  await using reg = await startRegistry({ auth: "token", htpasswd, policy });
  const res = await reg.fetch(
    "/token?service=berth&scope=repository:a/b:pull,push,delete&scope=repository:c:pull&scope=bogus",
    { headers: { Authorization: basic("alice", "alice-pw") } },
  );
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("cache-control"), "no-store");
  const body = await res.json();
  assert.equal(body.token, body.access_token);
  assert.equal(body.expires_in, 300);
  assert.ok(!Number.isNaN(Date.parse(body.issued_at)));
  assert.equal(body.refresh_token, undefined);
  const c = claims(body.token);
  assert.equal(c.sub, "alice");
  assert.equal(c.aud, "berth");
  assert.equal(c.iss, "berth");
  assert.deepEqual(c.access, [
    { type: "repository", name: "a/b", actions: ["pull"] },
    { type: "repository", name: "c", actions: [] },
  ]);
  // Anonymous: a token with nothing in it (the policy grants anonymous nothing).
  const anonymous = await (await reg.fetch("/token?service=berth&scope=repository:a/b:pull"))
    .json();
  assert.equal(claims(anonymous.token).sub, "");
  assert.deepEqual(claims(anonymous.token).access, [
    { type: "repository", name: "a/b", actions: [] },
  ]);
});

Deno.test("token endpoint: wrong credentials, another service and other schemes are refused", async () => {
  const { htpasswd } = await usersDir();
  await using reg = await startRegistry({ auth: "token", htpasswd });
  const cases: [string, RequestInit, number][] = [
    ["/token?service=berth", { headers: { Authorization: basic("alice", "wrong") } }, 401],
    ["/token?service=berth", { headers: { Authorization: basic("carol", "x") } }, 401],
    ["/token?service=other", { headers: { Authorization: basic("alice", "alice-pw") } }, 400],
    ["/token?service=berth", { headers: { Authorization: "Bearer abc.def.ghi" } }, 401],
    ["/token", form({ grant_type: "password", username: "alice", password: "no" }), 401],
    ["/token", form({ grant_type: "client_credentials" }), 400],
    ["/token", form({ grant_type: "refresh_token", refresh_token: "forged" }), 401],
    ["/token", { method: "POST", body: "grant_type=password" }, 400],
  ];
  for (const [path, init, status] of cases) {
    const res = await reg.fetch(path, init);
    const body = await res.json();
    assert.equal(res.status, status, `${path} ${JSON.stringify(init)}: ${JSON.stringify(body)}`);
    assert.ok(Array.isArray(body.errors), "the spec's error body");
  }
});

Deno.test("token endpoint: the OAuth2 POST form issues tokens and refresh tokens that stop working when the password changes", async () => {
  const { htpasswd } = await usersDir();
  await using reg = await startRegistry({ auth: "token", htpasswd });
  const first = await reg.fetch(
    "/token",
    form({
      grant_type: "password",
      username: "alice",
      password: "alice-pw",
      service: "berth",
      scope: "repository:a:pull,push repository:b:pull",
      client_id: "containerd",
      access_type: "offline",
    }),
  );
  assert.equal(first.status, 200);
  const issued = await first.json();
  assert.deepEqual(claims(issued.access_token).access, [
    { type: "repository", name: "a", actions: ["pull", "push"] },
    { type: "repository", name: "b", actions: ["pull"] },
  ]);
  assert.equal(typeof issued.refresh_token, "string");
  // The access token works; the refresh token is not an access token.
  const push = await reg.fetch("/v2/a/blobs/uploads/", {
    method: "POST",
    headers: { Authorization: `Bearer ${issued.access_token}` },
  });
  await push.body?.cancel();
  assert.equal(push.status, 202);
  const misuse = await reg.fetch("/v2/a/tags/list", {
    headers: { Authorization: `Bearer ${issued.refresh_token}` },
  });
  await misuse.body?.cancel();
  assert.equal(misuse.status, 401);
  const refreshed = await reg.fetch(
    "/token",
    form({
      grant_type: "refresh_token",
      refresh_token: issued.refresh_token,
      scope: "repository:a:pull",
    }),
  );
  assert.equal(refreshed.status, 200);
  assert.equal(claims((await refreshed.json()).access_token).sub, "alice");
  // A new password (same user) revokes the refresh token.
  await writeUsers(htpasswd, { alice: "new-pw", bob: "bob-pw" });
  const deadline = Date.now() + 5000;
  let status = 200;
  while (status === 200 && Date.now() < deadline) {
    const res = await reg.fetch(
      "/token",
      form({ grant_type: "refresh_token", refresh_token: issued.refresh_token }),
    );
    status = res.status;
    await res.body?.cancel();
    if (status === 200) await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(status, 401);
});

Deno.test("failed logins are throttled per address with 429 and Retry-After, before any password check", async () => {
  const { htpasswd } = await usersDir();
  await using reg = await startRegistry({ htpasswd });
  const statuses: number[] = [];
  let retryAfter: string | null = null;
  for (let i = 0; i < 14; i++) {
    const res = await reg.fetch("/v2/", {
      headers: { Authorization: basic("alice", `guess-${i}`) },
    });
    await res.body?.cancel();
    statuses.push(res.status);
    if (res.status === 429) retryAfter = res.headers.get("retry-after");
  }
  assert.deepEqual(statuses.slice(0, 10), Array(10).fill(401));
  assert.ok(statuses.slice(10).includes(429), statuses.join(","));
  assert.match(retryAfter ?? "", /^[1-9][0-9]*$/);
  // While throttled even the right password waits: nothing is checked.
  const right = await reg.fetch("/v2/", { headers: { Authorization: basic("alice", "alice-pw") } });
  await right.body?.cancel();
  assert.equal(right.status, 429);
});

Deno.test("parallel guesses are held to the same budget, and a signed-in neighbour is not locked out", async () => {
  const { htpasswd } = await usersDir();
  await using reg = await startRegistry({ htpasswd });
  const get = async (user: string, password: string) => {
    const res = await reg.fetch("/v2/", { headers: { Authorization: basic(user, password) } });
    await res.body?.cancel();
    return res.status;
  };
  assert.equal(await get("alice", "alice-pw"), 200);
  const burst = await Promise.all(Array.from({ length: 30 }, (_, i) => get("mallory", `g${i}`)));
  // Ten free failures, and the eleventh locks: never more checked than in a row.
  assert.ok(burst.filter((s) => s === 401).length <= 11, burst.join(","));
  assert.ok(burst.includes(429), burst.join(","));
  // The next failure locks the address; alice's working credentials (verified a moment
  // ago) still pass.
  await get("mallory", "another");
  assert.equal(await get("mallory", "yet another"), 429);
  assert.equal(await get("alice", "alice-pw"), 200);
});

Deno.test("hostile Authorization headers get 400 or 401, never a 500", async () => {
  const { htpasswd } = await usersDir();
  for (const auth of ["basic", "token"] as const) {
    await using reg = await startRegistry({ auth, htpasswd });
    const port = Number(new URL(reg.url).port);
    const values = [
      "Basic " + "A".repeat(20_000),
      "Bearer " + "a.".repeat(6000) + "b",
      "Basic %%%%",
      "Basic YWxpY2U6",
      "Basic =",
      "Basic YQ==:",
      "Bearer ",
      "Bearer a.b",
      "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
      "bAsIc " + btoa("alice:alice-pw").slice(0, 5),
      "Negotiate YII=",
      "\u00ff\u00fe",
    ];
    for (const value of values) {
      const res = await fetch(`${reg.url}/v2/x/tags/list`, { headers: { Authorization: value } })
        .catch(() => null);
      if (res === null) continue; // refused by the client library itself
      await res.body?.cancel();
      assert.ok([400, 401, 429].includes(res.status), `${value.slice(0, 40)}: ${res.status}`);
    }
    // Raw bytes and several headers, as no fetch would send them.
    for (
      const head of [
        "Authorization: Basic \x01\x02\x03\r\n",
        `Authorization: ${basic("alice", "alice-pw")}\r\nAuthorization: Basic Ym9iOmJvYi1wdw==\r\n`,
        "Authorization: Basic " + "\xc3\x28".repeat(100) + "\r\n",
      ]
    ) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(Uint8Array.from(
        `GET /v2/x/tags/list HTTP/1.1\r\nHost: 127.0.0.1\r\n${head}Connection: close\r\n\r\n`,
        (c) => c.charCodeAt(0) & 0xff,
      ));
      const buffer = new Uint8Array(4096);
      const n = await conn.read(buffer);
      conn.close();
      const status = Number(
        /^HTTP\/1\.1 (\d{3})/.exec(new TextDecoder().decode(buffer.subarray(0, n ?? 0)))?.[1],
      );
      assert.ok([400, 401, 429].includes(status), `${JSON.stringify(head)}: ${status}`);
    }
  }
});

Deno.test("htpasswd and policy edits apply without a restart; a broken edit keeps the previous version", async () => {
  const { htpasswd, policy } = await usersDir();
  await Deno.writeTextFile(
    policy,
    JSON.stringify({ rules: [{ repository: "**", who: ["alice"], allow: ["pull"] }] }),
  );
  await using reg = await startRegistry({ htpasswd, policy });
  const push = async (user: string, password: string) => {
    const res = await reg.fetch("/v2/team/app/blobs/uploads/", {
      method: "POST",
      headers: { Authorization: basic(user, password) },
    });
    await res.body?.cancel();
    return res.status;
  };
  const eventually = async (what: () => Promise<number>, want: number) => {
    const deadline = Date.now() + 5000;
    let got = await what();
    while (got !== want && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      got = await what();
    }
    assert.equal(got, want);
  };
  assert.equal(await push("alice", "alice-pw"), 403);
  await Deno.writeTextFile(
    policy,
    JSON.stringify({ rules: [{ repository: "team/*", who: ["alice"], allow: ["pull", "push"] }] }),
  );
  await eventually(() => push("alice", "alice-pw"), 202);
  await Deno.writeTextFile(policy, "{ not json");
  await new Promise((r) => setTimeout(r, 1200));
  assert.equal(
    await push("alice", "alice-pw"),
    202,
    "a broken policy edit keeps the last good one",
  );
  await writeUsers(htpasswd, { alice: "changed" });
  await eventually(() => push("alice", "alice-pw"), 401);
  assert.equal(await push("alice", "changed"), 202);
});

Deno.test("every refusal and every grant beyond pull is one audit line, without secrets", async () => {
  const { dir, htpasswd } = await usersDir();
  await using reg = await spawnRegistry([
    "--htpasswd",
    htpasswd,
    "--data",
    `${dir}/data`,
    "--log-level",
    "info",
  ]);
  const send = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(reg.url + path, init);
    await res.body?.cancel();
    return res.status;
  };
  assert.equal(
    await send("/v2/a/blobs/uploads/", {
      method: "POST",
      headers: { Authorization: basic("alice", "alice-pw") },
    }),
    202,
  );
  assert.equal(
    await send("/v2/a/tags/list", { headers: { Authorization: basic("alice", "s3cret-guess") } }),
    401,
  );
  assert.equal(await send("/v2/a/tags/list"), 401);
  const auditLines = () => reg.lines.map((l) => JSON.parse(l)).filter((l) => l.event === "auth");
  const deadline = Date.now() + 5000;
  while (auditLines().length < 3 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const lines = reg.lines;
  const audit = auditLines();
  assert.deepEqual(
    audit.map(({ user, repository, action, result, remote }) => ({
      user,
      repository,
      action,
      result,
      remote,
    })),
    [
      { user: "alice", repository: "a", action: "push", result: "granted", remote: "127.0.0.1" },
      { user: "alice", repository: "a", action: "pull", result: "refused", remote: "127.0.0.1" },
      {
        user: null,
        repository: "a",
        action: "pull",
        result: "unauthenticated",
        remote: "127.0.0.1",
      },
    ],
  );
  const all = lines.join("\n");
  for (const secret of ["alice-pw", "s3cret-guess", btoa("alice:alice-pw"), "$2"]) {
    assert.ok(!all.includes(secret), `log holds ${secret}`);
  }
});

Deno.test("serving a non-loopback address without authentication is refused at start-up, with how to fix it", async () => {
  const child = await runMain(["serve", "--listen", "0.0.0.0:0"]);
  assert.equal(child.code, 2);
  const stderr = child.stderr.trim();
  assert.equal(stderr.split("\n").length, 1, stderr);
  assert.match(
    stderr,
    /^berth: Refusing to serve 0\.0\.0\.0 without authentication.*user add.*--insecure-no-auth/,
  );
});

export { parseChallenge };
