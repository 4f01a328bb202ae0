/**
 * The S3 calls Berth needs, and nothing more: objects (put, get with Range,
 * head, delete, copy, list), multipart uploads (create, upload and copy
 * parts, complete, abort, list) and presigned GET URLs. Requests are signed
 * by `aws4fetch` (SigV4 only; its own retries are off) and sent with `fetch`.
 *
 * Every call is retried with jittered exponential back-off on network
 * errors, 5xx, 429 and S3's `SlowDown`/`RequestTimeout`/`InternalError`
 * codes (S3 may say so in a 200 body: copies and completions are checked).
 * A failure that outlives the retries is an `UNAVAILABLE` error (503);
 * anything else S3 refuses is an {@linkcode S3Error}.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { AwsClient } from "aws4fetch";
import { OciError } from "../../oci/errors.ts";
import { type Node, parseXmlRoot } from "./xml.ts";

/** Where and as whom to talk to S3. */
export interface S3ClientOptions {
  /** Base URL of the service (`https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:7480`). */
  endpoint: string;
  region: string;
  bucket: string;
  /** Path-style (`endpoint/bucket/key`) rather than virtual-host (`bucket.endpoint/key`) URLs. */
  pathStyle: boolean;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** Attempts after the first (default 5). */
  retries?: number;
  /** First back-off delay in ms, doubled each time (default 100). */
  retryBaseMs?: number;
  /** How long a body being read may send nothing before the read resumes elsewhere (60 s). */
  readStallMs?: number;
}

/** S3 refused a request for a reason retrying does not fix. */
export class S3Error extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
    this.name = "S3Error";
  }
}

/** An object as a listing or HEAD describes it. */
export interface S3Object {
  key: string;
  size: number;
  modifiedAt: number;
}

/** A multipart upload in progress. */
export interface S3Upload {
  key: string;
  uploadId: string;
  initiatedAt: number;
}

/** A stored object opened for reading. */
export interface S3Read {
  /** The whole object's size. */
  size: number;
  stream: ReadableStream<Uint8Array>;
}

const RETRY_CODES = new Set(["SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"]);
/** How long to wait for an answer's headers (a part upload sends its body first). */
const ANSWER_TIMEOUT_MS = 120_000;
/** A body that sends nothing this long is taken as cut off (and resumed). */
const READ_STALL_MS = 60_000;

/** `reader.read()`, or a rejection once it has waited `ms`. */
async function readWithin<T>(reader: ReadableStreamDefaultReader<T>, ms: number) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stalled = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no bytes for ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([reader.read(), stalled]);
  } finally {
    clearTimeout(timer);
  }
}

interface Call {
  method: string;
  key?: string;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Uint8Array;
  /** Statuses the caller handles itself (besides 2xx). */
  accept?: number[];
  /** A 200 whose body may still be an `<Error>` (copy, complete). */
  errorInBody?: boolean;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function encodeKey(key: string): string {
  return key.split("/").map(encodeURIComponent).join("/");
}

/** A small S3 client with retries; see the module doc. */
export class S3Client {
  readonly bucket: string;
  readonly #aws: AwsClient;
  readonly #options: S3ClientOptions;
  readonly #base: URL;

