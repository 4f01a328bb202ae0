/**
 * Black-box tests of content discovery: the tags list (A7, end-8a/8b) and
 * Docker's `/v2/_catalog` (optional, A1 note), paged the same way.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  assertError,
  pushBlob,
  pushImage,
  startRegistry,
  tagAll,
  type TestRegistry,
} from "./_registry.ts";

/** A repository `name` holding `tags` (all on one manifest). */
async function repoWithTags(reg: TestRegistry, name: string, tags: string[]) {
  const [first, ...rest] = tags;
  const { body } = await pushImage(reg, name, first!);
  await tagAll(reg, name, body, rest);
}

/** The target of a `Link: <url>; rel="next"` header, or null. */
function nextLink(res: Response): string | null {
  const link = res.headers.get("Link");
  if (link === null) return null;
  const match = /^<([^>]+)>;\s*rel="next"$/.exec(link);
  assert.ok(match, `Link header "${link}" is not <url>; rel="next"`);
  return match[1]!;
}

/** Follows Link from `path` to the end; returns each page's items. */
async function followPages(
  reg: TestRegistry,
  path: string,
  key: "tags" | "repositories",
): Promise<string[][]> {
  const pages: string[][] = [];
  let next: string | null = path;
  while (next !== null) {
    assert.ok(pages.length < 100, "Link never ends");
    const res = await reg.fetch(new URL(next, reg.url).href);
    assert.equal(res.status, 200, next);
    const link = nextLink(res);
    const body = await res.json() as Record<string, string[]>;
    pages.push(body[key]!);
    next = link;
  }
  return pages;
}

async function getJson(reg: TestRegistry, path: string) {
  const res = await reg.fetch(path);
  const text = await res.text();
  assert.equal(res.status, 200, `${path}: ${text}`);
  return { res, body: JSON.parse(text), link: nextLink(res) };
}

const TWENTY_FIVE = Array.from({ length: 25 }, (_, i) => `v${String(i).padStart(2, "0")}`);

// ---- A7 / end-8: tags list --------------------------------------------------

Deno.test("end-8a: the tags list of a repository is 200 JSON {name, tags}", async () => {
  await using reg = await startRegistry();
  await repoWithTags(reg, "ns/repo", ["latest", "v1"]);
  const { res, body, link } = await getJson(reg, "/v2/ns/repo/tags/list");
  assert.match(res.headers.get("Content-Type") ?? "", /^application\/json/);
  assert.deepEqual(body, { name: "ns/repo", tags: ["latest", "v1"] });
  assert.equal(link, null);
});

Deno.test("end-8a: a repository without tags lists an empty array", async () => {
  await using reg = await startRegistry();
  await pushBlob(reg, "blobsonly", "some bytes");
  const { body } = await getJson(reg, "/v2/blobsonly/tags/list");
  assert.deepEqual(body, { name: "blobsonly", tags: [] });
});

Deno.test("end-8a: an unknown repository gets 404 NAME_UNKNOWN", async () => {
  await using reg = await startRegistry();
  await repoWithTags(reg, "known", ["a"]);
  await assertError(await reg.fetch("/v2/unknown/tags/list"), 404, "NAME_UNKNOWN");
  await assertError(await reg.fetch("/v2/known/sub/tags/list"), 404, "NAME_UNKNOWN");
});

Deno.test("A7: tags are listed in lexical (byte) order", async () => {
  await using reg = await startRegistry();
  const tags = ["b", "B", "a", "A", "_u", "1", "10", "9", "a-b", "a.b", "a_b", "Z", "z", "0"];
  await repoWithTags(reg, "repo", tags);
  const { body } = await getJson(reg, "/v2/repo/tags/list");
  // Bytes: - . 0-9 A-Z _ a-z
  const expected = ["0", "1", "10", "9", "A", "B", "Z", "_u", "a", "a-b", "a.b", "a_b", "b", "z"];
  assert.deepEqual(body.tags, expected);
});

Deno.test("A7: tags of one repository are not listed in another, even a nested one", async () => {
  await using reg = await startRegistry();
  await repoWithTags(reg, "a", ["one"]);
  await repoWithTags(reg, "a/b", ["two"]);
  await repoWithTags(reg, "a-b", ["three"]);
  assert.deepEqual((await getJson(reg, "/v2/a/tags/list")).body, { name: "a", tags: ["one"] });
  assert.deepEqual((await getJson(reg, "/v2/a/b/tags/list")).body, { name: "a/b", tags: ["two"] });
  assert.deepEqual((await getJson(reg, "/v2/a-b/tags/list")).body, {
    name: "a-b",
    tags: ["three"],
  });
});

