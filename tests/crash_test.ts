/**
 * Crashes: Berth runs as a subprocess and is killed with
 * SIGKILL in the middle of a large monolithic upload, between and during
 * PATCH chunks, during a burst of manifest PUTs and tag moves, and during a
 * burst of deletes. Right after the kill, `fsck` must find the data
 * directory clean as the crash left it (no repair needed); after a restart
 * on the same directory every acknowledged push is intact byte for byte,
 * nothing partial is visible, an interrupted session answers with the offset
 * it had acknowledged and can be completed, no tag points at a missing
 * manifest and no referrer dangles; `fsck` is clean again afterwards.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { fsck } from "../src/fsck/fsck.ts";
import {
  imageManifest,
  randomBytes,
  type RegistryProcess,
  sha256,
  spawnRegistry,
} from "./_registry.ts";

const MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json";
const MiB = 1024 * 1024;
const enc = new TextEncoder();
const dec = new TextDecoder();

/** A response read whole, so no body leaks. */
interface Answer {
  status: number;
  headers: Headers;
  body: Uint8Array;
  text: string;
}

async function call(reg: RegistryProcess, path: string, init?: RequestInit): Promise<Answer> {
  const res = await fetch(reg.url + path, init);
  const body = new Uint8Array(await res.arrayBuffer());
  return {
    status: res.status,
    headers: res.headers,
    body,
    text: dec.decode(body.subarray(0, 2000)),
  };
}

function expect(answer: Answer, status: number, what: string): Answer {
  assert.equal(answer.status, status, `${what}: ${answer.status} ${answer.text}`);
  return answer;
}

async function pushBlob(reg: RegistryProcess, name: string, bytes: Uint8Array<ArrayBuffer>) {
  const digest = sha256(bytes);
  expect(
    await call(reg, `/v2/${name}/blobs/uploads/?digest=${digest}`, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: bytes,
    }),
    201,
    `push blob to ${name}`,
  );
  return digest;
}

/** Waits until `condition` holds (polling the disk or the server), or fails after `ms`. */
async function waitFor(what: string, condition: () => Promise<boolean>, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Size of the largest file under `dir` (one level of subdirectories), 0 if none. */
async function largestFile(dir: string, filter: (sub: string) => boolean): Promise<number> {
  let largest = 0;
  for await (const sub of Deno.readDir(dir)) {
    if (!sub.isDirectory || !filter(sub.name)) continue;
    try {
      for await (const file of Deno.readDir(join(dir, sub.name))) {
        const info = await Deno.stat(join(dir, sub.name, file.name)).catch(() => null);
        largest = Math.max(largest, info?.size ?? 0);
      }
    } catch { /* removed meanwhile */ }
  }
  return largest;
}

/**
 * A request body of `chunks` that stops after `gateAfter` bytes until
 * `release()` (or until the request is cancelled), so the server is surely
 * mid-body when it is killed.
 */
function gatedBody(chunks: Uint8Array<ArrayBuffer>[], gateAfter: number) {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let index = 0;
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent >= gateAfter) await gate;
      const chunk = chunks[index++];
      if (!chunk) return controller.close();
      sent += chunk.length;
      controller.enqueue(chunk);
    },
    cancel() {
      release();
    },
  });
  return { stream, release };
}

/** Runs fsck on `dir` in this process; asserts it is clean and returns its report. */
async function assertFsckClean(dir: string, when: string): Promise<string[]> {
  const lines: string[] = [];
  const code = await fsck({ data: dir, kv: "" }, {
    repair: false,
    out: (line) => lines.push(line),
    progress: () => {},
  });
  const problems = lines.filter((line) => line.startsWith("problem: "));
  assert.deepEqual(problems, [], `fsck ${when}:\n${lines.join("\n")}`);
  assert.equal(code, 0, `fsck ${when}:\n${lines.join("\n")}`);
  assert.match(lines.at(-1)!, /; 0 problems/);
  return lines;
}

/** sha256 of a response body, streamed. */
async function digestOf(res: Response): Promise<{ digest: string; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of res.body!) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { digest: `sha256:${hash.digest("hex")}`, size };
}

