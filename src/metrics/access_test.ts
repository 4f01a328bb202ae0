/**
 * Unit tests of who may read `/metrics`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Gate, type GateOptions } from "../auth/gate.ts";
import type { Action } from "../auth/scope.ts";
import type { RequestContext } from "../http/context.ts";
import type { Logger } from "../log.ts";
import { OciError } from "../oci/errors.ts";
import { authorizeMetrics, METRICS_REPOSITORY } from "./access.ts";

function gate(options: Partial<GateOptions> = {}): Gate {
  return new Gate({
    mode: "basic",
    users: {
      verify: (user, password) => Promise.resolve(password === `${user}-pw`),
      fingerprint: (user) => user,
    },
    policy: {
      current: () =>
        Promise.resolve({
          allowed: (user: string | null, repo: string) =>
            new Set<Action>(user === "prom" && repo === METRICS_REPOSITORY ? ["pull"] : []),
        }),
    },
    tokens: null,
    throttle: { check: () => 0, failed() {}, succeeded() {}, begin() {}, end() {} },
    service: "berth",
    realm: "",
    ownIssuer: true,
    ...options,
  });
}

/** Runs the step for a request with `authorization`: the status, and the audit lines. */
async function ask(
  g: Gate,
  authorization: string | null,
): Promise<{ status: number; audits: Record<string, unknown>[] }> {
  const audits: Record<string, unknown>[] = [];
  const log = { info: (_: string, fields: Record<string, unknown>) => audits.push(fields) };
  const step = authorizeMetrics(g, log as unknown as Logger, false);
  const headers: Record<string, string> = authorization ? { Authorization: authorization } : {};
  const ctx = {
    req: new Request("http://localhost/metrics", { headers }),
    id: "r",
    remoteAddr: null,
    started: 0,
    url: new URL("http://localhost/metrics"),
    route: null,
    caller: null,
  } as RequestContext;
  try {
    const res = await step(ctx, () => Promise.resolve(new Response("ok")));
    assert.ok(ctx.caller, "the caller is set");
    return { status: res.status, audits };
  } catch (error) {
    assert.ok(error instanceof OciError);
    return { status: error.status, audits };
  }
}

const basic = (user: string, password: string) => `Basic ${btoa(`${user}:${password}`)}`;

Deno.test("authorizeMetrics() lets anyone in with authentication off", async () => {
  assert.equal((await ask(gate({ mode: "none" }), null)).status, 200);
});

Deno.test("authorizeMetrics() asks for credentials, refuses wrong ones and users the policy does not allow", async () => {
  const g = gate();
  const none = await ask(g, null);
  assert.equal(none.status, 401);
  assert.deepEqual(none.audits.map((a) => [a.user, a.action, a.result]), [
    [null, "metrics", "unauthenticated"],
  ]);
  const wrong = await ask(g, basic("prom", "nope"));
  assert.equal(wrong.status, 401);
  assert.equal(wrong.audits[0]!.result, "refused");
  const denied = await ask(g, basic("alice", "alice-pw"));
  assert.equal(denied.status, 403);
  assert.deepEqual(denied.audits.map((a) => [a.user, a.result]), [["alice", "denied"]]);
  const allowed = await ask(g, basic("prom", "prom-pw"));
  assert.deepEqual(allowed, { status: 200, audits: [] });
});

Deno.test("authorizeMetrics() lets every signed-in user in when there is no policy", async () => {
  assert.equal((await ask(gate({ policy: null }), basic("alice", "alice-pw"))).status, 200);
  assert.equal((await ask(gate({ policy: null }), null)).status, 401);
});

Deno.test("authorizeMetrics() takes Basic credentials in token mode too", async () => {
  const g = gate({ mode: "token", tokens: { verify: () => Promise.reject(new Error("bad")) } });
  assert.equal((await ask(g, basic("prom", "prom-pw"))).status, 200);
  assert.equal((await ask(g, "Bearer not.a.token")).status, 401);
  assert.equal((await ask(g, basic("prom", "nope"))).status, 401);
});
