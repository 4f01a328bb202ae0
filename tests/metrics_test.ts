/**
 * `/metrics` against a real server: the counts move with requests, labels are
 * route templates (not paths), the output parses as Prometheus text, and with
 * authentication on only allowed users may read it.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { basic, parseChallenge, writeUsers } from "./_auth.ts";
import { pushBlob, spawnRegistry, type TestRegistry } from "./_registry.ts";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE_REGEXP =
  /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? (\S+)$/;

/** Parses the text exposition format strictly: throws on any line that is not HELP, TYPE or a sample. */
function parseMetrics(text: string): { samples: Sample[]; types: Map<string, string> } {
  assert.ok(text.endsWith("\n"), "ends with a line feed");
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.slice(0, -1).split("\n")) {
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$/.exec(line);
    if (type) {
      assert.ok(!types.has(type[1]!), `one TYPE line for ${type[1]}`);
      types.set(type[1]!, type[2]!);
      continue;
    }
    if (/^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*$/.test(line)) continue;
    const match = SAMPLE_REGEXP.exec(line);
    assert.ok(match, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? "").matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[key!] = value!;
    }
    const value = match[3] === "+Inf" ? Infinity : Number(match[3]);
    assert.ok(!Number.isNaN(value), `a number: ${line}`);
    const family = match[1]!.replace(/_(bucket|sum|count)$/, "");
    assert.ok(types.has(match[1]!) || types.has(family), `a TYPE before ${match[1]}`);
    samples.push({ name: match[1]!, labels, value });
  }
  return { samples, types };
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
  return found.reduce((sum, s) => sum + s.value, 0);
}

async function scrape(url: string, init?: RequestInit): Promise<Sample[]> {
  const res = await fetch(`${url}/metrics`, init);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return parseMetrics(await res.text()).samples;
}

const MANIFEST = "/v2/:name+/manifests/:reference";

