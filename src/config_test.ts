/**
 * Unit tests of the configuration: flags > environment > config file >
 * defaults, and clear messages for bad values that name the option, the value
 * and what is allowed.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  type Config,
  ConfigError,
  defaultConfig,
  envName,
  helpText,
  OPTIONS,
  parseCli,
  parseDuration,
  parseSize,
} from "./config.ts";

/** A readFile that serves `files` and throws NotFound for anything else. */
function files(map: Record<string, string>): (path: string) => string {
  return (path) => {
    const text = map[path];
    if (text === undefined) throw new Deno.errors.NotFound(`No such file "${path}"`);
    return text;
  };
}

const noFiles = files({});

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected a ConfigError");
}

const DEFAULTS: Config = {
  listen: { hostname: "127.0.0.1", port: 5000 },
  data: "./data",
  kv: "",
  blobs: "",
  s3Endpoint: "",
  s3Region: "",
  s3Addressing: "auto",
  s3AccessKeyId: "",
  s3SecretAccessKey: "",
  s3RedirectMs: 0,
  kvMaxBlobBytes: 1024 ** 3,
  deploy: false,
  listenGiven: false,
  maxManifestBytes: 4 * 1024 * 1024,
  uploadTtlMs: 24 * 3600 * 1000,
  gcIntervalMs: 3600_000,
  gcGraceMs: 3600_000,
  untaggedTtlMs: null,
  retention: [],
  deleteEnabled: true,
  autoMount: true,
  maxUploadsPerRepo: 100,
  maxUploads: 1000,
  tagsPageMax: 1000,
  bodyTimeoutMs: 60_000,
  idleTimeoutMs: 120_000,
  maxConnections: 1000,
  shutdownTimeoutMs: 30_000,
  logLevel: "info",
  metrics: true,
  auth: "none",
  htpasswd: "",
  policy: "",
  tokenKey: "",
  tokenTtlMs: 300_000,
  tokenService: "berth",
  tokenIssuer: "berth",
  tokenRealm: "",
  tokenPublicKeys: "",
  insecureNoAuth: false,
  tlsCert: "",
  tlsKey: "",
};

Deno.test("parseCli() gives the defaults with no flags, env or file", () => {
  const cli = parseCli([], {}, noFiles);
  assert.deepEqual(cli, {
    command: "serve",
    config: DEFAULTS,
    help: false,
    repair: false,
    dryRun: false,
    json: false,
    full: false,
  });
  assert.deepEqual(defaultConfig(), DEFAULTS);
});

Deno.test("parseCli() ignores environment variables that are not Berth's", () => {
  const cli = parseCli([], { PATH: "/bin", HOME: "/root", BERTH: "x" }, noFiles);
  assert.deepEqual(cli.config, DEFAULTS);
});

Deno.test("parseCli() reads every option from flags", () => {
  const cli = parseCli(
    [
      "serve",
      "--listen",
      "0.0.0.0:8080",
      "--data=/var/lib/berth",
      "--kv",
      ":memory:",
      "--blobs",
      "/srv/blobs",
      "--s3-endpoint",
      "https://s3.example",
      "--s3-region",
      "eu-west-2",
      "--s3-addressing",
      "path",
      "--s3-access-key-id",
      "AKID",
      "--s3-secret-access-key",
      "SECRET",
      "--s3-redirect",
      "1m",
      "--kv-max-blob-bytes",
      "2GiB",
      "--max-manifest-bytes",
      "8MiB",
      "--upload-ttl",
      "15m",
      "--gc-interval",
      "10m",
      "--gc-grace",
      "0",
      "--untagged-ttl",
      "2d",
      "--no-delete",
      "--no-auto-mount",
      "--max-uploads-per-repo",
      "7",
      "--max-uploads",
      "70",
      "--tags-page-max",
      "50",
      "--body-timeout",
      "30s",
      "--idle-timeout",
      "0",
      "--max-connections",
      "9",
      "--shutdown-timeout",
      "5s",
      "--log-level",
      "debug",
      "--metrics",
      "off",
      "--auth",
      "token",
      "--htpasswd",
      "/etc/berth/htpasswd",
      "--policy",
      "/etc/berth/policy.json",
      "--token-key",
      "/etc/berth/key.pem",
      "--token-ttl",
      "10m",
      "--token-service",
      "registry.example",
      "--token-issuer",
      "berth-issuer",
      "--token-realm",
      "https://registry.example/token",
      "--tls-cert",
      "/etc/berth/cert.pem",
      "--tls-key",
      "/etc/berth/tls-key.pem",
    ],
    {},
    noFiles,
  );
  assert.deepEqual(cli.config, {
    listen: { hostname: "0.0.0.0", port: 8080 },
    data: "/var/lib/berth",
    kv: ":memory:",
    blobs: "/srv/blobs",
    s3Endpoint: "https://s3.example",
    s3Region: "eu-west-2",
    s3Addressing: "path",
    s3AccessKeyId: "AKID",
    s3SecretAccessKey: "SECRET",
    s3RedirectMs: 60_000,
    kvMaxBlobBytes: 2 * 1024 ** 3,
    deploy: false,
    listenGiven: true,
    maxManifestBytes: 8 * 1024 * 1024,
    uploadTtlMs: 15 * 60 * 1000,
    gcIntervalMs: 600_000,
    gcGraceMs: 0,
    untaggedTtlMs: 2 * 86400_000,
    retention: [],
    deleteEnabled: false,
    autoMount: false,
    maxUploadsPerRepo: 7,
    maxUploads: 70,
    tagsPageMax: 50,
    bodyTimeoutMs: 30_000,
    idleTimeoutMs: 0,
    maxConnections: 9,
    shutdownTimeoutMs: 5_000,
    logLevel: "debug",
    metrics: false,
    auth: "token",
    htpasswd: "/etc/berth/htpasswd",
    policy: "/etc/berth/policy.json",
    tokenKey: "/etc/berth/key.pem",
    tokenTtlMs: 600_000,
    tokenService: "registry.example",
    tokenIssuer: "berth-issuer",
    tokenRealm: "https://registry.example/token",
    tokenPublicKeys: "",
    insecureNoAuth: false,
    tlsCert: "/etc/berth/cert.pem",
    tlsKey: "/etc/berth/tls-key.pem",
  });
});

