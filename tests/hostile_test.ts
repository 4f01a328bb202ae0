/**
 * Hostile input: a table of requests that try to escape, overflow
 * or confuse the registry. Each row gets the spec's 4xx (or a clean
 * 413/414/416, or Deno's own 400 for malformed HTTP), never a 5xx; writes
 * nothing (the KV contents and the `blobs/`, `uploads/` and `tmp/` trees are
 * compared before and after); and leaves the server serving `GET /v2/` and the
 * fixture upload session at the same offset.
 *
 * The registry is an `ObservedRegistry` (`_observed.ts`), so every request
 * that reaches Berth is observed: its status even when the client has gone,
 * and every error Berth logs as unhandled. Rows that use raw sockets
 * (bytes `fetch` would normalise or refuse, lying lengths, cut bodies) say so.
 *
 * Observed Deno 2.9.6 behaviour before Berth sees a request: a raw NUL, space
 * or byte >= 0x80 in the request line, a bad/negative/huge/duplicated
 * `Content-Length`, `Content-Length` with `Transfer-Encoding`, a 64 KiB header,
 * 200 headers, or a 100 KiB URL all get `400 Bad Request` with no body (never
 * 431 or 414). A malformed chunk that arrives after the head reaches Berth as
 * a body error (answered 400, like a body cut short). Dot segments,
 * raw or `%2e%2e`, reach Berth unnormalised and are resolved by `new URL`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  bytesOf,
  concat,
  encoder,
  ObservedRegistry,
  rawExchange,
  type RawResponse,
  snapshot,
} from "./_observed.ts";
import { pushImage, sha256 } from "./_registry.ts";
import { OCI_INDEX, OCI_MANIFEST } from "../src/oci/media_type.ts";

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

type Header = [string, string];

/** One hostile request and what Berth must answer. */
interface Row {
  name: string;
  method: string;
  path: string;
  headers?: Header[];
  /** fetch rows: the body (built fresh for each run). */
  body?: () => BodyInit;
  /**
   * raw rows: the request is written to a socket verbatim (path, headers and
   * `body` exactly as given; `Host` and `Connection: close` are added), `late`
   * once Berth has started on it; `cut` ends it early (see `rawExchange`).
   */
  raw?: { body?: string | Uint8Array; late?: string; cut?: "closeWrite" | "disconnect" };
  /** The status: what the client reads, or for `disconnect` what Berth answered. */
  status: number;
  /** The OCI error code in the body; absent when there is no JSON body (HEAD, Deno's own 400). */
  code?: string;
  /** False when Deno refuses the request before Berth sees it. */
  reachesBerth?: boolean;
}

/** What the rows need to know about the fixture. */
interface Fixture {
  /** `/v2/fixture/app/blobs/uploads/<id>`: a session holding 10 bytes. */
  session: string;
  uploadId: string;
  config: string;
  layer: string;
  manifest: string;
  /** The fixture's valid image manifest, as JSON. */
  image: Record<string, unknown>;
}

const REPO = "/v2/fixture/app";
const SESSION_BYTES = 10;
const HEX = "0123456789abcdef".repeat(4);
const ctManifest: Header = ["Content-Type", OCI_MANIFEST];

async function setup(reg: ObservedRegistry): Promise<Fixture> {
  const pushed = await pushImage(reg.asTestRegistry(), "fixture/app", "v1");
  const post = await reg.fetch(`${REPO}/blobs/uploads/`, { method: "POST" });
  await post.body?.cancel();
  assert.equal(post.status, 202);
  const session = post.headers.get("Location")!;
  const patch = await reg.fetch(session, {
    method: "PATCH",
    headers: { "Content-Type": "application/octet-stream" },
    body: "0123456789",
  });
  await patch.body?.cancel();
  assert.equal(patch.status, 202);
  return {
    session,
    uploadId: session.slice(session.lastIndexOf("/") + 1),
    config: pushed.config,
    layer: pushed.layer,
    manifest: pushed.digest,
    image: JSON.parse(pushed.body),
  };
}

function json(value: unknown): () => string {
  const text = JSON.stringify(value);
  return () => text;
}

function streamOf(...chunks: (string | Uint8Array)[]): () => ReadableStream<Uint8Array> {
  return () =>
    new ReadableStream({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(bytesOf(chunk));
        controller.close();
      },
    });
}

function deep(depth: number, open: string, close: string, inner = "1"): string {
  return open.repeat(depth) + inner + close.repeat(depth);
}

// -- traversal in names, digests and upload ids (A3, end-2/3/5/13/14) --------

