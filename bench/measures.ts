/**
 * The side-by-side measures: one row each, run the same way against Berth and
 * the other registry (or against Berth only). Each returns the work done
 * (bytes or requests) and its time; `vs.ts` adds the server's CPU and memory.
 *
 * @module
 */
import {
  allTags,
  curlDownload,
  hey,
  pushChunked,
  pushSmall,
  pushStreamed,
  smallBlob,
  TestBlob,
} from "./client.ts";

const MIB = 1024 * 1024;
const MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json";

/** A registry under test. */
export interface Side {
  key: "berth" | "other";
  name: string;
  url: string;
  pid: number | undefined;
  /** Filled by `setUp`: the test manifest's digest. */
  manifestDigest?: string;
  /** The last blob `push-1` stored, downloaded by `download`. */
  lastPushed?: TestBlob;
}

/** The bench's sizes and durations. */
export interface Options {
  sizeMib: number;
  chunkMib: number;
  concurrentPushes: number;
  concurrentMib: number;
  heySeconds: number;
  heyConcurrency: number;
  listTags: number;
  pageTags: number;
}

/** What one run of a measure did: `bytes` or `requests` in `seconds`. */
export interface Work {
  seconds: number;
  bytes?: number;
  requests?: number;
  p99Ms?: number;
  clientCpuS?: number;
}

