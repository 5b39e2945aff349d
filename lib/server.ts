// server: the echo server as one object, in the listener's role. It owns the listeners and their accept loops, the
// connection cap (lib/connection_cap.ts), the set of open connections (each a lib/connection.ts Connection, which
// admits, echoes and closes itself), the sweeps that enforce the idle and send timeouts and the deadlines, and the
// graceful stop. The path of a byte: #acceptLoop -> #serve (the cap, then a permit) -> Connection.run (admit, echo,
// close). The per-connection limits (bytes: a comparison per read in lib/echo.ts; age, PROXY header and TLS
// handshake deadlines, idle and send timeouts: two sweeps here) arm no timer per connection.

import type { ClientCounts } from "./access.ts";
import { Admission, tlsHandshakeTimeout } from "./admission.ts";
import { CoarseClock } from "./clock.ts";
import { formatPeer } from "./address.ts";
import { type ConnectionCap, LocalConnectionCap } from "./connection_cap.ts";
import { closeQuietly, Connection, type ConnectionContext, type Permit, refuse } from "./connection.ts";
import { emptyCounters, type ServerCounters } from "./counters.ts";
import { COPY_STRATEGIES } from "./echo.ts";
import { type EchoConn, type EchoListener, openListeners } from "./listen.ts";
import { startupSummary } from "./limits.ts";
import { RateLimitedLog, serverLog } from "./log.ts";
import type { ServerConfig } from "./config.ts";
import { ioEventsAtStart } from "./runtime.ts";
import { formatDuration } from "./units.ts";
import { FaultRuntime } from "./faults/runtime.ts";