Deno.test("parseCli() reads every option from BERTH_* variables", () => {
  const cli = parseCli([], {
    BERTH_LISTEN: "[::1]:0",
    BERTH_DATA: "/d",
    BERTH_KV: "https://kv.example/db",
    BERTH_BLOBS: "kv",
    BERTH_KV_MAX_BLOB_BYTES: "3MiB",
    BERTH_DEPLOY: "1",
    BERTH_S3_ENDPOINT: "http://minio:9000",
    BERTH_S3_REGION: "auto",
    BERTH_S3_ADDRESSING: "virtual",
    BERTH_S3_ACCESS_KEY_ID: "id",
    BERTH_S3_SECRET_ACCESS_KEY: "secret",
    BERTH_S3_REDIRECT: "0",
    BERTH_MAX_MANIFEST_BYTES: "1048576",
    BERTH_UPLOAD_TTL: "2h",
    BERTH_GC_INTERVAL: "0",
    BERTH_GC_GRACE: "30m",
    BERTH_UNTAGGED_TTL: "0",
    BERTH_NO_DELETE: "yes",
    BERTH_NO_AUTO_MOUNT: "1",
    BERTH_MAX_UPLOADS_PER_REPO: "3",
    BERTH_MAX_UPLOADS: "4",
    BERTH_TAGS_PAGE_MAX: "5",
    BERTH_BODY_TIMEOUT: "2m",
    BERTH_IDLE_TIMEOUT: "5s",
    BERTH_MAX_CONNECTIONS: "10",
    BERTH_SHUTDOWN_TIMEOUT: "1m",
    BERTH_LOG_LEVEL: "off",
    BERTH_METRICS: "off",
    BERTH_AUTH: "token",
    BERTH_TOKEN_PUBLIC_KEYS: "/k.jwks",
    BERTH_TOKEN_REALM: "http://auth.example/token",
    BERTH_INSECURE_NO_AUTH: "true",
  }, noFiles);
  assert.deepEqual(cli.config, {
    listen: { hostname: "::1", port: 0 },
    data: "/d",
    kv: "https://kv.example/db",
    blobs: "kv",
    kvMaxBlobBytes: 3 * 1024 ** 2,
    deploy: true,
    listenGiven: true,
    s3Endpoint: "http://minio:9000",
    s3Region: "auto",
    s3Addressing: "virtual",
    s3AccessKeyId: "id",
    s3SecretAccessKey: "secret",
    s3RedirectMs: 0,
    maxManifestBytes: 1048576,
    uploadTtlMs: 2 * 3600 * 1000,
    gcIntervalMs: 0,
    gcGraceMs: 1800_000,
    untaggedTtlMs: 0,
    retention: [],
    deleteEnabled: false,
    autoMount: false,
    maxUploadsPerRepo: 3,
    maxUploads: 4,
    tagsPageMax: 5,
    bodyTimeoutMs: 120_000,
    idleTimeoutMs: 5_000,
    maxConnections: 10,
    shutdownTimeoutMs: 60_000,
    logLevel: "off",
    metrics: false,
    auth: "token",
    htpasswd: "",
    policy: "",
    tokenKey: "",
    tokenTtlMs: 300_000,
    tokenService: "berth",
    tokenIssuer: "berth",
    tokenRealm: "http://auth.example/token",
    tokenPublicKeys: "/k.jwks",
    insecureNoAuth: true,
    tlsCert: "",
    tlsKey: "",
  });
});

