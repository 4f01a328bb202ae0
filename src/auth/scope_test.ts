import assert from "node:assert/strict";
import { formatScope, parseScope } from "./scope.ts";

Deno.test("parseScope() reads repository and registry scopes, names with ports included", () => {
  assert.deepEqual(parseScope("repository:team/app:pull,push"), {
    type: "repository",
    name: "team/app",
    actions: ["pull", "push"],
  });
  assert.deepEqual(parseScope("repository:localhost:5000/app:pull"), {
    type: "repository",
    name: "localhost:5000/app",
    actions: ["pull"],
  });
  assert.deepEqual(parseScope("registry:catalog:*"), {
    type: "registry",
    name: "catalog",
    actions: ["*"],
  });
  assert.deepEqual(parseScope("repository:a:pull,pull"), {
    type: "repository",
    name: "a",
    actions: ["pull"],
  });
});

Deno.test("parseScope() gives null for malformed scopes", () => {
  for (
    const bad of [
      "",
      "repository",
      "repository:a",
      "user:a:pull",
      "repository::pull",
      "repository:a:",
      `repository:${"a".repeat(300)}:pull`,
      "repository:a b:pull",
    ]
  ) {
    assert.equal(parseScope(bad), null, bad);
  }
});

Deno.test("formatScope() writes a scope as clients send it", () => {
  assert.equal(
    formatScope({ type: "repository", name: "a/b", actions: ["pull", "push"] }),
    "repository:a/b:pull,push",
  );
});
