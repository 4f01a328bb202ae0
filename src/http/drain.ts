/**
 * Graceful shutdown. Deno 2.9.6's `server.shutdown()` waits for response
 * bodies but drops requests whose body is still arriving (an upload in
 * flight), so Berth drains first: new requests get 503 with
 * `Connection: close`, and shutdown waits until every handler has answered.
 *
 * @module
 */
import { OciError } from "../oci/errors.ts";
import { errorResponse } from "./respond.ts";

/** Counts handlers in flight and refuses new requests once draining. */
export class Drain {
  #inFlight = 0;
  #handled = 0;
  #draining = false;
  #waiters: (() => void)[] = [];

  /** Requests being handled now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Requests handled since it was made. */
  get handled(): number {
    return this.#handled;
  }

  /** Wraps a handler so that it is counted, and refused while draining. */
  wrap<A extends unknown[]>(
    handler: (req: Request, ...rest: A) => Promise<Response>,
  ): (req: Request, ...rest: A) => Promise<Response> {
    return async (req, ...rest) => {
      if (this.#draining) {
        await req.body?.cancel().catch(() => {});
        const response = errorResponse(
          new OciError("UNAVAILABLE", "The registry is shutting down; retry shortly", {
            headers: { "Retry-After": "1", Connection: "close" },
          }),
          req.method,
        );
        return response;
      }
      this.#inFlight++;
      this.#handled++;
      try {
        return await handler(req, ...rest);
      } finally {
        if (--this.#inFlight === 0) { for (const wake of this.#waiters.splice(0)) wake(); }
      }
    };
  }

  /** Refuses new requests and resolves when none is in flight, or after `timeoutMs`. */
  async drain(timeoutMs: number): Promise<boolean> {
    this.#draining = true;
    if (this.#inFlight === 0) return true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const idle = new Promise<boolean>((resolve) => this.#waiters.push(() => resolve(true)));
    const late = new Promise<boolean>((
      resolve,
    ) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    try {
      return await Promise.race([idle, late]);
    } finally {
      clearTimeout(timer);
    }
  }
}