Deno.test("parseCli() reads every option from the --config file, JSON types included", () => {
  const file = JSON.stringify({
    listen: "localhost:5001",
    data: "/srv",
    kv: "/srv/meta.kv",
    "kv-max-blob-bytes": 1048576,
    deploy: false,
    "max-manifest-bytes": 2048,
    "s3-endpoint": "https://storage.example",
    "s3-region": "us-west-1",
    "s3-addressing": "auto",
    "s3-access-key-id": "k",
    "s3-secret-access-key": "s",
    "s3-redirect": "15m",
    "upload-ttl": "7d",
    "gc-interval": "1d",
    "gc-grace": "2h",
    "untagged-ttl": "kept",
    "no-delete": true,
    "no-auto-mount": false,
    "max-uploads-per-repo": 9,
    "max-uploads": 99,
    "tags-page-max": 999,
    "body-timeout": "90s",
    "idle-timeout": "1d",
    "max-connections": 5,
    "shutdown-timeout": "2m",
    "log-level": "warn",
    metrics: "off",
    htpasswd: "/srv/htpasswd",
    "token-ttl": "30s",
  });
  const cli = parseCli(["--config", "/etc/berth.json"], {}, files({ "/etc/berth.json": file }));
  assert.deepEqual(cli.config, {
    listen: { hostname: "localhost", port: 5001 },
    data: "/srv",
    kv: "/srv/meta.kv",
    blobs: "",
    s3Endpoint: "https://storage.example",
    s3Region: "us-west-1",
    s3Addressing: "auto",
    s3AccessKeyId: "k",
    s3SecretAccessKey: "s",
    s3RedirectMs: 900_000,
    kvMaxBlobBytes: 1024 ** 2,
    deploy: false,
    listenGiven: true,
    maxManifestBytes: 2048,
    uploadTtlMs: 7 * 86400 * 1000,
    gcIntervalMs: 86400_000,
    gcGraceMs: 7200_000,
    untaggedTtlMs: null,
    retention: [],
    deleteEnabled: false,
    autoMount: true,
    maxUploadsPerRepo: 9,
    maxUploads: 99,
    tagsPageMax: 999,
    bodyTimeoutMs: 90_000,
    idleTimeoutMs: 86_400_000,
    maxConnections: 5,
    shutdownTimeoutMs: 120_000,
    logLevel: "warn",
    metrics: false,
    auth: "basic",
    htpasswd: "/srv/htpasswd",
    policy: "",
    tokenKey: "",
    tokenTtlMs: 30_000,
    tokenService: "berth",
    tokenIssuer: "berth",
    tokenRealm: "",
    tokenPublicKeys: "",
    insecureNoAuth: false,
    tlsCert: "",
    tlsKey: "",
  });
});

Deno.test("parseCli() finds the config file through BERTH_CONFIG", () => {
  const cli = parseCli([], { BERTH_CONFIG: "/c.json" }, files({ "/c.json": '{"max-uploads":3}' }));
  assert.equal(cli.config.maxUploads, 3);
});

Deno.test("parseCli() prefers --config to BERTH_CONFIG", () => {
  const read = files({ "/a.json": '{"max-uploads":1}', "/b.json": '{"max-uploads":2}' });
  const cli = parseCli(["--config", "/a.json"], { BERTH_CONFIG: "/b.json" }, read);
  assert.equal(cli.config.maxUploads, 1);
});

Deno.test("parseCli() takes flags over env over config file over defaults", () => {
  const read = files({
    "/c.json": JSON.stringify({
      "max-uploads": 10,
      "max-uploads-per-repo": 10,
      "tags-page-max": 10,
    }),
  });
  const env = {
    BERTH_CONFIG: "/c.json",
    BERTH_MAX_UPLOADS: "20",
    BERTH_MAX_UPLOADS_PER_REPO: "20",
  };
  const cli = parseCli(["--max-uploads", "30"], env, read);
  assert.equal(cli.config.maxUploads, 30, "flag beats env and file");
  assert.equal(cli.config.maxUploadsPerRepo, 20, "env beats file");
  assert.equal(cli.config.tagsPageMax, 10, "file beats default");
  assert.equal(cli.config.logLevel, "info", "default when nothing says otherwise");
});

Deno.test("parseCli() does not validate a value that a higher source overrides", () => {
  // Only the winning value is applied, so a stale bad value below it is harmless.
  const read = files({ "/c.json": '{"max-uploads":"many"}' });
  const cli = parseCli(["--max-uploads", "5"], { BERTH_CONFIG: "/c.json" }, read);
  assert.equal(cli.config.maxUploads, 5);
});