Deno.test('end-8b: ?n= returns exactly n tags and a Link rel="next" when more remain', async () => {
  await using reg = await startRegistry();
  await repoWithTags(reg, "repo", TWENTY_FIVE);
  const { body, link } = await getJson(reg, "/v2/repo/tags/list?n=10");
  assert.deepEqual(body, { name: "repo", tags: TWENTY_FIVE.slice(0, 10) });
  assert.ok(link, "Link");
  const url = new URL(link, reg.url);
  assert.equal(url.pathname, "/v2/repo/tags/list");
  assert.equal(url.searchParams.get("last"), "v09");
});

Deno.test("end-8b: following Link with n=10 collects every one of 25 tags exactly once", async () => {
  await using reg = await startRegistry();
  await repoWithTags(reg, "repo", TWENTY_FIVE);
  const pages = await followPages(reg, "/v2/repo/tags/list?n=10", "tags");
  assert.deepEqual(pages.map((p) => p.length), [10, 10, 5]);
  assert.deepEqual(pages.flat(), TWENTY_FIVE);
});

Deno.test("end-8b: a page that ends exactly at the last tag carries no Link", async () => {
  await using reg = await startRegistry();
  await repoWithTags(reg, "repo", TWENTY_FIVE.slice(0, 10));
  const pages = await followPages(reg, "/v2/repo/tags/list?n=5", "tags");
  assert.deepEqual(pages.map((p) => p.length), [5, 5]);
  const { link } = await getJson(reg, "/v2/repo/tags/list?n=10");
  assert.equal(link, null);
  const { body, link: more } = await getJson(reg, "/v2/repo/tags/list?n=11");
  assert.equal(body.tags.length, 10);
  assert.equal(more, null);
});

Deno.test("end-8b: n=0 returns an empty list and no Link", async () => {
  await using reg = await startRegistry();
  await repoWithTags(reg, "repo", ["a", "b"]);
  const { body, link } = await getJson(reg, "/v2/repo/tags/list?n=0");
  assert.deepEqual(body, { name: "repo", tags: [] });
  assert.equal(link, null);
});

Deno.test("end-8b: an invalid n gets 400 PAGINATION_NUMBER_INVALID", async (t) => {
  await using reg = await startRegistry();
  await repoWithTags(reg, "repo", ["a"]);
  for (const n of ["-1", "abc", "1.5", "", "1e3", "0x10", " 5"]) {
    await t.step(JSON.stringify(n), async () => {
      const res = await reg.fetch(`/v2/repo/tags/list?n=${encodeURIComponent(n)}`);
      await assertError(res, 400, "PAGINATION_NUMBER_INVALID");
    });
  }
});

Deno.test("end-8b: last is a tag value and results start strictly after it", async () => {
  await using reg = await startRegistry();
  await repoWithTags(reg, "repo", ["a", "b", "c", "d", "e"]);
  assert.deepEqual((await getJson(reg, "/v2/repo/tags/list?last=b")).body.tags, ["c", "d", "e"]);
  assert.deepEqual((await getJson(reg, "/v2/repo/tags/list?last=b&n=2")).body.tags, ["c", "d"]);
  // A value between tags, not itself a tag.
  assert.deepEqual((await getJson(reg, "/v2/repo/tags/list?last=bb")).body.tags, ["c", "d", "e"]);
  // last is not an index.
  assert.deepEqual((await getJson(reg, "/v2/repo/tags/list?last=1")).body.tags, [
    "a",
    "b",
    "c",
    "d",
    "e",
  ]);
});

Deno.test("end-8b: last beyond the end returns an empty list and no Link", async () => {
  await using reg = await startRegistry();
  await repoWithTags(reg, "repo", ["a", "b"]);
  for (const path of ["/v2/repo/tags/list?last=b", "/v2/repo/tags/list?last=zzz&n=5"]) {
    const { body, link } = await getJson(reg, path);
    assert.deepEqual(body, { name: "repo", tags: [] }, path);
    assert.equal(link, null, path);
  }
});

Deno.test("A7: the default page is capped at tagsPageMax and carries a Link", async () => {
  await using reg = await startRegistry({ tagsPageMax: 5 });
  await repoWithTags(reg, "repo", TWENTY_FIVE.slice(0, 12));
  const { body, link } = await getJson(reg, "/v2/repo/tags/list");
  assert.deepEqual(body.tags, TWENTY_FIVE.slice(0, 5));
  assert.ok(link, "Link");
  const pages = await followPages(reg, "/v2/repo/tags/list", "tags");
  assert.deepEqual(pages.map((p) => p.length), [5, 5, 2]);
  assert.deepEqual(pages.flat(), TWENTY_FIVE.slice(0, 12));
});

