/**
 * The bench's peer: the obvious Deno server for the same jobs, run as its own
 * process like Berth. Uploads hash and write each body chunk as it arrives,
 * then fsync (no gathering, no overlap); downloads are `new Response(file.readable)`;
 * `/manifest` returns fixed bytes. Prints its port on stdout.
 *
 * @module
 */
import { createHash } from "node:crypto";

const [dir, manifest = "{}"] = Deno.args;
const server = Deno.serve({
  hostname: "127.0.0.1",
  port: 0,
  onListen: ({ port }) => console.log(port),
}, async (req) => {
  const url = new URL(req.url);
  if (url.pathname === "/manifest") {
    return new Response(manifest, {
      headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
    });
  }
  const path = `${dir}/peer-blob`;
  if (req.method === "POST") {
    const hash = createHash("sha256");
    using file = await Deno.open(path, { create: true, write: true, truncate: true });
    for await (const chunk of req.body!) {
      hash.update(chunk);
      for (let written = 0; written < chunk.length;) {
        written += await file.write(chunk.subarray(written));
      }
    }
    await file.sync();
    const ok = `sha256:${hash.digest("hex")}` === url.searchParams.get("digest");
    return new Response(null, { status: ok ? 201 : 400 });
  }
  const file = await Deno.open(url.searchParams.get("path") ?? path, { read: true });
  return new Response(file.readable);
});
await server.finished;
