// connection: one accepted connection's life, from accept to close, in one place. The server (lib/server.ts) accepts
// it and holds a permit for it under --max-connections; here it is admitted (lib/admission.ts: PROXY header, access
// rules, per-client cap, TLS handshake, each with its deadline), echoed (lib/echo.ts), and closed, by the peer or by
// the server (a limit, a timeout, a stop). Its deadlines and end reasons are typed, its permit is released in exactly
// one place, and its counters are what the metrics and the closing log line report.
//
// Every close the server starts after admission is a lingering close, because closing a TCP socket that still holds
// unread input makes the kernel send a reset, and a reset makes the peer's kernel discard the echo it has not read
// yet: the write side is shut down behind the last counted byte (FIN), what keeps arriving is read and discarded
// until the peer ends its stream or stays quiet for LINGER_QUIET_MS (LINGER_QUIET_WRITING_MS while the echo is still
// being written; bounded in all), and only then is the socket closed. This is what HTTP servers do before closing (Apache's lingering close, nginx's lingering_close). A
// refusal lingers briefly too; a deadline during admission (a PROXY header or TLS handshake that never came) closes
// at once: nothing was echoed, and those deadlines exist to free the socket.

import type { Admission } from "./admission.ts";
import type { CoarseClock } from "./clock.ts";
import type { Copy, CopyProgress, Phase } from "./echo.ts";
import { formatPeer } from "./address.ts";
import type { EchoConn } from "./listen.ts";
import { connectionEventsEnabled, connLog, type RateLimitedLog } from "./log.ts";
import type { ServerCounters } from "./counters.ts";
import { type AdmissionDeadline, type CloseReason, type Deadline, type EndReason, NO_DEADLINE } from "./ending.ts";
import { countEndedSession } from "./session_histograms.ts";
import type { FaultHook } from "./faults/runtime.ts";

/** A place under the connection caps, given back exactly once when the connection has ended. */
export interface Permit {
  /** Gives the place back; called once, when the connection has ended. */
  release(): void;
}

/** What a connection needs from the server that accepted it. */
export interface ConnectionContext {
  /** The server's counters, which the connection adds to as it ends. */
  readonly counters: ServerCounters;
  /** The coarse clock of the per-byte path (lib/clock.ts). */
  readonly clock: CoarseClock;
  /** The copy strategy (`--copy`). */
  readonly copy: Copy;
  /** The admission steps (lib/admission.ts), when any are configured. */
  readonly admission: Admission | undefined;
  /** `--max-bytes-per-connection`; Infinity = no limit. */
  readonly byteLimit: number;
  /** `--max-connection-duration` in milliseconds; 0 = no limit. */
  readonly maxDurationMs: number;
  /** Where errors nothing explains are summarised. */
  readonly unexpected: RateLimitedLog;
  /** Issue 14: the impairment profiles (lib/faults/runtime.ts), when --fault-* options are given. */
  readonly faults?: FaultHook;
}

/** Closes a connection or listener that may be closed already. */
export function closeQuietly(closer: { close(): void }): void {
  try {
    closer.close();
  } catch {
    // Already closed (a stop may race a peer's close).
  }
}

/**
 * A lingering close ends once the peer has sent nothing (and taken none of our echo) for this long (ms): long enough
 * for what a client sent before it saw our FIN to arrive, short enough that a deadline frees its socket within a
 * second of firing (the peer's unread echo is not lost when we close: with nothing unread on our side, close sends
 * no reset, and the kernel goes on delivering what we wrote).
 */
export const LINGER_QUIET_MS = 750;
/**
 * While the echo is still being written (the FIN waits behind a write the peer has not taken yet: a close during a
 * stalled echo, as a send timeout's or an age limit's), a lingering close ends only after the peer has sent nothing
 * and taken none of it for this long (ms), as nginx's lingering_timeout (5 s). The peer has echo to read before it is
 * done, and a reader that is slow for a moment (a busy machine) shows no progress for a while: the kernel wakes a
 * blocked writer only once a third of its send buffer (up to 4 MiB) has drained. Closing after
 * {@link LINGER_QUIET_MS} there reset such connections and threw their unread echo away: 5 to 16 sessions in
 * 33,000 of `deno task stress` on a busy 2-core machine (a reset after about 127 KB of 4.2 MB counted as echoed);
 * none with this bound.
 */