function traversalRows(f: Fixture): Row[] {
  const raw = {};
  // deno-fmt-ignore
  return [
    { name: "raw ../ out of /v2/", method: "GET", path: "/v2/../../../etc/passwd", raw, status: 400, code: "NAME_INVALID" },
    { name: "raw ../ from a name into the blob tree", method: "GET", path: `/v2/fixture/../../blobs/sha256/${f.layer.slice(7, 9)}/${f.layer.slice(7)}`, raw, status: 400, code: "NAME_INVALID" },
    { name: "raw %2e%2e segments in a name", method: "GET", path: "/v2/fixture/%2e%2e/%2E%2e/etc/manifests/v1", raw, status: 400, code: "NAME_INVALID" },
    { name: "raw ../ after an upload id", method: "PUT", path: `${f.session}/../../../../tmp?digest=${f.layer}`, raw: { body: "x" }, headers: [["Content-Length", "1"]], status: 400, code: "NAME_INVALID" },
    { name: "%2f inside a name", method: "GET", path: "/v2/fixture%2fapp/manifests/v1", status: 400, code: "NAME_INVALID" },
    { name: "%2F..%2F in a name", method: "GET", path: "/v2/fixture%2F..%2F..%2Fetc/tags/list", status: 400, code: "NAME_INVALID" },
    { name: "%00 in a name", method: "GET", path: "/v2/fixture/app%00/manifests/v1", status: 400, code: "NAME_INVALID" },
    { name: "%00 in a name on a manifest PUT", method: "PUT", path: "/v2/fixture%00/app/manifests/v1", headers: [ctManifest], body: json(f.image), status: 400, code: "NAME_INVALID" },
    { name: "raw NUL byte in the path (Deno refuses it)", method: "GET", path: "/v2/fixture/app\0/manifests/v1", raw, status: 400, reachesBerth: false },
    { name: "raw byte 0xff in the path (Deno refuses it)", method: "GET", path: "/v2/fixture/app\xff/manifests/v1", raw, status: 400, reachesBerth: false },
    { name: "..%2F in a tag", method: "GET", path: `${REPO}/manifests/..%2F..%2Fv1`, status: 404, code: "MANIFEST_UNKNOWN" },
    { name: "%00 after a tag", method: "GET", path: `${REPO}/manifests/v1%00`, status: 404, code: "MANIFEST_UNKNOWN" },
    { name: "..%2F in a digest", method: "GET", path: `${REPO}/blobs/sha256:..%2F..%2Fetc%2Fpasswd`, status: 400, code: "DIGEST_INVALID" },
    { name: "%00 after a digest", method: "GET", path: `${REPO}/blobs/${f.layer}%00`, status: 400, code: "DIGEST_INVALID" },
    { name: "..%2F in an upload id", method: "GET", path: `${REPO}/blobs/uploads/..%2F..%2Fblobs`, status: 404, code: "BLOB_UPLOAD_UNKNOWN" },
    { name: "raw %2E%2E as an upload id", method: "DELETE", path: `${REPO}/blobs/uploads/%2E%2E`, raw, status: 400, code: "NAME_INVALID" },
    { name: "%00 after an upload id, with a body", method: "PATCH", path: `${f.session}%00`, body: () => "abcdef", status: 404, code: "BLOB_UPLOAD_UNKNOWN" },
    { name: "the blob store's scratch name as an upload id", method: "PATCH", path: `${REPO}/blobs/uploads/put-${f.uploadId}`, body: () => "abcdef", status: 404, code: "BLOB_UPLOAD_UNKNOWN" },
    { name: "an upload id in uppercase", method: "GET", path: `${REPO}/blobs/uploads/${f.uploadId.toUpperCase()}`, status: 404, code: "BLOB_UPLOAD_UNKNOWN" },
    { name: "another repository's upload id", method: "PATCH", path: `/v2/other/blobs/uploads/${f.uploadId}`, body: () => "abcdef", status: 404, code: "BLOB_UPLOAD_UNKNOWN" },
    { name: "another repository's upload id on the closing PUT", method: "PUT", path: `/v2/fixture/blobs/uploads/${f.uploadId}?digest=${sha256("0123456789")}`, status: 404, code: "BLOB_UPLOAD_UNKNOWN" },
  ];
}

// -- digests (A3 grammar, A5 "S [main] 400 DIGEST_INVALID") --------------------

