// admission: deciding, between accept and the first echoed byte, whether a connection is served. In order: with
// --proxy-protocol, the peer must be a --proxy-from load balancer and must send a valid PROXY header in time (its
// client address then stands for the connection); the --allow/--deny rules and --max-connections-per-ip apply to
// that client; with TLS, the handshake must succeed in time. Each refusal is counted by reason and logged at most
// once per 10 s per reason. Each connection (lib/connection.ts) calls {@link Admission.admit} once, and
// {@link Admission.release} when it ends.

import { AccessControl, type CidrList, cidrList, type ClientCounts, parseClientAddress } from "./access.ts";
import { formatPeer } from "./address.ts";
import type { AdmissionDeadline, CloseReason } from "./ending.ts";
import type { EchoConn } from "./listen.ts";
import { RateLimitedLog, serverLog } from "./log.ts";
import type { ServerConfig } from "./config.ts";
import { ProxyHeaderError, readProxyHeader } from "./proxy_protocol.ts";
import { formatDuration } from "./units.ts";

/**
 * How long a TLS client may take to finish its handshake (the idle timeout may be off; this bound never is).
 *
 * @param config the server configuration
 * @returns milliseconds: `--tls-handshake-timeout`, 10 s unless given
 */
export function tlsHandshakeTimeout(config: ServerConfig): number {
  return config.tlsHandshakeTimeoutMs ?? 10_000;
}

/** The counters admission keeps, part of the server's `counters` (plain numbers, read by the metrics). */
export interface AdmissionCounters {
  /** Refused: the client already had --max-connections-per-ip connections open. */
  refusedPerClient: number;
  /** Refused by the --allow / --deny rules. */
  refusedAccessRule: number;
  /** Refused: --proxy-protocol is on and the peer is not a --proxy-from load balancer. */
  refusedProxyUntrusted: number;
  /** Closed: the PROXY header was malformed, or the peer closed before sending a whole one. */
  refusedProxyHeader: number;
  /** Closed: the PROXY header did not arrive within --proxy-timeout. */
  refusedProxyTimeout: number;
  /** TLS handshakes that failed or timed out (plaintext sent to the TLS port, a client that rejects the cert). */
  tlsHandshakeErrors: number;
}

/** Fresh counters, all zero. */
export function admissionCounters(): AdmissionCounters {
  return {
    refusedPerClient: 0,
    refusedAccessRule: 0,
    refusedProxyUntrusted: 0,
    refusedProxyHeader: 0,
    refusedProxyTimeout: 0,
    tlsHandshakeErrors: 0,
  };
}

/** What admission needs of a connection (lib/connection.ts's Connection has it). */
export interface AdmittingConnection {
  /** The accepted socket. */
  readonly conn: EchoConn;
  /** The client: the TCP peer, or the address a PROXY header carried. Logs and rules use it. */
  client: { hostname: string; port: number };
  /** Set when the server closes the connection (its deadline, a stop), with the reason. */
  readonly closing: CloseReason | undefined;
  /** Has the server's limit sweep close the connection with `reason` `ms` from now (performance.now() time). */
  armDeadline(reason: AdmissionDeadline, ms: number): void;
  /** Takes that deadline away. */
  clearDeadline(): void;
}

/** Why a connection was refused, as the `reason` label of the metrics shows it. */
export type AdmissionRefusal =
  | "per_client_cap"
  | "access_rule"
  | "proxy_untrusted"
  | "proxy_header"
  | "proxy_timeout"
  | "tls_handshake";

/** The counter each refusal adds to. */
const COUNTER_OF: Record<AdmissionRefusal, keyof AdmissionCounters> = {
  per_client_cap: "refusedPerClient",
  access_rule: "refusedAccessRule",
  proxy_untrusted: "refusedProxyUntrusted",
  proxy_header: "refusedProxyHeader",
  proxy_timeout: "refusedProxyTimeout",
  tls_handshake: "tlsHandshakeErrors",
};

const EMPTY = new Uint8Array(0);

/**
 * The admission steps the configuration asks for.
 *
 * @example What lib/connection.ts does with it, for each connection
 * ```ts
 * import type { ServerConfig } from "./config.ts";
 *
 * async function serve(config: ServerConfig, counters: AdmissionCounters, connection: AdmittingConnection) {
 *   const admission = Admission.for(config, counters); // undefined when nothing is to be checked
 *   const rest = admission ? await admission.admit(connection) : new Uint8Array(0);
 *   if (rest === null) return; // refused, counted and logged: close the connection
 *   // ... echo `rest` (the bytes that came with the PROXY header), then the stream ...
 *   admission?.release(connection); // when the connection has ended
 * }
 * ```
 */
export class Admission {
  readonly #config: ServerConfig;
  readonly #counters: AdmissionCounters;
  readonly #access: AccessControl | undefined;
  /** `--proxy-from`, read from the configuration's text. */
  readonly #proxyFrom: CidrList | undefined;
  readonly #logs = new Map<AdmissionRefusal, RateLimitedLog>();

