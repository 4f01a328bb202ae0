import assert from "node:assert/strict";
import { OciError } from "../oci/errors.ts";
import { Gate, type GateOptions, type PolicyRules } from "./gate.ts";
import type { Action } from "./scope.ts";
import type { Access } from "./tokens.ts";

const TARGET = { host: "reg.example:5000", https: true };

/** alice may pull and push `a`; anonymous may pull `pub`. */
const RULES: PolicyRules = {
  allowed(user, repo) {
    if (user === "alice" && repo === "a") return new Set<Action>(["pull", "push"]);
    if (repo === "pub") return new Set<Action>(["pull"]);
    return new Set();
  },
};

function gate(options: Partial<GateOptions> = {}): Gate {
  return new Gate({
    mode: "basic",
    users: {
      verify: (user, password) => Promise.resolve(user === "alice" && password === "pw"),
      fingerprint: (user) => user === "alice" ? "fp" : null,
    },
    policy: { current: () => Promise.resolve(RULES) },
    tokens: {
      verify(token) {
        const [, subject, access] = /^good-(\w+)-(.*)$/.exec(token) ?? [];
        if (access === undefined) return Promise.reject(new Error("bad"));
        return Promise.resolve({ subject: subject!, access: JSON.parse(atob(access)) });
      },
    },
    throttle: { check: () => 0, failed() {}, succeeded() {}, begin() {}, end() {} },
    service: "berth",
    realm: "",
    ownIssuer: true,
    ...options,
  });
}

const request = (authorization?: string) =>
  new Request("http://x/v2/", authorization ? { headers: { authorization } } : {});

async function refusedWith(promise: Promise<unknown>): Promise<OciError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof OciError);
    return error;
  }
  assert.fail("expected a refusal");
}

Deno.test("Gate.challenge() writes Basic, and Bearer with the realm, service, scope and error", () => {
  assert.equal(gate().challenge(TARGET), 'Basic realm="berth",charset="UTF-8"');
  const token = gate({ mode: "token" });
  const scope = { type: "repository" as const, name: "a/b", actions: ["pull", "push"] };
  assert.equal(
    token.challenge(TARGET, [scope], "insufficient_scope"),
    'Bearer realm="https://reg.example:5000/token",service="berth",' +
      'scope="repository:a/b:pull,push",error="insufficient_scope"',
  );
  const mount = { type: "repository" as const, name: "src", actions: ["pull"] };
  assert.match(
    token.challenge(TARGET, [scope, mount]),
    /,scope="repository:a\/b:pull,push repository:src:pull"$/,
  );
  const external = gate({ mode: "token", realm: "https://auth.example/t" });
  assert.equal(
    external.challenge({ ...TARGET, https: false }),
    'Bearer realm="https://auth.example/t",service="berth"',
  );
});

Deno.test("Gate.identify() takes the mode's credentials and refuses the rest with 401", async () => {
  const basic = gate();
  assert.deepEqual(await basic.identify(request(), "1.2.3.4", TARGET), {
    user: null,
    access: null,
  });
  assert.deepEqual(
    await basic.identify(request("Basic " + btoa("alice:pw")), "1.2.3.4", TARGET),
    { user: "alice", access: null },
  );
  for (const header of ["Basic " + btoa("alice:no"), "Bearer good-alice-W10=", "Basic ???"]) {
    const error = await refusedWith(basic.identify(request(header), "1.2.3.4", TARGET));
    assert.equal(error.status, 401, header);
    assert.match(error.options.headers!["WWW-Authenticate"]!, /^Basic /);
  }
  const token = gate({ mode: "token" });
  const access: Access = [{ type: "repository", name: "a", actions: ["pull"] }];
  assert.deepEqual(
    await token.identify(
      request(`Bearer good-alice-${btoa(JSON.stringify(access))}`),
      "1.2.3.4",
      TARGET,
    ),
    { user: "alice", access },
  );
  // A user removed from the users file: its tokens from Berth are refused at once.
  const ghost = `Bearer good-ghost-${btoa(JSON.stringify(access))}`;
  assert.equal((await refusedWith(token.identify(request(ghost), "1.2.3.4", TARGET))).status, 401);
  const scope = { type: "repository" as const, name: "a", actions: ["pull"] };
  for (const header of ["Bearer bad", "Basic " + btoa("alice:pw")]) {
    const error = await refusedWith(token.identify(request(header), "1.2.3.4", TARGET, [scope]));
    assert.equal(error.status, 401);
    assert.match(error.options.headers!["WWW-Authenticate"]!, /scope="repository:a:pull"/);
  }
  const none = gate({ mode: "none" });
  assert.deepEqual(await none.identify(request("Basic garbage"), "1.2.3.4", TARGET), {
    user: null,
    access: null,
  });
});