  constructor(options: S3ClientOptions) {
    this.#options = options;
    this.bucket = options.bucket;
    this.#aws = new AwsClient({
      accessKeyId: options.accessKeyId,
      secretAccessKey: options.secretAccessKey,
      ...(options.sessionToken ? { sessionToken: options.sessionToken } : {}),
      service: "s3",
      region: options.region,
      retries: 0,
    });
    const base = new URL(options.endpoint);
    if (!options.pathStyle) base.hostname = `${options.bucket}.${base.hostname}`;
    this.#base = base;
  }

  /** The URL of `key` (or of the bucket), with `query`. */
  url(key?: string, query: Record<string, string> = {}): URL {
    const url = new URL(this.#base);
    const path = url.pathname.replace(/\/$/, "");
    const bucket = this.#options.pathStyle ? `/${encodeURIComponent(this.bucket)}` : "";
    url.pathname = `${path}${bucket}/${key === undefined ? "" : encodeKey(key)}`;
    for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
    return url;
  }

  /** Sends `call`, retrying what is worth retrying; the answer is 2xx or in `accept`. */
  async #send(call: Call): Promise<Response> {
    const retries = this.#options.retries ?? 5;
    const base = this.#options.retryBaseMs ?? 100;
    let last = "";
    for (let attempt = 0;; attempt++) {
      if (attempt > 0) {
        const delay = Math.min(base * 2 ** (attempt - 1), 5000);
        await sleep(delay / 2 + Math.random() * delay / 2);
      }
      let response: Response;
      try {
        const headers: Record<string, string> = { ...call.headers };
        if (call.body) {
          headers["X-Amz-Content-Sha256"] = createHash("sha256").update(call.body).digest("hex");
        }
        const request = await this.#aws.sign(this.url(call.key, call.query).toString(), {
          method: call.method,
          headers,
          ...(call.body ? { body: call.body as Uint8Array<ArrayBuffer> } : {}),
        });
        // Bounds the wait for the answer's headers only: a body may stream for longer.
        const abort = new AbortController();
        const timer = setTimeout(() => abort.abort(new Error("no answer")), ANSWER_TIMEOUT_MS);
        try {
          response = await fetch(request, { signal: abort.signal });
        } finally {
          clearTimeout(timer);
        }
      } catch (error) {
        last = `${call.method} failed: ${(error as Error).message}`;
        if (attempt < retries) continue;
        throw unavailable(last);
      }
      const ok = response.status >= 200 && response.status < 300;
      if (ok && !call.errorInBody) return response;
      if (!ok && call.accept?.includes(response.status)) return response;
      let text: string;
      try {
        text = call.method === "HEAD" ? "" : await response.text();
      } catch (error) {
        last = `${call.method} answer cut off: ${(error as Error).message}`;
        if (attempt < retries) continue;
        throw unavailable(last);
      }
      const error = parseXmlRoot(text);
      const isError = error?.name === "Error";
      if (ok && !isError) return new Response(text, { status: response.status });
      const code = isError ? error.get("Code") : "";
      last = `${call.method} answered ${response.status}${code ? ` ${code}` : ""}`;
      const retryable = response.status >= 500 || response.status === 429 || RETRY_CODES.has(code);
      if (retryable && attempt < retries) continue;
      if (retryable) throw unavailable(last);
      const message = isError ? error.get("Message") : "";
      throw new S3Error(
        response.status,
        code || `HTTP${response.status}`,
        `S3 ${call.method} ${call.key ?? this.bucket}: ${response.status} ${code}${
          message ? ` (${message})` : ""
        }`,
      );
    }
  }

  async #xml(call: Call): Promise<Node> {
    const response = await this.#send(call);
    const root = parseXmlRoot(await response.text());
    if (!root) throw new S3Error(response.status, "BadAnswer", `S3 ${call.method}: not XML`);
    return root;
  }

  /**
   * Checks that the bucket exists and the credentials are accepted (a
   * one-key listing), with a message a person can act on.
   */
  async check(prefix: string): Promise<void> {
    try {
      const response = await this.#send({
        method: "GET",
        query: { "list-type": "2", "max-keys": "1", prefix },
      });
      await response.body?.cancel();
    } catch (error) {
      const where = `at ${this.#options.endpoint}`;
      if (error instanceof S3Error && error.code === "NoSuchBucket") {
        throw new Error(`S3 bucket "${this.bucket}" does not exist ${where}`);
      }
      if (
        error instanceof S3Error &&
        ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken"]
          .includes(error.code)
      ) {
        throw new Error(
          `S3 refused the credentials for bucket "${this.bucket}" ${where} (${error.code}): ` +
            "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --s3-access-key-id/--s3-secret-access-key",
        );
      }
      if (error instanceof OciError) {
        throw new Error(`S3 ${where} did not answer: ${error.message}`);
      }
      throw error;
    }
  }

  /** Size and modification time of `key`, or null. */
  async head(key: string): Promise<(S3Object & { etag: string }) | null> {
    const response = await this.#send({ method: "HEAD", key, accept: [404] });
    await response.body?.cancel();
    if (response.status === 404) return null;
    return {
      key,
      size: Number(response.headers.get("Content-Length") ?? 0),
      modifiedAt: Date.parse(response.headers.get("Last-Modified") ?? "") || 0,
      etag: response.headers.get("ETag") ?? "",
    };
  }

  /**
   * Opens `key`, whole or bytes `start`–`end` (inclusive), or null. A read
   * cut off midway resumes where it stopped (the same object version, by
   * ETag) within the retry budget.
   */
  async get(key: string, range?: { start: number; end: number }): Promise<S3Read | null> {
    const first = await this.#send({
      method: "GET",
      key,
      accept: [404, 416],
      ...(range ? { headers: { Range: `bytes=${range.start}-${range.end}` } } : {}),
    });
    if (first.status === 404) {
      await first.body?.cancel();
      return null;
    }
    if (first.status === 416) {
      // A range past the end (only of an empty object, as the registry checks ranges first).
      await first.body?.cancel();
      const info = await this.head(key);
      return info ? { size: info.size, stream: new Response(new Uint8Array(0)).body! } : null;
    }
    const contentRange = first.headers.get("Content-Range");
    const length = Number(first.headers.get("Content-Length") ?? 0);
    const size = contentRange ? Number(contentRange.split("/")[1]) : length;
    const start = contentRange ? Number(/bytes (\d+)-/.exec(contentRange)?.[1] ?? 0) : 0;
    const etag = first.headers.get("ETag") ?? "";
    return { size, stream: this.#resumable(key, first, start, start + length, etag) };
  }

  #resumable(
    key: string,
    first: Response,
    start: number,
    end: number,
    etag: string,
  ): ReadableStream<Uint8Array> {
    let reader = first.body!.getReader();
    let offset = start;
    let resumes = 0;
    const retries = this.#options.retries ?? 5;
    const stallMs = this.#options.readStallMs ?? READ_STALL_MS;
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        for (;;) {
          try {
            const { done, value } = await readWithin(reader, stallMs);
            if (done) {
              if (offset < end) throw new Error(`answer ended at ${offset} of ${end}`);
              return controller.close();
            }
            offset += value.length;
            return controller.enqueue(value);
          } catch (error) {
            // A stalled answer's connection is let go before reading the rest elsewhere.
            reader.cancel().catch(() => {});
            if (offset >= end || ++resumes > retries) {
              throw offset >= end ? error : unavailable(`GET ${key} cut off at ${offset}`);
            }
            const next = await this.#send({
              method: "GET",
              key,
              headers: {
                Range: `bytes=${offset}-${end - 1}`,
                ...(etag ? { "If-Match": etag } : {}),
              },
            });
            reader = next.body!.getReader();
          }
        }
      },
      cancel: (reason) => reader.cancel(reason),
    }, { highWaterMark: 0 });
  }

  /** Stores `bytes` as `key`. */
  async put(key: string, bytes: Uint8Array): Promise<void> {
    const response = await this.#send({ method: "PUT", key, body: bytes });
    await response.body?.cancel();
  }

  /** Removes `key` (nothing happens when it is not there). */
  async delete(key: string): Promise<void> {
    const response = await this.#send({ method: "DELETE", key, accept: [404] });
    await response.body?.cancel();
  }

  /** Copies `source` to `key` server-side (objects up to 5 GiB). */
  async copy(source: string, key: string): Promise<void> {
    await this.#send({
      method: "PUT",
      key,
      headers: { "x-amz-copy-source": `/${this.bucket}/${encodeKey(source)}` },
      errorInBody: true,
    });
  }

  /**
   * Objects under `prefix`, in key order; with `delimiter`, the common
   * prefixes come as objects with size -1.
   */
  async *list(prefix: string, delimiter?: string): AsyncIterable<S3Object> {
    let token = "";
    for (;;) {
      const query: Record<string, string> = { "list-type": "2", prefix };
      if (delimiter) query.delimiter = delimiter;
      if (token) query["continuation-token"] = token;
      const root = await this.#xml({ method: "GET", query });
      for (const item of root.all("Contents")) {
        yield {
          key: item.get("Key"),
          size: Number(item.get("Size")),
          modifiedAt: Date.parse(item.get("LastModified")) || 0,
        };
      }
      for (const common of root.all("CommonPrefixes")) {
        yield { key: common.get("Prefix"), size: -1, modifiedAt: 0 };
      }
      token = root.get("NextContinuationToken");
      if (root.get("IsTruncated") !== "true" || !token) return;
    }
  }

  /** Starts a multipart upload to `key`; its upload id. */
  async createUpload(key: string): Promise<string> {
    const root = await this.#xml({ method: "POST", key, query: { uploads: "" } });
    const uploadId = root.get("UploadId");
    if (!uploadId) throw new S3Error(200, "BadAnswer", `S3 gave no upload id for ${key}`);
    return uploadId;
  }

  /** Uploads part `partNumber` of an upload; its ETag. */
  async uploadPart(key: string, uploadId: string, partNumber: number, bytes: Uint8Array) {
    const response = await this.#send({
      method: "PUT",
      key,
      query: { partNumber: String(partNumber), uploadId },
      body: bytes,
    });
    await response.body?.cancel();
    return response.headers.get("ETag") ?? "";
  }

  /** Copies `source` (or bytes `start`–`end` of it) server-side as part `partNumber`; its ETag. */
  async uploadPartCopy(
    key: string,
    uploadId: string,
    partNumber: number,
    source: string,
    range?: { start: number; end: number },
  ): Promise<string> {
    const headers: Record<string, string> = {
      "x-amz-copy-source": `/${this.bucket}/${encodeKey(source)}`,
    };
    if (range) headers["x-amz-copy-source-range"] = `bytes=${range.start}-${range.end}`;
    const root = await this.#xml({
      method: "PUT",
      key,
      query: { partNumber: String(partNumber), uploadId },
      headers,
      errorInBody: true,
    });
    return root.get("ETag");
  }

  /** Completes an upload from its parts, in order. */
  async completeUpload(
    key: string,
    uploadId: string,
    parts: { partNumber: number; etag: string }[],
  ): Promise<void> {
    const xml = `<CompleteMultipartUpload>${
      parts.map((p) =>
        `<Part><PartNumber>${p.partNumber}</PartNumber><ETag>${
          p.etag.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll('"', "&quot;")
        }</ETag></Part>`
      ).join("")
    }</CompleteMultipartUpload>`;
    const response = await this.#send({
      method: "POST",
      key,
      query: { uploadId },
      body: new TextEncoder().encode(xml),
      errorInBody: true,
    });
    await response.body?.cancel();
  }

  /** Abandons an upload and its parts (nothing happens when it is gone). */
  async abortUpload(key: string, uploadId: string): Promise<void> {
    const response = await this.#send({
      method: "DELETE",
      key,
      query: { uploadId },
      accept: [404],
    });
    await response.body?.cancel();
  }

  /** Multipart uploads in progress under `prefix`. */
  async *listUploads(prefix: string): AsyncIterable<S3Upload> {
    let keyMarker = "";
    let idMarker = "";
    for (;;) {
      const query: Record<string, string> = { uploads: "", prefix };
      if (keyMarker) query["key-marker"] = keyMarker;
      if (idMarker) query["upload-id-marker"] = idMarker;
      const root = await this.#xml({ method: "GET", query });
      for (const upload of root.all("Upload")) {
        yield {
          key: upload.get("Key"),
          uploadId: upload.get("UploadId"),
          initiatedAt: Date.parse(upload.get("Initiated")) || 0,
        };
      }
      keyMarker = root.get("NextKeyMarker");
      idMarker = root.get("NextUploadIdMarker");
      if (root.get("IsTruncated") !== "true" || !keyMarker) return;
    }
  }

  /** A URL that lets anyone GET `key` for `seconds`. */
  async presign(key: string, seconds: number): Promise<string> {
    const url = this.url(key, { "X-Amz-Expires": String(seconds) });
    const signed = await this.#aws.sign(url.toString(), {
      method: "GET",
      aws: { signQuery: true },
    });
    return signed.url;
  }
}

function unavailable(detail: string): OciError {
  return new OciError("UNAVAILABLE", `The blob store (S3) is not answering; retry shortly`, {
    detail: { reason: detail },
    headers: { "Retry-After": "5" },
  });
}
