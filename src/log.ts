/**
 * Structured logs: one JSON line per event on stdout (warnings and errors on
 * stderr, at once). Lines on stdout wait for the end of the current task and
 * go out together in one write: a line per request written on its own (as
 * `console.log` does, synchronously) cost a manifest GET about an eighth of
 * its CPU. They are written before the process exits normally; a kill -9
 * loses at most the lines of its last task.
 *
 * @module
 */
import type { LogLevel } from "./config.ts";

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, off: 100 };

/** A logger that writes JSON lines at or above a level. */
export interface Logger {
  debug(event: string, fields?: Record<string, unknown>): void;
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
}

function describe(value: unknown): unknown {
  return value instanceof Error
    ? { name: value.name, message: value.message, stack: value.stack }
    : value;
}

/** Lines past this many are written at once rather than at the end of the task. */
const MAX_PENDING_LINES = 1000;
const encoder = new TextEncoder();
let pending: string[] = [];
let timer: ReturnType<typeof setTimeout> | undefined;

/** Writes the lines waiting for the end of the task. */
export function flushLogs(): void {
  clearTimeout(timer);
  timer = undefined;
  if (pending.length === 0) return;
  const text = pending.join("\n") + "\n";
  pending = [];
  try {
    const bytes = encoder.encode(text);
    for (let written = 0; written < bytes.length;) {
      written += Deno.stdout.writeSync(bytes.subarray(written));
    }
  } catch {
    console.log(text.slice(0, -1)); // no stdout of its own (Deno Deploy): the console
  }
}

function queue(line: string): void {
  pending.push(line);
  if (pending.length >= MAX_PENDING_LINES) flushLogs();
  else if (timer === undefined) {
    timer = setTimeout(flushLogs, 0);
    // Lines alone do not keep the process alive; exiting writes them (below).
    Deno.unrefTimer(timer);
  }
}

globalThis.addEventListener("unload", flushLogs);

/** Creates a logger writing at `level` and above. */
export function createLogger(level: LogLevel): Logger {
  const min = RANK[level];
  const write = (at: LogLevel, event: string, fields: Record<string, unknown> = {}) => {
    if (RANK[at] < min) return;
    const record: Record<string, unknown> = { time: new Date().toISOString(), level: at, event };
    for (const [key, value] of Object.entries(fields)) record[key] = describe(value);
    const line = JSON.stringify(record);
    if (RANK[at] >= RANK.warn) {
      flushLogs(); // in order with what came before
      console.error(line);
    } else queue(line);
  };
  return {
    debug: (event, fields) => write("debug", event, fields),
    info: (event, fields) => write("info", event, fields),
    warn: (event, fields) => write("warn", event, fields),
    error: (event, fields) => write("error", event, fields),
  };
}