export const LINGER_QUIET_WRITING_MS = 5_000;
/** A lingering close lasts at most this long (ms), however much the peer keeps sending (as nginx's lingering_time). */
export const LINGER_MAX_MS = 30_000;
/** During a stop, whose grace period is already over, a lingering close lasts at most this long (ms). */
export const STOP_LINGER_MS = 2_000;
/**
 * A lingering close checks its bounds this often (ms), so that a pause of the server itself (paused or starved) shows
 * as a check that comes late, whenever in the linger it falls.
 */
export const LINGER_TICK_MS = 100;
/** A refused connection lingers at most this long (ms). */
export const REFUSAL_LINGER_MS = 1_000;
/** Refused connections lingering at once, at most; past that a refusal closes at once (a flood must not pile up). */
export const MAX_LINGERING_REFUSALS = 64;

/** What a connection without a PROXY header has read before its echo begins. */
const NOTHING_READ = new Uint8Array(0);

/** Where discarded input goes: shared, since nobody reads it. */
const DISCARD = new Uint8Array(64 * 1024);

let lingeringRefusals = 0;

/**
 * Refuses a connection without echoing: shuts the write side down (the peer reads end of stream, not a reset, even
 * if it had sent something), discards what arrives for up to {@link REFUSAL_LINGER_MS}, then closes.
 *
 * @param conn the connection
 * @returns resolves once the socket is closed
 */
export async function refuse(conn: EchoConn): Promise<void> {
  if (lingeringRefusals >= MAX_LINGERING_REFUSALS) return closeQuietly(conn);
  lingeringRefusals++;
  const timer = setTimeout(() => closeQuietly(conn), REFUSAL_LINGER_MS);
  try {
    await conn.closeWrite();
    while (await conn.read(DISCARD) !== null);
  } catch {
    // reset by the peer, or closed by the timer
  } finally {
    clearTimeout(timer);
    lingeringRefusals--;
    closeQuietly(conn);
  }
}

/** One accepted connection. */
export class Connection implements CopyProgress {
  /** Bytes echoed so far (see {@link CopyProgress.bytes}). */
  bytes = 0;
  /** The coarse clock's time of the last byte moved (see {@link CopyProgress.lastActive}). */
  lastActive: number;
  /** `--max-bytes-per-connection`; Infinity = no limit (see {@link CopyProgress.byteLimit}). */
  readonly byteLimit: number;
  /** Where the connection is in its life; the sweeps and {@link end} read it. */
  phase: Phase = "admitting";
  /** Set when the server begins to close the connection itself, with why. */
  closing: CloseReason | undefined;
  /** Set once the peer has ended its stream (a close or a half-close). */
  peerEnded = false;
  /** The coarse clock of the per-byte path (lib/clock.ts), the server's. */
  readonly clock: CoarseClock;
  /** The quiet sweep's last look at {@link lastActive}. */
  sweptActive: number = NaN;
  /** The quiet sweep's tick from which nothing has moved since (ms). */
  quietSince = 0;
  /** When the connection was accepted (performance.now() time, ms). */
  readonly openedAt: number = performance.now();
  /** When the limit sweep closes this connection, and why. */
  deadline: Deadline = NO_DEADLINE;
  /** The client the logs and rules name: the TCP peer, or the one a PROXY header carried. */
  client: { hostname: string; port: number };

  readonly #context: ConnectionContext;
  readonly #permit: Permit;
  /** The FIN behind the last counted byte, once asked for. */
  #finSent: Promise<void> | undefined;
  /** The discarding of input during the lingering close, once begun. */
  #discarding: Promise<void> | undefined;
  /** performance.now() times bounding the lingering close: the last sign of life from the peer, the hard end. */
  #heardAt = 0;
  #lingerEnd = Infinity;
  #bytesAtCheck = 0;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  /** Closed at once (the socket is gone), not lingering. */
  #aborted = false;
  /** Issue 14: called once when the server begins to close the connection (the impaired copy's timers wake up). */
  onClosing: (() => void) | undefined;

  /**
   * A connection just accepted, not yet admitted: {@link run} does the rest.
   *
   * @param conn the accepted socket
   * @param context what the server shares with its connections
   * @param permit its place under --max-connections, released when it ends
   */
  constructor(readonly conn: EchoConn, context: ConnectionContext, permit: Permit) {
    this.client = conn.remoteAddr;
    this.#context = context;
    this.#permit = permit;
    this.clock = context.clock;
    this.lastActive = context.clock.now;
    this.byteLimit = context.byteLimit;
  }

