import assert from "node:assert/strict";
import { Htpasswd } from "../auth/htpasswd.ts";
import { userCommand } from "./user.ts";

const MD5_LINE = "old:$apr1$abcdefgh$0123456789abcdefghijkl";

/** Runs `berth user ...` with `stdin` as input; captures output and raw-mode switches. */
async function user(args: string[], stdin = "", isTerminal = false) {
  let stdout = "";
  let stderr = "";
  const raw: boolean[] = [];
  const code = await userCommand(args, {
    stdin: new Blob([stdin]).stream(),
    isTerminal,
    setRaw: (on) => raw.push(on),
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
  });
  return { code, stdout, stderr, raw };
}

async function tempDir() {
  const dir = await Deno.makeTempDir();
  return {
    dir,
    path: `${dir}/htpasswd`,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

async function verify(path: string, name: string, password: string): Promise<boolean> {
  return (await Htpasswd.open(path)).verify(name, password);
}

Deno.test("userCommand() add creates the file with mode 0600 from --password-stdin", async () => {
  await using t = await tempDir();
  const r = await user(
    ["add", "alice", "--htpasswd", t.path, "--password-stdin", "--cost", "4"],
    "s3cret\n",
  );
  assert.deepEqual([r.code, r.stderr], [0, ""]);
  assert.equal(r.stdout, `Added user "alice" in ${t.path}\n`);
  assert.equal((await Deno.stat(t.path)).mode! & 0o777, 0o600);
  assert.equal(await verify(t.path, "alice", "s3cret"), true);
  assert.equal(await verify(t.path, "alice", "s3cret\n"), false);
  assert.deepEqual(
    [...Deno.readDirSync(t.dir)].map((e) => e.name),
    ["htpasswd"],
    "no temp file left",
  );
});

Deno.test("userCommand() add replaces a user's hash and keeps the other lines and the mode", async () => {
  await using t = await tempDir();
  await user(["add", "alice", "--htpasswd", t.path, "--password-stdin", "--cost", "4"], "one");
  await user(["add", "bob", "--htpasswd", t.path, "--password-stdin", "--cost", "4"], "bob-pw");
  const bob = (await Deno.readTextFile(t.path)).split("\n")[1];
  await Deno.writeTextFile(t.path, `# our users\n${await Deno.readTextFile(t.path)}`);
  await Deno.chmod(t.path, 0o640);
  const r = await user(
    ["add", "alice", "--htpasswd", t.path, "--password-stdin", "--cost", "4"],
    "two\r\n",
  );
  assert.equal(r.code, 0);
  assert.equal(r.stdout, `Changed the password of user "alice" in ${t.path}\n`);
  const lines = (await Deno.readTextFile(t.path)).split("\n");
  assert.equal(lines[0], "# our users");
  assert.match(lines[1]!, /^alice:\$2b\$04\$/);
  assert.equal(lines[2], bob);
  assert.equal(lines.length, 4);
  assert.equal((await Deno.stat(t.path)).mode! & 0o777, 0o640);
  assert.equal(await verify(t.path, "alice", "two"), true);
  assert.equal(await verify(t.path, "alice", "one"), false);
});

Deno.test("userCommand() add asks twice on a terminal without echo", async () => {
  await using t = await tempDir();
  // "pX", backspace, "w€" then Enter; the second answer is typed straight.
  const r = await user(
    ["add", "alice", "--htpasswd", t.path, "--cost", "4"],
    "pX\x7fw€\rpw€\r",
    true,
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, "Password: \nPassword again: \n");
  assert.deepEqual(r.raw, [true, false, true, false]);
  assert.equal(await verify(t.path, "alice", "pw€"), true);
});

Deno.test("userCommand() add refuses passwords that do not match", async () => {
  await using t = await tempDir();
  const r = await user(["add", "alice", "--htpasswd", t.path], "one\rtwo\r", true);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /berth: The passwords do not match\n$/);
  assert.deepEqual(r.raw, [true, false, true, false]);
  await assert.rejects(() => Deno.stat(t.path), Deno.errors.NotFound);
});

Deno.test("userCommand() add needs --password-stdin when stdin is no terminal", async () => {
  await using t = await tempDir();
  const r = await user(["add", "alice", "--htpasswd", t.path], "pw\n");
  assert.equal(r.code, 2);
  assert.match(
    r.stderr,
    /^berth: Standard input is not a terminal: pass the password with --password-stdin\n/,
  );
});

Deno.test("userCommand() add refuses empty, over-long and multi-line passwords", async () => {
  await using t = await tempDir();
  const add = (stdin: string) =>
    user(["add", "alice", "--htpasswd", t.path, "--password-stdin", "--cost", "4"], stdin);
  const cases: [string, string][] = [
    ["", "berth: The password is empty\n"],
    ["\n", "berth: The password is empty\n"],
    ["p".repeat(73), "berth: The password is longer than 72 bytes, all bcrypt reads\n"],
    ["é".repeat(37), "berth: The password is longer than 72 bytes, all bcrypt reads\n"],
    ["one\ntwo\n", "berth: --password-stdin reads one line, but standard input has more\n"],
  ];
  for (const [stdin, message] of cases) {
    const r = await add(stdin);
    assert.deepEqual([r.code, r.stderr], [1, message], JSON.stringify(stdin));
  }
  await assert.rejects(() => Deno.stat(t.path), Deno.errors.NotFound);
  assert.equal((await add("p".repeat(72))).code, 0);
  assert.equal(await verify(t.path, "alice", "p".repeat(72)), true);
});

Deno.test("userCommand() refuses invalid user names", async () => {
  await using t = await tempDir();
  for (const name of ["a:b", "a b", "a\u0007", "", "x".repeat(257), "anonymous", "*"]) {
    const r = await user(["add", name, "--htpasswd", t.path, "--password-stdin"], "pw");
    assert.equal(r.code, 2, name);
    assert.match(r.stderr, /^berth: Invalid user name ".*": it /, name);
  }
});

Deno.test("userCommand() add refuses to extend a file the server would refuse, before asking", async () => {
  await using t = await tempDir();
  await Deno.writeTextFile(t.path, `${MD5_LINE}\n`);
  const r = await user(["add", "alice", "--htpasswd", t.path], "", true);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^berth: Cannot load htpasswd file ".*" \(line 1\): user "old" has MD5/);
  assert.equal(r.stderr.includes("Password"), false);
  assert.equal(await Deno.readTextFile(t.path), `${MD5_LINE}\n`);
  const fixed = await user(
    ["add", "old", "--htpasswd", t.path, "--password-stdin", "--cost", "4"],
    "pw",
  );
  assert.equal(fixed.code, 0, "replacing the MD5 entry fixes the file");
  assert.equal(await verify(t.path, "old", "pw"), true);
});

