/**
 * Progress lines of a long fsck run: at most one per interval, none at all
 * on a store small enough to be done before the first.
 *
 * @module
 */

/** Progress lines on a large store: at most one per `everyMs`, none on a small one. */
export class Progress {
  readonly #write: (line: string) => void;
  readonly #everyMs: number;
  #last = Date.now();
  #printed = false;

  constructor(write: (line: string) => void, everyMs: number) {
    this.#write = write;
    this.#everyMs = everyMs;
  }

  /** Writes `text()` if the interval has passed since the last line. */
  tick(text: () => string): void {
    const now = Date.now();
    if (now - this.#last < this.#everyMs) return;
    this.#last = now;
    this.#printed = true;
    this.#write(`fsck: ${text()}`);
  }

  /** A closing line for a pass, only if that pass printed progress. */
  done(text: string): void {
    if (this.#printed) this.#write(`fsck: ${text}`);
    this.#printed = false;
  }
}

/** Progress that writes nothing (the tests' consistency check). */
export const NO_PROGRESS = new Progress(() => {}, Number.POSITIVE_INFINITY);
