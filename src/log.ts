/**
 * Structured logs: one JSON line per event on stdout (errors on stderr).
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

/** Creates a logger writing at `level` and above. */
export function createLogger(level: LogLevel): Logger {
  const min = RANK[level];
  const write = (at: LogLevel, event: string, fields: Record<string, unknown> = {}) => {
    if (RANK[at] < min) return;
    const record: Record<string, unknown> = { time: new Date().toISOString(), level: at, event };
    for (const [key, value] of Object.entries(fields)) record[key] = describe(value);
    const line = JSON.stringify(record);
    if (RANK[at] >= RANK.warn) console.error(line);
    else console.log(line);
  };
  return {
    debug: (event, fields) => write("debug", event, fields),
    info: (event, fields) => write("info", event, fields),
    warn: (event, fields) => write("warn", event, fields),
    error: (event, fields) => write("error", event, fields),
  };
}
