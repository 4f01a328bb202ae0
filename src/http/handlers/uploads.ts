/**
 * Blob uploads: end-4a/4b/4c (POST), end-5 (PATCH), end-6 (PUT), end-11
 * (mount), end-13 (status), end-14 (cancel). The protocol itself lives in
 * the registry service layer (`src/registry/uploads.ts`).
 *
 * @module
 */
import { parseAlgorithm, parseDigest } from "../../oci/digest.ts";
import { OciError } from "../../oci/errors.ts";
import { parseName } from "../../oci/name.ts";
import { type Chunk, uploadLocation, type UploadState } from "../../registry/uploads.ts";
import { discardBody, requestBody } from "../body.ts";
import type { RouteContext } from "../context.ts";
import type { HandlerDeps } from "../deps.ts";
import { blobCreated, noContent } from "../headers.ts";
import { singleParam } from "../query.ts";
import { type Route, route } from "../router.ts";

/** Upload routes. */
export function uploadRoutes({ registry, bodyTimeoutMs }: HandlerDeps): Route[] {
  const chunkOf = ({ req }: RouteContext): Chunk => ({
    body: requestBody(req, bodyTimeoutMs),
    contentRange: req.headers.get("Content-Range"),
    contentLength: req.headers.get("Content-Length"),
  });
  const session = (status: number, state: UploadState) => noContent(status, uploadLocation(state));
  const path = "/v2/:name+/blobs/uploads/:uploadId";
  return [
    route("upload.start", "POST /v2/:name+/blobs/uploads{/}?", async ({ req, url, caller }, p) => {
      const name = parseName(p.name!);
      const mount = singleParam(url, "mount", "DIGEST_INVALID");
      if (mount !== undefined) {
        const digest = parseDigest(mount);
        const from = singleParam(url, "from", "NAME_INVALID");
        const source = from === undefined ? undefined : parseName(from);
        if (await registry.blobs.mount(name, digest, source, (repo) => caller.can("pull", repo))) {
          await discardBody(req);
          return blobCreated(name, digest);
        }
      }
      const digest = singleParam(url, "digest", "DIGEST_INVALID");
      if (digest === undefined || mount !== undefined) {
        const algorithm = parseAlgorithm(
          singleParam(url, "digest-algorithm", "DIGEST_INVALID") ?? "sha256",
        );
        const state = await registry.uploads.start(name, algorithm);
        await discardBody(req);
        return session(202, state);
      }
      const parsed = parseDigest(digest);
      await registry.blobs.put(name, parsed, requestBody(req, bodyTimeoutMs));
      return blobCreated(name, parsed);
    }),
    route("upload.status", `GET ${path}`, async (_ctx, p) => {
      return session(204, await registry.uploads.status(parseName(p.name!), p.uploadId!));
    }),
    route("upload.patch", `PATCH ${path}`, async (ctx, p) => {
      const name = parseName(p.name!);
      return session(202, await registry.uploads.append(name, p.uploadId!, chunkOf(ctx)));
    }),
    route("upload.finish", `PUT ${path}`, async (ctx, p) => {
      const name = parseName(p.name!);
      await registry.uploads.status(name, p.uploadId!);
      const digest = singleParam(ctx.url, "digest", "DIGEST_INVALID");
      if (digest === undefined) {
        throw new OciError(
          "DIGEST_INVALID",
          "Closing an upload needs ?digest=<digest of the whole blob>",
        );
      }
      const parsed = parseDigest(digest);
      await registry.uploads.finish(name, p.uploadId!, parsed, chunkOf(ctx));
      return blobCreated(name, parsed);
    }),
    route("upload.cancel", `DELETE ${path}`, async (_ctx, p) => {
      await registry.uploads.cancel(parseName(p.name!), p.uploadId!);
      return noContent(204);
    }),
  ];
}