  /**
   * Sets a deadline of the admission steps (lib/admission.ts): the limit sweep closes the connection with `reason`
   * once `ms` have passed, unless {@link clearDeadline} comes first.
   *
   * @param reason what the deadline bounds
   * @param ms from now, in milliseconds
   */
  armDeadline(reason: AdmissionDeadline, ms: number): void {
    this.deadline = { at: performance.now() + ms, reason };
  }

  /** Takes the admission step's deadline away: that step is done. */
  clearDeadline(): void {
    this.deadline = NO_DEADLINE;
  }

  /**
   * Begins closing the connection from the server's side. During admission the socket is closed at once. After,
   * it is a lingering close: with nothing of ours in flight, the FIN goes now and the pending read becomes the
   * discard; with a write in flight, input is discarded from now and the FIN follows the write. A second call only
   * shortens a lingering close to {@link STOP_LINGER_MS} when the server stops.
   *
   * @param reason why (the closing log line and the metrics say it)
   */
  end(reason: CloseReason): void {
    const lingerMs = reason === "server stopping" ? STOP_LINGER_MS : LINGER_MAX_MS;
    if (this.closing) {
      if (reason === "server stopping") this.#lingerEnd = Math.min(this.#lingerEnd, performance.now() + lingerMs);
      return;
    }
    this.closing = reason;
    this.onClosing?.();
    if (this.phase === "admitting") return this.abort();
    this.#linger(lingerMs);
    if (this.phase === "reading") this.#sendFin();
    else this.#discarding ??= this.#discard();
  }

  /** Closes the socket now, lingering no more (a deliberate second stop request, or a lingering close that ran out). */
  abort(): void {
    this.#aborted = true;
    closeQuietly(this.conn);
  }

  /**
   * The connection's life, in order: admit (or refuse), echo, close. Never throws: every failure ends this
   * connection only.
   *
   * @returns resolves when the connection has ended and its permit is released
   */
  async run(): Promise<void> {
    try {
      const first = await this.#admit();
      if (first === null) return;
      const logEvents = connectionEventsEnabled();
      this.#opened(logEvents);
      const reason = await this.#echo(first);
      this.#closed(reason, logEvents);
    } finally {
      // The one place the permit is released: the connection's place under --max-connections and in the server.
      this.#permit.release();
    }
  }

