/**
 * `berth user`: manage the users of an htpasswd file.
 *
 * ```
 * berth user add NAME --htpasswd FILE [--password-stdin] [--cost N]
 * berth user remove NAME --htpasswd FILE
 * berth user list --htpasswd FILE
 * ```
 *
 * `add` asks for the password twice without echo (or reads one line from
 * standard input with `--password-stdin`), hashes it with bcrypt (cost 10 by
 * default) and adds the user or replaces its hash. The file is written
 * atomically (a temp file in the same directory, fsync, rename), created with
 * mode 0600, or keeping the mode and owner it had. Comments and other lines
 * stay as they were; a file the server would refuse is never written.
 *
 * Exit codes: 0 done, 1 failed (or no such user to remove), 2 usage.
 *
 * @module
 */
import { hash as bcryptHash } from "bcryptjs";
import { basename, dirname } from "node:path";
import { parseArgs } from "node:util";
import { AuthFileError } from "../auth/file_watch.ts";
import { MAX_BCRYPT_PASSWORD_BYTES, parseHtpasswd, userNameProblem } from "../auth/htpasswd.ts";

/** Where the command reads and writes; the process's own by default. */
export interface UserIo {
  stdin: ReadableStream<Uint8Array>;
  /** Whether standard input is a terminal (the password is then asked for). */
  isTerminal: boolean;
  /** Switches the terminal's raw mode (no echo, byte by byte). */
  setRaw(raw: boolean): void;
  stdout(text: string): void;
  stderr(text: string): void;
}

const USAGE = `Usage:
  berth user add NAME --htpasswd FILE [--password-stdin] [--cost N]
  berth user remove NAME --htpasswd FILE
  berth user list --htpasswd FILE

  --password-stdin  read the password from one line of standard input
  --cost N          bcrypt cost, 4 to 15 (default 10; each step doubles the time)`;
const DEFAULT_COST = 10;
const MAX_COST = 15;
const MAX_STDIN_BYTES = 64 * 1024;
/** A valid bcrypt hash, to check the rest of the file before asking for a password. */
const PLACEHOLDER = "$2b$04$" + "a".repeat(53);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A failure reported as one `berth: ` line with an exit code. */
class CommandError extends Error {
  constructor(message: string, readonly code: 1 | 2 = 1) {
    super(message);
  }
}

/** The given io, the process's standard streams for the rest. */
function withDefaults(io: Partial<UserIo>): UserIo {
  return {
    get stdin() {
      return io.stdin ?? Deno.stdin.readable;
    },
    isTerminal: io.isTerminal ?? Deno.stdin.isTerminal(),
    setRaw: io.setRaw ?? ((raw) => Deno.stdin.setRaw(raw)),
    stdout: io.stdout ?? ((text) => writeAll(Deno.stdout, text)),
    stderr: io.stderr ?? ((text) => writeAll(Deno.stderr, text)),
  };
}

function writeAll(to: typeof Deno.stdout, text: string): void {
  const bytes = encoder.encode(text);
  for (let at = 0; at < bytes.length;) at += to.writeSync(bytes.subarray(at));
}

/**
 * Runs `berth user ...`.
 * @param args The arguments after `user`.
 * @returns The exit code.
 */
