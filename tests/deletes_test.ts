/**
 * Black-box tests of content management (A9): DELETE of tags and manifests
 * (end-9) and what remains visible afterwards. DELETE of a blob (end-10) is
 * tested with the other blob endpoints in `blobs_test.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  assertError,
  pushImage,
  sha256,
  startRegistry,
  tagAll,
  type TestRegistry,
} from "./_registry.ts";
import { OCI_INDEX, OCI_MANIFEST } from "../src/oci/media_type.ts";

async function del(reg: TestRegistry, path: string): Promise<Response> {
  return await reg.fetch(path, { method: "DELETE" });
}

/** DELETEs `path` and asserts 202 with an empty body. */
async function delOk(reg: TestRegistry, path: string): Promise<void> {
  const res = await del(reg, path);
  const text = await res.text();
  assert.equal(res.status, 202, `DELETE ${path}: ${text}`);
  assert.equal(text, "");
}

async function status(reg: TestRegistry, path: string, method = "GET"): Promise<number> {
  const res = await reg.fetch(path, { method });
  await res.body?.cancel();
  return res.status;
}

async function tagList(reg: TestRegistry, name: string): Promise<string[]> {
  const res = await reg.fetch(`/v2/${name}/tags/list`);
  assert.equal(res.status, 200);
  return (await res.json()).tags;
}

// ---- end-9: tags ----------------------------------------------------------------------

Deno.test("end-9: DELETE of a tag answers 202; the tag is gone, the manifest stays by digest", async () => {
  await using reg = await startRegistry();
  const { digest, body } = await pushImage(reg, "repo", "v1");
  await tagAll(reg, "repo", body, ["v1-alias"]);
  await delOk(reg, "/v2/repo/manifests/v1");
  await assertError(await reg.fetch("/v2/repo/manifests/v1"), 404, "MANIFEST_UNKNOWN");
  assert.equal(await status(reg, "/v2/repo/manifests/v1", "HEAD"), 404);
  const res = await reg.fetch(`/v2/repo/manifests/${digest}`);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), body);
  assert.equal(await status(reg, "/v2/repo/manifests/v1-alias"), 200);
  assert.deepEqual(await tagList(reg, "repo"), ["v1-alias"]);
});

Deno.test("end-9: a deleted tag can be set again", async () => {
  await using reg = await startRegistry();
  const { digest, body } = await pushImage(reg, "repo", "v1");
  await delOk(reg, "/v2/repo/manifests/v1");
  await tagAll(reg, "repo", body, ["v1"]);
  const res = await reg.fetch("/v2/repo/manifests/v1", { method: "HEAD" });
  await res.body?.cancel();
  assert.equal(res.headers.get("Docker-Content-Digest"), digest);
});

// ---- end-9: digests -------------------------------------------------------------------

Deno.test("end-9: DELETE by digest answers 202; the digest and every tag pointing at it get 404", async () => {
  await using reg = await startRegistry();
  const { digest, body } = await pushImage(reg, "repo", "v1");
  await tagAll(reg, "repo", body, ["latest", "stable"]);
  const other = await pushImage(reg, "repo", "other", { seed: 2 });
  await delOk(reg, `/v2/repo/manifests/${digest}`);
  await assertError(await reg.fetch(`/v2/repo/manifests/${digest}`), 404, "MANIFEST_UNKNOWN");
  for (const tag of ["v1", "latest", "stable"]) {
    await assertError(await reg.fetch(`/v2/repo/manifests/${tag}`), 404, "MANIFEST_UNKNOWN");
    assert.equal(await status(reg, `/v2/repo/manifests/${tag}`, "HEAD"), 404, tag);
  }
  assert.deepEqual(await tagList(reg, "repo"), ["other"]);
  assert.equal(await status(reg, `/v2/repo/manifests/${other.digest}`), 200);
});

Deno.test("end-9: DELETE by digest removes its referrer entry", async () => {
  await using reg = await startRegistry();
  const subject = await pushImage(reg, "repo", "v1");
  const subjectDescriptor = {
    mediaType: OCI_MANIFEST,
    digest: subject.digest,
    size: new TextEncoder().encode(subject.body).length,
  };
  const ref = await pushImage(reg, "repo", "sig", {
    seed: 2,
    extra: { artifactType: "application/vnd.example.sig", subject: subjectDescriptor },
  });
  const before = await reg.fetch(`/v2/repo/referrers/${subject.digest}`);
  assert.deepEqual((await before.json()).manifests.map((d: { digest: string }) => d.digest), [
    ref.digest,
  ]);
  await delOk(reg, `/v2/repo/manifests/${ref.digest}`);
  const after = await reg.fetch(`/v2/repo/referrers/${subject.digest}`);
  assert.deepEqual((await after.json()).manifests, []);
  await assertError(await reg.fetch("/v2/repo/manifests/sig"), 404, "MANIFEST_UNKNOWN");
});

Deno.test("end-9: a tag moved to another digest survives the delete of the old digest", async () => {
  await using reg = await startRegistry();
  const old = await pushImage(reg, "repo", "latest", { seed: 1 });
  await tagAll(reg, "repo", old.body, ["pinned"]);
  const current = await pushImage(reg, "repo", "latest", { seed: 2 });
  await delOk(reg, `/v2/repo/manifests/${old.digest}`);
  const res = await reg.fetch("/v2/repo/manifests/latest");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("Docker-Content-Digest"), current.digest);
  assert.equal(await res.text(), current.body);
  await assertError(await reg.fetch("/v2/repo/manifests/pinned"), 404, "MANIFEST_UNKNOWN");
  assert.deepEqual(await tagList(reg, "repo"), ["latest"]);
});

