/**
 * Typed configuration: flags > environment (`BERTH_*`) > config file (JSON) >
 * defaults. One table, {@linkcode OPTIONS}, drives parsing, validation,
 * `--help` and the README's configuration table.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseRetention, type RetentionPolicy } from "./gc/retention.ts";
import { parseS3Location } from "./storage/s3/settings.ts";

/** Everything Berth can be told. */
export interface Config {
  listen: { hostname: string; port: number };
  data: string;
  /** KV location: a file path, a URL (KV Connect) or `:memory:`; "" means `<data>/meta.kv`. */
  kv: string;
  /**
   * Where blob bytes live: `file:PATH` (a directory), `s3://BUCKET[/PREFIX]`, `kv` (chunks in
   * the metadata KV) or `kv:LOCATION` (a KV of their own); "" means the filesystem store in `<data>`.
   */
  blobs: string;
  /** S3 service URL; "" means AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS's for the region. */
  s3Endpoint: string;
  /** S3 region; "" means AWS_REGION, AWS_DEFAULT_REGION, else us-east-1. */
  s3Region: string;
  /** S3 URL style; auto is path-style with a custom endpoint, else virtual-host. */
  s3Addressing: "auto" | "path" | "virtual";
  /** S3 credentials; "" means AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. */
  s3AccessKeyId: string;
  s3SecretAccessKey: string;
  /** Blob GETs answer 307 to a presigned S3 URL valid this long; 0 serves the bytes. */
  s3RedirectMs: number;
  /** The largest blob the KV blob store keeps (larger: 413). */
  kvMaxBlobBytes: number;
  /**
   * Deno Deploy mode: `Deno.serve` directly, nothing written to the local disk, KV from
   * `Deno.openKv()` unless `--kv` says otherwise, periodic work through `Deno.cron`.
   */
  deploy: boolean;
  /** Whether `--listen` was given (flag, environment or file); in deploy mode it then applies. */
  listenGiven: boolean;
  maxManifestBytes: number;
  uploadTtlMs: number;
  /** How often the server collects garbage; 0: never (run `berth gc`). */
  gcIntervalMs: number;
  /** Links younger than this are kept (a layer pushed before its manifest); 0: none. */
  gcGraceMs: number;
  /** Untagged manifests nothing holds are collected after this long; null keeps them. */
  untaggedTtlMs: number | null;
  /** Retention policies, from the config file's `retention` key. */
  retention: RetentionPolicy[];
  deleteEnabled: boolean;
  autoMount: boolean;
  maxUploadsPerRepo: number;
  maxUploads: number;
  tagsPageMax: number;
  bodyTimeoutMs: number;
  /** 0 serves directly with Deno.serve (no connection guard). */
  idleTimeoutMs: number;
  maxConnections: number;
  shutdownTimeoutMs: number;
  logLevel: LogLevel;
  /** Whether `/metrics` is served (Prometheus text; signed-in users only when authentication is on). */
  metrics: boolean;
  /** How clients authenticate: none (anonymous, loopback only unless allowed), basic or token. */
  auth: AuthMode;
  /** Apache htpasswd file of bcrypt users; "" for none. */
  htpasswd: string;
  /** JSON policy file (who may pull, push, delete where); "" lets every user do everything. */
  policy: string;
  /** PEM private key that signs tokens; "" means `<data>/token-key.pem`, generated once. */
  tokenKey: string;
  tokenTtlMs: number;
  /** The `service` of the token flow, and the audience of tokens. */
  tokenService: string;
  /** The issuer of tokens: Berth's own, or the external issuer's to accept. */
  tokenIssuer: string;
  /** The token realm advertised; "" means Berth's own `/token` endpoint on the request's host. */
  tokenRealm: string;
  /** PEM public keys or a JWKS file of an external issuer; "" means Berth issues its own tokens. */
  tokenPublicKeys: string;
  /** Serve anonymously (anyone may push and delete) on a non-loopback address. */
  insecureNoAuth: boolean;
  /** PEM certificate chain and private key for HTTPS; both or neither. */
  tlsCert: string;
  tlsKey: string;
}