async function withDataDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "berth-crash-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("crash: SIGKILL mid 64 MiB monolithic upload leaves nothing partial; acknowledged pushes intact", async () => {
  await withDataDir(async (dir) => {
    const name = "crash/mono";
    // 64 chunks of 1 MiB, each its own bytes.
    const block = randomBytes(MiB, 11);
    const chunks = Array.from({ length: 64 }, (_, i) => {
      const chunk = block.slice();
      new DataView(chunk.buffer).setUint32(0, i + 1);
      return chunk;
    });
    const hash = createHash("sha256");
    for (const chunk of chunks) hash.update(chunk);
    const big = `sha256:${hash.digest("hex")}`;
    const acked = [randomBytes(300_000, 1), randomBytes(5 * MiB, 2)];

    let reg = await spawnRegistry(["--data", dir]);
    try {
      for (const bytes of acked) await pushBlob(reg, name, bytes);
      const { stream, release } = gatedBody(chunks, 24 * MiB);
      const upload = fetch(`${reg.url}/v2/${name}/blobs/uploads/?digest=${big}`, {
        method: "POST",
        headers: { "Content-Type": "application/octet-stream" },
        body: stream,
      }).then(async (res) => {
        await res.body?.cancel();
        return res.status;
      }, (error: unknown) => error);
      // The server has written part of the body into its scratch upload file.
      await waitFor(
        "the upload file to grow past 8 MiB",
        async () =>
          (await largestFile(join(dir, "uploads"), (sub) => sub.startsWith("put-"))) > 8 * MiB,
      );
      await reg.kill();
      release();
      const outcome = await upload;
      assert.ok(outcome instanceof Error, `the interrupted upload got an answer: ${outcome}`);
      await assertFsckClean(dir, "right after the crash");
      assert.equal(
        await Deno.stat(join(dir, "blobs", "sha256", big.slice(7, 9), big.slice(7))).catch(() =>
          null
        ),
        null,
      );

      reg = await spawnRegistry(["--data", dir]);
      expect(await call(reg, `/v2/${name}/blobs/${big}`, { method: "HEAD" }), 404, "partial blob");
      expect(await call(reg, `/v2/${name}/blobs/${big}`), 404, "partial blob GET");
      for (const bytes of acked) {
        const res = expect(
          await call(reg, `/v2/${name}/blobs/${sha256(bytes)}`),
          200,
          "acked blob",
        );
        assert.deepEqual(res.body, bytes);
      }
      // The same upload, whole, now succeeds and reads back identical.
      const again = fetch(`${reg.url}/v2/${name}/blobs/uploads/?digest=${big}`, {
        method: "POST",
        headers: { "Content-Type": "application/octet-stream" },
        body: gatedBody(chunks, Infinity).stream,
      });
      const res = await again;
      await res.body?.cancel();
      assert.equal(res.status, 201);
      const read = await fetch(`${reg.url}/v2/${name}/blobs/${big}`);
      assert.deepEqual(await digestOf(read), { digest: big, size: 64 * MiB });
      assert.equal(await reg.stop(), 0);
    } finally {
      await reg.kill();
    }
    await assertFsckClean(dir, "after the restart");
  });
});

