import assert from "node:assert/strict";
import { AuthFileError } from "./file_watch.ts";
import { parsePolicy, Policy, PolicyFile } from "./policy.ts";
import type { Action } from "./scope.ts";

const EXAMPLE = {
  groups: { "team-a": ["alice", "bob"], ops: ["olga"] },
  rules: [
    { repository: "**", who: ["*"], allow: ["pull"] },
    { repository: "team-a/**", who: ["group:team-a"], allow: ["pull", "push", "delete"] },
    { repository: "public/*", who: ["anonymous"], allow: ["pull"] },
    { repository: "team-a/secret", who: ["bob"], allow: [] },
    // Ties: two rules of equal repository and subject specificity add up.
    { repository: "shared/*", who: ["group:ops"], allow: ["pull"] },
    { repository: "shared/*", who: ["group:team-a", "group:ops"], allow: ["push"] },
    // Repository specificity: literal characters, then fewer **, then fewer *.
    { repository: "deep/**", who: ["*"], allow: ["push"] },
    { repository: "deep/*/x", who: ["*"], allow: ["delete"] },
    { repository: "ab/**", who: ["carol"], allow: ["delete"] },
    { repository: "ab/*", who: ["*"], allow: ["push"] },
    { repository: "lib-*/*", who: ["*"], allow: ["push"] },
    { repository: "lib-*/**", who: ["carol"], allow: ["delete"] },
    // Subject specificity breaks a repository tie: user > group > * > anonymous.
    { repository: "tie/*", who: ["anonymous"], allow: ["pull"] },
    { repository: "tie/*", who: ["*"], allow: ["push"] },
    { repository: "tie/*", who: ["group:ops"], allow: ["delete"] },
    { repository: "tie/*", who: ["olga"], allow: ["pull", "push", "delete"] },
    { repository: "closed/**", who: ["anonymous"], allow: [] },
  ],
};

const ALL: Action[] = ["pull", "push", "delete"];

/** [user, repository, expected actions, why]. */
const TABLE: [string | null, string, Action[], string][] = [
  ["alice", "anything", ["pull"], "* covers every signed-in user"],
  [null, "anything", [], "* does not cover anonymous callers"],
  ["alice", "team-a/app", ALL, "group member, more literal glob wins"],
  ["bob", "team-a/app/sub", ALL, "** crosses segments"],
  ["carol", "team-a/app", ["pull"], "not a member: only **"],
  [null, "team-a/app", [], "anonymous gets nothing"],
  ["alice", "team-a", ["pull"], "a/** does not match a"],
  ["bob", "team-a/secret", [], "empty allow denies, even against the group rule"],
  ["alice", "team-a/secret", ALL, "the deny names bob only"],
  [null, "public/x", ["pull"], "anonymous rule"],
  ["alice", "public/x", ["pull"], "anonymous covers signed-in users too"],
  [null, "public/x/y", [], "* stays within one segment"],
  ["alice", "public/x/y", ["pull"], "only ** left"],
  ["olga", "shared/x", ["pull", "push"], "equally specific winners add up"],
  ["alice", "shared/x", ["push"], "one group listed among others"],
  ["carol", "shared/x", ["pull"], "no group: falls back to **"],
  ["carol", "deep/a/x", ["delete"], "more literal characters beat fewer **"],
  ["carol", "deep/a/y", ["push"], "deep/*/x does not match"],
  ["carol", "ab/c", ["push"], "same literals: fewer ** wins even over a user name"],
  ["carol", "ab/c/d", ["delete"], "only ab/** matches"],
  ["carol", "lib-x/y", ["push"], "same literals, fewer **"],
  ["carol", "lib-x/y/z", ["delete"], "lib-*/* does not match"],
  [null, "tie/a", ["pull"], "anonymous"],
  ["alice", "tie/a", ["push"], "* beats anonymous"],
  ["olga", "tie/a", ALL, "user beats group"],
  [null, "closed/a", [], "empty allow for anonymous"],
  ["alice", "closed/a", [], "anonymous covers signed-in users: more literals win, denying"],
];

Deno.test("Policy.allowed() follows the specificity rules", async (t) => {
  const policy = parsePolicy(JSON.stringify(EXAMPLE), "policy.json");
  for (const [user, repository, expected, why] of TABLE) {
    await t.step(`${user ?? "anonymous"} on ${repository}: ${why}`, () => {
      assert.deepEqual([...policy.allowed(user, repository)].sort(), [...expected].sort());
    });
  }
});

Deno.test("Policy.allowed() keeps * within a segment and matches whole names", () => {
  const policy = parsePolicy(
    JSON.stringify({
      rules: [
        { repository: "a*c", who: ["*"], allow: ["pull"] },
        { repository: "x/**/z", who: ["*"], allow: ["push"] },
        { repository: "v1.0", who: ["*"], allow: ["delete"] },
      ],
    }),
    "p",
  );
  const pull = (repo: string) => policy.allowed("u", repo).has("pull");
  assert.equal(pull("ac"), true);
  assert.equal(pull("abbc"), true);
  assert.equal(pull("ab/c"), false);
  assert.equal(pull("xac"), false);
  assert.equal(pull("acx"), false);
  const push = (repo: string) => policy.allowed("u", repo).has("push");
  assert.equal(push("x/y/z"), true);
  assert.equal(push("x/y/w/z"), true);
  assert.equal(push("x/z"), false);
  const del = (repo: string) => policy.allowed("u", repo).has("delete");
  assert.equal(del("v1.0"), true);
  assert.equal(del("v1x0"), false, "a dot is literal");
});