  /**
   * Builds the admission steps, or nothing when the configuration checks nothing (the common case costs no call at
   * all).
   *
   * @param config the server configuration
   * @param counters where refusals are counted (the server's counters)
   * @param clients where --max-connections-per-ip counts, when not this thread's own (a worker's)
   * @returns the admission steps, or undefined
   */
  static for(config: ServerConfig, counters: AdmissionCounters, clients?: ClientCounts): Admission | undefined {
    const access = config.access ? new AccessControl(config.access, clients) : undefined;
    if (!access?.active && !config.proxyProtocol && !config.tls) return undefined;
    return new Admission(config, counters, access?.active ? access : undefined);
  }

  private constructor(config: ServerConfig, counters: AdmissionCounters, access: AccessControl | undefined) {
    this.#config = config;
    this.#counters = counters;
    this.#access = access;
    this.#proxyFrom = config.proxyProtocol ? cidrList(config.proxyProtocol.from) : undefined;
  }

  /**
   * Runs the admission steps for one new connection. The caller's sweep enforces `deadline` (header and handshake
   * deadlines) by closing the connection, which ends a pending read here.
   *
   * @param connection the new connection
   * @returns the bytes that followed the PROXY header (to echo first; empty without one), or null when refused
   *   (counted and logged; the caller closes the connection)
   */
  async admit(connection: AdmittingConnection): Promise<Uint8Array | null> {
    let rest: Uint8Array = EMPTY;
    const proxy = this.#config.proxyProtocol;
    if (proxy) {
      const peer = connection.conn.remoteAddr;
      if (!this.#proxyFrom?.has(parseClientAddress(peer.hostname))) return this.#refuse(connection, "proxy_untrusted");
      connection.armDeadline("proxy header timeout", proxy.timeoutMs);
      try {
        const read = await readProxyHeader(connection.conn);
        rest = read.rest;
        if (read.header.command === "proxy" && read.header.source) connection.client = read.header.source;
      } catch (error) {
        if (connection.closing === "proxy header timeout") return this.#refuse(connection, "proxy_timeout");
        if (connection.closing) return null; // the server is stopping
        const detail = error instanceof ProxyHeaderError ? error.message : `${(error as Error).name}`;
        return this.#refuse(connection, "proxy_header", detail);
      }
      connection.clearDeadline();
    }
    if (this.#access) {
      const refusal = await this.#access.enter(connection.client.hostname);
      if (refusal) return this.#refuse(connection, refusal);
    }
    const conn = connection.conn;
    if (this.#config.tls && "handshake" in conn) {
      connection.armDeadline("TLS handshake timeout", tlsHandshakeTimeout(this.#config));
      try {
        await conn.handshake();
      } catch (error) {
        this.release(connection);
        if (connection.closing && connection.closing !== "TLS handshake timeout") return null;
        return this.#refuse(connection, "tls_handshake", (error as Error).message ?? String(error));
      }
      connection.clearDeadline();
    }
    return rest;
  }

  /**
   * Counts the end of an admitted connection (frees its place under --max-connections-per-ip).
   *
   * @param connection the connection, as given to {@link admit}
   */
  release(connection: AdmittingConnection): void {
    this.#access?.leave(connection.client.hostname);
  }

  /** Writes out the pending refusal summaries (at stop). */
  flush(): void {
    for (const log of this.#logs.values()) log.flush();
  }

  #refuse(connection: AdmittingConnection, reason: AdmissionRefusal, detail?: string): null {
    this.#counters[COUNTER_OF[reason]]++;
    const peer = formatPeer(reason === "proxy_untrusted" ? connection.conn.remoteAddr : connection.client);
    let log = this.#logs.get(reason);
    if (!log) {
      const what = this.#describe(reason);
      log = new RateLimitedLog(
        10_000,
        (count, latest) =>
          serverLog.warn("refused {count} connection(s): {what} (latest: {latest})", { count, what, reason, latest }),
      );
      this.#logs.set(reason, log);
    }
    log.add(detail ? `${peer}, ${detail}` : peer);
    return null;
  }

  #describe(reason: AdmissionRefusal): string {
    switch (reason) {
      case "per_client_cap":
        return `the client already has --max-connections-per-ip ${this.#config.access?.maxPerClient} open`;
      case "access_rule":
        return "by the --allow/--deny rules";
      case "proxy_untrusted":
        return `not from --proxy-from ${this.#proxyFrom}, so it may not send a PROXY header`;
      case "proxy_header":
        return "missing or malformed PROXY header";
      case "proxy_timeout":
        return `no PROXY header within --proxy-timeout ${formatDuration(this.#config.proxyProtocol?.timeoutMs ?? 0)}`;
      case "tls_handshake":
        return "TLS handshake failed";
    }
  }
}
