/**
 * Unit tests of the one KV wrapper and its one retry loop.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ContentionError, isLockedError, Kv, RETRY } from "./kv.ts";

Deno.test("isLockedError() knows Busy by its class and SQLite's TypeError by its message, nothing else", () => {
  assert.equal(isLockedError(new Deno.errors.Busy("busy")), true);
  assert.equal(isLockedError(new TypeError("database is locked")), true);
  assert.equal(isLockedError(new TypeError("SQLITE_BUSY: database table is locked")), true);
  assert.equal(isLockedError(new Error("database is locked")), false, "not KV's class");
  assert.equal(isLockedError(new TypeError("Key too large")), false);
  assert.equal(isLockedError("database is locked"), false);
});

Deno.test("Kv retries a call that SQLite answers with database is locked", async () => {
  let calls = 0;
  const raw = {
    get(key: Deno.KvKey) {
      calls++;
      if (calls < 3) return Promise.reject(new TypeError("database is locked"));
      return Promise.resolve({ key, value: "v", versionstamp: "1" });
    },
  } as unknown as Deno.Kv;
  const entry = await new Kv(raw).get<string>(["k"]);
  assert.equal(entry.value, "v");
  assert.equal(calls, 3);
});

Deno.test("Kv does not retry other errors", async () => {
  let calls = 0;
  const raw = {
    get() {
      calls++;
      return Promise.reject(new TypeError("Key too large"));
    },
  } as unknown as Deno.Kv;
  await assert.rejects(new Kv(raw).get(["k"]), /Key too large/);
  assert.equal(calls, 1);
});

Deno.test("Kv.transact() reruns its body after a lost race and returns its first real answer", async () => {
  const kv = new Kv(await Deno.openKv(":memory:"));
  try {
    let rounds = 0;
    const result = await kv.transact("test", () => {
      rounds++;
      return Promise.resolve(rounds < 4 ? RETRY : "done");
    });
    assert.equal(result, "done");
    assert.equal(rounds, 4);
  } finally {
    kv.close();
  }
});

Deno.test("Kv.transact() gives up with ContentionError after too many lost races", async () => {
  const kv = new Kv(await Deno.openKv(":memory:"));
  try {
    await assert.rejects(
      kv.transact("always-loses", () => Promise.resolve(RETRY)),
      (error: unknown) => error instanceof ContentionError && /always-loses/.test(error.message),
    );
  } finally {
    kv.close();
  }
});

Deno.test("Kv.transact() with checked commits: racing increments all land exactly once", async () => {
  const kv = new Kv(await Deno.openKv(":memory:"));
  try {
    const increment = () =>
      kv.transact("increment", async () => {
        const entry = await kv.get<number>(["n"]);
        const ok = await kv.commit((op) => op.check(entry).set(["n"], (entry.value ?? 0) + 1));
        return ok === null ? RETRY : undefined;
      });
    await Promise.all(Array.from({ length: 20 }, increment));
    assert.equal((await kv.get<number>(["n"])).value, 20);
  } finally {
    kv.close();
  }
});