export type AuthMode = "none" | "basic" | "token";

export type LogLevel = "debug" | "info" | "warn" | "error" | "off";

/** Raised for a bad option value; the message names the option, the value and what is allowed. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

type Kind = "string" | "boolean";

interface OptionSpec {
  flag: string;
  kind: Kind;
  default: string;
  help: string;
  allowed: string;
  apply(config: Config, value: string): void;
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
};
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 };

/** Whether `value` is a KV location `--kv` accepts (after `kv:` in `--blobs`). */
function validKvLocation(value: string): boolean {
  if (value.trim() === "" || value.includes("\0")) return false;
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(value)?.[1];
  return scheme === undefined || scheme === "http" || scheme === "https";
}

/** Parses a byte size such as `4MiB`, `512kb` or `1048576`. */
export function parseSize(value: string): number | null {
  const match = /^([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)$/.exec(value.trim());
  const unit = SIZE_UNITS[match?.[2]?.toLowerCase() ?? "?"];
  if (!match || unit === undefined) return null;
  const bytes = Math.round(Number(match[1]) * unit);
  return Number.isSafeInteger(bytes) ? bytes : null;
}

/** Parses a duration such as `90s`, `15m`, `24h` or `7d`. */
export function parseDuration(value: string): number | null {
  const match = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)$/.exec(value.trim());
  if (!match) return null;
  const ms = Math.round(Number(match[1]) * DURATION_UNITS[match[2]!]!);
  return Number.isSafeInteger(ms) ? ms : null;
}

function bad(flag: string, value: string, allowed: string): ConfigError {
  return new ConfigError(`Invalid value "${value}" for --${flag}: expected ${allowed}`);
}

function bool(flag: string, value: string): boolean {
  if (/^(1|true|yes|on)$/i.test(value)) return true;
  if (/^(0|false|no|off)$/i.test(value)) return false;
  throw bad(flag, value, "true or false");
}

function int(flag: string, value: string, min: number, max: number): number {
  const n = /^[0-9]+$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw bad(flag, value, `a whole number from ${min} to ${max}`);
  }
  return n;
}

type DurationField =
  | "uploadTtlMs"
  | "gcIntervalMs"
  | "gcGraceMs"
  | "bodyTimeoutMs"
  | "idleTimeoutMs"
  | "shutdownTimeoutMs"
  | "tokenTtlMs"
  | "s3RedirectMs";
type PathField = "htpasswd" | "policy" | "tokenKey" | "tokenPublicKeys" | "tlsCert" | "tlsKey";
type IntField = "maxUploadsPerRepo" | "maxUploads" | "tagsPageMax" | "maxConnections";

/** An option holding a duration from 1s to `max` (or exactly `0` when `zeroTurnsOff`). */
function durationOption(
  flag: string,
  field: DurationField,
  spec: { default: string; help: string; max: string; examples?: string; zeroTurnsOff?: boolean },
): OptionSpec {
  const max = parseDuration(spec.max)!;
  const range = `a duration from 1s to ${spec.max}, such as ${spec.examples ?? "30s or 5m"}`;
  const allowed = spec.zeroTurnsOff ? `0, or ${range}` : range;
  return {
    flag,
    kind: "string",
    default: spec.default,
    help: spec.help,
    allowed,
    apply(config, value) {
      if (spec.zeroTurnsOff && value.trim() === "0") {
        config[field] = 0;
        return;
      }
      const ms = parseDuration(value);
      if (ms === null || ms < 1000 || ms > max) throw bad(flag, value, allowed);
      config[field] = ms;
    },
  };
}

/** An option holding a whole number from 1 to `max`. */
function intOption(
  flag: string,
  field: IntField,
  spec: { default: string; help: string; max: number },
): OptionSpec {
  return {
    flag,
    kind: "string",
    default: spec.default,
    help: spec.help,
    allowed: `a whole number from 1 to ${spec.max}`,
    apply(config, value) {
      config[field] = int(flag, value, 1, spec.max);
    },
  };
}

