import assert from "node:assert/strict";
import { compare, hashSync } from "bcryptjs";
import { AuthFileError } from "./file_watch.ts";
import { constantTimeEqual, Htpasswd, parseHtpasswd, userNameProblem } from "./htpasswd.ts";

const FAST = 4;
const ALICE = hashSync("alice-pw", FAST);
const BOB = hashSync("bob-pw", FAST).replace(/^\$2b\$/, "$2y$");

async function htpasswdFile(text: string) {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/htpasswd`;
  await Deno.writeTextFile(path, text);
  let clock = 1_000_000;
  const errors: string[] = [];
  const users = await Htpasswd.open(path, {
    onError: (message) => errors.push(message),
    now: () => clock,
  });
  return {
    path,
    users,
    errors,
    tick(ms: number) {
      clock += ms;
    },
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

function parseError(text: string): string {
  try {
    parseHtpasswd(text, "users");
  } catch (error) {
    assert.ok(error instanceof AuthFileError);
    return error.message;
  }
  assert.fail("parsed");
}

Deno.test("parseHtpasswd() reads bcrypt entries and skips blank lines and comments", () => {
  const a2a = ALICE.replace(/^\$2b\$/, "$2a$");
  const entries = parseHtpasswd(
    `# users\r\n\nalice:${a2a}\r\n  # indented comment\nbob:${BOB}   \n`,
    "users",
  );
  assert.deepEqual([...entries], [["alice", a2a], ["bob", BOB]]);
});

Deno.test("parseHtpasswd() refuses every other scheme, naming the file, line and scheme", () => {
  const cases: [string, string][] = [
    ["$apr1$abcdefgh$0123456789abcdefghijkl", "MD5 ($apr1$)"],
    ["{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1 ({SHA})"],
    ["$1$salt$hash", "crypt (1)"],
    ["$6$salt$hash", "crypt (6)"],
    ["abJnggxhB/yWI", "DES crypt"],
    ["secret", "plain text or an unknown scheme"],
    ["$2x$10$" + "a".repeat(53), "a malformed or unsupported bcrypt hash"],
    [ALICE.slice(0, -1), "a malformed or unsupported bcrypt hash"],
    [ALICE.replace("$04$", "$03$"), "a malformed or unsupported bcrypt hash"],
  ];
  for (const [hash, scheme] of cases) {
    assert.equal(
      parseError(`# comment\nalice:${ALICE.replace("alice", "x")}\nbob:${hash}\n`),
      `Cannot load htpasswd file "users" (line 3): user "bob" has ${scheme}; only bcrypt ` +
        `($2y$, $2a$, $2b$) is accepted (set it again with "berth user add")`,
    );
  }
});

Deno.test("parseHtpasswd() refuses malformed lines, bad names and duplicate users", () => {
  assert.equal(
    parseError(`alice:${ALICE}\njust-a-name\n`),
    `Cannot load htpasswd file "users" (line 2): expected "user:hash"`,
  );
  assert.equal(
    parseError(`:${ALICE}`),
    `Cannot load htpasswd file "users" (line 1): the user name is empty`,
  );
  assert.equal(
    parseError(`al ice:${ALICE}`),
    `Cannot load htpasswd file "users" (line 1): the user name contains whitespace or control characters`,
  );
  assert.equal(
    parseError(`alice:${ALICE}\n\nalice:${BOB}\n`),
    `Cannot load htpasswd file "users" (line 3): user "alice" is already on line 1`,
  );
});

Deno.test("userNameProblem() accepts ordinary names and refuses the rest", () => {
  for (const name of ["alice", "ci-bot@example.com", "ÄÖ", "a".repeat(256)]) {
    assert.equal(userNameProblem(name), null, name);
  }
  assert.equal(userNameProblem(""), "is empty");
  assert.equal(userNameProblem("a".repeat(257)), "is longer than 256 bytes");
  assert.equal(userNameProblem("ä".repeat(129)), "is longer than 256 bytes");
  assert.equal(userNameProblem("a:b"), `contains ":"`);
  assert.equal(userNameProblem("a\tb"), "contains whitespace or control characters");
  assert.equal(userNameProblem("a\u0000"), "contains whitespace or control characters");
  assert.equal(userNameProblem("*"), "is reserved by the policy file");
  assert.equal(userNameProblem("anonymous"), "is reserved by the policy file");
});

Deno.test("Htpasswd.verify() accepts the right password only", async () => {
  await using t = await htpasswdFile(`alice:${ALICE}\nbob:${BOB}\n`);
  assert.equal(await t.users.verify("alice", "alice-pw"), true);
  assert.equal(await t.users.verify("bob", "bob-pw"), true, "$2y$ is read");
  assert.equal(await t.users.verify("alice", "bob-pw"), false);
  assert.equal(await t.users.verify("alice", ""), false);
  assert.equal(await t.users.verify("carol", "alice-pw"), false);
  assert.equal(await t.users.verify("Alice", "alice-pw"), false);
});

Deno.test("Htpasswd.verify() refuses a password longer than bcrypt's 72 bytes", async () => {
  const password = "p".repeat(72);
  await using t = await htpasswdFile(`alice:${hashSync(password, FAST)}\n`);
  assert.equal(await t.users.verify("alice", password), true);
  // bcrypt alone reads only the first 72 bytes and would let this in.
  assert.equal(await compare(`${password}x`, hashSync(password, FAST)), true);
  assert.equal(await t.users.verify("alice", `${password}x`), false);
});

Deno.test("Htpasswd.verify() refuses over-long user names and passwords", async () => {
  await using t = await htpasswdFile(`alice:${ALICE}\n`);
  assert.equal(await t.users.verify("a".repeat(257), "alice-pw"), false);
  assert.equal(await t.users.verify("alice", "p".repeat(1025)), false);
});

