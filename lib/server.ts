// server: the echo server as one object. It owns the listeners and their accept loops, the open connections
// (each an echo session, see lib/echo.ts), the limits the WSK sample lacked (connection cap, idle timeout), and
// the graceful stop. The path of a byte: accept loop -> #serve (cap check, then lib/admission.ts's gate when access
// rules, the PROXY protocol or TLS are on) -> copy -> close, all in this file. The per-connection limits of
// issue 5 (bytes: a comparison per read in lib/echo.ts; age, PROXY header and TLS handshake deadlines: a sweep)
// arm no timer per connection.

import { type AdmissionCounters, admissionCounters, Gate, TLS_HANDSHAKE_TIMEOUT_MS } from "./admission.ts";
import { clientKey } from "./access.ts";
import { activityClock, type Copy, COPY_STRATEGIES, type CopyProgress } from "./echo.ts";
import { type EchoConn, type EchoListener, formatAddress, openListeners } from "./listen.ts";
import { connectionEventsEnabled, connLog, RateLimitedLog, serverLog } from "./log.ts";
import type { ServerConfig } from "./options.ts";
import { countEndedSession, type SessionCounters, sessionCounters } from "./session_histograms.ts";
import { formatDuration } from "./units.ts";

/** Counters of a server's life so far, plain numbers cheap to bump on the hot path. */
export interface ServerStats extends AdmissionCounters, SessionCounters {
  /** Connections accepted and served (not counting those refused). */
  accepted: number;
  /** Connections closed at once because the cap was reached. */
  refusedOverCap: number;
  /** Connections closed by the idle timeout. */
  closedIdle: number;
  /** Connections that ended with a reset or broken pipe from the peer. */
  resets: number;
  /** Bytes echoed by connections that have ended. */
  bytesEchoed: number;
  /** accept() failures (EMFILE and the like), each followed by a short back-off. */
  acceptErrors: number;
  /** Connections closed after echoing --max-bytes-per-connection bytes. */
  closedMaxBytes: number;
  /** Connections closed at --max-connection-duration. */
  closedMaxDuration: number;
  /** Connections that ended with an error nothing above explains (logged as "unexpected"). */
  unexpectedErrors: number;
}

/** Fresh counters, all zero. */
export function emptyStats(): ServerStats {
  return {
    accepted: 0,
    refusedOverCap: 0,
    closedIdle: 0,
    resets: 0,
    bytesEchoed: 0,
    acceptErrors: 0,
    closedMaxBytes: 0,
    closedMaxDuration: 0,
    unexpectedErrors: 0,
    ...admissionCounters(),
    ...sessionCounters(),
  };
}

/**
 * Admits connections under the `--max-connections` cap when several servers share one cap (the workers of
 * lib/workers.ts). Without one, a server counts its own sessions.
 */
export interface ConnectionGate {
  /** Takes a place for a new connection; false when the cap is reached (the connection is then refused). */
  tryEnter(): boolean;
  /** Gives back the place of a connection that has ended. */
  leave(): void;
}

/** How a server shares the machine with others of its kind (see lib/workers.ts); the defaults suit one server. */
export interface EchoServerOptions {
  /** A cap shared with other servers, instead of this server's own count. */
  gate?: ConnectionGate;
  /** Listen with SO_REUSEPORT, so other servers can listen on the same port (Linux; needs `--unstable-net`). */
  reusePort?: boolean;
}

/** Why a session ended, as logged. */
type EndReason =
  | "closed by peer"
  | "reset by peer"
  | "idle timeout"
  | "server stopping"
  | "error"
  | "byte limit"
  | "duration limit"
  | "proxy header timeout"
  | "TLS handshake timeout";

/** One open connection: the socket, its counters, and why the server closed it (if it did). */
class Session implements CopyProgress {
  bytes = 0;
  lastActive = activityClock.now;
  /** Set when the server closes the connection itself, before it does. */
  closedBecause: EndReason | undefined;
  /** The idle sweep's last look at {@link lastActive}, and the sweep tick from which nothing has moved since. */
  sweptActive = NaN;
  quietSince = 0;
  readonly openedAt = performance.now();
  byteLimit: number = Infinity;
  /** The limit sweep closes the connection at this performance.now() time, for `closeAtReason`. */
  closeAt: number = Infinity;
  closeAtReason: EndReason = "duration limit";
  /** The client the logs name: the TCP peer, or the one a PROXY header carried. */
  client: { hostname: string; port: number };

  constructor(readonly conn: EchoConn) {
    this.client = conn.remoteAddr;
  }

