/**
 * A configuration file that applies its edits without a restart: the htpasswd
 * file, the policy file, token keys.
 *
 * {@linkcode WatchedFile.current} reads the file at most once per second, and
 * when its content changed (by SHA-256; these files are small) re-parses it.
 * Content, not the file's times, because an edit within the same millisecond
 * as the last read keeps size and mtime and would go unseen. A new version
 * that cannot be read or parsed is not used: the previous good one stays, and
 * the error is reported once per change through `onError`. Only the first
 * load, at start-up, throws.
 *
 * @module
 */
import { createHash } from "node:crypto";

/** A file that cannot be loaded; its message names the file and, when known, where. */
export class AuthFileError extends Error {
  /**
   * @param kind What the file is, as the user knows it ("htpasswd", "policy").
   * @param path The file's path.
   * @param where Where in the file ("line 3", "rule 2"), or null.
   * @param detail What is wrong.
   */
  constructor(
    readonly kind: string,
    readonly path: string,
    readonly where: string | null,
    readonly detail: string,
  ) {
    super(`Cannot load ${kind} file "${path}"${where ? ` (${where})` : ""}: ${detail}`);
    this.name = "AuthFileError";
  }
}

/** How a {@linkcode WatchedFile} reads and reports. */
export interface WatchedFileOptions<T> {
  /** What the file is, for messages ("htpasswd"). */
  kind: string;
  /** Turns the text into a value; throws (preferably an {@linkcode AuthFileError}) when it cannot. */
  parse(text: string, path: string): T | Promise<T>;
  /** Told, once per change of the file, why a new version was not taken. */
  onError?: (message: string) => void;
  /** The least time between two looks at the file; 1000 ms by default. */
  intervalMs?: number;
  /** The clock, in milliseconds; injectable for tests. */
  now?: () => number;
}

function identity(text: string): string {
  return createHash("sha256").update(text).digest("base64url");
}

/** The last good parsed version of a file, refreshed when the file changes. */
export class WatchedFile<T> {
  #path: string;
  #options: WatchedFileOptions<T>;
  #value: T;
  /** The content hash of the version last read, good or not. */
  #seen: string;
  #lastLook: number;
  #looking: Promise<void> | null = null;

  private constructor(path: string, options: WatchedFileOptions<T>, value: T, seen: string) {
    this.#path = path;
    this.#options = options;
    this.#value = value;
    this.#seen = seen;
    this.#lastLook = this.#now();
  }

  /**
   * Loads the file for the first time.
   * @throws {AuthFileError} when the file cannot be read or parsed.
   */
  static async open<T>(path: string, options: WatchedFileOptions<T>): Promise<WatchedFile<T>> {
    const { seen, value } = await load(path, options);
    return new WatchedFile(path, options, value, seen);
  }

  /** The file's path. */
  get path(): string {
    return this.#path;
  }

  /** The last good version, without looking at the file. */
  get value(): T {
    return this.#value;
  }

  /** The current good version, after looking at the file if a second has passed. Never throws. */
  async current(): Promise<T> {
    if (this.#now() - this.#lastLook >= (this.#options.intervalMs ?? 1000)) {
      // Concurrent callers share one look.
      this.#looking ??= this.#look().finally(() => (this.#looking = null));
    }
    if (this.#looking) await this.#looking;
    return this.#value;
  }

  #now(): number {
    return (this.#options.now ?? Date.now)();
  }

  async #look(): Promise<void> {
    this.#lastLook = this.#now();
    let text: string;
    try {
      text = await Deno.readTextFile(this.#path);
    } catch (error) {
      this.#fail("missing", asAuthFileError(error, this.#options.kind, this.#path));
      return;
    }
    const seen = identity(text);
    if (seen === this.#seen) return;
    try {
      this.#value = await parse(text, this.#path, this.#options);
      this.#seen = seen;
    } catch (error) {
      this.#fail(seen, asAuthFileError(error, this.#options.kind, this.#path));
    }
  }

  #fail(seen: string, error: AuthFileError): void {
    if (seen === this.#seen) return;
    this.#seen = seen;
    this.#options.onError?.(`${error.message}; still using the previous version`);
  }
}

async function load<T>(
  path: string,
  options: WatchedFileOptions<T>,
): Promise<{ seen: string; value: T }> {
  let text;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw asAuthFileError(error, options.kind, path);
  }
  return { seen: identity(text), value: await parse(text, path, options) };
}

async function parse<T>(text: string, path: string, options: WatchedFileOptions<T>): Promise<T> {
  try {
    return await options.parse(text, path);
  } catch (error) {
    throw asAuthFileError(error, options.kind, path);
  }
}

function asAuthFileError(error: unknown, kind: string, path: string): AuthFileError {
  if (error instanceof AuthFileError) return error;
  const detail = error instanceof Deno.errors.NotFound
    ? "no such file"
    : error instanceof Deno.errors.PermissionDenied
    ? "permission denied"
    : (error as Error).message;
  return new AuthFileError(kind, path, null, detail);
}