Deno.test("crash: SIGKILL between PATCH chunks, during one and during the closing PUT keeps the acknowledged offset; the uploads complete", async () => {
  await withDataDir(async (dir) => {
    const name = "crash/chunked";
    const idle = [randomBytes(MiB, 21), randomBytes(MiB + 12345, 22), randomBytes(700_000, 23)];
    const busy = [randomBytes(2 * MiB, 31), randomBytes(3 * MiB, 32), randomBytes(3 * MiB, 33)];
    // Large enough that assembling them into one blob takes a while.
    const block = randomBytes(16 * MiB, 51);
    const closing = [1, 2, 3].map((i) => {
      const part = block.slice();
      new DataView(part.buffer).setUint32(0, i);
      return part;
    });
    const whole = (parts: Uint8Array[]) => {
      const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const part of parts) out.set(part, (at += part.length) - part.length);
      return out;
    };
    const patch = (
      reg: RegistryProcess,
      location: string,
      offset: number,
      bytes: Uint8Array<ArrayBuffer>,
    ) =>
      call(reg, location, {
        method: "PATCH",
        headers: {
          "Content-Type": "application/octet-stream",
          "Content-Range": `${offset}-${offset + bytes.length - 1}`,
        },
        body: bytes,
      });

    let reg = await spawnRegistry(["--data", dir]);
    let idleAt = "";
    let busyAt = "";
    let closingAt = "";
    try {
      const sessions: string[] = [];
      for (let i = 0; i < 3; i++) {
        const start = expect(
          await call(reg, `/v2/${name}/blobs/uploads/`, { method: "POST" }),
          202,
          "POST",
        );
        sessions.push(start.headers.get("Location")!);
      }
      [idleAt, busyAt, closingAt] = sessions as [string, string, string];
      // Session "idle": two chunks acknowledged, then nothing in flight.
      expect(await patch(reg, idleAt, 0, idle[0]!), 202, "idle chunk 0");
      const ack = expect(await patch(reg, idleAt, idle[0]!.length, idle[1]!), 202, "idle chunk 1");
      assert.equal(ack.headers.get("Range"), `0-${idle[0]!.length + idle[1]!.length - 1}`);
      // Session "busy": two chunks acknowledged, the third half sent when the server dies.
      expect(await patch(reg, busyAt, 0, busy[0]!), 202, "busy chunk 0");
      expect(await patch(reg, busyAt, busy[0]!.length, busy[1]!), 202, "busy chunk 1");
      const third = gatedBody(
        [busy[2]!.slice(0, 2 * MiB), busy[2]!.slice(2 * MiB)],
        2 * MiB,
      );
      const inFlight = fetch(reg.url + busyAt, {
        method: "PATCH",
        headers: { "Content-Type": "application/octet-stream" },
        body: third.stream,
      }).then(async (res) => {
        await res.body?.cancel();
        return res.status;
      }, (error: unknown) => error);
      const busyId = busyAt.split("/").at(-1)!;
      // The session's data file grows past the acknowledged offset: the chunk is being written.
      const busyOffset = busy[0]!.length + busy[1]!.length;
      await waitFor("the third chunk to reach the disk", async () => {
        const info = await Deno.stat(join(dir, "uploads", busyId, "data")).catch(() => null);
        return (info?.size ?? 0) > busyOffset;
      });
      // Session "closing": two chunks acknowledged, the closing PUT's last chunk half sent.
      let offset = 0;
      for (const part of closing.slice(0, 2)) {
        expect(await patch(reg, closingAt, offset, part), 202, "closing chunk");
        offset += part.length;
      }
      const lastChunk = gatedBody(
        [closing[2]!.slice(0, 4 * MiB), closing[2]!.slice(4 * MiB)],
        4 * MiB,
      );
      const closingPut = fetch(`${reg.url}${closingAt}?digest=${sha256(whole(closing))}`, {
        method: "PUT",
        headers: { "Content-Type": "application/octet-stream" },
        body: lastChunk.stream,
      }).then(async (res) => {
        await res.body?.cancel();
        return res.status;
      }, (error: unknown) => error);
      const closingId = closingAt.split("/").at(-1)!;
      await waitFor("the closing PUT's chunk to reach the disk", async () => {
        const info = await Deno.stat(join(dir, "uploads", closingId, "data")).catch(() => null);
        return (info?.size ?? 0) > offset;
      });
      await reg.kill();
      third.release();
      lastChunk.release();
      assert.ok((await inFlight) instanceof Error, "the interrupted PATCH got an answer");
      assert.ok((await closingPut) instanceof Error, "the interrupted closing PUT got an answer");
    } finally {
      await reg.kill();
    }
    await assertFsckClean(dir, "right after the crash");

    reg = await spawnRegistry(["--data", dir]);
    try {
      const idleOffset = idle[0]!.length + idle[1]!.length;
      const busyOffset = busy[0]!.length + busy[1]!.length;
      for (const [at, offset] of [[idleAt, idleOffset], [busyAt, busyOffset]] as const) {
        const status = expect(await call(reg, at), 204, "GET upload status after restart");
        assert.equal(status.headers.get("Range"), `0-${offset - 1}`, at);
        assert.equal(status.headers.get("Location"), at);
      }
      // A client that believes the half-sent chunk arrived is told where the session is.
      const wrong = await patch(reg, busyAt, busyOffset + 2 * MiB, busy[2]!.slice(2 * MiB));
      expect(wrong, 416, "chunk past the acknowledged offset");
      assert.equal(wrong.headers.get("Range"), `0-${busyOffset - 1}`);
      // The interrupted closing PUT, sent again with its chunk, completes the session.
      const closingBlob = whole(closing);
      const closingOffset = closing[0]!.length + closing[1]!.length;
      const closingStatus = expect(await call(reg, closingAt), 204, "GET closing session");
      assert.equal(closingStatus.headers.get("Range"), `0-${closingOffset - 1}`);
      expect(
        await call(reg, `${closingAt}?digest=${sha256(closingBlob)}`, {
          method: "PUT",
          headers: {
            "Content-Type": "application/octet-stream",
            "Content-Range": `${closingOffset}-${closingBlob.length - 1}`,
          },
          body: closing[2]!,
        }),
        201,
        "closing PUT again",
      );
      const closed = await fetch(`${reg.url}/v2/${name}/blobs/${sha256(closingBlob)}`);
      assert.deepEqual(await digestOf(closed), {
        digest: sha256(closingBlob),
        size: closingBlob.length,
      });
      expect(await call(reg, closingAt), 404, "the closed session is gone");
      // The other two complete with their last chunk and read back byte for byte.
      for (
        const [at, parts, offset] of [[idleAt, idle, idleOffset], [
          busyAt,
          busy,
          busyOffset,
        ]] as const
      ) {
        const blob = whole(parts);
        const last = parts[2]!;
        const put = await call(reg, `${at}?digest=${sha256(blob)}`, {
          method: "PUT",
          headers: {
            "Content-Type": "application/octet-stream",
            "Content-Range": `${offset}-${offset + last.length - 1}`,
          },
          body: last,
        });
        expect(put, 201, "closing PUT after restart");
        const read = expect(await call(reg, `/v2/${name}/blobs/${sha256(blob)}`), 200, "GET blob");
        assert.deepEqual(read.body, blob);
        expect(await call(reg, at), 404, "the finished session is gone");
      }
      assert.equal(await reg.stop(), 0);
    } finally {
      await reg.kill();
    }
    const report = await assertFsckClean(dir, "after the restart");
    assert.match(report.at(-1)!, / 0 uploads/);
  });
});

