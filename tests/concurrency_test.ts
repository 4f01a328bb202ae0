/**
 * Concurrency in one process: many clients pushing the same
 * content into one and into many repositories, racing tag moves, a manifest
 * PUT racing its DELETE, PATCHes racing on one session, many chunked uploads
 * at once. After each scenario the data directory is checked whole
 * (`checkConsistency`): nothing lost, nothing dangling, counters exact.
 *
 * @module
 */
import assert from "node:assert/strict";
import { checkConsistency, k } from "./_consistency.ts";
import {
  imageManifest,
  randomBytes,
  sha256,
  sha512,
  startRegistry,
  type TestRegistry,
} from "./_registry.ts";

const MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json";

/** A response read whole (so no body leaks), with the status checked to be below 500. */
interface Answer {
  status: number;
  headers: Headers;
  body: Uint8Array;
  text: string;
}

async function call(reg: TestRegistry, path: string, init?: RequestInit): Promise<Answer> {
  const res = await reg.fetch(path, init);
  const body = new Uint8Array(await res.arrayBuffer());
  const text = new TextDecoder().decode(body.subarray(0, 2000));
  assert.ok(res.status < 500, `${init?.method ?? "GET"} ${path}: ${res.status} ${text}`);
  return { status: res.status, headers: res.headers, body, text };
}

function expect(answer: Answer, status: number, what: string): Answer {
  assert.equal(answer.status, status, `${what}: ${answer.status} ${answer.text}`);
  return answer;
}

const octets = (body: Uint8Array<ArrayBuffer>, headers: Record<string, string> = {}) => ({
  body,
  headers: { "Content-Type": "application/octet-stream", ...headers },
});

type PushWay = "post" | "post-put" | "chunked" | "mount";

/** Pushes `bytes` to `name` one of the ways a client may; the final answer must be 201. */
async function pushBlobBy(
  reg: TestRegistry,
  name: string,
  bytes: Uint8Array<ArrayBuffer>,
  way: PushWay,
  from = "",
): Promise<string> {
  const digest = sha256(bytes);
  const what = `${way} ${digest.slice(0, 15)} into ${name}`;
  if (way === "post") {
    expect(
      await call(reg, `/v2/${name}/blobs/uploads/?digest=${digest}`, {
        method: "POST",
        ...octets(bytes),
      }),
      201,
      what,
    );
    return digest;
  }
  const start = way === "mount"
    ? `/v2/${name}/blobs/uploads/?mount=${digest}&from=${from}`
    : `/v2/${name}/blobs/uploads/`;
  const opened = await call(reg, start, { method: "POST" });
  if (way === "mount" && opened.status === 201) return digest;
  expect(opened, 202, what);
  let location = opened.headers.get("Location")!;
  let body = bytes;
  if (way === "chunked") {
    const cut = [0, Math.floor(bytes.length / 3), Math.floor((2 * bytes.length) / 3)];
    for (let i = 0; i < 2; i++) {
      const chunk = bytes.slice(cut[i], cut[i + 1]);
      const answer = expect(
        await call(reg, location, {
          method: "PATCH",
          ...octets(chunk, { "Content-Range": `${cut[i]}-${cut[i + 1]! - 1}` }),
        }),
        202,
        what,
      );
      location = answer.headers.get("Location")!;
    }
    body = bytes.slice(cut[2]);
  }
  const sep = location.includes("?") ? "&" : "?";
  expect(
    await call(reg, `${location}${sep}digest=${digest}`, { method: "PUT", ...octets(body) }),
    201,
    what,
  );
  return digest;
}

/** GETs a blob and checks its bytes. */
async function assertBlob(reg: TestRegistry, name: string, bytes: Uint8Array): Promise<void> {
  const digest = sha256(bytes);
  const answer = expect(await call(reg, `/v2/${name}/blobs/${digest}`), 200, `GET ${name}`);
  assert.equal(answer.headers.get("Docker-Content-Digest"), digest);
  assert.deepEqual(answer.body, bytes, `bytes of ${digest} in ${name}`);
}

function putManifest(reg: TestRegistry, name: string, ref: string, body: string, query = "") {
  return call(reg, `/v2/${name}/manifests/${ref}${query}`, {
    method: "PUT",
    headers: { "Content-Type": MANIFEST_TYPE },
    body,
  });
}

