/**
 * Unit tests of the commit limits every KV commit is held to.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Kv } from "./kv.ts";
import { keyBytes, KV_LIMITS, KvLimitError, valueBytes } from "./kv_limits.ts";

async function withKv(body: (kv: Kv, raw: Deno.Kv) => Promise<void>): Promise<void> {
  const raw = await Deno.openKv(":memory:");
  try {
    await body(new Kv(raw), raw);
  } finally {
    raw.close();
  }
}

Deno.test("local KV alone would accept more checks than remote KV allows", async () => {
  await withKv(async (_kv, raw) => {
    let op = raw.atomic();
    for (let i = 0; i <= KV_LIMITS.checks; i++) {
      op = op.check({ key: ["k", i], versionstamp: null });
    }
    assert.equal((await op.set(["x"], 1).commit()).ok, true);
  });
});

Deno.test("Kv.commit() refuses an eleventh check before anything is written", async () => {
  await withKv(async (kv, raw) => {
    await assert.rejects(
      kv.commit((op) => {
        op.set(["written"], 1);
        for (let i = 0; i <= KV_LIMITS.checks; i++) op.check({ key: ["k", i], versionstamp: null });
        return op;
      }),
      (error) => error instanceof KvLimitError && /11 checks/.test(error.message),
    );
    assert.equal((await raw.get(["written"])).versionstamp, null);
  });
});

Deno.test("Kv.commit() accepts exactly the limits", async () => {
  await withKv(async (kv, raw) => {
    const stamp = await kv.commit((op) => {
      for (let i = 0; i < KV_LIMITS.checks; i++) op.check({ key: ["k", i], versionstamp: null });
      for (let i = 0; i < KV_LIMITS.mutations; i++) op.set(["m", i], i);
      return op;
    });
    assert.notEqual(stamp, null);
    assert.equal((await raw.get(["m", KV_LIMITS.mutations - 1])).value, KV_LIMITS.mutations - 1);
  });
});

Deno.test("Kv.commit() refuses too many mutations, sums and deletes counted alike", async () => {
  await withKv(async (kv) => {
    await assert.rejects(
      kv.commit((op) => {
        for (let i = 0; i < KV_LIMITS.mutations; i++) op.delete(["m", i]);
        return op.sum(["total"], 1n);
      }),
      /901 mutations/,
    );
  });
});

Deno.test("Kv.commit() refuses values over the size limit", async () => {
  await withKv(async (kv) => {
    const chunk = new Uint8Array(60 * 1024);
    await assert.rejects(
      kv.commit((op) => {
        for (let i = 0; i < 14; i++) op.set(["chunk", i], chunk);
        return op;
      }),
      /bytes \(limit/,
    );
    // Thirteen such values (780 KiB and keys) still fit.
    assert.notEqual(
      await kv.commit((op) => {
        for (let i = 0; i < 13; i++) op.set(["chunk", i], chunk);
        return op;
      }),
      null,
    );
  });
});

Deno.test("Kv.commit() refuses queues", async () => {
  await withKv(async (kv) => {
    await assert.rejects(kv.commit((op) => op.enqueue("job")), KvLimitError);
  });
});

Deno.test("keyBytes() and valueBytes() measure bytes and strings exactly", () => {
  assert.equal(valueBytes(new Uint8Array(1000)), 1000);
  assert.equal(valueBytes("héllo"), 6);
  assert.equal(valueBytes({ a: 1 }), 7);
  assert.equal(valueBytes({ n: 10n }), JSON.stringify({ n: "10" }).length);
  assert.equal(keyBytes(["ab", 1, new Uint8Array(3)]), 4 + 9 + 5);
});