Deno.test("Gate.login() answers 429 with Retry-After while throttled, without checking", async () => {
  let checked = 0;
  const throttled = gate({
    users: {
      verify: () => Promise.resolve(++checked > 0),
      fingerprint: () => null,
    },
    throttle: { check: () => 2.5, failed() {}, succeeded() {}, begin() {}, end() {} },
  });
  const error = await refusedWith(throttled.login("1.2.3.4", "alice", "pw", "Basic"));
  assert.equal(error.status, 429);
  assert.equal(error.options.headers!["Retry-After"], "3");
  assert.equal(checked, 0);
});

Deno.test("Gate.caller() grants the policy's rights, within a token only what it also grants", async () => {
  const basic = await gate().caller({ user: "alice", access: null });
  assert.equal(basic.can("push", "a"), true);
  assert.equal(basic.can("delete", "a"), false);
  const anonymous = await gate().caller({ user: null, access: null });
  assert.equal(anonymous.can("pull", "pub"), true);
  assert.equal(anonymous.can("pull", "a"), false);
  const access: Access = [{ type: "repository", name: "a", actions: ["pull"] }];
  const token = await gate({ mode: "token" }).caller({ user: "alice", access });
  assert.equal(token.can("pull", "a"), true);
  assert.equal(token.can("push", "a"), false, "the policy grants push but the token does not");
  assert.equal(token.lists("a"), true);
  // An external issuer without a policy: the token alone decides; no token, nothing.
  const external = gate({ mode: "token", ownIssuer: false, policy: null });
  const all: Access = [{ type: "repository", name: "z", actions: ["*"] }];
  const bearer = await external.caller({ user: "bob", access: all });
  assert.equal(bearer.can("delete", "z"), true);
  assert.equal(bearer.can("pull", "a"), false);
  assert.equal((await external.caller({ user: null, access: null })).can("pull", "pub"), false);
  // No policy file: signed-in users everything, anonymous nothing; mode none everyone everything.
  const open = gate({ policy: null });
  assert.equal((await open.caller({ user: "bob", access: null })).can("delete", "q"), true);
  assert.equal((await open.caller({ user: null, access: null })).can("pull", "q"), false);
  const none = gate({ mode: "none", policy: null });
  assert.equal((await none.caller({ user: null, access: null })).can("delete", "q"), true);
});

Deno.test("Gate.refusal() is 401 for anonymous, 401 insufficient_scope when a new token helps, else 403", async () => {
  const scope = (name: string) => [{ type: "repository" as const, name, actions: ["push"] }];
  const basic = gate();
  assert.equal(
    (await basic.refusal({ user: null, access: null }, "push", scope("a"), TARGET)).status,
    401,
  );
  const denied = await basic.refusal({ user: "alice", access: null }, "push", scope("b"), TARGET);
  assert.equal(denied.status, 403);
  assert.equal(denied.code, "DENIED");
  const token = gate({ mode: "token" });
  const lacking = await token.refusal({ user: "alice", access: [] }, "push", scope("a"), TARGET);
  assert.equal(lacking.status, 401);
  assert.match(lacking.options.headers!["WWW-Authenticate"]!, /error="insufficient_scope"/);
  assert.equal(
    (await token.refusal({ user: "alice", access: [] }, "push", scope("b"), TARGET)).status,
    403,
  );
  const anonymousToken = await token.refusal(
    { user: null, access: [] },
    "push",
    scope("a"),
    TARGET,
  );
  assert.equal(anonymousToken.status, 401);
  const external = gate({ mode: "token", ownIssuer: false });
  assert.equal(
    (await external.refusal({ user: "bob", access: [] }, "push", scope("b"), TARGET)).status,
    401,
  );
});