Deno.test("crash: a chunk after a closing PUT killed between placing the blob and its commit never writes into that blob", async () => {
  await withDataDir(async (dir) => {
    const name = "crash/linked";
    const first = randomBytes(3 * MiB, 61);
    const second = randomBytes(2 * MiB + 5, 62);
    let reg = await spawnRegistry(["--data", dir]);
    let at = "";
    try {
      at = expect(await call(reg, `/v2/${name}/blobs/uploads/`, { method: "POST" }), 202, "POST")
        .headers.get("Location")!;
      expect(
        await call(reg, at, {
          method: "PATCH",
          headers: { "Content-Range": `0-${first.length - 1}` },
          body: first,
        }),
        202,
        "first chunk",
      );
      assert.equal(await reg.stop(), 0);
    } finally {
      await reg.kill();
    }
    // What a closing PUT killed after its hard link and before its commit leaves behind.
    const partial = sha256(first).slice("sha256:".length);
    const blobDir = join(dir, "blobs", "sha256", partial.slice(0, 2));
    await Deno.mkdir(blobDir, { recursive: true });
    const placed = join(blobDir, partial);
    await Deno.link(join(dir, "uploads", at.split("/").at(-1)!, "data"), placed);

    reg = await spawnRegistry(["--data", dir]);
    try {
      expect(
        await call(reg, at, {
          method: "PATCH",
          headers: { "Content-Range": `${first.length}-${first.length + second.length - 1}` },
          body: second,
        }),
        202,
        "a chunk after the restart",
      );
      assert.deepEqual(await Deno.readFile(placed), first, "the placed blob is untouched");
      const whole = new Uint8Array(first.length + second.length);
      whole.set(first);
      whole.set(second, first.length);
      expect(await call(reg, `${at}?digest=${sha256(whole)}`, { method: "PUT" }), 201, "PUT");
      const read = expect(await call(reg, `/v2/${name}/blobs/${sha256(whole)}`), 200, "GET");
      assert.deepEqual(read.body, whole);
      assert.deepEqual(await Deno.readFile(placed), first, "the placed blob is still untouched");
      assert.equal(await reg.stop(), 0);
    } finally {
      await reg.kill();
    }
    await assertFsckClean(dir, "after the restart");
  });
});

