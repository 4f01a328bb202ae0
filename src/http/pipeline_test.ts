/**
 * Unit tests of the request pipeline's steps and of how `createApp` composes
 * them: order, the one error path, URL checks, the request log line.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createApp } from "../app.ts";
import { defaultConfig } from "../config.ts";
import type { Logger } from "../log.ts";
import { KvMetadataStore } from "../meta/metadata_store.ts";
import { OciError } from "../oci/errors.ts";
import { FsBlobStore } from "../storage/fs_blob_store.ts";
import { BodyReadError } from "./body.ts";
import type { RequestContext } from "./context.ts";
import {
  checkUrl,
  compose,
  handleErrors,
  logRequests,
  MAX_URL_LENGTH,
  rawPath,
} from "./pipeline.ts";

function contextOf(url: string, init?: RequestInit): RequestContext {
  return {
    req: new Request(url, init),
    id: "r-1",
    remoteAddr: { transport: "tcp", hostname: "198.51.100.4", port: 5555 },
    started: performance.now(),
    url: null,
    route: null,
    caller: null,
  };
}

/** A logger that keeps what it is given. */
function recordingLogger(): Logger & {
  lines: { level: string; event: string; fields: unknown }[];
} {
  const lines: { level: string; event: string; fields: unknown }[] = [];
  const at = (level: string) => (event: string, fields?: Record<string, unknown>) =>
    lines.push({ level, event, fields });
  return { lines, debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

Deno.test("compose() runs the steps outermost first, then the terminal, and unwinds in reverse", async () => {
  const order: string[] = [];
  const step = (name: string) => async (_ctx: RequestContext, next: () => Promise<Response>) => {
    order.push(`${name} in`);
    const res = await next();
    order.push(`${name} out`);
    return res;
  };
  const run = compose([step("a"), step("b")], () => {
    order.push("terminal");
    return new Response("done");
  });
  assert.equal(await (await run(contextOf("http://h/"))).text(), "done");
  assert.deepEqual(order, ["a in", "b in", "terminal", "b out", "a out"]);
});

Deno.test("handleErrors() turns an OciError into the spec's JSON body with its status and headers", async () => {
  const log = recordingLogger();
  const run = compose([handleErrors(log)], () => {
    throw new OciError("TOOMANYREQUESTS", "slow down", { headers: { "Retry-After": "7" } });
  });
  const res = await run(contextOf("http://h/v2/"));
  assert.equal(res.status, 429);
  assert.equal(res.headers.get("Retry-After"), "7");
  assert.deepEqual(await res.json(), {
    errors: [{ code: "TOOMANYREQUESTS", message: "slow down" }],
  });
  assert.deepEqual(log.lines, [], "a spec error is not an unhandled one");
});

Deno.test("handleErrors() answers anything else with a 500 that hides it, logged once", async () => {
  const log = recordingLogger();
  const run = compose([handleErrors(log)], () => {
    throw new Error("secret internals /srv/berth");
  });
  const res = await run(contextOf("http://h/v2/"));
  assert.equal(res.status, 500);
  const body = await res.text();
  assert.ok(!body.includes("secret"), body);
  assert.deepEqual(log.lines.map((l) => [l.level, l.event]), [["error", "unhandled"]]);
});

Deno.test("handleErrors() answers a HEAD with the status and no body", async () => {
  const run = compose([handleErrors(recordingLogger())], () => {
    throw new OciError("BLOB_UNKNOWN", "no");
  });
  const res = await run(contextOf("http://h/v2/x/blobs/y", { method: "HEAD" }));
  assert.equal(res.status, 404);
  assert.equal(res.body, null);
});

Deno.test("checkUrl() refuses a URL over the limit with 414 and a bad Host with 400, and parses the rest", async () => {
  const run = compose(
    [handleErrors(recordingLogger()), checkUrl],
    (ctx) => new Response(ctx.url?.pathname),
  );
  const long = await run(contextOf(`http://h/v2/${"a".repeat(MAX_URL_LENGTH)}`));
  assert.equal(long.status, 414);
  await long.body?.cancel();
  const badHost = await run(contextOf("http://h/v2/", { headers: { host: "a b/c" } }));
  assert.equal(badHost.status, 400);
  await badHost.body?.cancel();
  const fine = await run(contextOf("http://h/v2/a/tags/list?n=1"));
  assert.equal(await fine.text(), "/v2/a/tags/list");
});

Deno.test("logRequests() writes one line with the route, the client address and the status, and sets X-Request-Id", async () => {
  const log = recordingLogger();
  const run = compose([logRequests(log)], (ctx) => {
    ctx.url = new URL(ctx.req.url);
    ctx.route = {
      name: "tags.list",
      template: "/v2/:name+/tags/list",
      params: {},
      handler: () => new Response(),
    };
    return new Response("[]", { status: 200, headers: { "Content-Length": "2" } });
  });
  const res = await run(contextOf("http://h/v2/a/tags/list"));
  await res.body?.cancel();
  assert.equal(res.headers.get("X-Request-Id"), "r-1");
  assert.equal(log.lines.length, 1);
  const fields = log.lines[0]!.fields as Record<string, unknown>;
  assert.deepEqual(
    [fields.route, fields.remote, fields.status, fields.bytes, fields.path],
    ["tags.list", "198.51.100.4", 200, 2, "/v2/a/tags/list"],
  );
});

Deno.test("createApp() logs the client address it is given and the route that matched", async () => {
  const dir = await Deno.makeTempDir({ prefix: "berth-pipeline-" });
  const kv = await Deno.openKv(":memory:");
  try {
    const log = recordingLogger();
    const app = createApp({
      meta: new KvMetadataStore(kv),
      blobs: await FsBlobStore.open(dir),
      config: defaultConfig(),
      log,
    });
    const res = await app(new Request("http://berth.test/v2/lib/app/tags/list"), {
      remoteAddr: { transport: "tcp", hostname: "203.0.113.9", port: 40000 },
    });
    assert.equal(res.status, 404);
    await res.body?.cancel();
    const line = log.lines.find((l) => l.event === "request")!.fields as Record<string, unknown>;
    assert.equal(line.remote, "203.0.113.9");
    assert.equal(line.route, "tags.list");
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("handleErrors() blames the client only for a body that broke off, and a full disk is 507", async () => {
  const answer = async (error: Error) => {
    const log = recordingLogger();
    const res = await compose([handleErrors(log)], () => {
      throw error;
    })(contextOf("http://h/v2/a/blobs/uploads/x", { method: "PATCH" }));
    await res.body?.cancel();
    return [res.status, log.lines.length];
  };
  assert.deepEqual(await answer(new BodyReadError(new Deno.errors.ConnectionReset("gone"))), [
    400,
    0,
  ]);
  // The same class raised by our own code (a file closed under us) is a fault: 500, logged.
  assert.deepEqual(await answer(new Deno.errors.BadResource("Bad resource ID")), [500, 1]);
  assert.deepEqual(
    await answer(
      Object.assign(new Error("No space left on device (os error 28)"), { code: "ENOSPC" }),
    ),
    [507, 1], // the "disk full" warning
  );
});

Deno.test("rawPath() takes the path of the request target as sent, dot segments unresolved", () => {
  assert.equal(rawPath("http://a:1/v2/h/../q/x?digest=1#f"), "/v2/h/../q/x");
  assert.equal(rawPath("http://a:1/v2/h/%2e%2e/r"), "/v2/h/%2e%2e/r");
  assert.equal(rawPath("http://a:1//v2/x"), "//v2/x");
  assert.equal(rawPath("http://a:1"), "/");
  assert.equal(rawPath("http://a:1?x=/y"), "/");
});
