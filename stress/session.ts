// session: what one stress session runs inside, whatever its kind: the connections it opens (all closed when it
// ends), its deadline (a session past it is a hang: its connections are closed so it cannot block the client),
// its counters, and the ways it can end. Kinds (stress/kinds.ts) do the talking; this module judges the endings.
// It also keeps a record of each connection (its local port, when it was opened, what came back and how its read
// side ended), so that the orchestrator can hold a close the server started against the server's own closing log
// line for that connection (stress/closes.ts).

import type { ByteStream, Random, Verifier } from "../support/rng.ts";
import { proxyV2Header } from "../support/proxy_header.ts";

/** Where a kind connects (the swarmed server, the idle kinds' server). */
export interface Target {
  hostname: string;
  port: number;
}

/**
 * How every connection of the run starts, following the server's options: plain TCP; TLS (echosrv with
 * `--tls-cert`), verified against that certificate; or a PROXY header first, as a load balancer sends it (echosrv
 * with `--proxy-protocol`), v1 and v2 in turn.
 */
export interface Transport {
  /** The PEM certificate to trust: connect with TLS and finish the handshake before the kind starts. */
  tlsCaCert?: string;
  /** Send a PROXY header carrying a made-up client address before anything else. */
  proxyHeader?: boolean;
}

/** A connection of a session: TCP, or TLS over it. */
export type StressConn = Deno.TcpConn | Deno.TlsConn;

/**
 * What the server's closing log line for a connection must say, when the session expects the server to close it
 * (or, for a close the client starts, how the server must have seen it). The orchestrator checks it.
 */
export interface CloseExpectation {
  /** The reasons the closing line may give ("byte limit", "idle timeout", "closed by peer", ...). */
  reasons: string[];
  /** The bytes the server must have counted as echoed (the byte limit), besides matching what came back. */
  bytes?: number;
  /** The connection's age in the closing line must be at least this (ms): a timeout must not fire early. */
  minDurationMs?: number;
  /**
   * Set when the session could not bring about the close it planned (why): the line must then show the close that
   * happened instead, and the check counts as missed, not exact.
   */
  missed?: string;
}

/** One connection of a session, as the client saw it: what the orchestrator matches with the server's log. */
export interface ConnRecord {
  /** The target it went to ("limits", "idle", ...). */
  target: string;
  /** Its local port: the server's log names the peer by it (a PROXY header carries it too). */
  port: number;
  /** Epoch ms just before connecting: the server accepted it later. */
  connectAt: number;
  /** Bytes read back on it. */
  received: number;
  /** How its read side ended: the end of stream (over TLS, without close_notify: unclean), a reset; absent if not. */
  end?: "eof" | "unclean-eof" | "reset";
  /**
   * Epoch ms when the last write on it began (0: none): data sent to a socket the server has closed is answered
   * with a reset, which is then the client's doing.
   */
  lastWriteAt: number;
  /**
   * How long nothing went out before that last write began (ms): since the write before it completed, or since
   * connecting. A lingering close ends after 2 s of the peer's silence, so a write after such a pause may meet a
   * closed socket.
   */
  quietBeforeMs: number;
  /** Set when a write on it failed with a reset (the read side's end is in `end`). */
  writeReset?: boolean;
  /** What the server's closing line must say, when the session says. */
  expect?: CloseExpectation;
}

/** What every session of a run shares. */
export interface SessionEnv {
  /** The ports under test by name; kinds say which one they use. */
  targets: Record<string, Target>;
  /** The server's idle timeout, so idle kinds can stay under it or outlast it on purpose. */
  idleTimeoutMs: number;
  /** True when the server is stopped during the run: refusals and cut sessions are then expected endings. */
  stopMode: boolean;
  /** How connections start (plain TCP when absent). */
  transport?: Transport;
}

/** The server ended a connection before the session was done (end of stream or reset). */
export class Cut extends Error {
  override name = "Cut";
}

/** The server refused the connection: nothing listens, or a closing listener reset the handshake. */
export class Refused extends Error {
  override name = "Refused";
}

/** The server broke a promise: wrong bytes, extra bytes, or a close too early. Never an expected ending. */
export class Violation extends Error {
  override name = "Violation";
}

/** The session's deadline passed; its connections were closed under it. */
export class Expired extends Error {
  override name = "Expired";
}

/** How a session ended. `cut` and `refused` are acceptable only while the server is being stopped. */
export type Ending = "ok" | "cut" | "refused" | "hang" | "violation" | "error";

/**
 * The peer-side errors that mean the server reset or closed the connection under us (over TLS, a close without
 * close_notify reads as UnexpectedEof).
 */
function isCutError(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.ConnectionAborted || error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.UnexpectedEof;
}

