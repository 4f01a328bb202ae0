/**
 * Where an S3 blob store is and how to reach it: the bucket and prefix of
 * `--blobs s3://BUCKET[/PREFIX]`, and endpoint, region, addressing and
 * credentials from Berth's `--s3-*` options, else the usual AWS variables
 * (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, `AWS_REGION`,
 * `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
 * `AWS_SESSION_TOKEN`). A custom endpoint means path-style URLs unless
 * `--s3-addressing virtual` says otherwise.
 *
 * @module
 */
import type { S3ClientOptions } from "./client.ts";

/** The `--s3-*` options (see `src/config.ts`). */
export interface S3Config {
  s3Endpoint: string;
  s3Region: string;
  s3Addressing: "auto" | "path" | "virtual";
  s3AccessKeyId: string;
  s3SecretAccessKey: string;
  /** Blob GETs answer 307 to a presigned URL valid this long; 0: bytes go through Berth. */
  s3RedirectMs: number;
}

/** Bucket names S3 accepts (the rules for new buckets). */
export const BUCKET_REGEXP = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
/** Prefixes Berth accepts: plain path segments. */
export const PREFIX_REGEXP = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/** Splits `s3://BUCKET[/PREFIX]` into its bucket and prefix (`""` or ending in `/`), or null. */
export function parseS3Location(location: string): { bucket: string; prefix: string } | null {
  const match = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(location);
  if (!match) return null;
  const bucket = match[1]!;
  const prefix = (match[2] ?? "").replace(/\/+$/, "");
  if (!BUCKET_REGEXP.test(bucket) || bucket.includes("..")) return null;
  if (prefix !== "" && (!PREFIX_REGEXP.test(prefix) || /(^|\/)\.\.?(\/|$)/.test(prefix))) {
    return null;
  }
  return { bucket, prefix: prefix === "" ? "" : `${prefix}/` };
}

/** The client options `location` and `config` (else `env`) mean; throws a clear Error when incomplete. */
export function s3ClientOptions(
  location: string,
  config: Partial<S3Config>,
  env: Record<string, string | undefined>,
): S3ClientOptions & { prefix: string } {
  const parsed = parseS3Location(location);
  if (!parsed) throw new Error(`Invalid S3 location "${location}": expected s3://BUCKET[/PREFIX]`);
  const region = config.s3Region || env.AWS_REGION || env.AWS_DEFAULT_REGION || "us-east-1";
  const custom = config.s3Endpoint || env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || "";
  const endpoint = custom ||
    (region === "us-east-1" ? "https://s3.amazonaws.com" : `https://s3.${region}.amazonaws.com`);
  const addressing = config.s3Addressing ?? "auto";
  const pathStyle = addressing === "path" ||
    (addressing === "auto" && (custom !== "" || parsed.bucket.includes(".")));
  const accessKeyId = config.s3AccessKeyId || env.AWS_ACCESS_KEY_ID || "";
  const secretAccessKey = config.s3SecretAccessKey || env.AWS_SECRET_ACCESS_KEY || "";
  if (accessKeyId === "" || secretAccessKey === "") {
    throw new Error(
      `No S3 credentials for "${location}": set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY ` +
        "(or --s3-access-key-id and --s3-secret-access-key)",
    );
  }
  const sessionToken = env.AWS_SESSION_TOKEN;
  return {
    endpoint,
    region,
    bucket: parsed.bucket,
    prefix: parsed.prefix,
    pathStyle,
    accessKeyId,
    secretAccessKey,
    ...(sessionToken && !config.s3AccessKeyId ? { sessionToken } : {}),
  };
}