function digestRows(f: Fixture): Row[] {
  const upper = `sha256:${HEX.toUpperCase()}`;
  // deno-fmt-ignore
  return [
    { name: "uppercase hex on blob GET", method: "GET", path: `${REPO}/blobs/${upper}`, status: 400, code: "DIGEST_INVALID" },
    { name: "uppercase hex on blob HEAD (no body)", method: "HEAD", path: `${REPO}/blobs/${upper}`, status: 400 },
    { name: "63 hex characters", method: "GET", path: `${REPO}/blobs/sha256:${HEX.slice(1)}`, status: 400, code: "DIGEST_INVALID" },
    { name: "65 hex characters", method: "GET", path: `${REPO}/blobs/sha256:${HEX}0`, status: 400, code: "DIGEST_INVALID" },
    { name: "sha512 with 64 hex characters", method: "GET", path: `${REPO}/blobs/sha512:${HEX}`, status: 400, code: "DIGEST_INVALID" },
    { name: "sha512 with 128 uppercase hex", method: "HEAD", path: `${REPO}/manifests/sha512:${(HEX + HEX).toUpperCase()}`, status: 400 },
    { name: "unknown algorithm md5", method: "GET", path: `${REPO}/blobs/md5:d41d8cd98f00b204e9800998ecf8427e`, status: 400, code: "DIGEST_INVALID" },
    { name: "grammar-valid unknown algorithm sha384", method: "GET", path: `${REPO}/blobs/sha384:${HEX}${HEX.slice(0, 32)}`, status: 400, code: "DIGEST_INVALID" },
    { name: "algorithm with a + component", method: "GET", path: `${REPO}/manifests/sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564`, status: 400, code: "DIGEST_INVALID" },
    { name: "manifests/sha256:totallywrong", method: "GET", path: `${REPO}/manifests/sha256:totallywrong`, status: 400, code: "DIGEST_INVALID" },
    { name: "empty hex", method: "GET", path: `${REPO}/manifests/sha256:`, status: 400, code: "DIGEST_INVALID" },
    { name: "empty algorithm", method: "GET", path: `${REPO}/manifests/:${HEX}`, status: 400, code: "DIGEST_INVALID" },
    { name: "uppercase hex on referrers", method: "GET", path: `${REPO}/referrers/${upper}`, status: 400, code: "DIGEST_INVALID" },
    { name: "uppercase hex on blob DELETE", method: "DELETE", path: `${REPO}/blobs/${upper}`, status: 400, code: "DIGEST_INVALID" },
    { name: "single POST with uppercase ?digest=", method: "POST", path: `${REPO}/blobs/uploads/?digest=${upper}`, body: () => "hello", status: 400, code: "DIGEST_INVALID" },
    { name: "single POST with md5 ?digest=", method: "POST", path: `${REPO}/blobs/uploads/?digest=md5:d41d8cd98f00b204e9800998ecf8427e`, body: () => "", status: 400, code: "DIGEST_INVALID" },
    { name: "single POST whose body does not hash to ?digest=", method: "POST", path: `${REPO}/blobs/uploads/?digest=${sha256("something else")}`, body: () => "hello", status: 400, code: "DIGEST_INVALID" },
    { name: "mount of a short digest", method: "POST", path: `${REPO}/blobs/uploads/?mount=sha256:abc&from=fixture/app`, status: 400, code: "DIGEST_INVALID" },
    { name: "mount from an invalid name", method: "POST", path: `${REPO}/blobs/uploads/?mount=${f.layer}&from=Fixture/App`, status: 400, code: "NAME_INVALID" },
    { name: "digest-algorithm=md5", method: "POST", path: `${REPO}/blobs/uploads/?digest-algorithm=md5`, status: 400, code: "DIGEST_INVALID" },
    { name: "digest-algorithm=SHA256 (uppercase)", method: "POST", path: `${REPO}/blobs/uploads/?digest-algorithm=SHA256`, status: 400, code: "DIGEST_INVALID" },
    { name: "closing PUT with a 63-hex ?digest=", method: "PUT", path: `${f.session}?digest=sha256:${HEX.slice(1)}`, body: () => "more", status: 400, code: "DIGEST_INVALID" },
    { name: "closing PUT without ?digest=", method: "PUT", path: f.session, body: () => "more", status: 400, code: "DIGEST_INVALID" },
    { name: "manifest PUT by a digest the body does not hash to", method: "PUT", path: `${REPO}/manifests/sha256:${HEX}`, headers: [ctManifest], body: json(f.image), status: 400, code: "DIGEST_INVALID" },
    { name: "manifest PUT by an unknown-algorithm digest", method: "PUT", path: `${REPO}/manifests/sha384:${HEX}${HEX.slice(0, 32)}`, headers: [ctManifest], body: json(f.image), status: 400, code: "DIGEST_INVALID" },
  ];
}

// -- names and tags at and over their limits (A3) -----------------------------

