// connection: one accepted connection's life, from accept to close, in one place. The server (lib/server.ts) accepts
// it and holds a permit for it under --max-connections; here it is admitted (lib/admission.ts: PROXY header, access
// rules, per-client cap, TLS handshake, each with its deadline), echoed (lib/echo.ts), and closed, by the peer or by
// the server (a limit, a timeout, a stop). Its deadlines and end reasons are typed, its permit is released in exactly
// one place, and its counters are what the metrics and the closing log line report.

import type { AdmissionDeadline, Gate } from "./admission.ts";
import { clientKey } from "./access.ts";
import type { CoarseClock } from "./clock.ts";
import type { Copy, CopyProgress } from "./echo.ts";
import { type EchoConn, formatAddress } from "./listen.ts";
import { connectionEventsEnabled, connLog, type RateLimitedLog } from "./log.ts";
import type { ServerStats } from "./counters.ts";

/** Why the server closes a connection itself before its peer does. */
export type CloseReason =
  | "idle timeout"
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
    // Already closed (the pipe strategy closes at end of stream; a stop may race a peer's close).
  }
}

/** One accepted connection. */
export class Connection implements CopyProgress {
  bytes = 0;
  lastActive: number;
  readonly clock: CoarseClock;
  byteLimit: number;
  /** The idle sweep's last look at {@link lastActive}, and the sweep tick from which nothing has moved since. */
  sweptActive = NaN;
  quietSince = 0;
  readonly openedAt = performance.now();
  /** When the limit sweep closes this connection, and why. */
  deadline: Deadline = NO_DEADLINE;
  /** Set when the server closes the connection itself, before it does. */
  closedBecause: CloseReason | undefined;
  /** The client the logs and rules name: the TCP peer, or the one a PROXY header carried. */
  client: { hostname: string; port: number };

  readonly #context: ConnectionContext;
  readonly #permit: Permit;

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

  /** Closes the connection from our side; the copy then fails with Interrupted/BadResource and the session ends. */
  close(reason: CloseReason): void {
    if (this.closedBecause) return;
    this.closedBecause = reason;
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
        closeQuietly(this.conn);
        this.#permit.release();
        return;
      }
    }
    context.stats.accepted++;
    if (context.maxDurationMs) this.deadline = { at: this.openedAt + context.maxDurationMs, reason: "duration limit" };
    const logEvents = connectionEventsEnabled();
    if (logEvents) connLog.debug("opened {peer}", { peer: peerOf(this.client) });
    let reason: EndReason = "closed by peer";
    try {
      if (rest && rest.length > 0) await this.#echoFirst(rest);
      if (this.bytes < this.byteLimit) await context.copy(this.conn, this);
      if (this.bytes >= this.byteLimit) {
        reason = "byte limit";
        context.stats.closedMaxBytes++;
      }
    } catch (error) {
      reason = this.closedBecause ?? this.#classify(error);
    }
    closeQuietly(this.conn);
    context.gate?.release(this);
    this.#permit.release();
    context.stats.bytesEchoed += this.bytes;
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
    for (let written = 0; written < first.length;) written += await this.conn.write(first.subarray(written));
    this.bytes += first.length;
    this.lastActive = this.#context.clock.now;
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
