/**
 * Two Berth processes on one data directory: both
 * open `<dir>/meta.kv` and share `blobs/` and `uploads/`, so SQLite answers
 * "database is locked" under load and `src/meta/kv.ts` must retry. Content
 * pushed through one process is pulled byte-exact through the other, an
 * upload session moves freely between them, and a few seconds of mixed load
 * from both sides draws no 5xx. Afterwards both stop cleanly and the data
 * directory checks clean, by `checkConsistency` and by `fsck`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { checkConsistency, k, type Snapshot } from "./_consistency.ts";
import { imageManifest, randomBytes, sha256, spawnRegistry } from "./_registry.ts";
import { openStores } from "../src/open.ts";
import type { FsBlobStore } from "../src/storage/fs_blob_store.ts";
import { fsck } from "../src/fsck/fsck.ts";

const MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json";

interface Answer {
  status: number;
  headers: Headers;
  body: Uint8Array;
  text: string;
}

/** Every request of a test: the 5xx answers are collected, never thrown mid-flight. */
class Client {
  requests = 0;
  readonly serverErrors: string[] = [];
  readonly statuses = new Map<string, number>();

  async call(base: string, path: string, init?: RequestInit): Promise<Answer> {
    this.requests++;
    const res = await fetch(base + path, init);
    const body = new Uint8Array(await res.arrayBuffer());
    const text = new TextDecoder().decode(body.subarray(0, 2000));
    const method = init?.method ?? "GET";
    const key = `${method} ${res.status}`;
    this.statuses.set(key, (this.statuses.get(key) ?? 0) + 1);
    if (res.status >= 500) this.serverErrors.push(`${method} ${path}: ${res.status} ${text}`);
    return { status: res.status, headers: res.headers, body, text };
  }
}

function expect(answer: Answer, status: number | number[], what: string): Answer {
  const allowed = Array.isArray(status) ? status : [status];
  assert.ok(allowed.includes(answer.status), `${what}: ${answer.status} ${answer.text}`);
  return answer;
}

const octets = (body: Uint8Array<ArrayBuffer>, headers: Record<string, string> = {}) => ({
  body,
  headers: { "Content-Type": "application/octet-stream", ...headers },
});

/**
 * Runs `scenario` against two registries A and B on one fresh data dir, then
 * stops both (exit code 0) and checks the directory with `checkConsistency`
 * and `fsck`.
 */