/** One row of the bench. */
export interface Measure {
  id: string;
  label: (o: Options) => string;
  unit: "MB/s" | "req/s";
  /** Runs against Berth only (a comparison within Berth). */
  berthOnly?: boolean;
  /** Whether Berth's peak RSS during this measure is a target. */
  watchRss?: boolean;
  run: (side: Side, o: Options) => Promise<Work>;
  /** Runs once per side before the first round, unrecorded (JIT, caches, connections). */
  warmUp?: (side: Side, o: Options) => Promise<unknown>;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

async function heyWork(url: string, o: Options, method = "GET"): Promise<Work> {
  const result = await hey(url, {
    seconds: o.heySeconds,
    concurrency: o.heyConcurrency,
    method,
    accept: MANIFEST_TYPE,
  });
  return {
    seconds: result.requests / result.requestsPerSecond,
    requests: result.requests,
    ...(Number.isFinite(result.p99Ms) ? { p99Ms: result.p99Ms } : {}),
    clientCpuS: result.clientCpuS,
  };
}

/** A measure of requests/s with `hey`: `path` on each side, GET unless `method` says. */
function heyMeasure(
  fields: Pick<Measure, "id" | "label" | "berthOnly">,
  path: (side: Side, o: Options) => string,
  method = "GET",
): Measure {
  return {
    ...fields,
    unit: "req/s",
    run: (side, o) => heyWork(side.url + path(side, o), o, method),
    warmUp: (side, o) => heyWork(side.url + path(side, o), { ...o, heySeconds: 1 }, method),
  };
}

/** The rows, in the order they run within a round. */
export const MEASURES: Measure[] = [
  {
    id: "push-1",
    label: (o) => `push ${o.sizeMib} MiB, one streamed PATCH`,
    unit: "MB/s",
    watchRss: true,
    async run(side, o) {
      const blob = new TestBlob(o.sizeMib * MIB);
      const seconds = await timed(() => pushStreamed(side.url, "bench", blob));
      side.lastPushed = blob;
      return { seconds, bytes: blob.size };
    },
  },
  {
    id: "push-chunked",
    label: (o) => `push ${o.sizeMib} MiB in ${o.chunkMib} MiB PATCHes`,
    unit: "MB/s",
    async run(side, o) {
      const blob = new TestBlob(o.sizeMib * MIB);
      const seconds = await timed(() => pushChunked(side.url, "bench", blob, o.chunkMib * MIB));
      return { seconds, bytes: blob.size };
    },
  },
  {
    id: "push-concurrent",
    label: (o) => `${o.concurrentPushes} concurrent pushes of ${o.concurrentMib} MiB`,
    unit: "MB/s",
    watchRss: true,
    async run(side, o) {
      const blobs = Array.from(
        { length: o.concurrentPushes },
        () => new TestBlob(o.concurrentMib * MIB),
      );
      const seconds = await timed(() =>
        Promise.all(blobs.map((blob, i) => pushStreamed(side.url, `bench${i}`, blob)))
      );
      return { seconds, bytes: blobs.length * o.concurrentMib * MIB };
    },
  },
  {
    id: "download",
    label: (o) => `blob download ${o.sizeMib} MiB (curl -o /dev/null)`,
    unit: "MB/s",
    async run(side) {
      const blob = side.lastPushed;
      if (!blob) throw new Error("download runs after push-1");
      let result = { bytes: 0, clientCpuS: 0 };
      const seconds = await timed(async () =>
        result = await curlDownload(`${side.url}/v2/bench/blobs/${blob.digest}`)
      );
      if (result.bytes !== blob.size) throw new Error(`downloaded ${result.bytes} bytes`);
      return { seconds, ...result };
    },
  },
  heyMeasure(
    { id: "manifest-get", label: (o) => `manifest GET by tag (hey -c ${o.heyConcurrency})` },
    () => "/v2/image/manifests/latest",
  ),
  heyMeasure(
    {
      id: "manifest-head",
      label: (o) => `manifest HEAD by digest (hey -c ${o.heyConcurrency})`,
    },
    (side) => `/v2/image/manifests/${side.manifestDigest}`,
    "HEAD",
  ),
  heyMeasure(
    {
      id: "tags-full",
      label: (o) => `full tag list, ${o.listTags} tags (hey -c ${o.heyConcurrency})`,
    },
    () => "/v2/list/tags/list",
  ),
  heyMeasure(
    {
      id: "tags-page-small",
      label: (o) => `tags page n=100, repo of 100 tags (hey -c ${o.heyConcurrency})`,
      berthOnly: true,
    },
    () => "/v2/page100/tags/list?n=100",
  ),
  heyMeasure(
    {
      id: "tags-page-large",
      label: (o) =>
        `tags page n=100 from the middle, repo of ${o.pageTags} tags (hey -c ${o.heyConcurrency})`,
      berthOnly: true,
    },
    (_, o) => `/v2/pagebig/tags/list?n=100&last=${tagName(o.pageTags >> 1)}`,
  ),
];

/** The name of the i-th seeded tag (they sort in seeding order). */
export function tagName(i: number): string {
  return `t${String(i).padStart(7, "0")}`;
}

/**
 * PUTs in flight while seeding tags. They all tag the same manifest, and
 * Berth's commits for one manifest conflict: with 32 in flight, some give up
 * after 100 conflicting rounds (HTTP 500), and the rest crawl.
 */
const SEED_CONCURRENCY = 4;

/**
 * Tags `count` names in `repo` to the test manifest, `SEED_CONCURRENCY` PUTs
 * in flight: one tag per PUT by tag, or `perPut` per PUT by digest with
 * `?tag=` (OCI 1.1; Berth takes up to 10), which is how 100,000 tags go in
 * within minutes.
 */
async function seedTags(
  side: Side,
  repo: string,
  manifest: string,
  count: number,
  perPut = 1,
) {
  let next = 0;
  await Promise.all(Array.from({ length: SEED_CONCURRENCY }, async () => {
    while (next < count) {
      const first = next;
      next = Math.min(count, next + perPut);
      const tags = Array.from({ length: next - first }, (_, i) => tagName(first + i));
      const url = perPut === 1
        ? `${side.url}/v2/${repo}/manifests/${tags[0]}`
        : `${side.url}/v2/${repo}/manifests/${side.manifestDigest}?` +
          tags.map((tag) => `tag=${tag}`).join("&");
      const res = await fetch(url, {
        method: "PUT",
        headers: { "Content-Type": MANIFEST_TYPE },
        body: manifest,
      });
      await res.body?.cancel();
      if (res.status !== 201) throw new Error(`${side.name} PUT ${repo}:${tags[0]}: ${res.status}`);
    }
  }));
}

/**
 * Stores what the request-rate measures read: a small image tagged `latest`
 * in `image`, `listTags` tags in `list`, and for Berth 100 tags in `page100`
 * and `pageTags` in `pagebig`.
 */
export async function setUp(
  side: Side,
  o: Options,
  measures: Measure[],
  log: (line: string) => void,
): Promise<void> {
  const config = smallBlob(new TextEncoder().encode('{"architecture":"amd64","os":"linux"}'));
  const layer = smallBlob(crypto.getRandomValues(new Uint8Array(4096)));
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MANIFEST_TYPE,
    config: {
      mediaType: "application/vnd.oci.image.config.v1+json",
      digest: config.digest,
      size: config.bytes.length,
    },
    layers: [{
      mediaType: "application/vnd.oci.image.layer.v1.tar",
      digest: layer.digest,
      size: layer.bytes.length,
    }],
  });
  const wanted = (id: string) => measures.some((m) => m.id === id);
  const repos: [string, number][] = [["image", 1]];
  if (wanted("tags-full")) repos.push(["list", o.listTags]);
  if (side.key === "berth" && wanted("tags-page-small")) repos.push(["page100", 100]);
  if (side.key === "berth" && wanted("tags-page-large")) repos.push(["pagebig", o.pageTags]);
  for (const [repo, count] of repos) {
    const start = performance.now();
    await pushSmall(side.url, repo, config);
    await pushSmall(side.url, repo, layer);
    if (repo === "image") {
      const res = await fetch(`${side.url}/v2/image/manifests/latest`, {
        method: "PUT",
        headers: { "Content-Type": MANIFEST_TYPE },
        body: manifest,
      });
      await res.body?.cancel();
      if (res.status !== 201) throw new Error(`${side.name} manifest PUT: ${res.status}`);
      side.manifestDigest = smallBlob(new TextEncoder().encode(manifest)).digest;
      const returned = res.headers.get("Docker-Content-Digest");
      if (returned !== side.manifestDigest) throw new Error(`${side.name} digest ${returned}`);
      continue;
    }
    await seedTags(side, repo, manifest, count, repo === "list" ? 1 : 10);
    const seconds = (performance.now() - start) / 1000;
    log(`${side.name}: ${count} tags in ${repo} (${(count / seconds).toFixed(0)} tags/s)`);
    if (repo === "list") {
      // The full list must come in one response, or the measure would compare a page to a list.
      const { tags, pages } = await allTags(side.url, "/v2/list/tags/list");
      if (tags.length !== count || pages !== 1) {
        throw new Error(`${side.name}: the tag list came as ${tags.length} tags in ${pages} pages`);
      }
    }
  }
}
