/**
 * Unit tests of the repository name and tag grammars (checklist A3).
 *
 * @module
 */
import assert from "node:assert/strict";
import { OciError } from "./errors.ts";
import { isTag, MAX_NAME_LENGTH, NAME_REGEXP, parseName, parseTag, TAG_REGEXP } from "./name.ts";

function assertThrowsCode(fn: () => unknown, code: string): OciError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof OciError, `expected an OciError, got ${String(caught)}`);
  assert.equal(caught.code, code);
  assert.equal(caught.status, 400);
  return caught;
}

const VALID_NAMES = [
  "a",
  "0",
  "busybox",
  "library/busybox",
  "a/b/c/d/e/f/g/h",
  "my.repo",
  "my_repo",
  "my__repo",
  "my-repo",
  "my--repo",
  "my----------repo",
  "a.b_c__d-e--f/g.h",
  "123/456",
  "foo/bar.baz/qux-1",
  "conformance-1a2b/test",
];

const INVALID_NAMES: [string, string][] = [
  ["", "empty"],
  ["Busybox", "uppercase"],
  ["library/Busybox", "uppercase component"],
  ["/busybox", "leading slash"],
  ["busybox/", "trailing slash"],
  ["a//b", "empty component"],
  [".a", "leading period"],
  ["a.", "trailing period"],
  ["a..b", "two periods"],
  ["a___b", "three underscores"],
  ["_a", "leading underscore"],
  ["a_", "trailing underscore"],
  ["-a", "leading dash"],
  ["a-", "trailing dash"],
  ["a.-b", "mixed separators"],
  ["a-.b", "mixed separators"],
  ["a_-b", "mixed separators"],
  ["a/-b", "component starting with a dash"],
  ["a/.b", "component starting with a period"],
  ["a b", "space"],
  ["a:b", "colon"],
  ["a@b", "at sign"],
  ["a%2Fb", "percent"],
  ["ä", "non-ASCII"],
  ["a\n", "newline"],
  ["a/b\n", "trailing newline after a component"],
];

Deno.test("NAME_REGEXP matches the spec's name grammar", async (t) => {
  for (const name of VALID_NAMES) {
    await t.step(`accepts ${JSON.stringify(name)}`, () => {
      assert.ok(NAME_REGEXP.test(name));
      assert.equal(parseName(name), name);
    });
  }
  for (const [name, why] of INVALID_NAMES) {
    await t.step(`rejects ${JSON.stringify(name)} (${why})`, () => {
      assert.ok(!NAME_REGEXP.test(name));
      assertThrowsCode(() => parseName(name), "NAME_INVALID");
    });
  }
});

Deno.test("NAME_REGEXP is linear on a long run of separators", () => {
  const started = performance.now();
  assert.equal(NAME_REGEXP.test("a" + "-".repeat(50_000) + "!"), false);
  assert.equal(NAME_REGEXP.test("a_".repeat(25_000) + "_"), false);
  assert.ok(performance.now() - started < 1000);
});

Deno.test("parseName() accepts 255 characters and rejects 256", () => {
  assert.equal(MAX_NAME_LENGTH, 255);
  const at = "a/".repeat(127) + "b"; // 255 characters
  assert.equal(at.length, 255);
  assert.equal(parseName(at), at);
  const over = at + "c";
  assert.equal(over.length, 256);
  const error = assertThrowsCode(() => parseName(over), "NAME_INVALID");
  assert.match(error.message, /longer than 255 characters/);
});

Deno.test("parseName() shortens a huge name in the message and detail", () => {
  const error = assertThrowsCode(() => parseName("a".repeat(100_000)), "NAME_INVALID");
  assert.ok(error.message.length < 400);
  const detail = error.options.detail as { name: string };
  assert.ok(detail.name.length <= 301);
});

Deno.test("parseName() quotes the name it rejects", () => {
  const error = assertThrowsCode(() => parseName("Bad/Name"), "NAME_INVALID");
  assert.match(error.message, /"Bad\/Name"/);
  assert.deepEqual(error.options.detail, { name: "Bad/Name" });
});

Deno.test("parseTag() accepts the spec's tag grammar", () => {
  for (
    const tag of [
      "latest",
      "v1.0.0",
      "_",
      "_private",
      "0",
      "A",
      "UPPER_lower-1.2",
      "sha256-" + "a".repeat(64),
      "a".repeat(128),
      "_" + ".".repeat(127),
    ]
  ) {
    assert.equal(parseTag(tag), tag);
    assert.equal(isTag(tag), true);
    assert.ok(TAG_REGEXP.test(tag));
  }
});

Deno.test("parseTag() accepts 128 characters and rejects 129", () => {
  assert.equal(parseTag("t".repeat(128)), "t".repeat(128));
  assert.equal(isTag("t".repeat(129)), false);
  assertThrowsCode(() => parseTag("t".repeat(129)), "TAG_INVALID");
});

Deno.test("parseTag() rejects a leading period or dash and other characters", () => {
  for (
    const tag of [
      "",
      ".hidden",
      "-dash",
      "a:b",
      "a/b",
      "a b",
      "a+b",
      "a@b",
      "é",
      "latest\n",
      `sha256:${"a".repeat(64)}`,
    ]
  ) {
    assert.equal(isTag(tag), false, JSON.stringify(tag));
    const error = assertThrowsCode(() => parseTag(tag), "TAG_INVALID");
    assert.deepEqual(error.options.detail, { tag });
  }
});
