// clock: the coarse clock of the per-byte path. Asking the system for the time on every read and write costs more
// than the echo's own bookkeeping, so connections copy a number that a sweep timer advances instead; the sweeps only
// need to know whether anything moved since their last tick. Passed in to the server, so tests can drive time.

/** A clock in milliseconds (performance.now() time) that is read often and advanced rarely. */
export class CoarseClock {
  /** The time at the last {@link advance}, in milliseconds. */
  now: number;

  /**
   * A clock that starts at the fine clock's time now.
   *
   * @param source the fine clock it copies, in milliseconds (tests pass their own)
   */
  constructor(readonly source: () => number = () => performance.now()) {
    this.now = source();
  }

  /**
   * Reads the fine clock into {@link now}.
   *
   * @returns the new time, in milliseconds
   */
  advance(): number {
    return this.now = this.source();
  }
}
