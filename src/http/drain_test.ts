import assert from "node:assert/strict";
import { Drain } from "./drain.ts";

Deno.test("Drain.drain() waits for handlers in flight and refuses new requests with 503", async () => {
  const drain = new Drain();
  let release!: () => void;
  const slow = drain.wrap(() =>
    new Promise<Response>((resolve) => (release = () => resolve(new Response("done"))))
  );
  const pending = slow(new Request("http://x/"));
  assert.equal(drain.inFlight, 1);
  let drained = false;
  const draining = drain.drain(5000).then((ok) => (drained = ok));
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(drained, false);
  const refused = await drain.wrap(() => Promise.resolve(new Response("no")))(
    new Request("http://x/"),
  );
  assert.equal(refused.status, 503);
  assert.equal(refused.headers.get("Connection"), "close");
  assert.equal((await refused.json()).errors[0].code, "UNAVAILABLE");
  release();
  assert.equal(await (await pending).text(), "done");
  await draining;
  assert.equal(drained, true);
  assert.equal(drain.inFlight, 0);
});

Deno.test("Drain.drain() gives up after its timeout", async () => {
  const drain = new Drain();
  let release!: () => void;
  const pending = drain.wrap(() =>
    new Promise<Response>((resolve) => (release = () => resolve(new Response())))
  )(
    new Request("http://x/"),
  );
  assert.equal(await drain.drain(50), false);
  release();
  await (await pending).body?.cancel();
});

Deno.test("Drain.drain() with nothing in flight resolves at once", async () => {
  assert.equal(await new Drain().drain(10), true);
});