  /** Closes the connection from our side; the copy then fails with Interrupted/BadResource and the session ends. */
  close(reason: EndReason): void {
    if (this.closedBecause) return;
    this.closedBecause = reason;
    closeQuietly(this.conn);
  }
}

function closeQuietly(closer: { close(): void }): void {
  try {
    closer.close();
  } catch {
    // Already closed (the pipe strategy closes at end of stream; a stop may race a peer's close).
  }
}

/** An IPv4 peer of a dual-stack listener shows as ::ffff:a.b.c.d; people expect a.b.c.d. */
function peerOf({ hostname, port }: { hostname: string; port: number }): string {
  return formatAddress(clientKey(hostname), port);
}

/** How often a sweep that enforces a limit of `limitMs` ticks: a tenth of it, from 10 ms to 1 s. */
function sweepPeriod(limitMs: number): number {
  return Math.min(Math.max(Math.floor(limitMs / 10), 10), 1000);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A TCP echo server.
 *
 * @example
 * ```ts
 * const server = new EchoServer({ ...config.server, port: 0, hosts: ["127.0.0.1"] });
 * const { port } = server.start();
 * // ... clients connect to port ...
 * await server.stop(); // graceful: stop accepting, let sessions finish, close the rest
 * ```
 */
export class EchoServer {
  /** Counters since start. */
  readonly stats: ServerStats = emptyStats();

  readonly #config: ServerConfig;
  readonly #options: EchoServerOptions;
  readonly #copy: Copy;
  /** The open listeners; closed first when stopping, so new connections are refused at once. */
  #listeners: EchoListener[] = [];
  /** One accept loop per listener; a stop waits for them so the port is really free afterwards. */
  #acceptLoops: Promise<void>[] = [];
  /** The open sessions: the cap counts them, the idle sweep and the stop walk them. */
  readonly #sessions = new Set<Session>();
  /** Set once a stop begins; from then on, the last session to end resolves {@link #drained}. */
  #stopping: Promise<void> | undefined;
  #drained = Promise.withResolvers<void>();
  /** Resolved to cut a stop's grace period short (a second signal). */
  #graceCut = Promise.withResolvers<void>();
  #sweepTimer: ReturnType<typeof setInterval> | undefined;
  #limitSweepTimer: ReturnType<typeof setInterval> | undefined;
  /** Access rules, PROXY header, TLS handshake (lib/admission.ts); undefined when none is configured. */
  readonly #gate: Gate | undefined;
  #finished = Promise.withResolvers<void>();
  readonly #refusals = new RateLimitedLog(
    10_000,
    (count, peer) =>
      serverLog.warn("refused {count} connection(s) over the cap of {max} (latest from {peer})", {
        count,
        max: this.#config.maxConnections,
        peer,
      }),
  );
  readonly #acceptFailures = new RateLimitedLog(
    10_000,
    (count, detail) =>
      serverLog.error("accept failed {count} time(s): {detail}; backing off and retrying", { count, detail }),
  );
  readonly #unexpected = new RateLimitedLog(
    10_000,
    (count, detail) =>
      serverLog.warn("{count} connection(s) ended with an unexpected error (latest: {detail})", { count, detail }),
  );

  /**
   * @param config where to listen and the limits to enforce
   * @param options for a server that is one of several workers (lib/workers.ts)
   */
  constructor(config: ServerConfig, options: EchoServerOptions = {}) {
    this.#config = config;
    this.#options = options;
    this.#copy = COPY_STRATEGIES[config.copy];
    this.#gate = Gate.for(config, this.stats);
  }

  /** Open connections right now. */
  get activeConnections(): number {
    return this.#sessions.size;
  }

  /** True once a stop has begun (what /healthz reports as 503 "draining"). */
  get draining(): boolean {
    return this.#stopping !== undefined;
  }

  /** Bytes echoed so far, by ended and open connections alike (for the metrics, at scrape time). */
  bytesEchoedNow(): number {
    let bytes = this.stats.bytesEchoed;
    for (const session of this.#sessions) bytes += session.bytes;
    return bytes;
  }

  /** Resolves when the server has stopped (listeners closed, every session ended). */
  get finished(): Promise<void> {
    return this.#finished.promise;
  }

  /**
   * Opens the listeners and starts accepting. Returns once listening; connections are served in the background.
   *
   * @returns the port listened on (the one picked by the OS when the configured port is 0)
   * @throws {ListenError} when the port cannot be listened on
   */
  start(): { port: number } {
    const { listeners, port } = openListeners({
      hosts: this.#config.hosts,
      port: this.#config.port,
      tls: this.#config.tls,
      reusePort: this.#options.reusePort,
    });
    this.#listeners = listeners;
    this.#acceptLoops = listeners.map((l) => this.#acceptLoop(l));
    if (this.#config.idleTimeoutMs > 0) this.#startIdleSweep(this.#config.idleTimeoutMs);
    this.#startLimitSweep();
    serverLog.info(
      "echoing on port {port} (copy {copy}, max connections {maxConnections}, idle timeout {idleTimeout})",
      {
        port,
        copy: this.#config.copy,
        maxConnections: this.#config.maxConnections || "unlimited",
        idleTimeout: this.#config.idleTimeoutMs ? formatDuration(this.#config.idleTimeoutMs) : "never",
      },
    );
    return { port };
  }

  /**
   * Stops gracefully: closes the listeners at once (new connections are refused), lets open sessions finish for
   * up to `graceMs`, then closes what remains. Calling it again while a stop runs returns the same stop; a call
   * with `graceMs` 0 cuts the running stop's grace period short.
   *
   * @param graceMs how long sessions may finish; defaults to the configured shutdown timeout
   * @returns resolves when every listener and session is closed
   */
  stop(graceMs: number = this.#config.shutdownTimeoutMs): Promise<void> {
    if (graceMs <= 0) this.#graceCut.resolve();
    this.#stopping ??= this.#runStop(graceMs);
    return this.#stopping;
  }

  async #runStop(graceMs: number): Promise<void> {
    for (const listener of this.#listeners) closeQuietly(listener);
    await Promise.all(this.#acceptLoops);
    const open = this.#sessions.size;
    if (open > 0) {
      serverLog.info("stopped accepting; waiting up to {grace} for {open} open connection(s) to finish", {
        grace: formatDuration(graceMs),
        open,
      });
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#drained.promise,
        this.#graceCut.promise,
        new Promise<void>((resolve) => timer = setTimeout(resolve, graceMs)),
      ]);
      clearTimeout(timer);
    }
    if (this.#sessions.size > 0) {
      serverLog.info("closing {count} connection(s) still open", { count: this.#sessions.size });
      for (const session of this.#sessions) session.close("server stopping");
      await this.#drained.promise;
    }
    clearInterval(this.#sweepTimer);
    clearInterval(this.#limitSweepTimer);
    this.#gate?.flush();
    this.#refusals.flush();
    this.#acceptFailures.flush();
    this.#unexpected.flush();
    serverLog.info("stopped: {accepted} connection(s) served, {bytes} bytes echoed", {
      ...this.stats,
      bytes: this.stats.bytesEchoed,
    });
    this.#finished.resolve();
  }

  /** Accepts until the listener is closed. Transient failures (EMFILE, ENFILE, ...) back off and retry. */
  async #acceptLoop(listener: EchoListener): Promise<void> {
    let backoffMs = 0;
    for (;;) {
      let conn: EchoConn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (this.#stopping || error instanceof Deno.errors.BadResource) return;
        this.stats.acceptErrors++;
        const code = (error as { code?: string }).code;
        this.#acceptFailures.add(`${code ?? (error as Error).name}: ${(error as Error).message}`);
        // Doubling from 10 ms to 1 s: under EMFILE the pending connection stays queued, and each retry that fails
        // at once would otherwise spin the CPU.
        backoffMs = Math.min(Math.max(backoffMs * 2, 10), 1000);
        await sleep(backoffMs);
        continue;
      }
      backoffMs = 0;
      this.#serve(conn);
    }
  }

  /** Serves one connection from accept to close. Never throws: every failure ends this connection only. */
  async #serve(conn: EchoConn): Promise<void> {
    const max = this.#config.maxConnections;
    // The cap shared by every worker (lib/workers.ts), or this server's own count of its sessions.
    const cap = this.#options.gate;
    if (cap ? !cap.tryEnter() : max > 0 && this.#sessions.size >= max) {
      this.stats.refusedOverCap++;
      this.#refusals.add(peerOf(conn.remoteAddr));
      closeQuietly(conn);
      return;
    }
    // TCP_NODELAY is the copy's business (lib/echo.ts): the loop sets it only once a connection echoes twice.
    const session = new Session(conn);
    this.#sessions.add(session);
    let rest: Uint8Array | null = null;
    if (this.#gate) {
      rest = await this.#gate.admit(session);
      if (rest === null) {
        cap?.leave();
        return this.#endRefused(session);
      }
    }
    this.stats.accepted++;
    session.byteLimit = this.#config.maxBytesPerConnection || Infinity;
    if (this.#config.maxConnectionDurationMs) {
      session.closeAt = session.openedAt + this.#config.maxConnectionDurationMs;
      session.closeAtReason = "duration limit";
    }
    const logEvents = connectionEventsEnabled();
    if (logEvents) connLog.debug("opened {peer}", { peer: peerOf(session.client) });
    let reason: EndReason = "closed by peer";
    try {
      if (rest && rest.length > 0) await this.#echoFirst(session, rest);
      if (session.bytes < session.byteLimit) await this.#copy(conn, session);
      if (session.bytes >= session.byteLimit) {
        reason = "byte limit";
        this.stats.closedMaxBytes++;
      }
    } catch (error) {
      reason = session.closedBecause ?? this.#classify(error);
    }
    closeQuietly(conn);
    this.#sessions.delete(session);
    this.#gate?.release(session);
    cap?.leave();
    this.stats.bytesEchoed += session.bytes;
    countEndedSession(this.stats, (performance.now() - session.openedAt) / 1000, session.bytes);
    if (logEvents) {
      connLog.debug("closed {peer} after {durationMs} ms, {bytes} bytes echoed: {reason}", {
        peer: peerOf(session.client),
        durationMs: Math.round(performance.now() - session.openedAt),
        bytes: session.bytes,
        reason,
      });
    }
    if (this.#stopping && this.#sessions.size === 0) this.#drained.resolve();
  }

  /** Ends a session the gate refused (already counted and logged). */
  #endRefused(session: Session): void {
    closeQuietly(session.conn);
    this.#sessions.delete(session);
    if (this.#stopping && this.#sessions.size === 0) this.#drained.resolve();
  }

  /** Echoes the client's bytes that arrived with its PROXY header, within the byte limit. */
  async #echoFirst(session: Session, rest: Uint8Array): Promise<void> {
    const first = rest.subarray(0, Math.min(rest.length, session.byteLimit));
    for (let written = 0; written < first.length;) written += await session.conn.write(first.subarray(written));
    session.bytes += first.length;
    session.lastActive = activityClock.now;
  }

  #classify(error: unknown): EndReason {
    // A TLS client that closes without close_notify (many do): an ordinary end, not an error.
    if (error instanceof Deno.errors.UnexpectedEof) return "closed by peer";
    if (
      error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe ||
      error instanceof Deno.errors.ConnectionAborted || error instanceof Deno.errors.NotConnected
    ) {
      this.stats.resets++;
      return "reset by peer";
    }
    this.stats.unexpectedErrors++;
    this.#unexpected.add(`${(error as Error)?.name}: ${(error as Error)?.message}`);
    return "error";
  }

  /**
   * Closes connections that moved no byte for `timeoutMs`. One timer for all connections, ticking at a tenth of
   * the timeout (10 ms to 1 s), so the hot path only copies {@link activityClock} and arms no timer per read.
   * That copy can be a whole tick stale (more before the first tick), so it only tells whether anything moved
   * since the last tick; silence is counted from the first tick that saw nothing new. A connection is never
   * closed before it has been quiet for the full timeout, and at most one tick after.
   */
  #startIdleSweep(timeoutMs: number): void {
    const period = sweepPeriod(timeoutMs);
    this.#sweepTimer = setInterval(() => {
      const now = activityClock.now = performance.now();
      for (const session of this.#sessions) {
        if (session.lastActive !== session.sweptActive) {
          session.sweptActive = session.lastActive;
          session.quietSince = now;
        } else if (now - session.quietSince >= timeoutMs) {
          this.stats.closedIdle++;
          session.close("idle timeout");
        }
      }
    }, period);
    Deno.unrefTimer(this.#sweepTimer);
  }

  /**
   * Closes sessions past their `closeAt`: --max-connection-duration, and the deadlines of the PROXY header and the
   * TLS handshake. Like the idle sweep, one timer for all, ticking at a tenth of the shortest of these limits
   * (10 ms to 1 s); started only when one of them is configured.
   */
  #startLimitSweep(): void {
    const limits = [
      this.#config.maxConnectionDurationMs ?? 0,
      this.#config.proxyProtocol?.timeoutMs ?? 0,
      this.#config.tls ? TLS_HANDSHAKE_TIMEOUT_MS : 0,
    ].filter((ms) => ms > 0);
    if (limits.length === 0) return;
    const period = sweepPeriod(Math.min(...limits));
    this.#limitSweepTimer = setInterval(() => {
      const now = performance.now();
      for (const session of this.#sessions) {
        if (now >= session.closeAt && !session.closedBecause) {
          if (session.closeAtReason === "duration limit") this.stats.closedMaxDuration++;
          session.close(session.closeAtReason);
        }
      }
    }, period);
    Deno.unrefTimer(this.#limitSweepTimer);
  }
}