async function withTwoProcesses(
  scenario: (a: string, b: string, client: Client) => Promise<void>,
): Promise<{ snapshot: Snapshot; client: Client }> {
  const dir = await Deno.makeTempDir({ prefix: "berth-two-" });
  const client = new Client();
  try {
    await using a = await spawnRegistry(["--data", dir]);
    await using b = await spawnRegistry(["--data", dir]);
    await scenario(a.url, b.url, client);
    assert.deepEqual(client.serverErrors, [], "no request answered 5xx");
    assert.equal(await a.stop(), 0, "A stops cleanly");
    assert.equal(await b.stop(), 0, "B stops cleanly");
    const stores = await openStores({ data: dir, kv: "", blobs: "" });
    let snapshot: Snapshot;
    try {
      snapshot = await checkConsistency(stores.meta, stores.blobs as FsBlobStore);
    } finally {
      await stores.close();
    }
    const lines: string[] = [];
    const code = await fsck({ data: dir, kv: "" }, {
      repair: false,
      out: (line) => lines.push(line),
      progress: () => {},
    });
    assert.equal(code, 0, `fsck is clean:\n${lines.join("\n")}`);
    return { snapshot, client };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Pushes a blob monolithically, or as POST + PATCH + PUT spread over `bases`. */
async function pushBlob(
  client: Client,
  bases: string[],
  name: string,
  bytes: Uint8Array<ArrayBuffer>,
  chunked: boolean,
): Promise<void> {
  const digest = sha256(bytes);
  const what = `push ${digest.slice(0, 15)} into ${name}`;
  if (!chunked) {
    expect(
      await client.call(bases[0]!, `/v2/${name}/blobs/uploads/?digest=${digest}`, {
        method: "POST",
        ...octets(bytes),
      }),
      201,
      what,
    );
    return;
  }
  const base = (i: number) => bases[i % bases.length]!;
  const opened = await client.call(base(0), `/v2/${name}/blobs/uploads/`, { method: "POST" });
  let location = expect(opened, 202, what).headers.get("Location")!;
  const cut = Math.floor(bytes.length / 2);
  const patched = await client.call(base(1), location, {
    method: "PATCH",
    ...octets(bytes.slice(0, cut), { "Content-Range": `0-${cut - 1}` }),
  });
  location = expect(patched, 202, what).headers.get("Location")!;
  expect(
    await client.call(base(2), `${location}?digest=${digest}`, {
      method: "PUT",
      ...octets(bytes.slice(cut), { "Content-Range": `${cut}-${bytes.length - 1}` }),
    }),
    201,
    what,
  );
}

/** An image of a config and two layers; its manifest is not pushed. */
function image(seed: number) {
  const config = new TextEncoder().encode(JSON.stringify({ os: "linux", seed }));
  const layers = [randomBytes(150_000 + seed, seed), randomBytes(2_000 + seed, seed + 5000)];
  const manifest = imageManifest(
    { digest: sha256(config), size: config.length },
    layers.map((l) => ({ digest: sha256(l), size: l.length })),
  );
  return { blobs: [config, ...layers], manifest, digest: sha256(manifest) };
}

function putManifest(client: Client, base: string, name: string, ref: string, body: string) {
  return client.call(base, `/v2/${name}/manifests/${ref}`, {
    method: "PUT",
    headers: { "Content-Type": MANIFEST_TYPE },
    body,
  });
}

Deno.test("end-2/end-3: what is pushed through A is pulled byte-exact through B at the same time", async () => {
  const images = Array.from({ length: 12 }, (_, i) => image(i + 1));
  const pushed: { path: string; bytes: Uint8Array }[] = [];
  const pending: { path: string; bytes: Uint8Array }[] = images.flatMap((img, i) => [
    ...img.blobs.map((b) => ({ path: `/v2/pushpull/blobs/${sha256(b)}`, bytes: b as Uint8Array })),
    { path: `/v2/pushpull/manifests/v${i}`, bytes: new TextEncoder().encode(img.manifest) },
  ]);
  let pulls = 0;
  const { snapshot } = await withTwoProcesses(async (a, b, client) => {
    let done = false;
    const pusher = async (worker: number) => {
      for (let i = worker; i < images.length; i += 3) {
        const img = images[i]!;
        for (const [j, blob] of img.blobs.entries()) {
          await pushBlob(client, [a], "pushpull", blob, (i + j) % 2 === 0);
          pushed.push({ path: `/v2/pushpull/blobs/${sha256(blob)}`, bytes: blob });
        }
        expect(await putManifest(client, a, "pushpull", `v${i}`, img.manifest), 201, `v${i}`);
        pushed.push({
          path: `/v2/pushpull/manifests/v${i}`,
          bytes: new TextEncoder().encode(img.manifest),
        });
      }
    };
    const puller = async (seed: number) => {
      let x = seed;
      while (!done) {
        x = (x * 1103515245 + 12345) % 2147483648;
        // Mostly what A has confirmed (must be there), sometimes what it may not have yet.
        const confirmed = x % 4 !== 0 && pushed.length > 0;
        const target = confirmed ? pushed[x % pushed.length]! : pending[x % pending.length]!;
        const got = await client.call(b, target.path);
        if (confirmed) expect(got, 200, `pull ${target.path} from B after A confirmed it`);
        else expect(got, [200, 404], `pull ${target.path} from B`);
        if (got.status === 200) {
          assert.deepEqual(got.body, target.bytes, `bytes of ${target.path} through B`);
          pulls++;
        }
      }
    };
    const pullers = [1, 2, 3].map((seed) => puller(seed));
    try {
      await Promise.all([0, 1, 2].map(pusher));
    } finally {
      done = true;
      await Promise.allSettled(pullers);
    }
    await Promise.all(pullers);
    for (const target of pending) {
      assert.deepEqual(
        expect(await client.call(b, target.path), 200, target.path).body,
        target.bytes,
      );
    }
  });
  assert.ok(pulls > 0, "B served pulls while A pushed");
  assert.equal(snapshot.manifests.size, 12);
  assert.equal(snapshot.links.size, 36);
  assert.equal(snapshot.uploads.size, 0);
});

Deno.test("end-5/end-6/end-13: an upload session moves between the processes chunk by chunk", async () => {
  await withTwoProcesses(async (a, b, client) => {
    const bytes = randomBytes(400_000, 77);
    const chunks = [0, 100_000, 250_000, 300_000, 400_000];
    const flows: [string, string[]][] = [
      // Started on A, continued on B, finished on A.
      ["move/one", [a, b, b, a, a]],
      // POSTed on A, PATCHed on B, PATCHed on A, PATCHed on B, PUT on B.
      ["move/two", [a, b, a, b, b]],
    ];
    for (const [name, sides] of flows) {
      const opened = expect(
        await client.call(sides[0]!, `/v2/${name}/blobs/uploads/`, { method: "POST" }),
        202,
        `${name} POST`,
      );
      let location = opened.headers.get("Location")!;
      for (let i = 0; i < 3; i++) {
        const side = sides[i + 1]!;
        const other = side === a ? b : a;
        const [start, end] = [chunks[i]!, chunks[i + 1]!];
        const patched = expect(
          await client.call(side, location, {
            method: "PATCH",
            ...octets(bytes.slice(start, end), { "Content-Range": `${start}-${end - 1}` }),
          }),
          202,
          `${name} PATCH ${i}`,
        );
        assert.equal(patched.headers.get("Range"), `0-${end - 1}`);
        location = patched.headers.get("Location")!;
        // The other process sees the new offset at once, and refuses a repeat of the chunk.
        const status = expect(await client.call(other, location), 204, `${name} status`);
        assert.equal(status.headers.get("Range"), `0-${end - 1}`);
        const repeat = expect(
          await client.call(other, location, {
            method: "PATCH",
            ...octets(bytes.slice(start, end), { "Content-Range": `${start}-${end - 1}` }),
          }),
          416,
          `${name} repeated chunk ${i} on the other process`,
        );
        assert.equal(repeat.headers.get("Range"), `0-${end - 1}`);
      }
      expect(
        await client.call(sides[4]!, `${location}?digest=${sha256(bytes)}`, {
          method: "PUT",
          ...octets(bytes.slice(chunks[3]), {
            "Content-Range": `${chunks[3]}-${bytes.length - 1}`,
          }),
        }),
        201,
        `${name} PUT`,
      );
      for (const side of [a, b]) {
        const got = expect(
          await client.call(side, `/v2/${name}/blobs/${sha256(bytes)}`),
          200,
          `${name} GET`,
        );
        assert.deepEqual(got.body, bytes);
        expect(await client.call(side, location), 404, "the session is over on both");
      }
    }
    // Two PATCHes racing on one session from the two processes: one 202, one 416.
    await Promise.all(Array.from({ length: 10 }, async (_, i) => {
      const opened = expect(
        await client.call(i % 2 ? a : b, `/v2/move/race/blobs/uploads/`, { method: "POST" }),
        202,
        "race POST",
      );
      const location = opened.headers.get("Location")!;
      const bodies = [randomBytes(200_000, 300 + i), randomBytes(200_000, 400 + i)];
      const answers = await Promise.all([a, b].map((side, j) =>
        client.call(side, location, {
          method: "PATCH",
          ...octets(bodies[j]!, { "Content-Range": "0-199999" }),
        })
      ));
      assert.deepEqual(answers.map((x) => x.status).sort(), [202, 416], `race ${i}`);
      const winner = bodies[answers.findIndex((x) => x.status === 202)]!;
      expect(
        await client.call(i % 2 ? b : a, `${location}?digest=${sha256(winner)}`, { method: "PUT" }),
        201,
        `race ${i} PUT`,
      );
      const got = await client.call(a, `/v2/move/race/blobs/${sha256(winner)}`);
      assert.deepEqual(expect(got, 200, "race GET").body, winner);
    }));
  });
});

Deno.test("A2: a few seconds of mixed load from both processes draws no 5xx and loses nothing", async () => {
  const images = Array.from({ length: 6 }, (_, i) => image(100 + i));
  /** Every blob a 201 confirmed, by repository: it must stay readable (none are deleted). */
  const confirmed = new Map<string, Uint8Array>();
  let operations = 0;
  const { snapshot, client } = await withTwoProcesses(async (a, b, client) => {
    const deadline = Date.now() + 4000;
    let failed = false;
    const worker = async (self: string, other: string, w: number) => {
      let x = w + 1;
      const next = (n: number) => (x = (x * 1103515245 + 12345) % 2147483648) % n;
      for (let round = 0; Date.now() < deadline && !failed; round++) {
        operations++;
        const img = images[next(images.length)]!;
        switch (next(7)) {
          case 0: { // the same blobs from both sides at once, sometimes across processes
            const blob = img.blobs[next(3)]!;
            await pushBlob(
              client,
              next(2) ? [self] : [self, other],
              "load/shared",
              blob,
              next(2) === 0,
            );
            confirmed.set(k("load/shared", sha256(blob)), blob);
            break;
          }
          case 1: { // a whole image, tag moved among a few
            for (const blob of img.blobs) {
              await pushBlob(client, [self], "load/shared", blob, false);
              confirmed.set(k("load/shared", sha256(blob)), blob);
            }
            const tag = `t${next(3)}`;
            expect(await putManifest(client, self, "load/shared", tag, img.manifest), 201, tag);
            break;
          }
          case 2: { // delete a manifest by digest: gone or never there
            const answer = await client.call(other, `/v2/load/shared/manifests/${img.digest}`, {
              method: "DELETE",
            });
            expect(answer, [202, 404], "manifest DELETE");
            break;
          }
          case 3: { // pull by tag: a manifest whose bytes hash to its digest, or 404
            const got = await client.call(other, `/v2/load/shared/manifests/t${next(3)}`);
            expect(got, [200, 404], "pull tag");
            if (got.status === 200) {
              assert.equal(sha256(got.body), got.headers.get("Docker-Content-Digest"));
            }
            break;
          }
          case 4: { // pull a confirmed blob through the other process
            const keys = [...confirmed.keys()];
            if (!keys.length) break;
            const key = keys[next(keys.length)]!;
            const [name, digest] = key.split("\0") as [string, string];
            const got = expect(await client.call(other, `/v2/${name}/blobs/${digest}`), 200, key);
            assert.deepEqual(got.body, confirmed.get(key));
            break;
          }
          case 5: { // a private repository: push, mount from the shared one, unlink, tags list
            const name = `load/w${w}`;
            const blob = randomBytes(5_000 + round, 10_000 * (w + 1) + round);
            await pushBlob(client, [self, other], name, blob, true);
            const digest = sha256(blob);
            expect(
              await client.call(other, `/v2/${name}/blobs/${digest}`, { method: "DELETE" }),
              202,
              "blob DELETE",
            );
            expect(await client.call(self, `/v2/${name}/blobs/${digest}`), 404, "unlinked");
            const mounted = await client.call(
              self,
              `/v2/${name}/blobs/uploads/?mount=${sha256(img.blobs[0]!)}&from=load/shared`,
              { method: "POST" },
            );
            expect(mounted, [201, 202], "mount");
            if (mounted.status === 202) {
              const location = mounted.headers.get("Location")!;
              expect(await client.call(other, location, { method: "DELETE" }), 204, "cancel");
            } else confirmed.set(k(name, sha256(img.blobs[0]!)), img.blobs[0]!);
            break;
          }
          default: {
            const answer = await client.call(other, `/v2/load/shared/tags/list`);
            expect(answer, [200, 404], "tags list");
          }
        }
      }
    };
    const workers = [0, 1, 2, 3, 4, 5].map((w) =>
      worker(w % 2 ? a : b, w % 2 ? b : a, w).catch((error) => {
        failed = true;
        throw error;
      })
    );
    await Promise.all(workers);
    // Nothing confirmed was lost: every blob, through both processes.
    for (const [key, bytes] of confirmed) {
      const [name, digest] = key.split("\0") as [string, string];
      for (const side of [a, b]) {
        assert.deepEqual(
          expect(await client.call(side, `/v2/${name}/blobs/${digest}`), 200, key).body,
          bytes,
        );
      }
    }
  });
  const seen = JSON.stringify(Object.fromEntries([...client.statuses].sort()));
  assert.ok(operations > 50, `only ${operations} operations ran (${seen})`);
  // Both sides really did write: sessions, monolithic pushes, manifests and deletes all ran.
  for (const key of ["POST 201", "POST 202", "PATCH 202", "PUT 201", "DELETE 202"]) {
    assert.ok(client.statuses.has(key), `no "${key}" in ${seen}`);
  }
  assert.equal(snapshot.uploads.size, 0, "every session was finished or cancelled");
  for (const key of confirmed.keys()) assert.ok(snapshot.links.has(key), `link ${key} kept`);
});