function limitRows(f: Fixture): Row[] {
  const name255 = `n/${"a".repeat(253)}`;
  const name256 = `n/${"a".repeat(254)}`;
  const tag128 = "t".repeat(128);
  const tag129 = "t".repeat(129);
  // deno-fmt-ignore
  return [
    { name: "a name of exactly 255 characters (unknown)", method: "GET", path: `/v2/${name255}/manifests/v1`, status: 404, code: "NAME_UNKNOWN" },
    { name: "a name of 256 characters", method: "GET", path: `/v2/${name256}/manifests/v1`, status: 400, code: "NAME_INVALID" },
    { name: "a name of 256 characters on manifest PUT", method: "PUT", path: `/v2/${name256}/manifests/v1`, headers: [ctManifest], body: json(f.image), status: 400, code: "NAME_INVALID" },
    { name: "a name of 256 characters on upload POST", method: "POST", path: `/v2/${name256}/blobs/uploads/`, status: 400, code: "NAME_INVALID" },
    { name: "a name of 5000 characters", method: "GET", path: `/v2/${"a/".repeat(2500)}x/tags/list`, status: 400, code: "NAME_INVALID" },
    { name: "an uppercase name", method: "GET", path: "/v2/Fixture/App/tags/list", status: 400, code: "NAME_INVALID" },
    { name: "a name ending in a separator", method: "POST", path: "/v2/fixture/app-/blobs/uploads/", status: 400, code: "NAME_INVALID" },
    { name: "a name with an empty component", method: "GET", path: "/v2/fixture//app/manifests/v1", status: 400, code: "NAME_INVALID" },
    { name: "an empty name", method: "GET", path: "/v2//tags/list", status: 400, code: "NAME_INVALID" },
    { name: "a tag of exactly 128 characters (unknown)", method: "GET", path: `${REPO}/manifests/${tag128}`, status: 404, code: "MANIFEST_UNKNOWN" },
    { name: "a tag of 129 characters", method: "GET", path: `${REPO}/manifests/${tag129}`, status: 404, code: "MANIFEST_UNKNOWN" },
    { name: "a tag of 129 characters on PUT", method: "PUT", path: `${REPO}/manifests/${tag129}`, headers: [ctManifest], body: json(f.image), status: 400, code: "TAG_INVALID" },
    { name: "a tag starting with -", method: "PUT", path: `${REPO}/manifests/-v1`, headers: [ctManifest], body: json(f.image), status: 400, code: "TAG_INVALID" },
    { name: "a tag of 129 characters in ?tag=", method: "PUT", path: `${REPO}/manifests/${f.manifest}?tag=${tag129}`, headers: [ctManifest], body: json(f.image), status: 400, code: "TAG_INVALID" },
    { name: "eleven ?tag= on one PUT", method: "PUT", path: `${REPO}/manifests/${f.manifest}?${Array.from({ length: 11 }, (_, i) => `tag=t${i}`).join("&")}`, headers: [ctManifest], body: json(f.image), status: 414, code: "TAG_INVALID" },
    { name: "a tag DELETE with an invalid tag", method: "DELETE", path: `${REPO}/manifests/.hidden`, status: 400, code: "TAG_INVALID" },
    { name: "a URL over 8192 characters", method: "GET", path: `${REPO}/tags/list?last=${"a".repeat(9000)}`, status: 414, code: "UNSUPPORTED" },
    { name: "raw 100 KiB URL (Deno refuses it)", method: "GET", path: `${REPO}/tags/list?last=${"a".repeat(100 * 1024)}`, raw: {}, status: 400, reachesBerth: false },
  ];
}

// -- Content-Range and Content-Length (A5 chunked, end-5, end-6) ---------------

function rangeRows(f: Fixture): Row[] {
  const at = SESSION_BYTES;
  const octet: Header = ["Content-Type", "application/octet-stream"];
  const cr = (value: string): Header[] => [octet, ["Content-Range", value]];
  const five = () => "abcde";
  // deno-fmt-ignore
  return [
    { name: "Content-Range that starts before the offset", method: "PATCH", path: f.session, headers: cr("0-4"), body: five, status: 416, code: "BLOB_UPLOAD_INVALID" },
    { name: "Content-Range that leaves a gap", method: "PATCH", path: f.session, headers: cr(`${at + 10}-${at + 14}`), body: five, status: 416, code: "BLOB_UPLOAD_INVALID" },
    { name: "Content-Range that overflows 16 digits", method: "PATCH", path: f.session, headers: cr(`${at}-99999999999999999`), body: five, status: 400, code: "BLOB_UPLOAD_INVALID" },
    { name: "Content-Range past 2^53", method: "PATCH", path: f.session, headers: cr(`${at}-9007199254740993`), body: five, status: 400, code: "BLOB_UPLOAD_INVALID" },
    { name: "Content-Range that ends before it starts", method: "PATCH", path: f.session, headers: cr(`${at}-${at - 5}`), body: five, status: 400, code: "BLOB_UPLOAD_INVALID" },
    { name: "Content-Range with a negative start", method: "PATCH", path: f.session, headers: cr(`-${at}-${at + 4}`), body: five, status: 400, code: "BLOB_UPLOAD_INVALID" },
    { name: "Content-Range that is not a range", method: "PATCH", path: f.session, headers: cr("bytes=abc"), body: five, status: 400, code: "BLOB_UPLOAD_INVALID" },
    { name: "Content-Range of 16 KiB", method: "PATCH", path: f.session, headers: cr(`${at}-${at + 4}${" ".repeat(16 * 1024)}x`), body: five, status: 400, code: "BLOB_UPLOAD_INVALID" },
    { name: "Content-Range longer than Content-Length", method: "PATCH", path: f.session, headers: cr(`${at}-${at + 9}`), body: five, status: 400, code: "SIZE_INVALID" },
    { name: "Content-Range longer than a streamed body", method: "PATCH", path: f.session, headers: cr(`${at}-${at + 9}`), body: streamOf("abc", "de"), status: 400, code: "SIZE_INVALID" },
    { name: "Content-Range shorter than a streamed body", method: "PATCH", path: f.session, headers: cr(`${at}-${at + 4}`), body: streamOf("a".repeat(40), "b".repeat(40)), status: 413, code: "SIZE_INVALID" },
    { name: "Content-Range with an empty body", method: "PATCH", path: f.session, headers: cr(`${at}-${at + 4}`), body: () => "", status: 400, code: "SIZE_INVALID" },
    { name: "closing PUT whose Content-Range lies", method: "PUT", path: `${f.session}?digest=${sha256("0123456789abcde")}`, headers: cr("0-4"), body: five, status: 416, code: "BLOB_UPLOAD_INVALID" },
    { name: "raw PATCH with Content-Length: abc (Deno refuses it)", method: "PATCH", path: f.session, headers: [["Content-Length", "abc"]], raw: { body: "abc" }, status: 400, reachesBerth: false },
    { name: "raw PATCH with Content-Length: -1 (Deno refuses it)", method: "PATCH", path: f.session, headers: [["Content-Length", "-1"]], raw: { body: "abc" }, status: 400, reachesBerth: false },
    { name: "raw PATCH with a 23-digit Content-Length (Deno refuses it)", method: "PATCH", path: f.session, headers: [["Content-Length", "99999999999999999999999"]], raw: { body: "abc" }, status: 400, reachesBerth: false },
    { name: "raw PATCH with two Content-Lengths (Deno refuses it)", method: "PATCH", path: f.session, headers: [["Content-Length", "3"], ["Content-Length", "4"]], raw: { body: "abcd" }, status: 400, reachesBerth: false },
    { name: "raw PATCH with Content-Length and chunked (Deno refuses it)", method: "PATCH", path: f.session, headers: [["Content-Length", "3"], ["Transfer-Encoding", "chunked"]], raw: { body: "3\r\nabc\r\n0\r\n\r\n" }, status: 400, reachesBerth: false },
    { name: "raw manifest PUT with Content-Length shorter than the body", method: "PUT", path: `${REPO}/manifests/v2`, headers: [ctManifest, ["Content-Length", "5"]], raw: { body: JSON.stringify(f.image) }, status: 400, code: "MANIFEST_INVALID" },
    // Deno answers but keeps the connection open for the declared body.
    { name: "raw manifest PUT declaring 99999999999 bytes", method: "PUT", path: `${REPO}/manifests/v2`, headers: [ctManifest, ["Content-Length", "99999999999"]], raw: {}, status: 413, code: "SIZE_INVALID" },
  ];
}