Deno.test("end-9: a manifest with 12 tags deleted by digest loses all 12", async (t) => {
  await using reg = await startRegistry();
  // 12 is the asked-for case; 9, 18 and 25 sit on and around the store's batch size.
  for (const count of [12, 9, 18, 25]) {
    await t.step(`${count} tags`, async () => {
      const name = `repo${count}`;
      const tags = Array.from({ length: count }, (_, i) => `t${String(i).padStart(2, "0")}`);
      const { digest, body } = await pushImage(reg, name, tags[0]!, { seed: count });
      await tagAll(reg, name, body, tags.slice(1));
      await pushImage(reg, name, "zz-other", { seed: 1000 + count });
      assert.equal((await tagList(reg, name)).length, count + 1);
      await delOk(reg, `/v2/${name}/manifests/${digest}`);
      assert.deepEqual(await tagList(reg, name), ["zz-other"]);
      for (const tag of tags) {
        assert.equal(await status(reg, `/v2/${name}/manifests/${tag}`, "HEAD"), 404, tag);
      }
      assert.equal(await status(reg, `/v2/${name}/manifests/${digest}`, "HEAD"), 404);
    });
  }
});

Deno.test("end-9: a manifest deleted by digest can be pushed again, without its old tags", async () => {
  await using reg = await startRegistry();
  const { digest, body } = await pushImage(reg, "repo", "v1");
  await delOk(reg, `/v2/repo/manifests/${digest}`);
  const res = await reg.fetch(`/v2/repo/manifests/${digest}`, {
    method: "PUT",
    headers: { "Content-Type": OCI_MANIFEST },
    body,
  });
  await res.body?.cancel();
  assert.equal(res.status, 201);
  const got = await reg.fetch(`/v2/repo/manifests/${digest}`);
  assert.equal(await got.text(), body);
  await assertError(await reg.fetch("/v2/repo/manifests/v1"), 404, "MANIFEST_UNKNOWN");
});

Deno.test("end-9: deleting a child manifest by digest leaves the index and its tag", async () => {
  await using reg = await startRegistry();
  const child = await pushImage(reg, "repo", "child");
  const index = JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [{
      mediaType: OCI_MANIFEST,
      digest: child.digest,
      size: new TextEncoder().encode(child.body).length,
    }],
  });
  const put = await reg.fetch("/v2/repo/manifests/multi", {
    method: "PUT",
    headers: { "Content-Type": OCI_INDEX },
    body: index,
  });
  await put.body?.cancel();
  assert.equal(put.status, 201);
  await delOk(reg, `/v2/repo/manifests/${child.digest}`);
  const res = await reg.fetch("/v2/repo/manifests/multi");
  assert.equal(res.status, 200);
  assert.equal(await res.text(), index);
});

// ---- end-9: failures -----------------------------------------------------------------

Deno.test("end-9: DELETE of an unknown tag or digest gets 404 MANIFEST_UNKNOWN", async () => {
  await using reg = await startRegistry();
  const { digest } = await pushImage(reg, "repo", "v1");
  await assertError(await del(reg, "/v2/repo/manifests/nope"), 404, "MANIFEST_UNKNOWN");
  await assertError(
    await del(reg, `/v2/repo/manifests/${sha256("never pushed")}`),
    404,
    "MANIFEST_UNKNOWN",
  );
  await delOk(reg, `/v2/repo/manifests/${digest}`);
  await assertError(await del(reg, `/v2/repo/manifests/${digest}`), 404, "MANIFEST_UNKNOWN");
  await assertError(await del(reg, "/v2/repo/manifests/v1"), 404, "MANIFEST_UNKNOWN");
});

Deno.test("end-9: DELETE in an unknown repository gets 404 NAME_UNKNOWN", async () => {
  await using reg = await startRegistry();
  await pushImage(reg, "repo", "v1");
  await assertError(await del(reg, "/v2/nothere/manifests/v1"), 404, "NAME_UNKNOWN");
  await assertError(
    await del(reg, `/v2/nothere/manifests/${sha256("x")}`),
    404,
    "NAME_UNKNOWN",
  );
});

Deno.test("end-9: DELETE with an invalid reference gets 400", async () => {
  await using reg = await startRegistry();
  await pushImage(reg, "repo", "v1");
  await assertError(
    await del(reg, "/v2/repo/manifests/sha256:totallywrong"),
    400,
    "DIGEST_INVALID",
  );
  await assertError(await del(reg, "/v2/repo/manifests/-bad"), 400, "TAG_INVALID");
  await assertError(await del(reg, "/v2/Repo/manifests/v1"), 400, "NAME_INVALID");
});

Deno.test("A9: with deletes disabled, DELETE of a tag or a digest gets 405 UNSUPPORTED and removes nothing", async () => {
  await using reg = await startRegistry({ deleteEnabled: false });
  const { digest } = await pushImage(reg, "repo", "v1");
  for (const path of ["/v2/repo/manifests/v1", `/v2/repo/manifests/${digest}`]) {
    await assertError(await del(reg, path), 405, "UNSUPPORTED");
  }
  assert.equal(await status(reg, "/v2/repo/manifests/v1"), 200);
  assert.equal(await status(reg, `/v2/repo/manifests/${digest}`), 200);
});