Deno.test("parseCli() reads the fsck command and --repair and --help", () => {
  const cli = parseCli(["fsck", "--repair"], {}, noFiles);
  assert.equal(cli.command, "fsck");
  assert.equal(cli.repair, true);
  assert.equal(parseCli(["--help"], {}, noFiles).help, true);
});

Deno.test("parseCli() rejects an unknown command or extra words", () => {
  assert.match(
    configError(() => parseCli(["start"], {}, noFiles)).message,
    /Unknown command "start"/,
  );
  assert.match(
    configError(() => parseCli(["serve", "now"], {}, noFiles)).message,
    /Unknown command "serve now": expected serve, fsck, gc or du/,
  );
});

Deno.test("parseCli() rejects an unknown flag and points at --help", () => {
  const error = configError(() => parseCli(["--nope"], {}, noFiles));
  assert.match(error.message, /--nope/);
  assert.match(error.message, /--help/);
});

Deno.test("parseCli() rejects a value flag without its value", () => {
  const error = configError(() => parseCli(["--listen"], {}, noFiles));
  assert.match(error.message, /--listen/);
});

Deno.test("parseCli() rejects an unknown config-file key, naming it and the file", () => {
  const read = files({ "/c.json": '{"max-upload": 5}' });
  const error = configError(() => parseCli(["--config", "/c.json"], {}, read));
  assert.equal(error.message, 'Unknown option "max-upload" in --config "/c.json"');
});

Deno.test("parseCli() rejects a config file that is missing, not JSON or not an object", () => {
  assert.match(
    configError(() => parseCli(["--config", "/missing.json"], {}, noFiles)).message,
    /^Cannot read --config "\/missing.json"/,
  );
  assert.match(
    configError(() => parseCli(["--config", "/c"], {}, files({ "/c": "{listen:" }))).message,
    /^Cannot read --config "\/c"/,
  );
  for (const text of ["[]", "null", "3", '"x"']) {
    assert.match(
      configError(() => parseCli(["--config", "/c"], {}, files({ "/c": text }))).message,
      /^Invalid --config "\/c": expected a JSON object keyed by flag name$/,
      text,
    );
  }
});

/** Values each option must refuse, with a phrase of what it allows. */
const BAD_VALUES: Record<string, { values: string[]; allowed: RegExp }> = {
  listen: {
    values: ["5000", "localhost", "localhost:", ":5000", "host:65536", "host:123456", "a b:1", ""],
    allowed: /HOST:PORT with a port from 0 to 65535/,
  },
  data: { values: ["", "  "], allowed: /a directory path/ },
  "max-manifest-bytes": {
    values: ["1023", "65MiB", "0", "lots", "4XB", "-1", "4 MiB extra", ""],
    allowed: /a size from 1KiB to 64MiB/,
  },
  "upload-ttl": {
    values: ["0s", "999ms", "366d", "24", "1w", "-5m", "1 h", ""],
    allowed: /a duration from 1s to 365d/,
  },
  "gc-interval": {
    values: ["0s", "500ms", "31d", "1", "x", ""],
    allowed: /0, or a duration from 1s to 30d/,
  },
  "gc-grace": { values: ["0s", "999ms", "31d", "soon", ""], allowed: /0, or a duration from 1s/ },
  "untagged-ttl": { values: ["never", "5", "-1d", ""], allowed: /kept, 0, or a duration/ },
  "no-delete": { values: ["maybe", "2", ""], allowed: /true or false/ },
  "no-auto-mount": { values: ["nah", "tru"], allowed: /true or false/ },
  "max-uploads-per-repo": {
    values: ["0", "100001", "1.5", "-1", "ten", "1e3", ""],
    allowed: /a whole number from 1 to 100000/,
  },
  "max-uploads": { values: ["0", "100001", "0x10"], allowed: /a whole number from 1 to 100000/ },
  "tags-page-max": { values: ["0", "10001", "NaN"], allowed: /a whole number from 1 to 10000/ },
  "body-timeout": {
    values: ["0", "0s", "999ms", "2d", "5", ""],
    allowed: /a duration from 1s to 1d/,
  },
  "idle-timeout": {
    values: ["500ms", "0s", "2d", "5", "-1s", ""],
    allowed: /0, or a duration from 1s to 1d/,
  },
  blobs: {
    values: [
      "s3x://bucket",
      "ftp://h/x",
      "file:",
      "s3://",
      "s3://B",
      "s3://b/../x",
      "s3://bk/a b",
      "kv:",
      "kvs:/x",
    ],
    allowed: /a directory path, file:DIR, s3:\/\/BUCKET\[\/PREFIX\], kv or kv:LOCATION/,
  },
  "s3-endpoint": { values: ["ftp://x", "localhost:9000", "http://"], allowed: /an http\(s\) URL/ },
  "s3-region": { values: ["EU West", "a/b"], allowed: /a region name/ },
  "s3-addressing": { values: ["both", ""], allowed: /auto, path or virtual/ },
  "s3-redirect": { values: ["500ms", "8d", "x"], allowed: /0, or a duration from 1s to 7d/ },
  // Anything goes: S3 tells at start-up whether the credentials work.
  "s3-access-key-id": { values: [], allowed: /./ },
  "s3-secret-access-key": { values: [], allowed: /./ },
  "kv-max-blob-bytes": {
    values: ["1KiB", "2TiB", "0", "big"],
    allowed: /a size from 1MiB to 1TiB/,
  },
  deploy: { values: ["perhaps"], allowed: /true or false/ },
  kv: {
    values: ["ftp://x/db", "redis://h:1", "HTTPS://kv.example/db"],
    allowed: /a path, an http\(s\) URL or :memory:/,
  },
  "shutdown-timeout": { values: ["0", "500ms", "2h", "x"], allowed: /a duration from 1s to 1h/ },
  "max-connections": {
    values: ["0", "1000001", "many"],
    allowed: /a whole number from 1 to 1000000/,
  },
  "log-level": {
    values: ["verbose", "INFO", "trace", ""],
    allowed: /debug, info, warn, error or off/,
  },
  metrics: { values: ["maybe", "", "1"], allowed: /on or off/ },
  auth: { values: ["none", "Basic", "oauth", "token "], allowed: /basic or token/ },
  htpasswd: { values: [" ", "a\0b"], allowed: /a file path/ },
  policy: { values: ["  "], allowed: /a file path/ },
  "token-key": { values: [" "], allowed: /a file path/ },
  "token-public-keys": { values: [" "], allowed: /a file path/ },
  "tls-cert": { values: [" "], allowed: /a file path/ },
  "tls-key": { values: [" "], allowed: /a file path/ },
  "token-ttl": { values: ["0", "500ms", "2h", "x"], allowed: /a duration from 1s to 1h/ },
  "token-service": {
    values: ["", 'a"b', "a b", "a\\b"],
    allowed: /printable characters without quotes/,
  },
  "token-issuer": { values: ["", " "], allowed: /a non-empty name/ },
  "token-realm": {
    values: ["ftp://x", "token", "https://a b", 'https://x"y'],
    allowed: /an http\(s\) URL/,
  },
  "insecure-no-auth": { values: ["sure"], allowed: /true or false/ },
};