/** An image (config and two layers) and its manifest; nothing pushed yet. */
function image(seed: number, extra: Record<string, unknown> = {}) {
  const config = new TextEncoder().encode(JSON.stringify({ os: "linux", seed }));
  const layers = [randomBytes(200_000 + seed, seed), randomBytes(3_000 + seed, seed + 1000)];
  const manifest = imageManifest(
    { digest: sha256(config), size: config.length },
    layers.map((l) => ({ digest: sha256(l), size: l.length })),
    extra,
  );
  return { blobs: [config, ...layers], manifest, digest: sha256(manifest) };
}

const WAYS: PushWay[] = ["post", "post-put", "chunked"];

Deno.test("end-4b/end-6/end-7: 40 clients pushing the same image into one repository all get 201, one copy per digest", async () => {
  await using reg = await startRegistry();
  const img = image(1);
  await Promise.all(Array.from({ length: 40 }, async (_, i) => {
    await Promise.all(img.blobs.map((b, j) => pushBlobBy(reg, "same/one", b, WAYS[(i + j) % 3]!)));
    expect(await putManifest(reg, "same/one", `t${i % 5}`, img.manifest), 201, `tag t${i % 5}`);
  }));
  for (const b of img.blobs) await assertBlob(reg, "same/one", b);
  for (let t = 0; t < 5; t++) {
    const answer = expect(await call(reg, `/v2/same/one/manifests/t${t}`), 200, `t${t}`);
    assert.equal(new TextDecoder().decode(answer.body), img.manifest);
  }
  const s = await checkConsistency(reg.meta, reg.blobs);
  assert.deepEqual(
    [...s.blobFiles].sort(),
    [...img.blobs.map((b) => sha256(b)), img.digest].sort(),
    "exactly one file per digest",
  );
  assert.deepEqual(s.strayFiles, [], "no upload or temp file left behind");
  assert.equal(s.uploads.size, 0);
  assert.equal(s.links.size, 3);
  assert.equal(s.manifests.size, 1);
});

Deno.test("end-4b/end-11/end-7: the same image pushed at once into 40 repositories is readable in each, one copy per digest", async () => {
  await using reg = await startRegistry();
  const img = image(2);
  const names = Array.from({ length: 40 }, (_, i) => `many/r${i}`);
  const ways: PushWay[] = [...WAYS, "mount"];
  await Promise.all(names.map(async (name, i) => {
    await Promise.all(
      img.blobs.map((b, j) => pushBlobBy(reg, name, b, ways[(i + j) % 4]!, "many/r0")),
    );
    expect(await putManifest(reg, name, "latest", img.manifest), 201, `${name}:latest`);
  }));
  for (const name of names) {
    for (const b of img.blobs) await assertBlob(reg, name, b);
    const answer = expect(await call(reg, `/v2/${name}/manifests/latest`), 200, name);
    assert.equal(answer.headers.get("Docker-Content-Digest"), img.digest);
  }
  const s = await checkConsistency(reg.meta, reg.blobs);
  assert.equal(s.blobFiles.size, 4, "config, two layers and the manifest: one file each");
  assert.equal(s.links.size, 40 * 3);
  assert.equal(s.blobRepos.size, 40 * 3);
  assert.equal(s.repos.size, 40);
  assert.deepEqual(s.strayFiles, []);
  assert.equal(s.uploads.size, 0);
});

Deno.test("end-7/end-7b: concurrent moves of one tag end at one of the digests with exactly one reverse entry", async () => {
  await using reg = await startRegistry();
  const name = "moves";
  const images = Array.from({ length: 6 }, (_, i) => image(10 + i));
  for (const img of images) {
    for (const b of img.blobs) await pushBlobBy(reg, name, b, "post");
  }
  const digests = new Set(images.map((img) => img.digest));
  for (let round = 0; round < 8; round++) {
    await Promise.all(Array.from({ length: 30 }, async (_, i) => {
      const img = images[(i * 7 + round) % images.length]!;
      const answer = i % 3 === 0
        ? await putManifest(reg, name, img.digest, img.manifest, "?tag=latest&tag=stable")
        : await putManifest(reg, name, i % 3 === 1 ? "latest" : "stable", img.manifest);
      expect(answer, 201, `round ${round} PUT ${i}`);
    }));
    const s = await checkConsistency(reg.meta, reg.blobs);
    for (const tag of ["latest", "stable"]) {
      const target = s.tags.get(k(name, tag));
      assert.ok(target && digests.has(target), `${tag} points at one of the pushed digests`);
      const reverse = [...s.tagsByDigest].filter((e) => e.endsWith(`\0${tag}`));
      assert.deepEqual(reverse, [k(name, target, tag)], `one reverse entry for ${tag}`);
      const got = expect(await call(reg, `/v2/${name}/manifests/${tag}`), 200, tag);
      assert.equal(got.headers.get("Docker-Content-Digest"), target);
      assert.equal(sha256(got.body), target);
    }
  }
  // Moves racing deletes of the same tag: afterwards the tag is gone with no
  // reverse entry, or it points at one digest with exactly one.
  for (let round = 0; round < 8; round++) {
    await Promise.all(Array.from({ length: 20 }, async (_, i) => {
      if (i % 4 === 0) {
        const answer = await call(reg, `/v2/${name}/manifests/latest`, { method: "DELETE" });
        assert.ok(answer.status === 202 || answer.status === 404, `DELETE tag: ${answer.status}`);
      } else {
        const img = images[(i + round) % images.length]!;
        expect(await putManifest(reg, name, "latest", img.manifest), 201, "move");
      }
    }));
    const s = await checkConsistency(reg.meta, reg.blobs);
    const target = s.tags.get(k(name, "latest"));
    const reverse = [...s.tagsByDigest].filter((e) => e.endsWith("\0latest"));
    assert.deepEqual(reverse, target ? [k(name, target, "latest")] : []);
  }
  const s = await checkConsistency(reg.meta, reg.blobs);
  assert.equal(s.manifests.size, images.length, "moving tags never loses a manifest");
});

