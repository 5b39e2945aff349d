// connection_cap: `--max-connections`, the cap on connections open at once, as one interface with two
// implementations: a count of this thread's own connections (one server), and a count in shared memory that every
// worker of lib/workers.ts updates with Atomics, so that the cap stays global and exact however many accept loops
// serve the port. The listener (lib/server.ts) takes a place for each accepted connection before anything else is
// done with it, and the connection's permit (lib/connection.ts) gives it back when the connection has ended: once
// on the way in and once on the way out, never on the per-byte path.

/** The cap on open connections, as the listener uses it. */
export interface ConnectionCap {
  /**
   * Takes a place for a new connection.
   *
   * @returns true when taken; false when the cap is reached (the connection is then refused)
   */
  tryAcquire(): boolean;
  /** Gives back the place of a connection that has ended. */
  release(): void;
  /** Connections holding a place now. */
  readonly open: number;
}

/**
 * The cap of one server: a count in this thread.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const cap = new LocalConnectionCap(1);
 * assert.equal(cap.tryAcquire(), true);
 * assert.equal(cap.tryAcquire(), false); // the second connection is refused
 * cap.release();
 * ```
 */
export class LocalConnectionCap implements ConnectionCap {
  #open = 0;
  readonly #max: number;

  /**
   * A cap on this thread's connections.
   *
   * @param max the cap; 0 = no cap (the count is still kept)
   */
  constructor(max: number) {
    this.#max = max;
  }

  /** Connections holding a place now. */
  get open(): number {
    return this.#open;
  }

  /** Takes a place for a new connection; false when the cap is reached. */
  tryAcquire(): boolean {
    if (this.#max > 0 && this.#open >= this.#max) return false;
    this.#open++;
    return true;
  }

  /** Gives back the place of a connection that has ended. */
  release(): void {
    this.#open--;
  }
}

/**
 * The cap shared by every worker: a counter in shared memory. A worker adds 1 before it serves a connection and
 * takes it back if that went over the cap, so two workers racing for the last place cannot both have it; the count
 * is never above the cap.
 */
export class SharedConnectionCap implements ConnectionCap {
  readonly #open: Int32Array;
  readonly #max: number;

  /**
   * A cap shared through `buffer` with every worker that has it.
   *
   * @param buffer 4 bytes of shared memory, zeroed, the same for every worker
   * @param max the cap; 0 = no cap (the count is still kept)
   */
  constructor(buffer: SharedArrayBuffer, max: number) {
    this.#open = new Int32Array(buffer, 0, 1);
    this.#max = max;
  }

  /** Open connections across all workers. */
  get open(): number {
    return Atomics.load(this.#open, 0);
  }

  /** Takes a place for a new connection; false when the cap is reached. */
  tryAcquire(): boolean {
    const before = Atomics.add(this.#open, 0, 1);
    if (this.#max <= 0 || before < this.#max) return true;
    Atomics.sub(this.#open, 0, 1);
    return false;
  }

  /** Gives back the place of a connection that has ended. */
  release(): void {
    Atomics.sub(this.#open, 0, 1);
  }
}