Deno.test("A7: n above tagsPageMax is capped, with a Link to the rest", async () => {
  await using reg = await startRegistry({ tagsPageMax: 5 });
  await repoWithTags(reg, "repo", TWENTY_FIVE.slice(0, 8));
  const { body, link } = await getJson(reg, "/v2/repo/tags/list?n=100");
  assert.deepEqual(body.tags, TWENTY_FIVE.slice(0, 5));
  assert.ok(link, "Link");
  const pages = await followPages(reg, "/v2/repo/tags/list?n=100", "tags");
  assert.deepEqual(pages.flat(), TWENTY_FIVE.slice(0, 8));
});

Deno.test("A7: a moved tag is listed once, a new tag appears", async () => {
  await using reg = await startRegistry();
  await pushImage(reg, "repo", "latest", { seed: 1 });
  await pushImage(reg, "repo", "latest", { seed: 2 });
  await pushImage(reg, "repo", "v2", { seed: 2 });
  assert.deepEqual((await getJson(reg, "/v2/repo/tags/list")).body.tags, ["latest", "v2"]);
});

// ---- /v2/_catalog --------------------------------------------------------------

Deno.test("catalog: an empty registry lists no repositories", async () => {
  await using reg = await startRegistry();
  const { body, link } = await getJson(reg, "/v2/_catalog");
  assert.deepEqual(body, { repositories: [] });
  assert.equal(link, null);
});

Deno.test("catalog: repositories are listed once each, in lexical (byte) order", async () => {
  await using reg = await startRegistry();
  const names = ["zeta", "a/b", "a", "a-b", "a.b", "0", "library/busybox", "a_b", "a/b/c"];
  for (const name of names) await pushBlob(reg, name, `blob of ${name}`);
  await pushImage(reg, "a", "latest"); // a second write to an existing repository
  const { body } = await getJson(reg, "/v2/_catalog");
  // Bytes: - . / 0-9 _ a-z
  const expected = ["0", "a", "a-b", "a.b", "a/b", "a/b/c", "a_b", "library/busybox", "zeta"];
  assert.deepEqual(body, { repositories: expected });
});

Deno.test("catalog: following Link with n=10 collects every one of 25 repositories exactly once", async () => {
  await using reg = await startRegistry();
  const names = TWENTY_FIVE.map((v) => `repo/${v}`);
  for (const name of names) await pushBlob(reg, name, name);
  const { body, link } = await getJson(reg, "/v2/_catalog?n=10");
  assert.deepEqual(body.repositories, names.slice(0, 10));
  assert.ok(link, "Link");
  const pages = await followPages(reg, "/v2/_catalog?n=10", "repositories");
  assert.deepEqual(pages.map((p) => p.length), [10, 10, 5]);
  assert.deepEqual(pages.flat(), names);
});

Deno.test("catalog: n=0 returns an empty list and no Link", async () => {
  await using reg = await startRegistry();
  await pushBlob(reg, "one", "x");
  const { body, link } = await getJson(reg, "/v2/_catalog?n=0");
  assert.deepEqual(body, { repositories: [] });
  assert.equal(link, null);
});

Deno.test("catalog: an invalid n gets 400 PAGINATION_NUMBER_INVALID", async (t) => {
  await using reg = await startRegistry();
  for (const n of ["-1", "abc", "1.5"]) {
    await t.step(n, async () => {
      await assertError(await reg.fetch(`/v2/_catalog?n=${n}`), 400, "PAGINATION_NUMBER_INVALID");
    });
  }
});

Deno.test("catalog: last starts strictly after a name; beyond the end is empty", async () => {
  await using reg = await startRegistry();
  for (const name of ["a", "b", "c"]) await pushBlob(reg, name, name);
  assert.deepEqual((await getJson(reg, "/v2/_catalog?last=a")).body.repositories, ["b", "c"]);
  const { body, link } = await getJson(reg, "/v2/_catalog?last=zz");
  assert.deepEqual(body, { repositories: [] });
  assert.equal(link, null);
});

Deno.test("catalog: the default page is capped at tagsPageMax and carries a Link", async () => {
  await using reg = await startRegistry({ tagsPageMax: 5 });
  const names = TWENTY_FIVE.slice(0, 7);
  for (const name of names) await pushBlob(reg, name, name);
  const { body, link } = await getJson(reg, "/v2/_catalog");
  assert.deepEqual(body.repositories, names.slice(0, 5));
  assert.ok(link, "Link");
  const pages = await followPages(reg, "/v2/_catalog", "repositories");
  assert.deepEqual(pages.flat(), names);
});