// -- truncated bodies and clients that go away (A5, end-5, end-6, end-7) -------

function truncationRows(f: Fixture): Row[] {
  const partial = "x".repeat(1000);
  const cl = (
    n: number,
  ): Header[] => [["Content-Type", "application/octet-stream"], ["Content-Length", String(n)]];
  // deno-fmt-ignore
  return [
    { name: "PATCH cut short then half-closed", method: "PATCH", path: f.session, headers: cl(100_000), raw: { body: partial, cut: "closeWrite" }, status: 400, code: "BLOB_UPLOAD_INVALID" },
    { name: "PATCH cut short then disconnected", method: "PATCH", path: f.session, headers: cl(100_000), raw: { body: partial, cut: "disconnect" }, status: 400 },
    { name: "PATCH with Content-Range cut short then disconnected", method: "PATCH", path: f.session, headers: [...cl(2000), ["Content-Range", `${SESSION_BYTES}-${SESSION_BYTES + 1999}`]], raw: { body: partial, cut: "disconnect" }, status: 400 },
    { name: "chunked PATCH cut mid-chunk then half-closed", method: "PATCH", path: f.session, headers: [["Transfer-Encoding", "chunked"]], raw: { body: `7d0\r\n${partial}`, cut: "closeWrite" }, status: 400, code: "BLOB_UPLOAD_INVALID" },
    { name: "chunked PATCH with a bad chunk size", method: "PATCH", path: f.session, headers: [["Transfer-Encoding", "chunked"]], raw: { late: "zz\r\nabc\r\n0\r\n\r\n" }, status: 400, code: "BLOB_UPLOAD_INVALID" },
    { name: "closing PUT cut short then disconnected", method: "PUT", path: `${f.session}?digest=${sha256("0123456789" + "x".repeat(99_990))}`, headers: cl(99_990), raw: { body: partial, cut: "disconnect" }, status: 400 },
    { name: "single POST cut short then disconnected", method: "POST", path: `${REPO}/blobs/uploads/?digest=${sha256("x".repeat(100_000))}`, headers: cl(100_000), raw: { body: partial, cut: "disconnect" }, status: 400 },
    { name: "single POST cut short then half-closed", method: "POST", path: `${REPO}/blobs/uploads/?digest=${sha256("x".repeat(100_000))}`, headers: cl(100_000), raw: { body: partial, cut: "closeWrite" }, status: 400, code: "BLOB_UPLOAD_INVALID" },
    { name: "manifest PUT cut short then half-closed", method: "PUT", path: `${REPO}/manifests/v2`, headers: [ctManifest, ["Content-Length", "5000"]], raw: { body: JSON.stringify(f.image).slice(0, 100), cut: "closeWrite" }, status: 400, code: "BLOB_UPLOAD_INVALID" },
    { name: "manifest PUT cut short then disconnected", method: "PUT", path: `${REPO}/manifests/v2`, headers: [ctManifest, ["Content-Length", "5000"]], raw: { body: JSON.stringify(f.image).slice(0, 100), cut: "disconnect" }, status: 400 },
  ];
}

// -- n and last (A7 end-8b, A8 end-12) ------------------------------------------