  /**
   * Runs the admission steps (lib/admission.ts), if any are configured.
   *
   * @returns the bytes to echo first (those that came with a PROXY header; empty without one), or null when the
   *   connection was refused (its socket is then closed)
   */
  async #admit(): Promise<Uint8Array | null> {
    const admission = this.#context.admission;
    if (!admission) return NOTHING_READ;
    const first = await admission.admit(this);
    if (first !== null) return first;
    // A deadline closed it already; other refusals close gently.
    if (this.closing) closeQuietly(this.conn);
    else await refuse(this.conn);
    return null;
  }

  /** Counts an admitted connection, arms its age limit, and logs it. */
  #opened(logEvents: boolean): void {
    const context = this.#context;
    context.counters.accepted++;
    if (context.maxDurationMs) this.deadline = { at: this.openedAt + context.maxDurationMs, reason: "duration limit" };
    if (!logEvents) return;
    // Behind a load balancer, the client a PROXY header carried is the one named; the balancer follows it.
    const via = this.client === this.conn.remoteAddr ? undefined : formatPeer(this.conn.remoteAddr);
    if (via) connLog.debug("opened {peer} via {via}", { peer: formatPeer(this.client), via });
    else connLog.debug("opened {peer}", { peer: formatPeer(this.client) });
  }

  /**
   * Echoes (lib/echo.ts: `first`, then the stream) until the peer ends its stream or the server closes the
   * connection; a close the server started ends with the lingering close.
   *
   * @param first bytes already read, echoed before the stream
   * @returns why the connection ended
   */
  async #echo(first: Uint8Array): Promise<EndReason> {
    try {
      // Issue 14: a connection an impairment profile applies to gets the impaired copy (lib/faults), which echoes
      // `first` itself; every other connection, the plain copy.
      const impaired = this.#context.faults?.copyFor(this, first);
      if (!this.closing) await (impaired ? impaired() : this.#context.copy(this.conn, this, first));
      // The copy stops at the byte limit (lib/echo.ts); the server then closes the connection.
      if (!this.closing && this.bytes >= this.byteLimit) {
        this.#context.counters.closedMaxBytes++;
        this.end("byte limit");
      }
      if (!this.closing) return "closed by peer";
      const reason = this.closing;
      await this.#lingeringClose();
      return reason;
    } catch (error) {
      return this.closing ?? this.#classify(error);
    }
  }

  /** Closes the socket, gives back the client's admission place, counts the connection's end and logs it. */
  #closed(reason: EndReason, logEvents: boolean): void {
    const context = this.#context;
    clearTimeout(this.#lingerTimer);
    this.phase = "closing";
    closeQuietly(this.conn);
    context.admission?.release(this);
    context.counters.bytesEchoed += this.bytes;
    countEndedSession(context.counters, (performance.now() - this.openedAt) / 1000, this.bytes);
    if (logEvents) {
      connLog.debug("closed {peer} after {durationMs} ms, {bytes} bytes echoed: {reason}", {
        peer: formatPeer(this.client),
        durationMs: Math.round(performance.now() - this.openedAt),
        bytes: this.bytes,
        reason,
      });
    }
  }

  /** The end of a close the server started: FIN behind the last counted byte, then discard until the peer is done. */
  async #lingeringClose(): Promise<void> {
    if (this.#aborted) return;
    this.phase = "closing";
    await this.#sendFin();
    if (!this.peerEnded) await (this.#discarding ??= this.#discard());
  }

  #sendFin(): Promise<void> {
    return this.#finSent ??= this.conn.closeWrite().catch(() => {});
  }

  /** Reads and drops input until the peer ends its stream (or resets it, or the linger runs out). */
  async #discard(): Promise<void> {
    try {
      for (;;) {
        const n = await this.conn.read(DISCARD);
        if (n === null) {
          this.peerEnded = true;
          return;
        }
        this.#heardAt = performance.now();
      }
    } catch {
      // a reset, or the close that ended the linger
    }
  }

  /**
   * Bounds the lingering close: it ends (the socket is closed) once the peer has been quiet for
   * {@link LINGER_QUIET_MS} (sent nothing, and taken none of a write in flight; {@link LINGER_QUIET_WRITING_MS}
   * while a write is in flight and the FIN waits behind it) or after `maxMs` in all. It checks
   * every {@link LINGER_TICK_MS}; a check that comes more than a tick late found the server itself paused or starved,
   * and what the peer sent meanwhile is still unread: closing then would reset the connection and throw away the
   * echo the peer has not read yet (seen with a 2 s SIGSTOP: 129 KB of a 256 KiB echo arrived). So the pause counts
   * against neither bound (at most `maxMs` in all, so the linger stays bounded), and the next check, a tick later,
   * comes after that input has been read.
   */
  #linger(maxMs: number): void {
    const now = performance.now();
    this.#heardAt = now;
    this.#lingerEnd = now + maxMs;
    this.#bytesAtCheck = this.bytes;
    let last = now;
    let excused = 0;
    const check = () => {
      const at = performance.now();
      const pause = at - last - LINGER_TICK_MS;
      last = at;
      if (pause > LINGER_TICK_MS && excused + pause <= maxMs) {
        excused += pause;
        this.#heardAt += pause;
        this.#lingerEnd += pause;
      } else {
        if (this.bytes !== this.#bytesAtCheck) {
          this.#bytesAtCheck = this.bytes;
          this.#heardAt = at;
        }
        const quietMs = this.#finSent === undefined ? LINGER_QUIET_WRITING_MS : LINGER_QUIET_MS;
        if (at >= this.#heardAt + quietMs || at >= this.#lingerEnd) return this.abort();
      }
      this.#lingerTimer = setTimeout(check, LINGER_TICK_MS);
    };
    this.#lingerTimer = setTimeout(check, LINGER_TICK_MS);
  }

  #classify(error: unknown): EndReason {
    const counters = this.#context.counters;
    // A TLS client that closes without close_notify (many do): an ordinary end, not an error.
    if (error instanceof Deno.errors.UnexpectedEof) return "closed by peer";
    if (
      error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe ||
      error instanceof Deno.errors.ConnectionAborted || error instanceof Deno.errors.NotConnected
    ) {
      counters.resets++;
      return "reset by peer";
    }
    counters.unexpectedErrors++;
    this.#context.unexpected.add(`${(error as Error)?.name}: ${(error as Error)?.message}`);
    return "error";
  }
}