/** A manifest PUT of the burst, and what came of it. */
interface Put {
  body: string;
  digest: string;
  tags: string[];
  subject: boolean;
  sentAt: number;
  ackedAt?: number;
}

Deno.test("crash: SIGKILL during a burst of manifest PUTs and tag moves loses no acknowledged PUT and leaves no dangling tag or referrer", async () => {
  await withDataDir(async (dir) => {
    const name = "crash/burst";
    const tagPool = ["t0", "t1", "t2", "t3", "t4", "t5"];
    let reg = await spawnRegistry(["--data", dir]);
    const puts: Put[] = [];
    let base = "";
    try {
      const configBytes = enc.encode(JSON.stringify({ architecture: "amd64", os: "linux" }));
      const layerBytes = randomBytes(4096, 41);
      const config = { digest: await pushBlob(reg, name, configBytes), size: configBytes.length };
      const layer = { digest: await pushBlob(reg, name, layerBytes), size: layerBytes.length };
      const baseBody = imageManifest(config, [layer]);
      expect(
        await call(reg, `/v2/${name}/manifests/base`, {
          method: "PUT",
          headers: { "Content-Type": MANIFEST_TYPE },
          body: baseBody,
        }),
        201,
        "base",
      );
      base = sha256(baseBody);
      const KILL_AFTER = 80;
      let acks = 0;
      let killing: Promise<void> | null = null;
      const worker = async (w: number) => {
        for (let i = 0; !killing; i++) {
          const n = w * 1000 + i;
          const subject = n % 3 === 0;
          const body = imageManifest(config, [layer], {
            ...(subject
              ? {
                artifactType: "application/vnd.example.sig",
                subject: {
                  mediaType: MANIFEST_TYPE,
                  digest: base,
                  size: enc.encode(baseBody).length,
                },
              }
              : {}),
            annotations: { n: String(n) },
          });
          const tags = [tagPool[n % tagPool.length]!, tagPool[(n * 7 + 3) % tagPool.length]!];
          const unique = [...new Set(tags)];
          const put: Put = {
            body,
            digest: sha256(body),
            tags: unique,
            subject,
            sentAt: performance.now(),
          };
          puts.push(put);
          const query = unique.slice(1).map((t) => `tag=${t}`).join("&");
          try {
            const res = await call(
              reg,
              `/v2/${name}/manifests/${unique[0]}${query ? `?${query}` : ""}`,
              {
                method: "PUT",
                headers: { "Content-Type": MANIFEST_TYPE },
                body,
              },
            );
            expect(res, 201, `PUT ${n}`);
            put.ackedAt = performance.now();
            if (++acks === KILL_AFTER) killing = reg.kill();
          } catch (error) {
            if (!killing) throw error;
          }
        }
      };
      await Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
      await killing;
      assert.ok(acks >= KILL_AFTER);
      assert.ok(puts.some((p) => p.ackedAt === undefined), "some PUTs were in flight at the kill");
    } finally {
      await reg.kill();
    }
    await assertFsckClean(dir, "right after the crash");

    reg = await spawnRegistry(["--data", dir]);
    try {
      const acked = puts.filter((p) => p.ackedAt !== undefined);
      for (const put of acked) {
        const res = expect(
          await call(reg, `/v2/${name}/manifests/${put.digest}`),
          200,
          "acked PUT",
        );
        assert.equal(dec.decode(res.body), put.body);
        assert.equal(res.headers.get("Content-Type"), MANIFEST_TYPE);
      }
      const byDigest = new Map(puts.map((p) => [p.digest, p]));
      for (const tag of tagPool) {
        const res = await call(reg, `/v2/${name}/manifests/${tag}`);
        const everAcked = acked.some((p) => p.tags.includes(tag));
        if (res.status === 404) {
          assert.ok(!everAcked, `tag ${tag} had an acknowledged PUT but is gone`);
          continue;
        }
        expect(res, 200, `tag ${tag}`);
        const digest = res.headers.get("Docker-Content-Digest")!;
        const put = byDigest.get(digest);
        assert.ok(
          put && put.tags.includes(tag),
          `tag ${tag} points at ${digest}, never PUT with it`,
        );
        assert.equal(dec.decode(res.body), put.body);
        expect(await call(reg, `/v2/${name}/manifests/${digest}`), 200, `tag ${tag} target`);
        // Last acknowledged writer wins: no PUT with this tag started after this one was acknowledged
        // and was acknowledged itself.
        if (put.ackedAt !== undefined) {
          const later = acked.find((p) => p.tags.includes(tag) && p.sentAt > put.ackedAt!);
          assert.equal(later, undefined, `tag ${tag} lost a later acknowledged move`);
        }
      }
      const list = JSON.parse(expect(await call(reg, `/v2/${name}/tags/list`), 200, "tags").text);
      for (const tag of list.tags as string[]) {
        expect(await call(reg, `/v2/${name}/manifests/${tag}`), 200, `listed tag ${tag}`);
      }
      const index = JSON.parse(
        dec.decode(expect(await call(reg, `/v2/${name}/referrers/${base}`), 200, "referrers").body),
      );
      const listed = new Set((index.manifests as { digest: string }[]).map((d) => d.digest));
      for (const digest of listed) {
        const res = expect(
          await call(reg, `/v2/${name}/manifests/${digest}`),
          200,
          "listed referrer",
        );
        assert.equal(JSON.parse(dec.decode(res.body)).subject.digest, base);
      }
      for (const put of acked.filter((p) => p.subject)) {
        assert.ok(listed.has(put.digest), `acknowledged referrer ${put.digest} not listed`);
      }
      assert.equal(await reg.stop(), 0);
    } finally {
      await reg.kill();
    }
    await assertFsckClean(dir, "after the restart");
  });
});