Deno.test("Policy.allowed() allows nothing where no rule matches", () => {
  const policy = parsePolicy(
    JSON.stringify({ rules: [{ repository: "a", who: ["alice"], allow: ["pull"] }] }),
    "p",
  );
  assert.deepEqual(policy.allowed("alice", "b"), new Set());
  assert.deepEqual(policy.allowed("bob", "a"), new Set());
  assert.deepEqual(parsePolicy(`{"rules":[]}`, "p").allowed("alice", "a"), new Set());
});

Deno.test("Policy.allowed() returns a set the caller may change", () => {
  const policy = parsePolicy(JSON.stringify(EXAMPLE), "p");
  policy.allowed("alice", "team-a/app").clear();
  assert.equal(policy.allowed("alice", "team-a/app").size, 3);
});

Deno.test("Policy.everything() lets signed-in users do everything and anonymous callers nothing", () => {
  const policy = Policy.everything();
  assert.deepEqual(policy.allowed("alice", "any/repo"), new Set(ALL));
  assert.deepEqual(policy.allowed(null, "any/repo"), new Set());
});

Deno.test("parsePolicy() names what is wrong and where", () => {
  const rule = { repository: "a/**", who: ["*"], allow: ["pull"] };
  const cases: [unknown, string][] = [
    ["{", "not JSON"],
    [[], `expected an object with "rules" (and "groups")`],
    [{ rules: [], extra: 1 }, `unknown key "extra"; expected "groups" and "rules"`],
    [{}, `"rules" must be an array`],
    [{ rules: {} }, `"rules" must be an array`],
    [{ groups: [], rules: [] }, `"groups" must be an object of group name to user names`],
    [{ groups: { g: "alice" }, rules: [] }, `(group "g"): members must be an array of user names`],
    [{ rules: [rule, "x"] }, `(rule 1): expected an object`],
    [{ rules: [{ ...rule, allowed: [] }] }, `(rule 0): unknown key "allowed"`],
    [{ rules: [{ ...rule, repository: 3 }] }, `(rule 0): "repository" must be a string`],
    [{ rules: [{ ...rule, repository: "" }] }, `(rule 0): "repository" must be segments`],
    [{ rules: [{ ...rule, repository: "A/b" }] }, `(rule 0): "repository" must be segments`],
    [{ rules: [{ ...rule, repository: "a//b" }] }, `(rule 0): "repository" must be segments`],
    [{ rules: [{ ...rule, repository: "/a" }] }, `(rule 0): "repository" must be segments`],
    [{ rules: [{ ...rule, repository: "a/" }] }, `(rule 0): "repository" must be segments`],
    [{ rules: [{ ...rule, repository: "a?" }] }, `(rule 0): "repository" must be segments`],
    [
      { rules: [{ ...rule, repository: "a/***" }] },
      `(rule 0): "repository" has "***"; use "*" or "**"`,
    ],
    [{ rules: [rule, { ...rule, who: "*" }] }, `(rule 1): "who" must be an array of strings`],
    [{ rules: [{ ...rule, who: [] }] }, `(rule 0): "who" is empty`],
    [{ rules: [{ ...rule, who: [""] }] }, `(rule 0): an entry of "who" is empty`],
    [{ rules: [{ ...rule, who: ["group:x"] }] }, `(rule 0): unknown group "x" in "who"`],
    [{ rules: [{ ...rule, allow: "pull" }] }, `(rule 0): "allow" must be an array of actions`],
    [{ rules: [{ ...rule, allow: ["pull", "write"] }] }, `(rule 0): unknown action "write"`],
    [{ rules: [{ repository: "a", who: ["*"] }] }, `(rule 0): "allow" must be an array`],
  ];
  for (const [value, expected] of cases) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    assert.throws(() => parsePolicy(text, "policy.json"), (error) => {
      assert.ok(error instanceof AuthFileError);
      assert.ok(error.message.startsWith(`Cannot load policy file "policy.json"`), error.message);
      assert.ok(error.message.includes(expected), `${error.message} lacks ${expected}`);
      return true;
    });
  }
});

Deno.test("PolicyFile.allowed() applies an edit without a restart and keeps a good policy over a bad edit", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/policy.json`;
  const write = (allow: string[]) =>
    Deno.writeTextFile(path, JSON.stringify({ rules: [{ repository: "**", who: ["*"], allow }] }));
  await write(["pull"]);
  let clock = 0;
  const errors: string[] = [];
  const file = await PolicyFile.open(path, {
    onError: (message) => errors.push(message),
    now: () => clock,
  });
  assert.deepEqual(await file.allowed("alice", "a"), new Set(["pull"]));
  await write(["pull", "push"]);
  clock += 1000;
  assert.deepEqual(await file.allowed("alice", "a"), new Set(["pull", "push"]));
  await write(["pull", "fly"]);
  clock += 1000;
  assert.deepEqual(await file.allowed("alice", "a"), new Set(["pull", "push"]));
  assert.equal(errors.length, 1);
  assert.match(errors[0]!, /\(rule 0\): unknown action "fly"/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("PolicyFile.open() refuses a bad policy at start-up", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(
    `${dir}/p.json`,
    `{"rules":[{"repository":"a","who":["group:x"],"allow":[]}]}`,
  );
  await assert.rejects(
    () => PolicyFile.open(`${dir}/p.json`),
    (error) =>
      error instanceof AuthFileError && /\(rule 0\): unknown group "x"/.test(error.message),
  );
  await Deno.remove(dir, { recursive: true });
});