Deno.test("userCommand() remove deletes the user and reports a missing one", async () => {
  await using t = await tempDir();
  await user(["add", "alice", "--htpasswd", t.path, "--password-stdin", "--cost", "4"], "a");
  await user(["add", "bob", "--htpasswd", t.path, "--password-stdin", "--cost", "4"], "b");
  const r = await user(["remove", "alice", "--htpasswd", t.path]);
  assert.deepEqual([r.code, r.stdout], [0, `Removed user "alice" from ${t.path}\n`]);
  assert.deepEqual((await Htpasswd.open(t.path)).users(), ["bob"]);
  const again = await user(["remove", "alice", "--htpasswd", t.path]);
  assert.deepEqual([again.code, again.stderr], [1, `berth: No user "alice" in "${t.path}"\n`]);
  const missing = await user(["remove", "alice", "--htpasswd", `${t.path}.absent`]);
  assert.equal(missing.code, 1);
  assert.equal(
    missing.stderr,
    `berth: Cannot load htpasswd file "${t.path}.absent": no such file\n`,
  );
});

Deno.test("userCommand() handles a file without a final newline", async () => {
  await using t = await tempDir();
  await user(["add", "bob", "--htpasswd", t.path, "--password-stdin", "--cost", "4"], "b");
  const bob = (await Deno.readTextFile(t.path)).trimEnd();
  await Deno.writeTextFile(t.path, bob);
  const missing = await user(["remove", "alice", "--htpasswd", t.path]);
  assert.equal(missing.code, 1);
  assert.equal(await Deno.readTextFile(t.path), bob, "left alone");
  const r = await user(
    ["add", "alice", "--htpasswd", t.path, "--password-stdin", "--cost", "4"],
    "a",
  );
  assert.equal(r.stdout, `Added user "alice" in ${t.path}\n`);
  assert.deepEqual((await Htpasswd.open(t.path)).users(), ["bob", "alice"]);
});

Deno.test("userCommand() list prints the users in file order", async () => {
  await using t = await tempDir();
  for (const name of ["zed", "alice"]) {
    await user(["add", name, "--htpasswd", t.path, "--password-stdin", "--cost", "4"], "pw");
  }
  const r = await user(["list", "--htpasswd", t.path]);
  assert.deepEqual([r.code, r.stdout, r.stderr], [0, "zed\nalice\n", ""]);
});

Deno.test("userCommand() writes through a symbolic link to its target", async () => {
  await using t = await tempDir();
  await Deno.writeTextFile(`${t.dir}/real`, "");
  await Deno.symlink(`${t.dir}/real`, t.path);
  const r = await user(
    ["add", "alice", "--htpasswd", t.path, "--password-stdin", "--cost", "4"],
    "pw",
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await Deno.lstat(t.path)).isSymlink, true);
  assert.match(await Deno.readTextFile(`${t.dir}/real`), /^alice:/);
});

Deno.test("userCommand() answers usage errors with exit code 2", async () => {
  const cases: [string[], string][] = [
    [[], "berth: Missing a command: add, remove or list\n"],
    [["rename", "a"], `berth: Unknown command "rename"; expected add, remove or list\n`],
    [["add", "alice"], `berth: "user add" needs --htpasswd FILE\n`],
    [["add", "--htpasswd", "f"], `berth: "user add" takes one user name\n`],
    [["add", "a", "b", "--htpasswd", "f"], `berth: "user add" takes one user name\n`],
    [["list", "a", "--htpasswd", "f"], `berth: "user list" takes no name\n`],
    [
      ["remove", "a", "--htpasswd", "f", "--cost", "4"],
      `berth: --password-stdin and --cost are options of "user add"\n`,
    ],
    [
      ["add", "a", "--htpasswd", "f", "--cost", "16"],
      `berth: Invalid --cost "16": expected an integer from 4 to 15\n`,
    ],
    [
      ["add", "a", "--htpasswd", "f", "--cost", "1e1"],
      `berth: Invalid --cost "1e1": expected an integer from 4 to 15\n`,
    ],
  ];
  for (const [args, message] of cases) {
    const r = await user(args);
    assert.equal(r.code, 2, args.join(" "));
    assert.equal(r.stderr, `${message}Run "berth user --help" for usage\n`);
  }
  const unknown = await user(["add", "a", "--htpasswd", "f", "--pasword-stdin"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^berth: .*--pasword-stdin/);
  const help = await user(["--help"]);
  assert.equal(help.code, 0);
  assert.ok(help.stdout.startsWith("Usage:\n  berth user add NAME --htpasswd FILE"));
});