Deno.test("parseCli() names the option, the value and what is allowed for every bad value", async (t) => {
  for (const option of OPTIONS) {
    const bad = BAD_VALUES[option.flag];
    assert.ok(bad, `no bad values listed for --${option.flag}`);
    for (const value of bad.values) {
      await t.step(`--${option.flag} ${JSON.stringify(value)}`, () => {
        const sources: [string, () => unknown][] = [
          ["env", () => parseCli([], { [envName(option.flag)]: value }, noFiles)],
          [
            "file",
            () =>
              parseCli(
                ["--config", "/c.json"],
                {},
                files({ "/c.json": JSON.stringify({ [option.flag]: value }) }),
              ),
          ],
        ];
        if (option.kind === "string") {
          sources.push(["flag", () => parseCli([`--${option.flag}=${value}`], {}, noFiles)]);
        }
        for (const [source, run] of sources) {
          const error = configError(run);
          assert.ok(error.message.includes(`--${option.flag}`), `${source}: ${error.message}`);
          assert.ok(error.message.includes(`"${value}"`), `${source}: ${error.message}`);
          assert.match(error.message, bad.allowed, source);
        }
      });
    }
  }
});

Deno.test("parseCli() accepts the edges of each range", () => {
  const at = (flag: string, value: string) => parseCli([`--${flag}=${value}`], {}, noFiles).config;
  assert.equal(at("max-manifest-bytes", "1KiB").maxManifestBytes, 1024);
  assert.equal(at("max-manifest-bytes", "64MiB").maxManifestBytes, 64 * 1024 * 1024);
  assert.equal(at("upload-ttl", "1s").uploadTtlMs, 1000);
  assert.equal(at("upload-ttl", "1000ms").uploadTtlMs, 1000);
  assert.equal(at("upload-ttl", "365d").uploadTtlMs, 365 * 86400 * 1000);
  assert.equal(at("max-uploads-per-repo", "1").maxUploadsPerRepo, 1);
  assert.equal(at("max-uploads", "100000").maxUploads, 100000);
  assert.equal(at("tags-page-max", "10000").tagsPageMax, 10000);
  assert.deepEqual(at("listen", "127.0.0.1:65535").listen, { hostname: "127.0.0.1", port: 65535 });
  const onHost = parseCli(["--listen=host.example:65535", "--insecure-no-auth"], {}, noFiles);
  assert.deepEqual(onHost.config.listen, {
    hostname: "host.example",
    port: 65535,
  });
});