Deno.test("/metrics counts requests by route template and status, whatever the repository names", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-metrics-" });
  await using server = await spawnRegistry(["--data", dir]);
  try {
    const before = await scrape(server.url);
    const getManifest = { route: MANIFEST, method: "GET", status: "404" };
    for (let i = 0; i < 1000; i++) {
      const res = await fetch(`${server.url}/v2/team${i}/app${i}/manifests/v${i}`);
      await res.body?.cancel();
      assert.equal(res.status, 404);
    }
    await (await fetch(`${server.url}/no/such/path${Math.random()}`)).body?.cancel();
    const reg = { fetch: (path: string, init?: RequestInit) => fetch(server.url + path, init) };
    await pushBlob(reg as TestRegistry, "team/app", "some layer bytes");
    const after = await scrape(server.url);
    const requests = after.filter((s) => s.name === "berth_http_requests_total");
    assert.equal(
      value(after, "berth_http_requests_total", getManifest) -
        value(before, "berth_http_requests_total", getManifest),
      1000,
    );
    assert.equal(
      value(after, "berth_http_request_duration_seconds_count", { route: MANIFEST, method: "GET" }),
      1000,
    );
    assert.ok(requests.length < 40, `${requests.length} request series: bounded by routes`);
    for (const sample of requests) {
      assert.doesNotMatch(sample.labels.route!, /team|no\/such/, "a template, never a path");
    }
    assert.equal(
      value(after, "berth_http_requests_total", { route: "unmatched", status: "404" }),
      1,
    );
    assert.equal(
      value(after, "berth_http_requests_total", {
        route: "/v2/:name+/blobs/uploads{/}?",
        method: "POST",
        status: "201",
      }),
      1,
    );
    assert.equal(value(after, "berth_blob_store_written_bytes_total"), 16);
    const writes = ["put", "write_part"].map((op) =>
      value(after, "berth_blob_store_operation_duration_seconds_count", { op })
    );
    assert.equal(writes[0]! + writes[1]!, 1, "one write of the body, timed");
    assert.ok(value(after, "berth_kv_commits_total", { result: "ok" }) >= 1, "KV commits counted");
    assert.equal(value(after, "berth_uploads_in_flight"), 0);
    assert.ok(value(after, "process_resident_memory_bytes") > 0);
    // Buckets are cumulative and end with the count.
    const buckets = after.filter((s) =>
      s.name === "berth_http_request_duration_seconds_bucket" && s.labels.route === MANIFEST &&
      s.labels.method === "GET"
    );
    for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i]!.value >= buckets[i - 1]!.value);
    assert.equal(buckets.at(-1)!.labels.le, "+Inf");
    assert.equal(buckets.at(-1)!.value, 1000);
  } finally {
    await server.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("/metrics counts the bytes of blob downloads the connection guard writes itself", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-metrics-" });
  await using server = await spawnRegistry(["--data", dir]);
  try {
    const reg = { fetch: (path: string, init?: RequestInit) => fetch(server.url + path, init) };
    const bytes = "x".repeat(300_000);
    const digest = await pushBlob(reg as TestRegistry, "team/app", bytes);
    const blobs = { route: "/v2/:name+/blobs/:digest", method: "GET" };
    const before = value(await scrape(server.url), "berth_http_response_bytes_total", blobs);
    const res = await fetch(`${server.url}/v2/team/app/blobs/${digest}`);
    assert.equal((await res.text()).length, 300_000);
    const after = value(await scrape(server.url), "berth_http_response_bytes_total", blobs);
    assert.equal(after - before, 300_000);
  } finally {
    await server.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("/metrics answers other methods with 405 and the spec's error body", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-metrics-" });
  await using server = await spawnRegistry(["--data", dir]);
  try {
    const post = await fetch(`${server.url}/metrics`, { method: "POST" });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET");
    assert.equal((await post.json()).errors[0].code, "UNSUPPORTED");
    const head = await fetch(`${server.url}/metrics`, { method: "HEAD" });
    assert.equal(head.status, 405);
    assert.equal(head.headers.get("allow"), "GET");
  } finally {
    await server.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--metrics off serves no /metrics", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-metrics-" });
  await using server = await spawnRegistry(["--data", dir], { BERTH_METRICS: "off" });
  try {
    const res = await fetch(`${server.url}/metrics`);
    assert.equal(res.status, 404);
    assert.equal((await res.json()).errors[0].code, "UNSUPPORTED");
  } finally {
    await server.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

const POLICY = {
  groups: { metrics: ["prom"] },
  rules: [
    { repository: "**", who: ["*"], allow: ["pull"] },
    { repository: "_metrics", who: ["*"], allow: [] },
    { repository: "_metrics", who: ["group:metrics"], allow: ["pull"] },
  ],
};

Deno.test("/metrics with authentication on: 401 without valid credentials, 403 for others, audited", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-metrics-" });
  const users = join(dir, "users");
  const policy = join(dir, "policy.json");
  await writeUsers(users, { prom: "scrape", alice: "secret" });
  await Deno.writeTextFile(policy, JSON.stringify(POLICY));
  await using server = await spawnRegistry([
    "--data",
    dir,
    "--htpasswd",
    users,
    "--policy",
    policy,
    "--log-level",
    "info",
  ]);
  try {
    const none = await fetch(`${server.url}/metrics`);
    assert.equal(none.status, 401);
    assert.equal(parseChallenge(none.headers.get("www-authenticate"))?.scheme, "Basic");
    assert.equal((await none.json()).errors[0].code, "UNAUTHORIZED");
    const wrong = await fetch(`${server.url}/metrics`, {
      headers: { Authorization: basic("prom", "nope") },
    });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    const alice = await fetch(`${server.url}/metrics`, {
      headers: { Authorization: basic("alice", "secret") },
    });
    assert.equal(alice.status, 403);
    assert.equal((await alice.json()).errors[0].code, "DENIED");
    const samples = await scrape(server.url, {
      headers: { Authorization: basic("prom", "scrape") },
    });
    assert.equal(
      value(samples, "berth_http_requests_total", { route: "/metrics", status: "401" }),
      2,
    );
    assert.equal(
      value(samples, "berth_http_requests_total", { route: "/metrics", status: "403" }),
      1,
    );
    const audits = server.lines.map((line) => JSON.parse(line)).filter((entry) =>
      entry.msg === "auth" || entry.event === "auth" || entry.action === "metrics"
    ).filter((entry) => entry.action === "metrics");
    assert.deepEqual(
      audits.map((entry) => [entry.user, entry.result]),
      [[null, "unauthenticated"], ["prom", "refused"], ["alice", "denied"]],
    );
  } finally {
    await server.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("/metrics in token mode takes a Bearer token or Basic credentials of an allowed user", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-metrics-" });
  const users = join(dir, "users");
  await writeUsers(users, { prom: "scrape" });
  await using server = await spawnRegistry(["--data", dir, "--auth", "token", "--htpasswd", users]);
  try {
    const none = await fetch(`${server.url}/metrics`);
    assert.equal(none.status, 401);
    assert.equal(parseChallenge(none.headers.get("www-authenticate"))?.scheme, "Bearer");
    await none.body?.cancel();
    const tokenRes = await fetch(`${server.url}/token?service=berth`, {
      headers: { Authorization: basic("prom", "scrape") },
    });
    assert.equal(tokenRes.status, 200);
    const { token } = await tokenRes.json();
    await scrape(server.url, { headers: { Authorization: `Bearer ${token}` } });
    await scrape(server.url, { headers: { Authorization: basic("prom", "scrape") } });
    const bad = await fetch(`${server.url}/metrics`, {
      headers: { Authorization: "Bearer not.a.token" },
    });
    assert.equal(bad.status, 401);
    await bad.body?.cancel();
  } finally {
    await server.kill();
    await Deno.remove(dir, { recursive: true });
  }
});