Deno.test("end-7/end-9: a manifest PUT racing DELETEs of its digest leaves a consistent state either way", async () => {
  await using reg = await startRegistry();
  const name = "putdel";
  const subject = image(30);
  for (const b of subject.blobs) await pushBlobBy(reg, name, b, "post");
  expect(await putManifest(reg, name, "subject", subject.manifest), 201, "subject");
  const img = image(31, {
    artifactType: "application/vnd.example.sbom",
    subject: { mediaType: MANIFEST_TYPE, digest: subject.digest, size: subject.manifest.length },
  });
  for (const b of img.blobs) await pushBlobBy(reg, name, b, "post");
  const outcomes = { kept: 0, deleted: 0 };
  for (let round = 0; round < 30; round++) {
    const ops = [
      () => putManifest(reg, name, "a", img.manifest),
      () => call(reg, `/v2/${name}/manifests/${img.digest}`, { method: "DELETE" }),
      () => putManifest(reg, name, img.digest, img.manifest, "?tag=b&tag=c"),
      () => call(reg, `/v2/${name}/manifests/${img.digest}`, { method: "DELETE" }),
      () => call(reg, `/v2/${name}/manifests/${img.digest}`),
      () => putManifest(reg, name, "a", img.manifest),
      () => call(reg, `/v2/${name}/manifests/${img.digest}`, { method: "DELETE" }),
    ];
    // Rotate so that PUTs and DELETEs take turns being first.
    const order = ops.map((_, i) => ops[(i + round) % ops.length]!);
    const answers = await Promise.all(order.map((op) => op()));
    for (const a of answers) {
      assert.ok([200, 201, 202, 404].includes(a.status), `${a.status} ${a.text}`);
      if (a.status === 404) assert.match(a.text, /MANIFEST_UNKNOWN/);
      if (a.status === 200) assert.equal(sha256(a.body), img.digest);
    }
    const s = await checkConsistency(reg.meta, reg.blobs);
    const record = s.manifests.get(k(name, img.digest));
    const tagsOfIt = [...s.tags].filter(([, d]) => d === img.digest).map(([t]) => t);
    const reverse = [...s.tagsByDigest].filter((e) => e.startsWith(k(name, img.digest, "")));
    const referrers = await call(reg, `/v2/${name}/referrers/${subject.digest}`);
    const listed = (JSON.parse(referrers.text) as { manifests: { digest: string }[] }).manifests;
    if (record) {
      outcomes.kept++;
      for (const tag of tagsOfIt) {
        const got = expect(
          await call(reg, `/v2/${name}/manifests/${tag.split("\0")[1]}`),
          200,
          tag,
        );
        assert.equal(sha256(got.body), img.digest);
      }
      assert.deepEqual(listed.map((m) => m.digest), [img.digest]);
    } else {
      outcomes.deleted++;
      assert.deepEqual(tagsOfIt, [], "no tag points at a deleted manifest");
      assert.deepEqual(reverse, [], "no reverse entry of a deleted manifest");
      assert.deepEqual(listed, [], "no referrer entry of a deleted manifest");
      for (const tag of ["a", "b", "c"]) {
        const got = await call(reg, `/v2/${name}/manifests/${tag}`);
        assert.equal(got.status, 404, `tag ${tag} after the delete`);
      }
    }
    assert.equal(s.tags.get(k(name, "subject")), subject.digest, "the subject is untouched");
  }
  assert.equal(outcomes.kept + outcomes.deleted, 30);
});