/** How a server shares the machine with others of its kind (see lib/workers.ts); the defaults suit one server. */
export interface EchoServerOptions {
  /** The `--max-connections` cap shared with other servers (lib/connection_cap.ts), instead of this server's own. */
  cap?: ConnectionCap;
  /** Listen with SO_REUSEPORT, so other servers can listen on the same port (Linux; needs `--unstable-net`). */
  reusePort?: boolean;
  /** The clock of the per-byte path (lib/clock.ts); tests pass their own. */
  clock?: CoarseClock;
  /** The thread's DENO_TOKIO_MAX_IO_EVENTS_PER_TICK when it is not the process's (a worker's), for the log. */
  ioEventsPerTick?: string;
  /** The --max-connections-per-ip counts shared with other servers (lib/workers.ts), instead of this server's own. */
  clients?: ClientCounts;
  /** Issue 14: the worker's number (part of each impaired connection's seed; 0 without workers). */
  worker?: number;
  /** The --fault-listen ports to join (the first worker's, in order), instead of the configured ones. */
  faultPorts?: number[];
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
 * const server = new EchoServer({
 *   port: 0, // the OS picks one
 *   hosts: ["127.0.0.1"],
 *   maxConnections: 100,
 *   idleTimeoutMs: 60_000,
 *   shutdownTimeoutMs: 10_000,
 *   copy: "loop",
 * });
 * const { port } = await server.start();
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * await conn.write(new TextEncoder().encode("ping"));
 * const echo = new Uint8Array(4);
 * await conn.read(echo); // "ping", back
 * conn.close();
 * await server.stop(); // graceful: stop accepting, let sessions finish, close the rest (stopNow(): at once)
 * ```
 */
export class EchoServer {
  /** Counters since start. */
  readonly counters: ServerCounters = emptyCounters();

  readonly #config: ServerConfig;
  readonly #options: EchoServerOptions;
  /** What every connection of this server shares (lib/connection.ts). */
  readonly #context: ConnectionContext;
  /** The coarse clock of the per-byte path, advanced by the idle sweep. */
  readonly #clock: CoarseClock;
  /** The open listeners; closed first when stopping, so new connections are refused at once. */
  #listeners: EchoListener[] = [];
  /** One accept loop per listener; a stop waits for them so the port is really free afterwards. */
  #acceptLoops: Promise<void>[] = [];
  /** The open connections: the sweeps and the stop walk them. */
  readonly #connections = new Set<Connection>();
  /** `--max-connections`: this server's own count, or the count shared by every worker. */
  readonly #cap: ConnectionCap;
  /** Set once a stop begins; from then on, the last session to end resolves {@link #drained}. */
  #stopping: Promise<void> | undefined;
  #drained = Promise.withResolvers<void>();
  /** Resolved to cut a stop's grace period short (a second signal). */
  #graceCut = Promise.withResolvers<void>();
  #sweepTimer: ReturnType<typeof setInterval> | undefined;
  #limitSweepTimer: ReturnType<typeof setInterval> | undefined;
  /** Access rules, PROXY header, TLS handshake (lib/admission.ts); undefined when none is configured. */
  readonly #admission: Admission | undefined;
  /** Issue 14: the impairment profiles and their listeners (lib/faults/runtime.ts); undefined without --fault-*. */
  readonly faults: FaultRuntime | undefined;
  #finished = Promise.withResolvers<void>();
  /** Set once {@link start} has succeeded: a stop summarises only a server that ran (a failed start logs its error). */
  #started = false;
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
   * A server, not yet listening: {@link start} opens the listeners.
   *
   * @param config where to listen and the limits to enforce
   * @param options for a server that is one of several workers (lib/workers.ts)
   */
  constructor(config: ServerConfig, options: EchoServerOptions = {}) {
    this.#config = config;
    this.#options = options;
    this.#admission = Admission.for(config, this.counters, options.clients);
    this.#clock = options.clock ?? new CoarseClock();
    this.faults = config.faults && new FaultRuntime(config.faults, options.worker ?? 0, () => this.#connections);
    this.#cap = options.cap ?? new LocalConnectionCap(config.maxConnections);
    this.#context = {
      counters: this.counters,
      clock: this.#clock,
      copy: COPY_STRATEGIES[config.copy],
      admission: this.#admission,
      byteLimit: config.maxBytesPerConnection || Infinity,
      maxDurationMs: config.maxConnectionDurationMs ?? 0,
      unexpected: this.#unexpected,
      faults: this.faults,
    };
  }

  /** Open connections right now. */
  get activeConnections(): number {
    return this.#connections.size;
  }

  /** True once a stop has begun (what /healthz reports as 503 "draining"). */
  get draining(): boolean {
    return this.#stopping !== undefined;
  }

  /** Bytes echoed so far, by ended and open connections alike (for the metrics, at scrape time). */
  bytesEchoedNow(): number {
    let bytes = this.counters.bytesEchoed;
    for (const connection of this.#connections) bytes += connection.bytes;
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
  async start(): Promise<{ port: number }> {
    const { listeners, port } = await openListeners({
      hosts: this.#config.hosts,
      port: this.#config.port,
      tls: this.#config.tls,
      reusePort: this.#options.reusePort,
    });
    this.#listeners = listeners;
    // Issue 14: the --fault-listen listeners, beside the main ones (closed again, with those, if one cannot open).
    try {
      const { hosts, tls } = this.#config;
      const faultListeners = await this.faults?.openListeners(
        { hosts, tls, reusePort: this.#options.reusePort },
        this.#options.faultPorts,
      );
      this.#listeners.push(...faultListeners ?? []);
    } catch (error) {
      for (const listener of listeners) closeQuietly(listener);
      throw error;
    }
    this.#acceptLoops = this.#listeners.map((l) => this.#acceptLoop(l));
    this.#startQuietSweep(this.#config.idleTimeoutMs, this.#config.sendTimeoutMs ?? 0);
    this.#startLimitSweep();
    this.#started = true;
    serverLog.info("echoing on port {port} ({limits})", {
      port,
      ...startupSummary(this.#config),
      ioEventsPerTick: this.#options.ioEventsPerTick ?? ioEventsAtStart ?? "1024 (Deno's default)",
    });
    return { port };
  }

  /**
   * Stops gracefully: closes the listeners at once (new connections are refused), lets open sessions finish for
   * up to `graceMs`, then closes what remains, each with a lingering close. Calling it again while a stop runs
   * returns the same stop. A grace of 0 is {@link stopNow}.
   *
   * @param graceMs how long sessions may finish; defaults to the configured shutdown timeout
   * @returns resolves when every listener and session is closed
   */
  stop(graceMs: number = this.#config.shutdownTimeoutMs): Promise<void> {
    if (graceMs <= 0) return this.stopNow();
    this.#stopping ??= this.#runStop(graceMs);
    return this.#stopping;
  }

  /**
   * Stops at once (a deliberate second stop request): closes the listeners and every connection now, without a
   * grace period or a lingering close. During a graceful stop, cuts it short.
   *
   * @returns resolves when every listener and session is closed
   */
  stopNow(): Promise<void> {
    this.#graceCut.resolve();
    this.#stopping ??= this.#runStop(0);
    return this.#stopping;
  }

  async #runStop(graceMs: number): Promise<void> {
    for (const listener of this.#listeners) closeQuietly(listener);
    await Promise.all(this.#acceptLoops);
    const open = this.#connections.size;
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
    if (this.#connections.size > 0) {
      // A lingering close for each (lib/connection.ts), bounded by STOP_LINGER_MS; a second stop request cuts it.
      serverLog.info("closing {count} connection(s) still open", { count: this.#connections.size });
      for (const connection of this.#connections) connection.end("server stopping");
      await Promise.race([this.#drained.promise, this.#graceCut.promise]);
      for (const connection of this.#connections) connection.abort();
      await this.#drained.promise;
    }
    clearInterval(this.#sweepTimer);
    clearInterval(this.#limitSweepTimer);
    this.#admission?.flush();
    this.#refusals.flush();
    this.#acceptFailures.flush();
    this.#unexpected.flush();
    // A server whose start failed never listened: its error says all there is, and "0 connection(s) served" is noise.
    if (this.#started) {
      serverLog.info("stopped: {accepted} connection(s) served, {bytes} bytes echoed", {
        ...this.counters,
        bytes: this.counters.bytesEchoed,
      });
    }
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
        this.counters.acceptErrors++;
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

  /** Serves one connection from accept to close (lib/connection.ts). Never throws. */
  #serve(conn: EchoConn): void {
    if (!this.#cap.tryAcquire()) {
      this.counters.refusedOverCap++;
      this.#refusals.add(formatPeer(conn.remoteAddr));
      void refuse(conn);
      return;
    }
    // The permit: the connection's place in the set and under the cap, released once when it ends.
    const permit: Permit = {
      release: () => {
        this.#connections.delete(connection);
        this.#cap.release();
        if (this.#stopping && this.#connections.size === 0) this.#drained.resolve();
      },
    };
    const connection = new Connection(conn, this.#context, permit);
    this.#connections.add(connection);
    void connection.run();
  }

  /**
   * Closes connections on which nothing has moved for too long: `idleMs` (--idle-timeout) when the connection waits
   * for its peer with nothing of ours to send, `sendMs` (--send-timeout, as nginx's send_timeout) when our echo is
   * in flight and the peer takes none of it. A peer that reads at all resets the send timeout with each write, so a
   * slow reader is never idle. One timer for all connections, ticking at a tenth of the shorter timeout (10 ms to
   * 1 s), so the hot path only copies the coarse clock (lib/clock.ts) and arms no timer. That copy can be a whole
   * tick stale, so it only tells whether anything moved since the last tick; silence is counted from the first tick
   * that saw nothing new. A connection is never closed before it has been quiet for the full timeout, and at most
   * one tick after. A tick that comes late (the process was paused, or starved of CPU) does not count the pause as
   * silence: what peers sent meanwhile is still waiting to be read, and those reads complete only after the tick
   * (a connection whose client spoke after 0.5 s was closed by a 1 s idle timeout once the server had been paused
   * for 1.5 s). Silence so counts only time in which the server could have seen input.
   */
  #startQuietSweep(idleMs: number, sendMs: number): void {
    if (idleMs <= 0 && sendMs <= 0) return;
    const period = sweepPeriod(Math.min(idleMs > 0 ? idleMs : Infinity, sendMs > 0 ? sendMs : Infinity));
    let lastTick = this.#clock.advance();
    this.#sweepTimer = setInterval(() => {
      const now = this.#clock.advance();
      // Beyond two periods, a tick's lateness is the server's own pause, excused from every connection's silence.
      const excused = now - lastTick > 2 * period ? now - lastTick - period : 0;
      lastTick = now;
      for (const connection of this.#connections) {
        if (connection.closing) continue;
        if (connection.lastActive !== connection.sweptActive) {
          connection.sweptActive = connection.lastActive;
          connection.quietSince = now;
          continue;
        }
        connection.quietSince += excused;
        const quiet = now - connection.quietSince;
        if (connection.phase === "reading" && idleMs > 0 && quiet >= idleMs) {
          this.counters.closedIdle++;
          connection.end("idle timeout");
        } else if (connection.phase === "writing" && sendMs > 0 && quiet >= sendMs) {
          this.counters.closedSendTimeout++;
          connection.end("send timeout");
        }
      }
    }, period);
    Deno.unrefTimer(this.#sweepTimer);
  }

  /**
   * Closes connections past their deadline: --max-connection-duration, and the deadlines of the PROXY header and the
   * TLS handshake. Like the idle sweep, one timer for all, ticking at a tenth of the shortest of these limits
   * (10 ms to 1 s); started only when one of them is configured.
   */
  #startLimitSweep(): void {
    const limits = [
      this.#config.maxConnectionDurationMs ?? 0,
      this.#config.proxyProtocol?.timeoutMs ?? 0,
      this.#config.tls ? tlsHandshakeTimeout(this.#config) : 0,
    ].filter((ms) => ms > 0);
    if (limits.length === 0) return;
    const period = sweepPeriod(Math.min(...limits));
    this.#limitSweepTimer = setInterval(() => {
      const now = performance.now();
      for (const connection of this.#connections) {
        if (now >= connection.deadline.at && !connection.closing) {
          if (connection.deadline.reason === "duration limit") this.counters.closedMaxDuration++;
          connection.end(connection.deadline.reason);
        }
      }
    }, period);
    Deno.unrefTimer(this.#limitSweepTimer);
  }
}