/**
 * One session's connections, deadline and counters. Kinds call {@link connect}, {@link sleep}, {@link send},
 * {@link receive}; the client calls {@link dispose} when the session ends, however it ends.
 */
export class SessionContext {
  /** Bytes written to the server. */
  bytesSent = 0;
  /** Bytes received back and found equal to what was sent. */
  bytesVerified = 0;
  /** Bytes received back, verified or not (a cut session tells how far it got). */
  bytesReceived = 0;
  /**
   * Bytes received on the connection opened last: what a cut interrupted (sessions of several connections, as
   * churn's, open them one after another, so an earlier connection's echo says nothing about the one cut).
   */
  receivedOnLastConnection = 0;
  /** Connections opened. */
  connections = 0;
  /** Set when the deadline passed. */
  expired = false;
  /** What the session was doing, for the failure report. */
  doing = "starting";
  /** Every connection opened (or reported by an outside client), in order. */
  readonly records: ConnRecord[] = [];
  readonly #records = new Map<StressConn, ConnRecord>();
  /** When each connection's last write completed (or it connected). */
  readonly #wroteAt = new Map<StressConn, number>();
  /** Things to end with the session besides its connections (an outside client's process). */
  readonly #disposers = new Set<() => void>();
  readonly #open = new Set<StressConn>();
  readonly #timer: ReturnType<typeof setTimeout>;
  readonly #expiry = Promise.withResolvers<never>();

  /**
   * @param env what the run shares
   * @param deadlineMs how long the session may take before it counts as a hang
   * @param onConnections told how many connections are open after each change (for the client's peak count)
   */
  constructor(
    readonly env: SessionEnv,
    deadlineMs: number,
    private readonly onConnections: (delta: number) => void = () => {},
  ) {
    this.#expiry.promise.catch(() => {});
    this.#timer = setTimeout(() => {
      this.expired = true;
      this.#expiry.reject(new Expired(`deadline of ${deadlineMs} ms passed while ${this.doing}`));
      for (const conn of this.#open) this.close(conn);
      for (const dispose of this.#disposers) dispose();
    }, deadlineMs);
  }