function paginationRows(): Row[] {
  const bad = (q: string, path = `${REPO}/tags/list`): Row => ({
    name: `tags list ?${q.slice(0, 40)}`,
    method: "GET",
    path: `${path}?${q}`,
    status: 400,
    code: "PAGINATION_NUMBER_INVALID",
  });
  return [
    bad("n=-1"),
    bad("n=99999999999999999999"),
    bad("n=1234567890"),
    bad("n=abc"),
    bad("n=1e3"),
    bad("n=0x10"),
    bad("n="),
    bad("n=%00"),
    bad("n=+5"),
    bad("n=1&n=2"),
    bad("last=a&last=b"),
    bad(`last=${"z".repeat(600)}`),
    { ...bad("n=-1", `${REPO}/referrers/sha256:${HEX}`), name: "referrers ?n=-1" },
    { ...bad("n=-5", "/v2/_catalog"), name: "catalog ?n=-5" },
  ];
}

// -- manifests: JSON, UTF-8, Content-Type (A6, A12, end-7) ----------------------

function manifestRows(f: Fixture): Row[] {
  const put = (
    name: string,
    body: () => BodyInit,
    expect: { status?: number; code?: string; headers?: Header[] } = {},
  ): Row => ({
    name,
    method: "PUT",
    path: `${REPO}/manifests/v2`,
    headers: expect.headers ?? [ctManifest],
    body,
    status: expect.status ?? 400,
    code: expect.code ?? "MANIFEST_INVALID",
  });
  const image = f.image;
  const config = image.config as Record<string, unknown>;
  const layers = image.layers as Record<string, unknown>[];
  const withLayer = (patch: Record<string, unknown>) =>
    json({ ...image, layers: [{ ...layers[0], ...patch }] });
  const valid = JSON.stringify(image);
  const utf16 = new Uint8Array(valid.length * 2);
  for (let i = 0; i < valid.length; i++) utf16[i * 2] = valid.charCodeAt(i);
  // deno-fmt-ignore
  return [
    put("100,000 nested arrays", () => deep(100_000, "[", "]")),
    put("100,000 nested objects", () => deep(100_000, '{"a":', "}", "{}")),
    put("deeply nested config", json({ ...image, config: JSON.parse(deep(2000, '{"a":', "}", "{}")) })),
    put("deeply nested annotations", () => valid.slice(0, -1) + `,"annotations":${deep(50_000, '{"a":', "}", '"x"')}}`),
    put("4 MiB + 1 byte with Content-Length", () => new Uint8Array(4 * 1024 * 1024 + 1).fill(0x20), { status: 413, code: "SIZE_INVALID" }),
    put("4 MiB + 1 byte streamed", streamOf(...Array.from({ length: 65 }, () => new Uint8Array(64 * 1024).fill(0x20))), { status: 413, code: "SIZE_INVALID" }),
    put("an empty body", () => ""),
    put("not JSON", () => "hello, registry"),
    put("JSON null", () => "null"),
    put("a JSON array", () => `[${valid}]`),
    put("invalid UTF-8 in a string", () => concat(encoder.encode(valid.slice(0, -1) + ',"annotations":{"a":"'), new Uint8Array([0xff, 0xfe, 0xc0, 0x80]), encoder.encode('"}}'))),
    put("UTF-16 encoded", () => utf16),
    put("schemaVersion 1", json({ ...image, schemaVersion: 1 })),
    put('schemaVersion "2"', json({ ...image, schemaVersion: "2" })),
    put("mediaType that disagrees with Content-Type", json(image), { headers: [["Content-Type", OCI_INDEX]] }),
    put("Content-Type text/plain", json(image), { headers: [["Content-Type", "text/plain"]] }),
    put("Content-Type application/json, no mediaType", json({ ...image, mediaType: undefined }), { headers: [["Content-Type", "application/json"]] }),
    put("Content-Type schema1", json({ ...image, mediaType: undefined }), { headers: [["Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws"]] }),
    put("no config", json({ ...image, config: undefined })),
    put("layers is an object", json({ ...image, layers: { 0: layers[0] } })),
    put("a layer size of -1", withLayer({ size: -1 })),
    put("a layer size of 1e400", () => valid.replace(/"size":(\d+)}]/, '"size":1e400}]')),
    put("a layer size of 2^53", withLayer({ size: 2 ** 53 })),
    put("a layer size of 1.5", withLayer({ size: 1.5 })),
    put("a layer digest in uppercase", withLayer({ digest: String(layers[0]!.digest).toUpperCase().replace("SHA256", "sha256") })),
    put("a layer media type that is not one", withLayer({ mediaType: "not a media type" })),
    put("a layer with embedded data that does not match", withLayer({ data: btoa("not the layer") })),
    put("a layer url that is not a URL", withLayer({ urls: ["::not a url::"] })),
    put("annotations that are not strings", json({ ...image, annotations: { a: 1 } })),
    put("a subject that is not a descriptor", json({ ...image, subject: "sha256:" + HEX })),
    put("a subject with 60 KB of annotations", json({ ...image, subject: { mediaType: OCI_MANIFEST, digest: f.manifest, size: 10 }, annotations: { a: "x".repeat(60_000) } })),
    put("an index with config and layers", json({ ...image, mediaType: OCI_INDEX, manifests: [] }), { headers: [["Content-Type", OCI_INDEX]] }),
    put("a layer that is not in the repository", withLayer({ digest: sha256("absent") }), { code: "MANIFEST_BLOB_UNKNOWN" }),
    put("a config that is not in the repository", json({ ...image, config: { ...config, digest: sha256("absent") } }), { code: "MANIFEST_BLOB_UNKNOWN" }),
    put("an index child that is not in the repository", json({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: sha256("absent"), size: 2 }] }), { code: "MANIFEST_BLOB_UNKNOWN", headers: [["Content-Type", OCI_INDEX]] }),
  ];
}