/** A delete of the burst, and what came of it. */
interface Delete {
  kind: "manifest" | "tag" | "blob";
  path: string;
  sent: boolean;
  acked: boolean;
}

Deno.test("crash: SIGKILL during a burst of deletes leaves every acknowledged delete done and the rest whole", async () => {
  await withDataDir(async (dir) => {
    const name = "crash/deletes";
    let reg = await spawnRegistry(["--data", dir]);
    const images: {
      digest: string;
      body: string;
      tags: string[];
      layer: string;
      subject?: string;
    }[] = [];
    const deletes: Delete[] = [];
    try {
      for (let i = 0; i < 30; i++) {
        const configBytes = enc.encode(JSON.stringify({ architecture: "amd64", os: "linux", i }));
        const layerBytes = randomBytes(2048 + i, 100 + i);
        const config = { digest: await pushBlob(reg, name, configBytes), size: configBytes.length };
        const layer = { digest: await pushBlob(reg, name, layerBytes), size: layerBytes.length };
        const subject = i >= 20 ? images[i - 20]! : undefined;
        const body = imageManifest(
          config,
          [layer],
          subject
            ? {
              artifactType: "application/vnd.example.sig",
              subject: {
                mediaType: MANIFEST_TYPE,
                digest: subject.digest,
                size: enc.encode(subject.body).length,
              },
            }
            : {},
        );
        const tags = [`m${i}`, `alias${i}`, `extra${i}`];
        expect(
          await call(reg, `/v2/${name}/manifests/${tags[0]}?tag=${tags[1]}&tag=${tags[2]}`, {
            method: "PUT",
            headers: { "Content-Type": MANIFEST_TYPE },
            body,
          }),
          201,
          `image ${i}`,
        );
        images.push({
          digest: sha256(body),
          body,
          tags,
          layer: layer.digest,
          ...(subject ? { subject: subject.digest } : {}),
        });
      }
      // Deletes of whole manifests (subjects and referrers alike), of tags of the other
      // manifests (a tag and its manifest deleted at once could answer 404) and of blob links.
      images.forEach((image, i) => {
        if (i % 2 === 0) {
          deletes.push({
            kind: "manifest",
            path: `/v2/${name}/manifests/${image.digest}`,
            sent: false,
            acked: false,
          });
        }
        if (i % 2 === 1) {
          deletes.push({
            kind: "tag",
            path: `/v2/${name}/manifests/alias${i}`,
            sent: false,
            acked: false,
          });
        }
        if (i % 4 === 1) {
          deletes.push({
            kind: "blob",
            path: `/v2/${name}/blobs/${image.layer}`,
            sent: false,
            acked: false,
          });
        }
      });
      const KILL_AFTER = 12;
      let acks = 0;
      let inFlightAtKill = false;
      let killing: Promise<void> | null = null;
      let next = 0;
      const worker = async () => {
        while (!killing && next < deletes.length) {
          const op = deletes[next++]!;
          op.sent = true;
          try {
            expect(await call(reg, op.path, { method: "DELETE" }), 202, `DELETE ${op.path}`);
            op.acked = true;
            if (++acks === KILL_AFTER) {
              // Judged when the kill is sent: requests answered while it lands count as done.
              inFlightAtKill = deletes.some((d) => d.sent && !d.acked);
              killing = reg.kill();
            }
          } catch (error) {
            if (!killing) throw error;
          }
        }
      };
      await Promise.all(Array.from({ length: 6 }, () => worker()));
      await killing;
      assert.ok(killing, "the burst ended before the kill");
      assert.ok(inFlightAtKill, "some deletes were in flight at the kill");
    } finally {
      await reg.kill();
    }
    await assertFsckClean(dir, "right after the crash");

    reg = await spawnRegistry(["--data", dir]);
    try {
      const state = (path: string) => deletes.find((d) => d.path === path);
      for (const op of deletes.filter((d) => d.acked)) {
        const method = op.kind === "blob" ? "HEAD" : "GET";
        expect(
          await call(reg, op.path, { method }),
          404,
          `acknowledged ${op.kind} delete ${op.path}`,
        );
      }
      for (const [i, image] of images.entries()) {
        const del = state(`/v2/${name}/manifests/${image.digest}`);
        const res = await call(reg, `/v2/${name}/manifests/${image.digest}`);
        if (del?.acked || (del?.sent && res.status === 404)) {
          expect(res, 404, `deleted manifest ${i}`);
          for (const tag of image.tags) {
            expect(
              await call(reg, `/v2/${name}/manifests/${tag}`),
              404,
              `tag ${tag} of a deleted manifest`,
            );
          }
          continue;
        }
        expect(res, 200, `manifest ${i} that was not deleted`);
        assert.equal(dec.decode(res.body), image.body);
        for (const tag of image.tags) {
          const tagged = await call(reg, `/v2/${name}/manifests/${tag}`);
          const tagDelete = state(`/v2/${name}/manifests/${tag}`);
          // A tag goes only with an acknowledged or in-flight delete of it or of its manifest.
          if (tagged.status === 404) {
            assert.ok(tagDelete?.sent || del?.sent, `tag ${tag} is gone but was never deleted`);
            continue;
          }
          expect(tagged, 200, `tag ${tag}`);
          assert.equal(tagged.headers.get("Docker-Content-Digest"), image.digest);
        }
        const blob = await call(reg, `/v2/${name}/blobs/${image.layer}`, { method: "HEAD" });
        const blobDelete = state(`/v2/${name}/blobs/${image.layer}`);
        if (!blobDelete?.sent) expect(blob, 200, `layer of manifest ${i}`);
      }
      const list = JSON.parse(expect(await call(reg, `/v2/${name}/tags/list`), 200, "tags").text);
      for (const tag of list.tags as string[]) {
        expect(await call(reg, `/v2/${name}/manifests/${tag}`), 200, `listed tag ${tag}`);
      }
      for (const image of images.slice(0, 10)) {
        const index = JSON.parse(
          dec.decode(
            expect(await call(reg, `/v2/${name}/referrers/${image.digest}`), 200, "referrers").body,
          ),
        );
        for (const d of index.manifests as { digest: string }[]) {
          expect(await call(reg, `/v2/${name}/manifests/${d.digest}`), 200, "listed referrer");
        }
        const signature = images.find((s) => s.subject === image.digest)!;
        const sigDelete = state(`/v2/${name}/manifests/${signature.digest}`);
        if (!sigDelete?.sent) {
          assert.ok(index.manifests.some((d: { digest: string }) => d.digest === signature.digest));
        }
      }
      assert.equal(await reg.stop(), 0);
    } finally {
      await reg.kill();
    }
    await assertFsckClean(dir, "after the restart");
  });
});