Deno.test("end-5: two PATCHes racing on one session: exactly one 202 and one 416, the session stays consistent", async () => {
  await using reg = await startRegistry();
  const name = "race/patch";
  const size = 256 * 1024;
  await Promise.all(Array.from({ length: 16 }, async (_, i) => {
    const racers = i % 4 === 0 ? 4 : 2;
    const opened = expect(
      await call(reg, `/v2/${name}/blobs/uploads/`, { method: "POST" }),
      202,
      "POST",
    );
    const location = opened.headers.get("Location")!;
    const bodies = Array.from({ length: racers }, (_, r) => randomBytes(size, 100 * i + r + 1));
    const answers = await Promise.all(bodies.map((body) =>
      call(reg, location, {
        method: "PATCH",
        ...octets(body, { "Content-Range": `0-${size - 1}` }),
      })
    ));
    const statuses = answers.map((a) => a.status).sort();
    assert.deepEqual(statuses, [202, ...Array(racers - 1).fill(416)], `session ${i}`);
    const winner = bodies[answers.findIndex((a) => a.status === 202)]!;
    for (const lost of answers.filter((a) => a.status === 416)) {
      assert.match(lost.text, /BLOB_UPLOAD_INVALID/);
      assert.equal(lost.headers.get("Range"), `0-${size - 1}`, "the 416 tells where the upload is");
      assert.equal(lost.headers.get("Location"), location);
    }
    const status = expect(await call(reg, location), 204, "status");
    assert.equal(status.headers.get("Range"), `0-${size - 1}`);
    const tail = randomBytes(1000, 7000 + i);
    expect(
      await call(reg, location, {
        method: "PATCH",
        ...octets(tail, { "Content-Range": `${size}-${size + 999}` }),
      }),
      202,
      "next chunk",
    );
    const whole = new Uint8Array([...winner, ...tail]);
    expect(
      await call(reg, `${location}?digest=${sha256(whole)}`, { method: "PUT" }),
      201,
      "close",
    );
    await assertBlob(reg, name, whole);
  }));
  const s = await checkConsistency(reg.meta, reg.blobs);
  assert.deepEqual(s.strayFiles, [], "every losing chunk was removed");
  assert.equal(s.uploads.size, 0);
  assert.equal(s.links.size, 16);
});

Deno.test("end-5/end-6/end-4c: 30 concurrent chunked uploads of different blobs all land with exact bytes", async () => {
  await using reg = await startRegistry();
  const name = "many/chunked";
  const results = await Promise.all(Array.from({ length: 30 }, async (_, i) => {
    const bytes = randomBytes(50_000 + 997 * i, 500 + i);
    const useSha512 = i % 5 === 0;
    const digest = useSha512 ? sha512(bytes) : sha256(bytes);
    const opened = expect(
      await call(
        reg,
        `/v2/${name}/blobs/uploads/${useSha512 ? "?digest-algorithm=sha512" : ""}`,
        { method: "POST" },
      ),
      202,
      "POST",
    );
    let location = opened.headers.get("Location")!;
    const chunks = 4 + (i % 3);
    const step = Math.ceil(bytes.length / chunks);
    for (let at = 0; at < bytes.length; at += step) {
      const chunk = bytes.slice(at, Math.min(at + step, bytes.length));
      const answer = expect(
        await call(reg, location, {
          method: "PATCH",
          // Every third upload streams without Content-Range, as Docker does.
          ...octets(
            chunk,
            i % 3 === 2 ? {} : { "Content-Range": `${at}-${at + chunk.length - 1}` },
          ),
        }),
        202,
        `upload ${i} chunk at ${at}`,
      );
      assert.equal(answer.headers.get("Range"), `0-${at + chunk.length - 1}`);
      location = answer.headers.get("Location")!;
    }
    expect(await call(reg, `${location}?digest=${digest}`, { method: "PUT" }), 201, `close ${i}`);
    return { bytes, digest };
  }));
  for (const { bytes, digest } of results) {
    const answer = expect(await call(reg, `/v2/${name}/blobs/${digest}`), 200, digest);
    assert.deepEqual(answer.body, bytes);
  }
  const s = await checkConsistency(reg.meta, reg.blobs);
  assert.equal(s.links.size, 30);
  assert.equal(s.uploads.size, 0);
  assert.deepEqual(s.strayFiles, []);
});