/** An option holding a file path ("" for none). */
function pathOption(flag: string, field: PathField, help: string): OptionSpec {
  return {
    flag,
    kind: "string",
    default: "",
    help,
    allowed: "a file path",
    apply(config, value) {
      if ((value !== "" && value.trim() === "") || value.includes("\0")) {
        throw bad(flag, value, this.allowed);
      }
      config[field] = value;
    },
  };
}

/** Every option, in `--help` order. */
export const OPTIONS: OptionSpec[] = [
  {
    flag: "listen",
    kind: "string",
    default: "127.0.0.1:5000",
    help: "Address to listen on",
    allowed: "HOST:PORT with a port from 0 to 65535 ([::1]:PORT for IPv6)",
    apply(config, value) {
      const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/.exec(value);
      const port = Number(match?.[2]);
      if (!match || port > 65535) throw bad("listen", value, this.allowed);
      config.listen = { hostname: match[1]!.replace(/^\[|\]$/g, ""), port };
    },
  },
  {
    flag: "data",
    kind: "string",
    default: "./data",
    help: "Data directory: blobs/, uploads/, tmp/ and (unless --kv says otherwise) meta.kv",
    allowed: "a directory path",
    apply(config, value) {
      if (value.trim() === "") throw bad("data", value, this.allowed);
      config.data = value;
    },
  },
  {
    flag: "kv",
    kind: "string",
    default: "",
    help:
      "Where metadata lives: a file path, an http(s) KV Connect URL, or :memory: (default <data>/meta.kv)",
    allowed: "a path, an http(s) URL or :memory:",
    apply(config, value) {
      // "" (the default) means <data>/meta.kv; Deno KV knows only lowercase http(s) URLs.
      const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(value)?.[1];
      if (scheme !== undefined && scheme !== "http" && scheme !== "https") {
        throw bad("kv", value, this.allowed);
      }
      config.kv = value;
    },
  },
  {
    flag: "blobs",
    kind: "string",
    default: "",
    help:
      "Where blob bytes live: a directory, file:DIR, s3://BUCKET[/PREFIX], or kv (chunks in the metadata KV; kv:PATH or kv:URL for a KV of their own) (default: the filesystem store in <data>)",
    allowed: "a directory path, file:DIR, s3://BUCKET[/PREFIX], kv or kv:LOCATION",
    apply(config, value) {
      // Each backend's scheme is checked here and opened in src/storage/open.ts.
      const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(value)?.[1];
      const valid = scheme === undefined ||
        (scheme === "file" && value.trim() !== "file:") ||
        (scheme === "s3" && parseS3Location(value) !== null) ||
        value === "kv" || (scheme === "kv" && validKvLocation(value.slice(3)));
      if (!valid) throw bad("blobs", value, this.allowed);
      config.blobs = value;
    },
  },
  {
    flag: "s3-endpoint",
    kind: "string",
    default: "",
    help:
      "S3 service URL for --blobs s3://… (default AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS's for the region)",
    allowed: "an http(s) URL",
    apply(config, value) {
      if (value !== "" && !/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/.test(value)) {
        throw bad("s3-endpoint", value, this.allowed);
      }
      config.s3Endpoint = value.replace(/\/+$/, "");
    },
  },
  {
    flag: "s3-region",
    kind: "string",
    default: "",
    help:
      "S3 region, signed into every request (default AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)",
    allowed: "a region name such as eu-west-1",
    apply(config, value) {
      if (value !== "" && !/^[a-z0-9-]{1,64}$/.test(value)) {
        throw bad("s3-region", value, this.allowed);
      }
      config.s3Region = value;
    },
  },
  {
    flag: "s3-addressing",
    kind: "string",
    default: "auto",
    help:
      "S3 URL style: path (endpoint/bucket/key) or virtual (bucket.endpoint/key); auto is path with a custom endpoint",
    allowed: "auto, path or virtual",
    apply(config, value) {
      if (!["auto", "path", "virtual"].includes(value)) {
        throw bad("s3-addressing", value, this.allowed);
      }
      config.s3Addressing = value as Config["s3Addressing"];
    },
  },
  {
    flag: "s3-access-key-id",
    kind: "string",
    default: "",
    help: "S3 access key id (default AWS_ACCESS_KEY_ID)",
    allowed: "an access key id",
    apply(config, value) {
      config.s3AccessKeyId = value;
    },
  },
  {
    flag: "s3-secret-access-key",
    kind: "string",
    default: "",
    help: "S3 secret key (default AWS_SECRET_ACCESS_KEY; prefer the environment: flags show in ps)",
    allowed: "a secret key",
    apply(config, value) {
      // Never echoed back: S3 says at start-up whether it works.
      config.s3SecretAccessKey = value;
    },
  },
  durationOption("s3-redirect", "s3RedirectMs", {
    default: "0",
    help:
      "With S3: blob GETs answer 307 to a presigned URL valid this long (0: Berth serves the bytes)",
    max: "7d",
    examples: "1m or 15m",
    zeroTurnsOff: true,
  }),
  {
    flag: "kv-max-blob-bytes",
    kind: "string",
    default: "1GiB",
    help: "Largest blob the KV blob store (--blobs kv) keeps; a larger upload is refused with 413",
    allowed: "a size from 1MiB to 1TiB, such as 512MiB or 2GiB",
    apply(config, value) {
      const bytes = parseSize(value);
      if (bytes === null || bytes < 1024 ** 2 || bytes > 1024 ** 4) {
        throw bad("kv-max-blob-bytes", value, this.allowed);
      }
      config.kvMaxBlobBytes = bytes;
    },
  },
  {
    flag: "deploy",
    kind: "boolean",
    default: "false",
    help:
      "Run as on Deno Deploy (on by itself there): Deno.serve, nothing on the local disk, Deno.openKv(), Deno.cron; needs --blobs kv or an object store",
    allowed: "true or false",
    apply(config, value) {
      config.deploy = bool("deploy", value);
    },
  },
  {
    flag: "max-manifest-bytes",
    kind: "string",
    default: "4MiB",
    help: "Largest manifest accepted (larger: 413)",
    allowed: "a size from 1KiB to 64MiB, such as 4MiB or 4194304",
    apply(config, value) {
      const bytes = parseSize(value);
      if (bytes === null || bytes < 1024 || bytes > 64 * 1024 ** 2) {
        throw bad("max-manifest-bytes", value, this.allowed);
      }
      config.maxManifestBytes = bytes;
    },
  },
  durationOption("upload-ttl", "uploadTtlMs", {
    default: "24h",
    help: "Upload sessions idle this long expire and their files are removed",
    max: "365d",
    examples: "90s, 15m, 24h or 7d",
  }),
  durationOption("gc-interval", "gcIntervalMs", {
    default: "1h",
    help: "How often the server collects garbage (0: never; run berth gc instead)",
    max: "30d",
    examples: "15m, 1h or 1d",
    zeroTurnsOff: true,
  }),
  durationOption("gc-grace", "gcGraceMs", {
    default: "1h",
    help: "Blobs uploaded or linked this recently are kept even when nothing references them",
    max: "30d",
    examples: "30m, 1h or 1d",
    zeroTurnsOff: true,
  }),
  {
    flag: "untagged-ttl",
    kind: "string",
    default: "kept",
    help: "Untagged manifests nothing holds are collected after this long (kept: never)",
    allowed: "kept, 0, or a duration such as 1h, 7d or 30d",
    apply(config, value) {
      const ms = value.trim() === "0" ? 0 : parseDuration(value);
      if (value.trim() === "kept") config.untaggedTtlMs = null;
      else if (ms === null) throw bad("untagged-ttl", value, this.allowed);
      else config.untaggedTtlMs = ms;
    },
  },
  {
    flag: "no-delete",
    kind: "boolean",
    default: "false",
    help: "Refuse DELETE of manifests, tags and blobs with 405 UNSUPPORTED",
    allowed: "true or false",
    apply(config, value) {
      config.deleteEnabled = !bool("no-delete", value);
    },
  },
  {
    flag: "no-auto-mount",
    kind: "boolean",
    default: "false",
    help: "Never mount without ?from=: such a POST starts a normal upload session (202)",
    allowed: "true or false",
    apply(config, value) {
      config.autoMount = !bool("no-auto-mount", value);
    },
  },
  intOption("max-uploads-per-repo", "maxUploadsPerRepo", {
    default: "100",
    help: "Open upload sessions allowed per repository (over it: 429 TOOMANYREQUESTS)",
    max: 100000,
  }),
  intOption("max-uploads", "maxUploads", {
    default: "1000",
    help: "Open upload sessions allowed in total (over it: 429 TOOMANYREQUESTS)",
    max: 100000,
  }),
  intOption("tags-page-max", "tagsPageMax", {
    default: "1000",
    help: "Most entries one tags, catalog or referrers page returns (more: Link to the next page)",
    max: 10000,
  }),
  durationOption("body-timeout", "bodyTimeoutMs", {
    default: "60s",
    help:
      "A request body that sends nothing for this long is dropped (408) and nothing of it is kept",
    max: "1d",
  }),
  durationOption("idle-timeout", "idleTimeoutMs", {
    default: "120s",
    help:
      "Close a connection with no request in flight and no bytes for this long; 0 turns the connection guard off",
    max: "1d",
    zeroTurnsOff: true,
  }),
  intOption("max-connections", "maxConnections", {
    default: "1000",
    help:
      "Open client connections allowed; more are answered 503 and closed (needs the guard: --idle-timeout not 0)",
    max: 1_000_000,
  }),
  durationOption("shutdown-timeout", "shutdownTimeoutMs", {
    default: "30s",
    help:
      "On SIGINT/SIGTERM, how long requests in flight may take to finish before they are cut off",
    max: "1h",
  }),
  {
    flag: "auth",
    kind: "string",
    default: "",
    help:
      "How clients authenticate: basic (HTTP Basic against --htpasswd) or token (the Docker token flow); default basic when --htpasswd is given, else none",
    allowed: "basic or token",
    apply(config, value) {
      // "none" is what no option means (the default), not a value one can ask for.
      if (!["", "basic", "token"].includes(value)) throw bad("auth", value, this.allowed);
      config.auth = (value || "none") as AuthMode;
    },
  },
  pathOption(
    "htpasswd",
    "htpasswd",
    "Apache htpasswd file of users with bcrypt passwords (edits apply without a restart)",
  ),
  pathOption(
    "policy",
    "policy",
    "JSON policy: who may pull, push and delete which repositories (default: every user everything)",
  ),
  pathOption(
    "token-key",
    "tokenKey",
    "PEM private key (EC P-256 or Ed25519) that signs tokens (default <data>/token-key.pem, made once)",
  ),
  durationOption("token-ttl", "tokenTtlMs", {
    default: "5m",
    help: "How long an issued token is valid",
    max: "1h",
    examples: "60s or 5m",
  }),
  {
    flag: "token-service",
    kind: "string",
    default: "berth",
    help: "The service name of the token flow, and the audience of tokens",
    allowed: "a name of printable characters without quotes or backslashes",
    apply(config, value) {
      if (!/^[\x21\x23-\x5b\x5d-\x7e]{1,200}$/.test(value)) {
        throw bad("token-service", value, this.allowed);
      }
      config.tokenService = value;
    },
  },
  {
    flag: "token-issuer",
    kind: "string",
    default: "berth",
    help:
      "Issuer of tokens: the one Berth signs as, or the external issuer whose tokens it accepts",
    allowed: "a non-empty name",
    apply(config, value) {
      if (value.trim() === "" || value.length > 1000) {
        throw bad("token-issuer", value, this.allowed);
      }
      config.tokenIssuer = value;
    },
  },
  {
    flag: "token-realm",
    kind: "string",
    default: "",
    help:
      "Token realm URL to advertise (default: Berth's own /token on the host the client asked for)",
    allowed: "an http(s) URL",
    apply(config, value) {
      if (value !== "" && !/^https?:\/\/[^\s"\\]+$/.test(value)) {
        throw bad("token-realm", value, this.allowed);
      }
      config.tokenRealm = value;
    },
  },
  pathOption(
    "token-public-keys",
    "tokenPublicKeys",
    "Accept tokens of an external issuer: its PEM public keys or JWKS file (several keys for rotation)",
  ),
  {
    flag: "insecure-no-auth",
    kind: "boolean",
    default: "false",
    help:
      "Serve without authentication on a non-loopback address: ANYONE who reaches it may push, overwrite and delete",
    allowed: "true or false",
    apply(config, value) {
      config.insecureNoAuth = bool("insecure-no-auth", value);
    },
  },
  pathOption("tls-cert", "tlsCert", "PEM certificate chain: serve HTTPS (HTTP/2 through ALPN)"),
  pathOption("tls-key", "tlsKey", "PEM private key of --tls-cert"),
  {
    flag: "log-level",
    kind: "string",
    default: "info",
    help: "debug, info (one JSON line per request), warn, error or off",
    allowed: "debug, info, warn, error or off",
    apply(config, value) {
      if (!["debug", "info", "warn", "error", "off"].includes(value)) {
        throw bad("log-level", value, this.allowed);
      }
      config.logLevel = value as LogLevel;
    },
  },
  {
    flag: "metrics",
    kind: "string",
    default: "on",
    help:
      "Serve Prometheus metrics at /metrics (with authentication on: for users the policy lets pull _metrics)",
    allowed: "on or off",
    apply(config, value) {
      if (!/^(on|off|true|false)$/i.test(value)) throw bad("metrics", value, this.allowed);
      config.metrics = bool("metrics", value);
    },
  },
];

/** The environment variable of an option: `--max-uploads` is `BERTH_MAX_UPLOADS`. */
export function envName(flag: string): string {
  return `BERTH_${flag.toUpperCase().replaceAll("-", "_")}`;
}

/** Defaults, as a config. */
export function defaultConfig(): Config {
  const config = { retention: [] as RetentionPolicy[], listenGiven: false } as Config;
  for (const option of OPTIONS) option.apply(config, option.default);
  return config;
}

/** `--help` text. */
export function helpText(): string {
  const lines = [
    "Berth: an OCI Distribution v1.1 container registry",
    "",
    "Usage:",
    "  berth serve [options]     run the registry",
    "  berth fsck [--data DIR] [--kv KV] [--repair]",
    "                            check a stopped registry's data; --repair removes what cannot be served",
    "  berth gc [--data DIR] [--grace DURATION] [--dry-run] [--json] [--full]",
    "                            collect garbage now (beside a running server, too)",
    "  berth du [--data DIR] [--json]",
    "                            bytes per repository, in total, and reclaimable",
    "  berth user add|remove|list NAME --htpasswd FILE",
    "                            manage the users of an htpasswd file (berth user --help)",
    "",
    "Options (each also as an environment variable, or a key of the JSON file given by --config):",
  ];
  const column = (left: string) =>
    left.padEnd(32) + (left.length >= 32 ? "\n" + " ".repeat(32) : "");
  for (const option of OPTIONS) {
    const value = option.kind === "boolean" ? "" : " VALUE";
    lines.push(column(`  --${option.flag}${value}`) + option.help);
    lines.push(" ".repeat(32) + `allowed: ${option.allowed}`);
    lines.push(
      " ".repeat(32) + `default ${option.default || "(none)"}; env ${envName(option.flag)}`,
    );
  }
  lines.push(
    column("  --config FILE") + "JSON file of options, keyed by flag name (env BERTH_CONFIG)",
  );
  lines.push(column("  --repair") + "with fsck: remove or fix what cannot be served");
  lines.push(column("  --grace DURATION") + "with gc: the grace period of this run (--gc-grace)");
  lines.push(column("  --dry-run") + "with gc: list what would be removed, remove nothing");
  lines.push(column("  --json") + "with gc and du: one JSON summary on stdout");
  lines.push(
    column("  --full") +
      "with gc: also walk the blob store for bytes nothing holds (left by a crashed push)",
  );
  lines.push(column("  --help") + "Show this text");
  return lines.join("\n");
}

/** Whether `hostname` can only be reached from this machine. */
export function isLoopback(hostname: string): boolean {
  // A strict dotted quad: `127.0.0.1.1` would be a name looked up in DNS.
  const octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
  return hostname === "localhost" || hostname === "::1" ||
    new RegExp(`^127(?:\\.${octet}){3}$`).test(hostname);
}

/**
 * Settles the authentication mode (`--htpasswd` alone means basic) and
 * refuses combinations that cannot work, and anonymous serving beyond
 * loopback unless `--insecure-no-auth` asks for it.
 */
export function checkSecurity(config: Config): void {
  if (config.auth === "none" && config.htpasswd !== "") config.auth = "basic";
  const external = config.tokenPublicKeys !== "";
  if (config.auth === "basic" && config.htpasswd === "") {
    throw new ConfigError(
      "--auth basic needs --htpasswd FILE (add users with: berth user add NAME --htpasswd FILE)",
    );
  }
  if (config.auth === "token" && !external && config.htpasswd === "") {
    throw new ConfigError(
      "--auth token needs --htpasswd FILE for Berth to issue tokens, or --token-public-keys FILE and --token-realm URL to accept an external issuer's",
    );
  }
  if (external && config.auth !== "token") {
    throw new ConfigError("--token-public-keys needs --auth token");
  }
  if (external && config.tokenRealm === "") {
    throw new ConfigError("--token-public-keys needs --token-realm URL: where clients get tokens");
  }
  if ((config.tlsCert === "") !== (config.tlsKey === "")) {
    throw new ConfigError("--tls-cert and --tls-key go together: give both or neither");
  }
  if (config.auth === "none" && !config.insecureNoAuth && !isLoopback(config.listen.hostname)) {
    throw new ConfigError(
      `Refusing to serve ${config.listen.hostname} without authentication: anyone could push and delete. ` +
        "Add users (berth user add NAME --htpasswd FILE, then --htpasswd FILE), " +
        "or allow anonymous access on purpose with --insecure-no-auth",
    );
  }
}

/**
 * Deploy mode: on with `--deploy`, and by itself on Deno Deploy (which sets
 * `DENO_DEPLOYMENT_ID` and `DENO_DEPLOY=true`). Without `--listen` it serves where the platform says (`PORT`, else Deno's
 * default, all interfaces), so anonymous access needs `--insecure-no-auth` as anywhere
 * public. The filesystem blob store is refused: nothing is written to the local disk.
 */
export function settleDeploy(config: Config, env: Record<string, string | undefined>): void {
  const platform = (env.DENO_DEPLOYMENT_ID ?? "") !== "" || env.DENO_DEPLOY === "true";
  if (!config.deploy && platform) {
    // The platform's own variable turns it on, unless BERTH_DEPLOY or --deploy says false.
    if (env.BERTH_DEPLOY === undefined) config.deploy = true;
  }
  if (!config.deploy) return;
  if (!config.listenGiven) {
    const port = env.PORT === undefined ? 8000 : int("listen", env.PORT, 0, 65535);
    config.listen = { hostname: "0.0.0.0", port };
  }
  const blobs = config.blobs;
  if (blobs === "" || blobs.startsWith("file:") || !/^[a-zA-Z][a-zA-Z0-9+.-]*:|^kv$/.test(blobs)) {
    throw new ConfigError(
      "--deploy writes nothing to the local disk, so blobs cannot live in a directory: " +
        "give --blobs kv (chunks in Deno KV) or an object store (--blobs s3://…)",
    );
  }
}

/** The result of reading the command line. */
export interface Cli {
  command: string;
  config: Config;
  help: boolean;
  repair: boolean;
  dryRun: boolean;
  json: boolean;
  /** With gc: also walk the blob store for bytes nothing holds (a crashed push's). */
  full: boolean;
}

/**
 * Parses `args` with `env` and the optional JSON config file into a
 * {@linkcode Config}. Throws {@linkcode ConfigError} with a clear message.
 */
export function parseCli(
  args: string[],
  env: Record<string, string | undefined>,
  readFile: (path: string) => string = Deno.readTextFileSync,
): Cli {
  const options: Record<string, { type: Kind }> = {
    config: { type: "string" },
    help: { type: "boolean" },
    repair: { type: "boolean" },
    "dry-run": { type: "boolean" },
    json: { type: "boolean" },
    full: { type: "boolean" },
    grace: { type: "string" },
  };
  for (const option of OPTIONS) options[option.flag] = { type: option.kind };
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new ConfigError(`${(error as Error).message}\nRun with --help to list the options`);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const config = defaultConfig();
  const configPath = (values.config as string | undefined) ?? env.BERTH_CONFIG;
  let file: Record<string, unknown> = {};
  if (configPath) {
    try {
      file = JSON.parse(readFile(configPath));
    } catch (error) {
      throw new ConfigError(`Cannot read --config "${configPath}": ${(error as Error).message}`);
    }
    if (typeof file !== "object" || file === null || Array.isArray(file)) {
      throw new ConfigError(
        `Invalid --config "${configPath}": expected a JSON object keyed by flag name`,
      );
    }
    const known = new Set([...OPTIONS.map((o) => o.flag), "retention"]);
    for (const key of Object.keys(file)) {
      if (!known.has(key)) {
        throw new ConfigError(`Unknown option "${key}" in --config "${configPath}"`);
      }
    }
  }
  if (file.retention !== undefined) {
    try {
      config.retention = parseRetention(file.retention);
    } catch (error) {
      throw new ConfigError(`Invalid --config "${configPath}": ${(error as Error).message}`);
    }
  }
  for (const option of OPTIONS) {
    const fromFlag = values[option.flag];
    const fromEnv = env[envName(option.flag)];
    const fromFile = file[option.flag];
    if (fromFile !== undefined && !["string", "number", "boolean"].includes(typeof fromFile)) {
      throw new ConfigError(
        `Invalid value ${
          JSON.stringify(fromFile)
        } for "${option.flag}" in --config "${configPath}": ` +
          `expected ${option.allowed}`,
      );
    }
    const value = fromFlag !== undefined
      ? String(fromFlag)
      : fromEnv !== undefined
      ? fromEnv
      : fromFile !== undefined
      ? String(fromFile)
      : undefined;
    if (value === undefined) continue;
    if (option.flag === "listen") config.listenGiven = true;
    try {
      option.apply(config, value);
    } catch (error) {
      // Say where a bad value came from when it was not a flag.
      if (!(error instanceof ConfigError) || fromFlag !== undefined) throw error;
      const source = fromEnv !== undefined
        ? `environment ${envName(option.flag)}`
        : `--config "${configPath}"`;
      throw new ConfigError(`${error.message} (from ${source})`);
    }
  }
  if (values.grace !== undefined) {
    // `berth gc --grace D` is --gc-grace for that run.
    OPTIONS.find((o) => o.flag === "gc-grace")!.apply(config, String(values.grace));
  }
  settleDeploy(config, env);
  checkSecurity(config);
  const command = parsed.positionals[0] ?? "serve";
  if (!["serve", "fsck", "gc", "du"].includes(command) || parsed.positionals.length > 1) {
    throw new ConfigError(
      `Unknown command "${parsed.positionals.join(" ")}": expected serve, fsck, gc or du`,
    );
  }
  return {
    command,
    config,
    help: values.help === true,
    repair: values.repair === true,
    dryRun: values["dry-run"] === true,
    json: values.json === true,
    full: values.full === true,
  };
}
