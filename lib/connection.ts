// connection: one accepted connection's life, from accept to close, in one place. The server (lib/server.ts) accepts
// it and holds a permit for it under --max-connections; here it is admitted (lib/admission.ts: PROXY header, access
// rules, per-client cap, TLS handshake, each with its deadline), echoed (lib/echo.ts), and closed, by the peer or by
// the server (a limit, a timeout, a stop). Its deadlines and end reasons are typed, its permit is released in exactly
// one place, and its counters are what the metrics and the closing log line report.
//
// Every close the server starts after admission is a lingering close, because closing a TCP socket that still holds
// unread input makes the kernel send a reset, and a reset makes the peer's kernel discard the echo it has not read
// yet: the write side is shut down behind the last counted byte (FIN), what keeps arriving is read and discarded
// until the peer ends its stream or stays quiet for LINGER_QUIET_MS (bounded in all), and only then is the socket
// closed. This is what HTTP servers do before closing (Apache's lingering close, nginx's lingering_close). A
// refusal lingers briefly too; a deadline during admission (a PROXY header or TLS handshake that never came) closes
// at once: nothing was echoed, and those deadlines exist to free the socket.

import type { AdmissionDeadline, Gate } from "./admission.ts";
import { clientKey } from "./access.ts";
import type { CoarseClock } from "./clock.ts";
import type { Copy, CopyProgress, Phase } from "./echo.ts";
import { type EchoConn, formatAddress } from "./listen.ts";
import { connectionEventsEnabled, connLog, type RateLimitedLog } from "./log.ts";
import type { ServerStats } from "./counters.ts";

/** Why the server closes a connection itself before its peer does. */
export type CloseReason =
  | "idle timeout"
  | "send timeout"
  | "server stopping"
  | "byte limit"
  | "duration limit"
  | "proxy header timeout"
  | "TLS handshake timeout";

/** Why a connection ended, as the closing log line says. */
export type EndReason = CloseReason | "closed by peer" | "reset by peer" | "error";

/** A moment at which the server closes the connection, and why: the limit sweep of lib/server.ts enforces it. */
export interface Deadline {
  /** performance.now() time, in milliseconds. */
  at: number;
  reason: AdmissionDeadline | "duration limit";
}

/** No deadline. */
export const NO_DEADLINE: Deadline = { at: Infinity, reason: "duration limit" };

/** A place under the connection caps, given back exactly once when the connection has ended. */
export interface Permit {
  release(): void;
}

/** What a connection needs from the server that accepted it. */
export interface ConnectionContext {
  readonly stats: ServerStats;
  readonly clock: CoarseClock;
  /** The copy strategy (`--copy`). */
  readonly copy: Copy;
  /** Admission checks, when any are configured. */
  readonly gate: Gate | undefined;
  /** `--max-bytes-per-connection`; Infinity = no limit. */
  readonly byteLimit: number;
  /** `--max-connection-duration` in milliseconds; 0 = no limit. */
  readonly maxDurationMs: number;
  /** Where errors nothing explains are summarised. */
  readonly unexpected: RateLimitedLog;
}

/**
 * An address and port the way people write them, with an IPv4 peer of a dual-stack listener (::ffff:a.b.c.d) shown
 * as a.b.c.d.
 *
 * @param addr the address
 * @returns e.g. `127.0.0.1:40007` or `[::1]:40007`
 */
export function peerOf({ hostname, port }: { hostname: string; port: number }): string {
  return formatAddress(clientKey(hostname), port);
}

/** Closes a connection or listener that may be closed already. */
export function closeQuietly(closer: { close(): void }): void {
  try {
    closer.close();
  } catch {
    // Already closed (a stop may race a peer's close).
  }
}