Deno.test("end-6/end-14: closing PUTs racing each other, a PATCH or a cancel never answer 5xx", async () => {
  await using reg = await startRegistry();
  const name = "race/close";
  const outcomes: Record<string, number> = {};
  const rivals = ["PUT", "PATCH", "DELETE", "PUT+PUT"] as const;
  await Promise.all(Array.from({ length: 48 }, async (_, i) => {
    const opened = expect(
      await call(reg, `/v2/${name}/blobs/uploads/`, { method: "POST" }),
      202,
      "POST",
    );
    const location = opened.headers.get("Location")!;
    // Two chunks, so that closing assembles them (the longest window for a rival).
    const whole = randomBytes(500_000, 900 + i);
    for (const [start, end] of [[0, 300_000], [300_000, 500_000]] as const) {
      expect(
        await call(reg, location, {
          method: "PATCH",
          ...octets(whole.slice(start, end), { "Content-Range": `${start}-${end - 1}` }),
        }),
        202,
        "chunk",
      );
    }
    // A client retrying its closing PUT sends it again; its body is empty.
    const close = () => call(reg, `${location}?digest=${sha256(whole)}`, { method: "PUT" });
    const rival = rivals[i % rivals.length]!;
    const answers = await Promise.all([
      close(),
      ...(rival === "PUT" ? [close()] : rival === "PUT+PUT" ? [close(), close()] : []),
      ...(rival === "PATCH"
        ? [call(reg, location, {
          method: "PATCH",
          ...octets(randomBytes(20_000, 2900 + i), { "Content-Range": "500000-519999" }),
        })]
        : []),
      ...(rival === "DELETE" ? [call(reg, location, { method: "DELETE" })] : []),
    ]);
    const statuses = answers.map((a) => a.status);
    const key = `${rival}: ${statuses.join("/")}`;
    outcomes[key] = (outcomes[key] ?? 0) + 1;
    for (const a of answers) {
      assert.ok([201, 202, 204, 400, 404, 416].includes(a.status), `${key}: ${a.text}`);
    }
    // At most one request ends the session: one 201 (blob complete) or one 204 (cancelled).
    const enders = statuses.filter((st) => st === 201 || st === 204).length;
    assert.ok(enders <= 1, `${key}: the session ended more than once`);
    if (statuses.includes(201)) await assertBlob(reg, name, whole);
    const after = await call(reg, location);
    if (after.status === 204) {
      // Only a PATCH that got in first leaves the session open, at its end; the
      // closing PUT that lost to it hears 416 with where the upload is.
      assert.equal(rival, "PATCH", key);
      assert.equal(after.headers.get("Range"), "0-519999");
      assert.deepEqual(statuses, [416, 202], key);
      assert.equal(answers[0]!.headers.get("Range"), "0-519999");
      expect(await call(reg, location, { method: "DELETE" }), 204, "cancel the rest");
    } else assert.equal(after.status, 404, key);
  }));
  const s = await checkConsistency(reg.meta, reg.blobs);
  assert.equal(s.uploads.size, 0, `no session left (outcomes ${JSON.stringify(outcomes)})`);
});

Deno.test("end-5: a streamed PATCH (no Content-Range) that waited while another was acknowledged gets 416", async () => {
  await using reg = await startRegistry();
  const name = "race/streamed";
  const size = 512 * 1024;
  for (let i = 0; i < 3; i++) {
    const opened = expect(
      await call(reg, `/v2/${name}/blobs/uploads/`, { method: "POST" }),
      202,
      "POST",
    );
    const location = opened.headers.get("Location")!;
    const first = randomBytes(size, 900 + i);
    const second = randomBytes(size, 950 + i);
    // The first body arrives in two halves; the second PATCH is sent in between, so it
    // finds the session at 0 and must wait for the first to be acknowledged.
    let rest!: () => void;
    const later = new Promise<void>((resolve) => (rest = resolve));
    const slow = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(first.slice(0, size / 2));
        await later;
        controller.enqueue(first.slice(size / 2));
        controller.close();
      },
    });
    const a = reg.fetch(location, {
      method: "PATCH",
      body: slow,
      headers: { "Content-Type": "application/octet-stream" },
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const b = call(reg, location, { method: "PATCH", ...octets(second, {}) });
    await new Promise((resolve) => setTimeout(resolve, 200));
    rest();
    const [ra, rb] = [await a, await b];
    await ra.body?.cancel();
    assert.equal(ra.status, 202, "the first chunk is acknowledged");
    assert.equal(rb.status, 416, "the chunk sent for offset 0 lost: it is not appended after");
    assert.equal(rb.headers.get("Range"), `0-${size - 1}`);
    expect(
      await call(reg, `${location}?digest=${sha256(first)}`, { method: "PUT" }),
      201,
      "close",
    );
    await assertBlob(reg, name, first);
  }
});