  /**
   * Opens a connection to a target; it is closed when the session ends if the kind has not closed it.
   *
   * @param target the name of the port to connect to
   * @returns the connection
   * @throws {Refused} when nothing listens there
   */
  async connect(target = "echo"): Promise<StressConn> {
    const where = this.env.targets[target];
    if (!where) throw new Error(`no target "${target}" in this run`);
    this.doing = "connecting";
    this.receivedOnLastConnection = 0;
    const connectAt = Date.now();
    let conn: StressConn;
    try {
      conn = await this.#race(this.#dial(where));
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionRefused) throw new Refused("connection refused");
      // A handshake that completed while the listener was closing is reset before it is accepted: the server never
      // took the connection, so it is refused, as one that found nothing listening (it has no connection to check
      // against the server's closing lines, as a cut session has).
      if (isCutError(error)) throw new Refused(`connection reset while connecting (${(error as Error).name})`);
      throw error;
    }
    if (this.expired) {
      conn.close();
      throw new Expired("deadline passed while connecting");
    }
    this.#open.add(conn);
    this.connections++;
    this.onConnections(1);
    const record: ConnRecord = {
      target,
      port: conn.localAddr.port,
      connectAt,
      received: 0,
      lastWriteAt: 0,
      quietBeforeMs: Date.now() - connectAt,
    };
    this.#wroteAt.set(conn, Date.now());
    this.records.push(record);
    this.#records.set(conn, record);
    return conn;
  }

  /**
   * Says what the server's closing log line for this connection must say (checked by the orchestrator).
   *
   * @param conn a connection of this session
   * @param expect the reasons, and the bytes or age the line must show
   */
  expectClose(conn: StressConn, expect: CloseExpectation): void {
    const record = this.#records.get(conn);
    if (record) record.expect = expect;
  }

  /**
   * Records a connection made by a client outside this process (stress/rcvbuf_peer.py), so it is checked and
   * counted like the session's own.
   *
   * @param record what that client reported
   */
  addRecord(record: ConnRecord): void {
    this.records.push(record);
    this.connections++;
    this.receivedOnLastConnection = record.received;
  }

  /**
   * Registers something to end with the session, or at its deadline (an outside client's process).
   *
   * @param dispose what ends it (called at most once by the session; must not throw)
   * @returns a function that unregisters it
   */
  adopt(dispose: () => void): () => void {
    if (this.expired) dispose();
    this.#disposers.add(dispose);
    return () => this.#disposers.delete(dispose);
  }

  /**
   * Races a promise against the session's deadline.
   *
   * @param promise what to wait for
   * @returns its value
   * @throws {Expired} once the deadline passes
   */
  race<T>(promise: Promise<T>): Promise<T> {
    return this.#race(promise);
  }

  /** Opens a connection as the run's transport says: TCP, then the TLS handshake or the PROXY header. */
  async #dial(where: Target): Promise<StressConn> {
    const transport = this.env.transport ?? {};
    if (transport.tlsCaCert) {
      const conn = await Deno.connectTls({
        hostname: where.hostname,
        port: where.port,
        caCerts: [transport.tlsCaCert],
      });
      try {
        this.doing = "in the TLS handshake";
        await conn.handshake();
      } catch (error) {
        conn.close();
        throw error;
      }
      return conn;
    }
    const conn = await Deno.connect({ hostname: where.hostname, port: where.port });
    if (transport.proxyHeader) {
      // A client address of the documentation networks, from the session's connection count (v1 and v2 in turn),
      // with this connection's own local port, so that the server's log (which names the client the header
      // carries) can be matched with this connection.
      const n = this.connections;
      const client = { hostname: `198.51.100.${(n % 254) + 1}`, port: conn.localAddr.port };
      const header = n % 2 === 0
        ? new TextEncoder().encode(`PROXY TCP4 ${client.hostname} 127.0.0.1 ${client.port} ${where.port}\r\n`)
        : proxyV2Header(client, where);
      try {
        this.doing = "sending the PROXY header";
        for (let offset = 0; offset < header.length;) offset += await conn.write(header.subarray(offset));
      } catch (error) {
        conn.close();
        throw error;
      }
    }
    return conn;
  }

  /** Closes a connection of this session (quietly if it is closed already). */
  close(conn: StressConn): void {
    if (!this.#open.delete(conn)) return;
    this.onConnections(-1);
    try {
      conn.close();
    } catch {
      // already closed
    }
  }

  /** Sleeps, unless the deadline passes first. */
  async sleep(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await this.#race(new Promise<void>((resolve) => timer = setTimeout(resolve, ms)));
    } finally {
      clearTimeout(timer);
    }
  }

  /** Races a promise against the deadline. */
  #race<T>(promise: Promise<T>): Promise<T> {
    if (this.expired) {
      promise.then((value) => (value as { close?: () => void })?.close?.(), () => {});
      return this.#expiry.promise;
    }
    return Promise.race([promise, this.#expiry.promise]).catch((error) => {
      // A connect that completes after the deadline must not leak its connection.
      promise.then((value) => (value as { close?: () => void })?.close?.(), () => {});
      throw error;
    });
  }

  /**
   * Writes `total` bytes of `stream` in writes sized by `nextSize`.
   *
   * @param conn the connection
   * @param stream the bytes to send
   * @param total how many
   * @param nextSize the size of the next write (called once per write)
   * @param progress told the running total after each write, for kinds that watch for a stall
   * @throws {Cut} when the server resets the connection
   */
  async send(
    conn: StressConn,
    stream: ByteStream,
    total: number,
    nextSize: () => number,
    progress?: (sent: number) => void,
  ): Promise<void> {
    let chunk = new Uint8Array(0);
    let sent = 0;
    const record = this.#records.get(conn);
    while (sent < total) {
      const size = Math.min(total - sent, Math.max(1, nextSize()));
      if (chunk.length < size) chunk = new Uint8Array(size);
      const piece = chunk.subarray(0, size);
      stream.fill(piece);
      for (let offset = 0; offset < size;) {
        this.doing = `writing (${sent + offset} of ${total} bytes sent)`;
        if (record) {
          record.lastWriteAt = Date.now();
          record.quietBeforeMs = record.lastWriteAt - (this.#wroteAt.get(conn) ?? record.connectAt);
        }
        offset += await this.#io(() => conn.write(piece.subarray(offset)), () => {
          if (record) record.writeReset = true;
        });
        this.#wroteAt.set(conn, Date.now());
      }
      sent += size;
      this.bytesSent += size;
      progress?.(sent);
    }
  }

  /**
   * Reads the echo and checks it byte for byte: exactly `expected` bytes, then (if asked) the end of stream.
   *
   * @param conn the connection
   * @param verifier the checker for this stream
   * @param expected how many bytes must come back
   * @param options `bufferSize` of each read; `thenEnd` to require the end of stream after the last byte
   * @throws {Violation} on a wrong or extra byte; {@link Cut} when the stream ends early or is reset
   */
  async receive(
    conn: StressConn,
    verifier: Verifier,
    expected: number,
    options: { bufferSize: number; thenEnd: boolean },
  ): Promise<void> {
    const buffer = new Uint8Array(Math.max(1, options.bufferSize));
    let got = 0;
    while (got < expected || options.thenEnd) {
      this.doing = `reading (${got} of ${expected} bytes back${got === expected ? ", waiting for the end" : ""})`;
      // Past the expected count, read into the whole buffer: any byte there is one too many.
      const room = got < expected ? Math.min(buffer.length, expected - got) : buffer.length;
      const n = await this.#read(conn, buffer.subarray(0, room));
      if (n === null) {
        if (got < expected) throw new Cut(`end of stream after ${got} of ${expected} bytes`);
        return;
      }
      if (got + n > expected) throw new Violation(`${got + n - expected} byte(s) more than the ${expected} sent`);
      this.verify(verifier, buffer.subarray(0, n));
      got += n;
    }
  }

  /**
   * Reads the echo to its end, checking it byte for byte, however much comes back: for a connection the server
   * closes when it decides (a limit, a timeout), where what came back is then held against what the server says
   * it echoed.
   *
   * @param conn the connection
   * @param verifier the checker for this stream
   * @param most the most bytes that may come back (what was sent, or a byte limit)
   * @param bufferSize the size of each read
   * @returns the bytes read back, all verified, before the end of stream
   * @throws {Violation} on a wrong byte or more than `most`; {@link Cut} on a reset
   */
  async receiveToEnd(conn: StressConn, verifier: Verifier, most: number, bufferSize: number): Promise<number> {
    const buffer = new Uint8Array(Math.max(1, bufferSize));
    for (let got = 0;;) {
      this.doing = `reading to the end of stream (${got} bytes back)`;
      const n = await this.#read(conn, buffer);
      if (n === null) return got;
      if (got + n > most) throw new Violation(`${got + n} bytes came back, more than the ${most} possible`);
      this.verify(verifier, buffer.subarray(0, n));
      got += n;
    }
  }

  /** One read, recorded: the bytes, and the end of stream or a reset. */
  async #read(conn: StressConn, buffer: Uint8Array): Promise<number | null> {
    const record = this.#records.get(conn);
    const n = await this.#io(() => conn.read(buffer), (error) => {
      // Over TLS, an end of stream without close_notify reads as UnexpectedEof.
      if (record) record.end = error instanceof Deno.errors.UnexpectedEof ? "unclean-eof" : "reset";
    });
    if (record) {
      if (n === null) record.end = "eof";
      else record.received += n;
    }
    return n;
  }

  /**
   * Checks bytes that came back (in order) and counts them.
   *
   * @param verifier the checker for this stream
   * @param bytes the next bytes read back
   * @throws {Violation} on a byte that differs from the one sent
   */
  verify(verifier: Verifier, bytes: Uint8Array): void {
    this.bytesReceived += bytes.length;
    this.receivedOnLastConnection += bytes.length;
    const wrong = verifier.check(bytes);
    if (wrong >= 0) throw new Violation(`byte ${wrong} of the echo differs from the byte sent`);
    this.bytesVerified += bytes.length;
  }

  /** Half-closes (shuts down our sending side); the server then sees the end of stream. */
  async shutdown(conn: StressConn): Promise<void> {
    this.doing = "half-closing";
    await this.#io(() => conn.closeWrite());
  }

  /** Runs one socket operation: a reset becomes {@link Cut}, an operation cut short by the deadline {@link Expired}. */
  async #io<T>(operation: () => Promise<T>, onCut?: (error: unknown) => void): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      if (this.expired) throw new Expired(`deadline passed while ${this.doing}`);
      if (isCutError(error)) {
        onCut?.(error);
        throw new Cut(`${(error as Error).name} while ${this.doing}`);
      }
      throw error;
    }
  }

  /** Ends the session: the deadline timer stops, open connections close, adopted things end. */
  dispose(): void {
    clearTimeout(this.#timer);
    for (const conn of [...this.#open]) this.close(conn);
    for (const dispose of this.#disposers) dispose();
    this.#disposers.clear();
  }
}

/**
 * Classifies how a session ended from what it threw.
 *
 * @param error what the kind threw, or undefined when it returned
 * @param ctx the session's context (a passed deadline makes any ending a hang)
 * @returns the ending
 */
export function endingOf(error: unknown, ctx: SessionContext): Ending {
  if (error === undefined) return ctx.expired ? "hang" : "ok";
  if (ctx.expired || error instanceof Expired) return "hang";
  if (error instanceof Refused) return "refused";
  if (error instanceof Cut) return "cut";
  if (error instanceof Violation) return "violation";
  return "error";
}

/** Write sizes for a session of `total` bytes: spread from 1 byte up, but never more than ~2000 writes in all. */
export function writeSizer(rng: Random, total: number, maxWrite = 1024 * 1024): { lo: number; hi: number } {
  const lo = Math.max(1, Math.ceil(total / 2048));
  const hi = Math.max(lo, Math.min(total, rng.logInt(lo, maxWrite)));
  return { lo, hi };
}