/** A lingering close ends once the peer has sent nothing (and taken none of our echo) for this long (ms). */
export const LINGER_QUIET_MS = 2_000;
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
  bytes = 0;
  lastActive: number;
  byteLimit: number;
  phase: Phase = "admitting";
  /** Set when the server begins to close the connection itself, with why. */
  closing: CloseReason | undefined;
  peerEnded = false;
  readonly clock: CoarseClock;
  /** The sweeps' last look at {@link lastActive}, and the sweep tick from which nothing has moved since. */
  sweptActive = NaN;
  quietSince = 0;
  readonly openedAt = performance.now();
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

  /**
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
   * Admits, echoes and closes the connection. Never throws: every failure ends this connection only.
   *
   * @returns resolves when the connection has ended and its permit is released
   */
  async run(): Promise<void> {
    const context = this.#context;
    let rest: Uint8Array | null = null;
    if (context.gate) {
      rest = await context.gate.admit(this);
      if (rest === null) {
        // A deadline closed it already; other refusals close gently.
        if (this.closing) closeQuietly(this.conn);
        else await refuse(this.conn);
        this.#permit.release();
        return;
      }
    }
    context.stats.accepted++;
    if (context.maxDurationMs) this.deadline = { at: this.openedAt + context.maxDurationMs, reason: "duration limit" };
    const logEvents = connectionEventsEnabled();
    // Behind a load balancer, the client a PROXY header carried is the one named; the balancer follows it.
    const via = this.client === this.conn.remoteAddr ? undefined : peerOf(this.conn.remoteAddr);
    if (logEvents) {
      if (via) connLog.debug("opened {peer} via {via}", { peer: peerOf(this.client), via });
      else connLog.debug("opened {peer}", { peer: peerOf(this.client) });
    }
    let reason: EndReason = "closed by peer";
    try {
      if (rest && rest.length > 0) await this.#echoFirst(rest);
      if (this.bytes < this.byteLimit && !this.closing) await context.copy(this.conn, this);
      if (!this.closing && this.bytes >= this.byteLimit) {
        context.stats.closedMaxBytes++;
        this.end("byte limit");
      }
      if (this.closing) {
        reason = this.closing;
        await this.#lingeringClose();
      }
    } catch (error) {
      reason = this.closing ?? this.#classify(error);
    }
    clearTimeout(this.#lingerTimer);
    this.phase = "closing";
    closeQuietly(this.conn);
    context.gate?.release(this);
    context.stats.bytesEchoed += this.bytes;
    this.#permit.release();
    if (logEvents) {
      connLog.debug("closed {peer} after {durationMs} ms, {bytes} bytes echoed: {reason}", {
        peer: peerOf(this.client),
        durationMs: Math.round(performance.now() - this.openedAt),
        bytes: this.bytes,
        reason,
      });
    }
  }

  /** Echoes the client's bytes that arrived with its PROXY header, within the byte limit. */
  async #echoFirst(rest: Uint8Array): Promise<void> {
    const first = rest.subarray(0, Math.min(rest.length, this.byteLimit));
    this.phase = "writing";
    for (let written = 0; written < first.length && !this.closing;) {
      const n = await this.conn.write(first.subarray(written));
      written += n;
      this.bytes += n;
      this.lastActive = this.clock.now;
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
   * {@link LINGER_QUIET_MS} (sent nothing, and taken none of a write in flight) or after `maxMs` in all. It checks
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
        if (at >= this.#heardAt + LINGER_QUIET_MS || at >= this.#lingerEnd) return this.abort();
      }
      this.#lingerTimer = setTimeout(check, LINGER_TICK_MS);
    };
    this.#lingerTimer = setTimeout(check, LINGER_TICK_MS);
  }

  #classify(error: unknown): EndReason {
    const stats = this.#context.stats;
    // A TLS client that closes without close_notify (many do): an ordinary end, not an error.
    if (error instanceof Deno.errors.UnexpectedEof) return "closed by peer";
    if (
      error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe ||
      error instanceof Deno.errors.ConnectionAborted || error instanceof Deno.errors.NotConnected
    ) {
      stats.resets++;
      return "reset by peer";
    }
    stats.unexpectedErrors++;
    this.#context.unexpected.add(`${(error as Error)?.name}: ${(error as Error)?.message}`);
    return "error";
  }
}
