/**
 * Memory given back after a burst. V8 grows its heap with the allocation rate
 * (64 connections of small requests take it from about 15 to about 100 MiB),
 * and once the requests stop nothing allocates, so nothing triggers the
 * collection that would shrink it again: the process kept about 100 MiB it
 * no longer used, for good. So twice a second, if no request is in flight and
 * none was handled since the last look, and the heap has grown by
 * {@linkcode SLACK_BYTES} since the last full collection, Berth runs one
 * (through an in-process inspector session, the only way without V8 flags;
 * it needs `--allow-sys`, and without it nothing is done). A full
 * collection of a 100 MiB heap takes a few milliseconds, and it only runs when
 * the server has had nothing to do for half a second.
 *
 * @module
 */
import { Session } from "node:inspector";

/** Growth of V8's heap since the last full collection that makes an idle one worth it. */
export const SLACK_BYTES = 16 * 1024 * 1024;
const INTERVAL_MS = 500;

/** What the server is doing: requests in flight now, and handled since it started. */
export interface Activity {
  readonly inFlight: number;
  readonly handled: number;
}

/** Runs full collections when idle (see the module comment). */
export class IdleCollector {
  #session: Session | null = null;
  #lastHandled = -1;
  #baseline: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** Collections run so far (for tests and logs). */
  runs = 0;

  constructor(private readonly activity: Activity) {
    this.#baseline = Deno.memoryUsage().heapTotal;
  }

  /** Whether this process may open an inspector session. */
  static permitted(): boolean {
    try {
      // `--allow-sys` grants it (Deno 2.9.6 takes no `--allow-sys=inspector`).
      const descriptor = { name: "sys", kind: "inspector" } as unknown as Deno.PermissionDescriptor;
      return Deno.permissions.querySync(descriptor).state === "granted";
    } catch {
      return false;
    }
  }

  /** Looks twice a second until stopped. */
  start(): this {
    this.#timer = setInterval(() => void this.tick(), INTERVAL_MS);
    Deno.unrefTimer(this.#timer);
    return this;
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#session?.disconnect();
    this.#session = null;
  }

  /** One look: collects if the server was idle since the last one and the heap grew. */
  async tick(): Promise<boolean> {
    const { inFlight, handled } = this.activity;
    const quiet = inFlight === 0 && handled === this.#lastHandled;
    this.#lastHandled = handled;
    if (!quiet || Deno.memoryUsage().heapTotal < this.#baseline + SLACK_BYTES) return false;
    if (!this.#session) {
      this.#session = new Session();
      this.#session.connect();
    }
    const session = this.#session;
    // The answer comes through the event loop, which must not think itself done meanwhile.
    const keepAlive = setTimeout(() => {}, 60_000);
    try {
      await new Promise<void>((resolve, reject) =>
        session.post("HeapProfiler.collectGarbage", (error) => error ? reject(error) : resolve())
      );
    } finally {
      clearTimeout(keepAlive);
    }
    this.runs++;
    this.#baseline = Deno.memoryUsage().heapTotal;
    return true;
  }
}
