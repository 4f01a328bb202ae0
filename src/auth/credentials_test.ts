import assert from "node:assert/strict";
import { MAX_AUTHORIZATION_LENGTH, parseAuthorization } from "./credentials.ts";

const b64 = (text: string) => btoa(String.fromCharCode(...new TextEncoder().encode(text)));

Deno.test("parseAuthorization() reads Basic credentials, the password keeping its colons", () => {
  assert.deepEqual(parseAuthorization(`Basic ${b64("alice:s3:cr:et")}`), {
    scheme: "basic",
    user: "alice",
    password: "s3:cr:et",
  });
  assert.deepEqual(parseAuthorization(`basic ${b64("bøb:pässword")}`), {
    scheme: "basic",
    user: "bøb",
    password: "pässword",
  });
  assert.deepEqual(parseAuthorization(`Basic ${b64("carol:")}`), {
    scheme: "basic",
    user: "carol",
    password: "",
  });
});

Deno.test("parseAuthorization() reads a Bearer token and nothing as none", () => {
  assert.deepEqual(parseAuthorization("Bearer a.b.c"), { scheme: "bearer", token: "a.b.c" });
  assert.deepEqual(parseAuthorization(null), { scheme: "none" });
});

Deno.test("parseAuthorization() calls every malformed header invalid, never throws", () => {
  const invalid = [
    "",
    "Basic",
    "Basic !!!!",
    `Basic ${b64("no-colon")}`,
    `Basic ${b64(":nouser")}`,
    `Basic ${b64("a\u0000b:pw")}`,
    "Basic " + btoa("\xff\xfe:\xff"),
    "Basic abc",
    `Basic ${b64("a:b")}, Basic ${b64("c:d")}`,
    "Bearer a b",
    "Bearer \u00ff",
    "Digest username=x",
    "Bearer " + "a".repeat(MAX_AUTHORIZATION_LENGTH),
    "\u0000\u0001",
  ];
  for (const header of invalid) {
    assert.deepEqual(parseAuthorization(header), { scheme: "invalid" }, JSON.stringify(header));
  }
});