// -- repeated query parameters, methods, huge headers ---------------------------

function requestRows(f: Fixture): Row[] {
  const uploads = `${REPO}/blobs/uploads/`;
  const big = "a".repeat(64 * 1024);
  // deno-fmt-ignore
  return [
    { name: "?digest= twice on single POST", method: "POST", path: `${uploads}?digest=${f.layer}&digest=${f.config}`, body: () => "x", status: 400, code: "DIGEST_INVALID" },
    { name: "?mount= twice", method: "POST", path: `${uploads}?mount=${f.layer}&mount=${f.config}&from=fixture/app`, status: 400, code: "DIGEST_INVALID" },
    { name: "?from= twice", method: "POST", path: `${uploads}?mount=${f.layer}&from=fixture/app&from=other`, status: 400, code: "NAME_INVALID" },
    { name: "?digest-algorithm= twice", method: "POST", path: `${uploads}?digest-algorithm=sha256&digest-algorithm=sha512`, status: 400, code: "DIGEST_INVALID" },
    { name: "?digest= twice on the closing PUT, even equal", method: "PUT", path: `${f.session}?digest=${sha256("0123456789")}&digest=${sha256("0123456789")}`, status: 400, code: "DIGEST_INVALID" },
    { name: "?artifactType= twice on referrers", method: "GET", path: `${REPO}/referrers/${f.manifest}?artifactType=a/b&artifactType=c/d`, status: 400, code: "MANIFEST_INVALID" },
    { name: "?artifactType= that is not a media type", method: "GET", path: `${REPO}/referrers/${f.manifest}?artifactType=%00`, status: 400, code: "MANIFEST_INVALID" },
    { name: "raw unknown method FOO", method: "FOO", path: `${REPO}/tags/list`, raw: {}, status: 405, code: "UNSUPPORTED" },
    { name: "raw TRACE on /v2/", method: "TRACE", path: "/v2/", raw: {}, status: 405, code: "UNSUPPORTED" },
    { name: "raw absolute-form URL with a bad tag", method: "GET", path: "http://evil.example/v2/fixture/app/manifests/-bad", raw: {}, status: 404, code: "MANIFEST_UNKNOWN" },
    { name: "raw 64 KiB header (Deno refuses it, not 431)", method: "GET", path: "/v2/", headers: [["X-Big", big]], raw: {}, status: 400, reachesBerth: false },
    { name: "raw 1 MiB header on a PATCH (Deno refuses it)", method: "PATCH", path: f.session, headers: [["X-Big", big.repeat(16)], ["Content-Length", "3"]], raw: { body: "abc" }, status: 400, reachesBerth: false },
    { name: "raw 200 headers (Deno refuses them)", method: "GET", path: "/v2/", headers: Array.from({ length: 200 }, (_, i): Header => [`X-H${i}`, "v"]), raw: {}, status: 400, reachesBerth: false },
    { name: "raw NUL in a header value (Deno refuses it)", method: "GET", path: "/v2/", headers: [["X-A", "a\0b"]], raw: {}, status: 400, reachesBerth: false },
    { name: "raw request line that is not HTTP (Deno refuses it)", method: "HELLO", path: "", raw: {}, status: 400, reachesBerth: false },
  ];
}

// ---------------------------------------------------------------------------
// Running rows
// ---------------------------------------------------------------------------

function rawBytes(row: Row): Uint8Array {
  if (row.method === "HELLO") return encoder.encode("HELLO\r\n\r\n");
  const head = [`${row.method} ${row.path} HTTP/1.1`, "Host: 127.0.0.1", "Connection: close"];
  for (const [key, value] of row.headers ?? []) head.push(`${key}: ${value}`);
  // Latin-1 for the head, so that "\xff" in a path is the single byte 0xff.
  const text = head.join("\r\n") + "\r\n\r\n";
  const headBytes = Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff);
  return concat(headBytes, bytesOf(row.raw?.body ?? ""));
}

/** Sends a row; returns what the client saw (status null: the connection was cut by us). */
async function send(reg: ObservedRegistry, row: Row): Promise<RawResponse> {
  if (row.raw) {
    return await rawExchange(reg, rawBytes(row), {
      ...(row.raw.cut ? { cut: row.raw.cut } : {}),
      ...(row.raw.late ? { late: encoder.encode(row.raw.late) } : {}),
    });
  }
  const res = await reg.fetch(row.path, {
    method: row.method,
    headers: row.headers ?? [],
    ...(row.body ? { body: row.body() } : {}),
  });
  return { status: res.status, headers: res.headers, body: await res.text() };
}

function errorCode(body: string): string | undefined {
  try {
    return (JSON.parse(body) as { errors?: { code?: string }[] }).errors?.[0]?.code;
  } catch {
    return undefined;
  }
}

