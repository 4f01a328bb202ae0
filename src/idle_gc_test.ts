import assert from "node:assert/strict";
import { IdleCollector, SLACK_BYTES } from "./idle_gc.ts";

/** Grows V8's heap by allocating (and dropping) well past the slack. */
function makeGarbage(): void {
  let junk: unknown[] = [];
  for (let i = 0; i < 1_500_000; i++) junk.push({ i, text: `item ${i}` });
  junk = [];
}

Deno.test("IdleCollector gives heap back once the server has been idle, not while it works", async () => {
  assert.ok(IdleCollector.permitted(), "tests run with --allow-sys");
  const activity = { inFlight: 0, handled: 0 };
  const collector = new IdleCollector(activity);
  try {
    makeGarbage();
    const grown = Deno.memoryUsage().heapTotal;
    // The first look sets the count of requests handled: not yet known to be idle.
    assert.equal(await collector.tick(), false);
    // Requests handled since the last look, or one in flight: busy.
    activity.handled = 5;
    assert.equal(await collector.tick(), false);
    activity.inFlight = 1;
    assert.equal(await collector.tick(), false);
    activity.inFlight = 0;
    assert.equal(await collector.tick(), true);
    assert.equal(collector.runs, 1);
    const after = Deno.memoryUsage().heapTotal;
    assert.ok(after < grown - SLACK_BYTES, `heap ${grown} -> ${after}`);
    // Nothing grew since: nothing to do.
    assert.equal(await collector.tick(), false);
    assert.equal(collector.runs, 1);
  } finally {
    collector.stop();
  }
});
