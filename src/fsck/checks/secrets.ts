/**
 * Secrets invariant: every `secrets` entry is 32 bytes under a one-part key.
 * A bad one would make every use of it fail (a sealed catalog cursor, a 500);
 * removed, the next use makes a new one (cursors sealed before stop working).
 *
 * @module
 */
import { type Invariant, problem } from "../finding.ts";

/** Secrets that are not 32 bytes, or malformed keys; removed. */
export const secrets: Invariant = {
  name: "secrets are 32 random bytes",
  *check(ctx) {
    for (const entry of ctx.scan.meta.secrets) {
      const value = entry.value;
      if (entry.key && value instanceof Uint8Array && value.length === 32) continue;
      yield problem(
        ctx,
        `secret ${JSON.stringify(entry.parts).slice(0, 100)} is not 32 bytes under a name`,
        { check: [entry], delete: [entry] },
        "removed it (the next use makes a new one)",
      );
    }
  },
};