/** Runs each row as a step, checking its answer and that nothing was written. */
async function runRows(t: Deno.TestContext, rows: (f: Fixture) => Row[]): Promise<void> {
  await using reg = await ObservedRegistry.start();
  const fixture = await setup(reg);
  const table = rows(fixture);
  for (const row of table) {
    assert.ok(row.status >= 400 && row.status < 500, `row ${row.name} must expect a 4xx`);
    await t.step(
      `${row.method} ${row.name} -> ${row.status}${row.code ? " " + row.code : ""}`,
      async () => {
        await reg.idle();
        const before = await snapshot(reg);
        const seenBefore = reg.seen.length;
        const startedBefore = reg.started;
        const unhandledBefore = reg.unhandled.length;
        const got = await send(reg, row);
        await reg.idle();
        const berth = reg.seen.slice(seenBefore);
        const shown = `${got.status} ${got.body.slice(0, 300)}`;

        if (row.raw?.cut === "disconnect") {
          assert.equal(berth.length, 1, "Berth should have handled the request");
          assert.equal(berth[0]!.status, row.status, "Berth's answer to a client that left");
        } else {
          assert.equal(got.status, row.status, shown);
          if (row.code !== undefined) assert.equal(errorCode(got.body), row.code, shown);
          else if (row.method !== "HEAD") assert.equal(errorCode(got.body), undefined, shown);
          // fetch() reads no body after HEAD; the answer must not announce one.
          else assert.equal(got.headers.get("Content-Length"), "0", "HEAD error announces a body");
        }
        if (row.reachesBerth === false) {
          assert.equal(reg.started, startedBefore, "Deno should refuse this before Berth sees it");
        } else {
          assert.ok(berth.length >= 1, "the request should reach Berth");
        }
        for (const answer of berth) {
          assert.ok(
            answer.status < 500,
            `Berth answered ${answer.status}: ${Deno.inspect(reg.unhandled)}`,
          );
        }
        assert.deepEqual(
          reg.unhandled.slice(unhandledBefore),
          [],
          "Berth logged an unhandled error",
        );

        assert.deepEqual(await snapshot(reg), before, "a hostile request wrote something");
        const base = await reg.fetch("/v2/");
        await base.body?.cancel();
        assert.equal(base.status, 200, "GET /v2/ after the row");
        const status = await reg.fetch(fixture.session);
        await status.body?.cancel();
        assert.equal(status.status, 204, "the fixture upload session is still there");
        assert.equal(status.headers.get("Range"), `0-${SESSION_BYTES - 1}`, "session offset moved");
      },
    );
  }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

Deno.test("A3: traversal in names, digests and upload ids gets 4xx and writes nothing", async (t) => {
  await runRows(t, traversalRows);
});

Deno.test("A3/A5: malformed, uppercase, short, long and unknown-algorithm digests get 400 and write nothing", async (t) => {
  await runRows(t, digestRows);
});

Deno.test("A3: names and tags at and over their limits get 4xx and write nothing", async (t) => {
  await runRows(t, limitRows);
});

Deno.test("end-5/end-6: lying, overflowing and disagreeing Content-Range and Content-Length get 4xx and keep nothing", async (t) => {
  await runRows(t, rangeRows);
});

Deno.test("end-5/end-6/end-7: truncated bodies and clients that disconnect commit nothing", async (t) => {
  await runRows(t, truncationRows);
});

Deno.test("end-8b/end-12: negative, huge and non-numeric n and bad last get 400 PAGINATION_NUMBER_INVALID", async (t) => {
  await runRows(t, paginationRows);
});

Deno.test("A6/A12: nested, oversized, non-JSON and invalid-UTF-8 manifests and wrong Content-Type get 4xx and store nothing", async (t) => {
  await runRows(t, manifestRows);
});

Deno.test("A10: repeated query parameters, odd methods and huge headers get 4xx and write nothing", async (t) => {
  await runRows(t, requestRows);
});

Deno.test("end-6: a closing PUT whose body misses ?digest= ends the session and keeps nothing", async () => {
  // Not a table row: like Distribution, Berth cancels a session whose blob
  // fails verification, so this request legitimately removes the session.
  await using reg = await ObservedRegistry.start();
  const f = await setup(reg);
  const before = await snapshot(reg);
  const res = await reg.fetch(`${f.session}?digest=${sha256("nope")}`, {
    method: "PUT",
    headers: { "Content-Type": "application/octet-stream" },
    body: "abcde",
  });
  const body = await res.text();
  assert.equal(res.status, 400, body);
  assert.equal(errorCode(body), "DIGEST_INVALID", body);
  await reg.idle();
  const after = await snapshot(reg);
  assert.deepEqual(
    after.filter((line) => line.includes(f.uploadId)),
    [],
    "session keys or files left",
  );
  const blobFiles = (lines: string[]) => lines.filter((line) => line.startsWith("file blobs/"));
  assert.deepEqual(blobFiles(after), blobFiles(before), "a blob was stored");
  assert.ok(!after.some((line) => line.startsWith("file tmp/")), "a temp file was left");
  const status = await reg.fetch(f.session);
  await status.body?.cancel();
  assert.equal(status.status, 404);
  assert.deepEqual(reg.unhandled, []);
  assert.ok(reg.seen.every((answer) => answer.status < 500));
});