Deno.test("parseCli() reads booleans in their usual spellings", () => {
  for (const value of ["1", "true", "TRUE", "yes", "on"]) {
    assert.equal(parseCli([], { BERTH_NO_DELETE: value }, noFiles).config.deleteEnabled, false);
  }
  for (const value of ["0", "false", "No", "off"]) {
    assert.equal(parseCli([], { BERTH_NO_DELETE: value }, noFiles).config.deleteEnabled, true);
  }
});

Deno.test("parseSize() reads plain bytes and SI and binary units", () => {
  assert.equal(parseSize("0"), 0);
  assert.equal(parseSize("1048576"), 1048576);
  assert.equal(parseSize("512b"), 512);
  assert.equal(parseSize("1kb"), 1000);
  assert.equal(parseSize("1KiB"), 1024);
  assert.equal(parseSize("4MiB"), 4 * 1024 ** 2);
  assert.equal(parseSize("4mb"), 4e6);
  assert.equal(parseSize("2GiB"), 2 * 1024 ** 3);
  assert.equal(parseSize("1GB"), 1e9);
  assert.equal(parseSize("1.5KiB"), 1536);
  assert.equal(parseSize(" 4 MiB "), 4 * 1024 ** 2);
});

Deno.test("parseSize() returns null for anything else", () => {
  for (const value of ["", "MiB", "-1", "1TiB", "1 2", "4M", "1e3", "0x10", "9".repeat(30)]) {
    assert.equal(parseSize(value), null, value);
  }
});

Deno.test("parseDuration() reads ms, s, m, h and d", () => {
  assert.equal(parseDuration("250ms"), 250);
  assert.equal(parseDuration("90s"), 90_000);
  assert.equal(parseDuration("15m"), 15 * 60_000);
  assert.equal(parseDuration("24h"), 24 * 3600_000);
  assert.equal(parseDuration("7d"), 7 * 86400_000);
  assert.equal(parseDuration("1.5h"), 5400_000);
  assert.equal(parseDuration(" 10s "), 10_000);
});

Deno.test("parseDuration() returns null for anything else", () => {
  for (const value of ["", "10", "s", "1w", "1 s", "-1s", "1S", "1e3s", "9".repeat(30) + "d"]) {
    assert.equal(parseDuration(value), null, value);
  }
});

Deno.test("envName() turns a flag into its BERTH_ variable", () => {
  assert.equal(envName("max-uploads-per-repo"), "BERTH_MAX_UPLOADS_PER_REPO");
  assert.equal(envName("listen"), "BERTH_LISTEN");
});

Deno.test("helpText() lists every option with its env variable and default", () => {
  const help = helpText();
  const flags = OPTIONS.map((o) => o.flag);
  // Every Config field has an option (guards against a field without a flag).
  assert.deepEqual(flags.sort(), [
    "auth",
    "blobs",
    "body-timeout",
    "data",
    "deploy",
    "gc-grace",
    "gc-interval",
    "htpasswd",
    "idle-timeout",
    "insecure-no-auth",
    "kv",
    "kv-max-blob-bytes",
    "listen",
    "log-level",
    "max-connections",
    "max-manifest-bytes",
    "max-uploads",
    "max-uploads-per-repo",
    "metrics",
    "no-auto-mount",
    "no-delete",
    "policy",
    "s3-access-key-id",
    "s3-addressing",
    "s3-endpoint",
    "s3-redirect",
    "s3-region",
    "s3-secret-access-key",
    "shutdown-timeout",
    "tags-page-max",
    "tls-cert",
    "tls-key",
    "token-issuer",
    "token-key",
    "token-public-keys",
    "token-realm",
    "token-service",
    "token-ttl",
    "untagged-ttl",
    "upload-ttl",
  ]);
  for (const option of OPTIONS) {
    assert.match(help, new RegExp(`--${option.flag}\\b`), option.flag);
    assert.ok(help.includes(envName(option.flag)), envName(option.flag));
    if (option.default) assert.ok(help.includes(`default ${option.default}`), option.flag);
  }
  assert.ok(help.includes("--config"));
  assert.ok(help.includes("BERTH_CONFIG"));
  assert.ok(help.includes("--help"));
  assert.ok(help.includes("fsck"));
});

Deno.test("parseCli() says when a bad value came from the environment or the config file", () => {
  try {
    parseCli([], { BERTH_UPLOAD_TTL: "soon" }, noFiles);
    assert.fail("expected a ConfigError");
  } catch (error) {
    assert.match(
      (error as Error).message,
      /"soon" for --upload-ttl.*\(from environment BERTH_UPLOAD_TTL\)/,
    );
  }
  try {
    parseCli(["--config", "/c.json"], {}, files({ "/c.json": '{"max-uploads": 0}' }));
    assert.fail("expected a ConfigError");
  } catch (error) {
    assert.match((error as Error).message, /--max-uploads.*\(from --config "\/c\.json"\)/);
  }
});