export async function userCommand(args: string[], io: Partial<UserIo> = {}): Promise<number> {
  const full = withDefaults(io);
  try {
    await run(args, full);
    return 0;
  } catch (error) {
    if (error instanceof CommandError) {
      full.stderr(`berth: ${error.message}\n`);
      if (error.code === 2) full.stderr(`Run "berth user --help" for usage\n`);
      return error.code;
    }
    if (error instanceof AuthFileError) {
      full.stderr(`berth: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

async function run(args: string[], io: UserIo): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: {
        htpasswd: { type: "string" },
        "password-stdin": { type: "boolean" },
        cost: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    throw new CommandError((error as Error).message, 2);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout(`${USAGE}\n`);
    return;
  }
  const [command, ...names] = positionals;
  const path = values.htpasswd;
  if (!command) throw new CommandError("Missing a command: add, remove or list", 2);
  if (!["add", "remove", "list"].includes(command)) {
    throw new CommandError(`Unknown command "${command}"; expected add, remove or list`, 2);
  }
  if (!path) throw new CommandError(`"user ${command}" needs --htpasswd FILE`, 2);
  if (command !== "add" && (values["password-stdin"] || values.cost !== undefined)) {
    throw new CommandError(`--password-stdin and --cost are options of "user add"`, 2);
  }
  if (command === "list") {
    if (names.length > 0) throw new CommandError(`"user list" takes no name`, 2);
    const entries = parseHtpasswd(await readText(path, { missingOk: false }) ?? "", path);
    for (const user of entries.keys()) io.stdout(`${user}\n`);
    return;
  }
  if (names.length !== 1) throw new CommandError(`"user ${command}" takes one user name`, 2);
  const name = names[0]!;
  const problem = userNameProblem(name);
  if (problem) throw new CommandError(`Invalid user name "${name}": it ${problem}`, 2);
  if (command === "remove") {
    const text = await readText(path, { missingOk: false }) ?? "";
    const { text: edited, found } = setUser(text, name, null);
    if (!found) throw new CommandError(`No user "${name}" in "${path}"`);
    parseHtpasswd(edited, path);
    await writeAtomically(path, edited);
    io.stdout(`Removed user "${name}" from ${path}\n`);
    return;
  }
  const cost = parseCost(values.cost);
  // Refuse a file the server would refuse before asking for a password.
  parseHtpasswd(
    setUser(await readText(path, { missingOk: true }) ?? "", name, PLACEHOLDER).text,
    path,
  );
  const password = values["password-stdin"] ? await passwordFromStdin(io) : await askPassword(io);
  const hash = await bcryptHash(password, cost);
  const text = await readText(path, { missingOk: true });
  const { text: edited, found } = setUser(text ?? "", name, hash);
  parseHtpasswd(edited, path);
  await writeAtomically(path, edited);
  io.stdout(`${found ? "Changed the password of" : "Added"} user "${name}" in ${path}\n`);
}

function parseCost(value: string | undefined): number {
  if (value === undefined) return DEFAULT_COST;
  const cost = Number(value);
  if (!/^\d+$/.test(value) || cost < 4 || cost > MAX_COST) {
    throw new CommandError(
      `Invalid --cost "${value}": expected an integer from 4 to ${MAX_COST}`,
      2,
    );
  }
  return cost;
}

function checkPassword(password: string): string {
  if (password === "") throw new CommandError("The password is empty");
  if (encoder.encode(password).length > MAX_BCRYPT_PASSWORD_BYTES) {
    throw new CommandError(
      `The password is longer than ${MAX_BCRYPT_PASSWORD_BYTES} bytes, all bcrypt reads`,
    );
  }
  return password;
}

/** The file's text, or null when it does not exist and `missingOk`. */
async function readText(path: string, { missingOk }: { missingOk: boolean }) {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound && missingOk) return null;
    const detail = error instanceof Deno.errors.NotFound
      ? "no such file"
      : (error as Error).message;
    throw new AuthFileError("htpasswd", path, null, detail);
  }
}

/**
 * The text with `user`'s line set to `hash` (added at the end when absent),
 * or removed when `hash` is null. Other lines are kept as they are; later
 * duplicates of the user are dropped.
 */
function setUser(
  text: string,
  user: string,
  hash: string | null,
): { text: string; found: boolean } {
  const lines = text === "" ? [] : text.replace(/\n$/, "").split("\n");
  const out: string[] = [];
  let done = false;
  for (const line of lines) {
    const trimmed = line.trimStart();
    const isEntry = trimmed !== "" && !trimmed.startsWith("#") &&
      line.slice(0, line.indexOf(":")) === user && line.includes(":");
    if (!isEntry) out.push(line);
    else if (!done && hash !== null) out.push(`${user}:${hash}`);
    done ||= isEntry;
  }
  if (!done && hash !== null) out.push(`${user}:${hash}`);
  return { text: out.length === 0 ? "" : `${out.join("\n")}\n`, found: done };
}

/** Reads bytes from a stream one at a time, across calls. */
class ByteReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunk: Uint8Array = new Uint8Array(0);
  #at = 0;
  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }
  async byte(): Promise<number | null> {
    while (this.#at >= this.#chunk.length) {
      const { value, done } = await this.#reader.read();
      if (done) return null;
      this.#chunk = value;
      this.#at = 0;
    }
    return this.#chunk[this.#at++]!;
  }
  release(): void {
    this.#reader.releaseLock();
  }
}

async function passwordFromStdin(io: UserIo): Promise<string> {
  const reader = new ByteReader(io.stdin);
  const bytes: number[] = [];
  try {
    for (let b = await reader.byte(); b !== null; b = await reader.byte()) {
      if (bytes.length >= MAX_STDIN_BYTES) throw new CommandError("Standard input is too long");
      bytes.push(b);
    }
  } finally {
    reader.release();
  }
  const text = decoder.decode(new Uint8Array(bytes)).replace(/\r?\n$/, "");
  if (text.includes("\n")) {
    throw new CommandError("--password-stdin reads one line, but standard input has more");
  }
  return checkPassword(text);
}

async function askPassword(io: UserIo): Promise<string> {
  if (!io.isTerminal) {
    throw new CommandError(
      "Standard input is not a terminal: pass the password with --password-stdin",
      2,
    );
  }
  const reader = new ByteReader(io.stdin);
  try {
    const password = checkPassword(await readHidden(reader, io, "Password: "));
    if (await readHidden(reader, io, "Password again: ") !== password) {
      throw new CommandError("The passwords do not match");
    }
    return password;
  } finally {
    reader.release();
  }
}

/** Reads one line from the terminal in raw mode, so it is not echoed. */
async function readHidden(reader: ByteReader, io: UserIo, prompt: string): Promise<string> {
  io.stderr(prompt);
  io.setRaw(true);
  const bytes: number[] = [];
  try {
    for (;;) {
      const b = await reader.byte();
      if (b === 0x03) throw new CommandError("Interrupted");
      if (b === null || (b === 0x04 && bytes.length === 0)) {
        throw new CommandError("No password given");
      }
      if (b === 0x0d || b === 0x0a) break;
      if (b === 0x7f || b === 0x08) {
        // Backspace: drop the last UTF-8 character (its continuation bytes, then its lead).
        while (bytes.length > 0 && (bytes.at(-1)! & 0xc0) === 0x80) bytes.pop();
        bytes.pop();
      } else if (b === 0x15) bytes.length = 0; // Ctrl-U clears the line
      else if (bytes.length < MAX_STDIN_BYTES) bytes.push(b);
    }
  } finally {
    io.setRaw(false);
    io.stderr("\n");
  }
  return decoder.decode(new Uint8Array(bytes));
}

/**
 * Replaces the file with `text`: a temp file beside it, fsync, rename. A new
 * file gets mode 0600; an existing one keeps its mode and (where allowed) owner.
 */
async function writeAtomically(path: string, text: string): Promise<void> {
  let info: Deno.FileInfo | null = null;
  let target = path;
  try {
    target = await Deno.realPath(path);
    info = await Deno.stat(target);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const dir = dirname(target);
  const temp = `${dir}/.${basename(target)}.${crypto.randomUUID()}.tmp`;
  try {
    using file = await Deno.open(temp, { write: true, createNew: true, mode: 0o600 });
    const bytes = encoder.encode(text);
    for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
    await file.sync();
    await Deno.chmod(temp, info?.mode != null ? info.mode & 0o7777 : 0o600);
    if (info?.uid != null && info.gid != null) {
      await Deno.chown(temp, info.uid, info.gid).catch(() => {});
    }
    await Deno.rename(temp, target);
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    throw new CommandError(`Cannot write "${path}": ${(error as Error).message}`);
  }
  try {
    using directory = await Deno.open(dir);
    await directory.sync();
  } catch {
    // Not every platform can sync a directory; the rename itself is done.
  }
}
