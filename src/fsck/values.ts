/**
 * Small helpers for looking at stored values that may be anything: fsck
 * reads records as `unknown` and must not trust their shape.
 *
 * @module
 */
import { type Digest, parseDigest } from "../oci/digest.ts";

/** A map or set key made of key parts, unambiguous whatever they contain. */
export function id(...parts: unknown[]): string {
  return JSON.stringify(
    parts,
    (_key, value) =>
      typeof value === "bigint" || typeof value === "symbol"
        ? `${String(value)}:${typeof value}`
        : value,
  );
}

/** A key part or value as a message shows it. */
export function show(value: unknown): string {
  return String(value);
}

/** A string quoted as JSON; anything else as {@linkcode show} does. */
export function quote(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : show(value);
}

/** Whether `value` is a plain object (a record). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Whether `value` is a size or count: a non-negative safe integer. */
export function isSize(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** `value` as a digest, or null when it is not one. */
export function asDigest(value: unknown): Digest | null {
  if (typeof value !== "string") return null;
  try {
    return parseDigest(value);
  } catch {
    return null;
  }
}

/** A byte count for people: `512 B`, `1.5 MiB`. */
export function bytesText(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}