Deno.test("parseCli() takes --blobs s3://BUCKET[/PREFIX] and the --s3-* options", () => {
  const { config } = parseCli(
    ["--blobs", "s3://my-bucket/berth/one", "--s3-endpoint", "http://127.0.0.1:9000/"],
    { BERTH_S3_REGION: "eu-west-1", BERTH_S3_REDIRECT: "5m", BERTH_S3_ADDRESSING: "virtual" },
    noFiles,
  );
  assert.equal(config.blobs, "s3://my-bucket/berth/one");
  assert.equal(config.s3Endpoint, "http://127.0.0.1:9000");
  assert.equal(config.s3Region, "eu-west-1");
  assert.equal(config.s3Addressing, "virtual");
  assert.equal(config.s3RedirectMs, 300_000);
});

Deno.test("parseCli() takes --blobs as a directory or file:DIR, and refuses other schemes", () => {
  assert.equal(parseCli(["--blobs", "/srv/blobs"], {}, noFiles).config.blobs, "/srv/blobs");
  assert.equal(parseCli(["--blobs", "file:/srv/b"], {}, noFiles).config.blobs, "file:/srv/b");
  assert.equal(parseCli([], { BERTH_BLOBS: "file:///b" }, noFiles).config.blobs, "file:///b");
  for (const bad of ["s3x://bucket", "ftp://host/x", "file:"]) {
    const error = configError(() => parseCli(["--blobs", bad], {}, noFiles));
    assert.match(error.message, /--blobs/);
  }
});

Deno.test("parseCli() refuses to serve a non-loopback address anonymously unless told to", () => {
  for (
    const listen of [
      "0.0.0.0:5000",
      "[::]:5000",
      "10.1.2.3:80",
      "registry.example:443",
      "127.0.0.1.1:5000",
      "127.0.0.1.nip.io:5000",
      "127.0.0.256:5000",
      "localhost.:5000",
    ]
  ) {
    const error = configError(() => parseCli(["--listen", listen], {}, noFiles));
    assert.match(error.message, /without authentication.*--htpasswd.*--insecure-no-auth/);
  }
  for (const listen of ["127.0.0.1:5000", "127.8.9.10:1", "[::1]:5000", "localhost:5000"]) {
    assert.equal(parseCli(["--listen", listen], {}, noFiles).config.auth, "none");
  }
  const open = parseCli(["--listen", "0.0.0.0:5000", "--insecure-no-auth"], {}, noFiles);
  assert.equal(open.config.insecureNoAuth, true);
  const users = parseCli(["--listen", "0.0.0.0:5000", "--htpasswd", "/h"], {}, noFiles);
  assert.equal(users.config.auth, "basic");
});

Deno.test("parseCli() refuses authentication settings that cannot work together", () => {
  const cases: [string[], RegExp][] = [
    [["--auth", "basic"], /--auth basic needs --htpasswd/],
    [["--auth", "token"], /--auth token needs --htpasswd/],
    [["--auth", "none"], /--auth.*basic or token/],
    [["--token-public-keys", "/k.pem", "--htpasswd", "/h"], /needs --auth token/],
    [["--auth", "token", "--token-public-keys", "/k.pem"], /needs --token-realm/],
    [["--tls-cert", "/c.pem"], /give both or neither/],
    [["--tls-key", "/k.pem"], /give both or neither/],
    [["--token-realm", "ftp://x"], /--token-realm/],
    [["--token-service", 'a"b'], /--token-service/],
    [["--token-ttl", "2h"], /--token-ttl/],
  ];
  for (const [args, message] of cases) {
    assert.match(configError(() => parseCli(args, {}, noFiles)).message, message);
  }
  const external = parseCli(
    ["--auth", "token", "--token-public-keys", "/k.pem", "--token-realm", "https://auth.example/t"],
    {},
    noFiles,
  ).config;
  assert.equal(external.auth, "token");
  assert.equal(external.tokenRealm, "https://auth.example/t");
  const own = parseCli(["--auth", "token", "--htpasswd", "/h"], {}, noFiles).config;
  assert.equal(own.auth, "token");
});

Deno.test("parseCli() reads the garbage collection options and the gc command's flags", () => {
  const cli = parseCli(
    ["gc", "--gc-interval", "0", "--untagged-ttl", "0", "--grace", "0", "--dry-run", "--json"],
    {},
    noFiles,
  );
  assert.equal(cli.command, "gc");
  assert.equal(cli.config.gcIntervalMs, 0);
  assert.equal(cli.config.gcGraceMs, 0);
  assert.equal(cli.config.untaggedTtlMs, 0);
  assert.equal(cli.dryRun, true);
  assert.equal(cli.json, true);
  assert.equal(cli.full, false);
  assert.equal(parseCli(["gc", "--full"], {}, noFiles).full, true);
  assert.equal(parseCli(["--untagged-ttl", "7d"], {}, noFiles).config.untaggedTtlMs, 7 * 86400_000);
  assert.equal(parseCli(["du"], {}, noFiles).command, "du");
});