Deno.test("Htpasswd.verify() spends a bcrypt on an unknown user", async () => {
  // Cost 10: a check takes tens of milliseconds, a refusal without bcrypt well under one.
  await using t = await htpasswdFile(`alice:${hashSync("alice-pw", 10)}\n`);
  const time = async (user: string) => {
    const start = performance.now();
    assert.equal(await t.users.verify(user, "wrong"), false);
    return performance.now() - start;
  };
  await time("alice");
  const known = Math.min(await time("alice"), await time("alice"));
  const unknown = Math.min(await time("nobody"), await time("nobody"));
  assert.ok(unknown > known / 3, `unknown ${unknown} ms, known ${known} ms`);
});

Deno.test("Htpasswd.verify() remembers a success until it expires", async () => {
  await using t = await htpasswdFile(`alice:${hashSync("alice-pw", 10)}\n`);
  const time = async () => {
    const start = performance.now();
    assert.equal(await t.users.verify("alice", "alice-pw"), true);
    return performance.now() - start;
  };
  const first = await time();
  const cached = await time();
  assert.ok(cached < first / 4, `cached ${cached} ms, first ${first} ms`);
  t.tick(60_001);
  const expired = await time();
  assert.ok(expired > first / 4, `expired ${expired} ms, first ${first} ms`);
});

Deno.test("Htpasswd.verify() applies a password change without a restart", async () => {
  await using t = await htpasswdFile(`alice:${ALICE}\n`);
  assert.equal(await t.users.verify("alice", "alice-pw"), true);
  await Deno.writeTextFile(t.path, `alice:${hashSync("new-pw", FAST)}\ncarol:${BOB}\n`);
  t.tick(1000);
  assert.equal(await t.users.verify("alice", "alice-pw"), false, "the remembered success is gone");
  assert.equal(await t.users.verify("alice", "new-pw"), true);
  assert.equal(await t.users.verify("carol", "bob-pw"), true);
  assert.deepEqual(t.users.users(), ["alice", "carol"]);
});

Deno.test("Htpasswd.verify() keeps the previous users when an edit is refused", async () => {
  await using t = await htpasswdFile(`alice:${ALICE}\n`);
  await Deno.writeTextFile(t.path, `alice:$apr1$abcdefgh$0123456789abcdefghijkl\n`);
  t.tick(1000);
  assert.equal(await t.users.verify("alice", "alice-pw"), true);
  assert.equal(t.errors.length, 1);
  assert.match(t.errors[0]!, /\(line 1\): user "alice" has MD5/);
});

Deno.test("Htpasswd.verify() shares one bcrypt among identical checks in flight", async () => {
  await using t = await htpasswdFile(`alice:${hashSync("alice-pw", 10)}\n`);
  const start = performance.now();
  await t.users.verify("alice", "alice-pw");
  const one = performance.now() - start;
  t.tick(60_001);
  const start8 = performance.now();
  const results = await Promise.all(
    Array.from({ length: 8 }, () => t.users.verify("alice", "alice-pw")),
  );
  const eight = performance.now() - start8;
  assert.deepEqual(results, Array(8).fill(true));
  assert.ok(eight < one * 3, `8 concurrent ${eight} ms, one ${one} ms`);
});

Deno.test("Htpasswd.open() refuses a file with a non-bcrypt entry", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/h`, `alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n`);
  await assert.rejects(
    () => Htpasswd.open(`${dir}/h`),
    (error) => error instanceof AuthFileError && error.message.includes(`${dir}/h" (line 1)`),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("Htpasswd.fingerprint() changes when the password does", async () => {
  await using t = await htpasswdFile(`alice:${ALICE}\nbob:${BOB}\n`);
  const alice = t.users.fingerprint("alice");
  assert.match(alice!, /^[A-Za-z0-9_-]{16}$/);
  assert.notEqual(alice, t.users.fingerprint("bob"));
  assert.equal(t.users.fingerprint("carol"), null);
  assert.equal(t.users.fingerprintMatches("alice", alice!), true);
  // Let the looks those calls started finish before the edit, so none of them reads it.
  await t.users.refresh();
  await Deno.writeTextFile(t.path, `alice:${hashSync("alice-pw", FAST)}\nbob:${BOB}\n`);
  await t.users.refresh();
  assert.equal(t.users.fingerprint("alice"), alice, "looked again within the second");
  t.tick(1000);
  await t.users.refresh();
  assert.notEqual(t.users.fingerprint("alice"), alice, "same password, new salt");
  assert.equal(t.users.fingerprintMatches("alice", alice!), false);
  assert.equal(t.users.fingerprintMatches("carol", alice!), false);
});

Deno.test("Htpasswd.fingerprint() sees an edit by the next call without a verify or refresh", async () => {
  await using t = await htpasswdFile(`alice:${ALICE}\n`);
  const before = t.users.fingerprint("alice");
  await Deno.writeTextFile(t.path, `alice:${hashSync("changed", FAST)}\n`);
  t.tick(1000);
  assert.equal(t.users.fingerprint("alice"), before, "the first call starts the look");
  // The look reads the file in the background; no clock tick is needed for it to land.
  const deadline = Date.now() + 2000;
  while (t.users.fingerprint("alice") === before && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.notEqual(t.users.fingerprint("alice"), before);
});

Deno.test("constantTimeEqual() compares strings of any length", () => {
  assert.equal(constantTimeEqual("abc", "abc"), true);
  assert.equal(constantTimeEqual("abc", "abd"), false);
  assert.equal(constantTimeEqual("abc", "abcd"), false);
  assert.equal(constantTimeEqual("", ""), true);
  assert.equal(constantTimeEqual("", "a"), false);
});
