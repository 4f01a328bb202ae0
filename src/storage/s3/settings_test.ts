import assert from "node:assert/strict";
import { parseS3Location, s3ClientOptions } from "./settings.ts";

const KEYS = { AWS_ACCESS_KEY_ID: "id", AWS_SECRET_ACCESS_KEY: "secret" };

Deno.test("parseS3Location() splits a bucket and a prefix ending in /", () => {
  assert.deepEqual(parseS3Location("s3://my-bucket"), { bucket: "my-bucket", prefix: "" });
  assert.deepEqual(parseS3Location("s3://my-bucket/"), { bucket: "my-bucket", prefix: "" });
  assert.deepEqual(parseS3Location("s3://b.example/a/b/"), { bucket: "b.example", prefix: "a/b/" });
});

Deno.test("parseS3Location() refuses bad bucket names and prefixes that could escape", () => {
  for (
    const bad of [
      "s3://",
      "s3://B",
      "s3://ab",
      "s3://Upper",
      "s3://a..b",
      "s3://bucket/../x",
      "s3://bucket/a//b",
      "s3://bucket/a b",
      "s3://bucket/./x",
      "file:/x",
    ]
  ) {
    assert.equal(parseS3Location(bad), null, bad);
  }
});

Deno.test("s3ClientOptions() takes the options before the AWS variables", () => {
  const options = s3ClientOptions("s3://bkt/p", {
    s3Endpoint: "http://127.0.0.1:9000",
    s3Region: "eu-west-1",
    s3AccessKeyId: "flag-id",
    s3SecretAccessKey: "flag-secret",
  }, {
    ...KEYS,
    AWS_REGION: "us-west-2",
    AWS_ENDPOINT_URL: "http://other",
    AWS_SESSION_TOKEN: "t",
  });
  assert.deepEqual(options, {
    endpoint: "http://127.0.0.1:9000",
    region: "eu-west-1",
    bucket: "bkt",
    prefix: "p/",
    pathStyle: true,
    accessKeyId: "flag-id",
    secretAccessKey: "flag-secret",
  });
});

Deno.test("s3ClientOptions() falls back to the AWS variables, path-style with a custom endpoint", () => {
  const options = s3ClientOptions("s3://bkt", {}, {
    ...KEYS,
    AWS_DEFAULT_REGION: "ap-south-1",
    AWS_ENDPOINT_URL: "http://generic",
    AWS_ENDPOINT_URL_S3: "http://s3-specific",
    AWS_SESSION_TOKEN: "token",
  });
  assert.equal(options.endpoint, "http://s3-specific");
  assert.equal(options.region, "ap-south-1");
  assert.equal(options.pathStyle, true);
  assert.equal(options.sessionToken, "token");
  assert.equal(options.accessKeyId, "id");
});

Deno.test("s3ClientOptions() uses AWS's endpoint and virtual hosts by default", () => {
  const aws = s3ClientOptions("s3://bkt", {}, { ...KEYS, AWS_REGION: "eu-central-1" });
  assert.equal(aws.endpoint, "https://s3.eu-central-1.amazonaws.com");
  assert.equal(aws.pathStyle, false);
  assert.equal(s3ClientOptions("s3://bkt", {}, KEYS).endpoint, "https://s3.amazonaws.com");
  // A dotted bucket cannot be a virtual host under TLS; path-style unless told.
  assert.equal(s3ClientOptions("s3://a.b.c", {}, KEYS).pathStyle, true);
  assert.equal(
    s3ClientOptions("s3://bkt", { s3Endpoint: "http://x", s3Addressing: "virtual" }, KEYS)
      .pathStyle,
    false,
  );
  assert.equal(s3ClientOptions("s3://bkt", { s3Addressing: "path" }, KEYS).pathStyle, true);
});

Deno.test("s3ClientOptions() says which credentials are missing", () => {
  assert.throws(
    () => s3ClientOptions("s3://bkt", {}, { AWS_ACCESS_KEY_ID: "id" }),
    /No S3 credentials.*AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/,
  );
});