Deno.test("parseCli() reads retention policies from the config file's retention key", () => {
  const retention = [{
    repositories: "ci/**",
    "keep-last": 3,
    keep: ["v*", "latest"],
    "older-than": "30d",
    untagged: "1d",
  }];
  const cli = parseCli(
    ["--config", "/c.json"],
    {},
    files({ "/c.json": JSON.stringify({ retention }) }),
  );
  assert.deepEqual(cli.config.retention, [{
    repositories: "ci/**",
    keepLast: 3,
    keep: ["v*", "latest"],
    olderThanMs: 30 * 86400_000,
    untaggedMs: 86400_000,
  }]);
  const bad = (value: unknown) =>
    configError(() =>
      parseCli(
        ["--config", "/c.json"],
        {},
        files({ "/c.json": JSON.stringify({ retention: value }) }),
      )
    );
  assert.match(bad({}).message, /retention: expected an array/);
  assert.match(bad([{ repositories: "a", "keep-last": -1 }]).message, /keep-last/);
  assert.match(bad([{ repositories: "a", "older-than": "soon" }]).message, /older-than/);
  assert.match(bad([{ repositories: "a", colour: "red" }]).message, /unknown key "colour"/);
  assert.match(bad([{ "keep-last": 1 }]).message, /repositories/);
});

Deno.test("parseCli() reads --metrics on|off from flags and BERTH_METRICS, and refuses other values", () => {
  assert.equal(parseCli(["serve", "--metrics", "off"], {}, noFiles).config.metrics, false);
  assert.equal(parseCli([], { BERTH_METRICS: "off" }, noFiles).config.metrics, false);
  assert.equal(parseCli([], { BERTH_METRICS: "on" }, noFiles).config.metrics, true);
  assert.match(
    configError(() => parseCli(["serve", "--metrics", "maybe"], {}, noFiles)).message,
    /Invalid value "maybe" for --metrics: expected on or off/,
  );
});

Deno.test("parseCli() accepts --blobs kv and kv:LOCATION, and bounds --kv-max-blob-bytes", () => {
  for (const blobs of ["kv", "kv:/srv/blobs.kv", "kv::memory:", "kv:https://kv.example/x"]) {
    assert.equal(parseCli(["--blobs", blobs], {}, noFiles).config.blobs, blobs);
  }
  for (const blobs of ["kv:", "kvx:/a", "kv:ftp://x/y"]) {
    configError(() => parseCli(["--blobs", blobs], {}, noFiles));
  }
  assert.equal(
    parseCli([], { BERTH_KV_MAX_BLOB_BYTES: "512MiB" }, noFiles).config.kvMaxBlobBytes,
    512 * 1024 ** 2,
  );
  for (const size of ["1KiB", "2TiB", "lots"]) {
    configError(() => parseCli(["--kv-max-blob-bytes", size], {}, noFiles));
  }
});

Deno.test("parseCli() turns deploy mode on by itself on Deno Deploy, serving on PORT", () => {
  const users = ["--htpasswd", "users", "--blobs", "kv"];
  const on = parseCli(users, { DENO_DEPLOYMENT_ID: "abc", PORT: "8080" }, noFiles).config;
  assert.equal(on.deploy, true);
  assert.equal(on.listenGiven, false);
  assert.deepEqual(on.listen, { hostname: "0.0.0.0", port: 8080 });
  assert.equal(parseCli(users, { BERTH_DEPLOY: "1" }, noFiles).config.listen.port, 8000);
  assert.equal(parseCli(users, { DENO_DEPLOY: "true" }, noFiles).config.deploy, true);
  // BERTH_DEPLOY=0 keeps it off even there; --listen applies in deploy mode.
  assert.equal(
    parseCli(users, { DENO_DEPLOYMENT_ID: "abc", BERTH_DEPLOY: "0" }, noFiles).config.deploy,
    false,
  );
  const listen = parseCli([...users, "--deploy", "--listen", "127.0.0.1:0"], {}, noFiles).config;
  assert.deepEqual([listen.listenGiven, listen.listen.port], [true, 0]);
  // Anonymous on the platform's address is refused as anywhere public.
  configError(() => parseCli(["--deploy", "--blobs", "kv"], {}, noFiles));
  assert.match(
    configError(() => parseCli(["--deploy", "--htpasswd", "users"], {}, noFiles)).message,
    /--deploy writes nothing to the local disk.*--blobs kv/,
  );
});
