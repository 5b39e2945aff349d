// udp: the RFC 862 UDP echo of `--udp`: each datagram is sent back whole to where it came from, on the TCP port's
// number and addresses. UDP echo is the textbook reflector (CVE-1999-0103: a forged source address makes the echo
// hit a victim, or loop against another echo or chargen service), so three guards run before any answer: a
// datagram from a source port of a service that answers back (echo, daytime, chargen, DNS, NTP, ...) is dropped;
// the --allow/--deny rules apply; and each source address has a token bucket (`--udp-rate` per second, a burst of
// one second), kept in a table of bounded size. Off by default.

import { allowedByRules, type CidrList, clientKey, parseClientAddress } from "./access.ts";
import { formatAddress, openDatagramSockets } from "./listen.ts";
import { connectionEventsEnabled, connLog, RateLimitedLog, serverLog } from "./log.ts";

/**
 * Source ports never answered: the services that answer whatever they receive, or answer more than they get
 * (tcpmux 0 is "no port"; echo 7, daytime 13, qotd 17, chargen 19, time 37, DNS 53, NTP 123, SNMP 161, LDAP 389,
 * SSDP 1900, memcached 11211).
 */
export const BLOCKED_SOURCE_PORTS: readonly number[] = [0, 7, 13, 17, 19, 37, 53, 123, 161, 389, 1900, 11211];
/** Source addresses remembered at most; beyond it the oldest entry is forgotten. */
export const MAX_UDP_SOURCES = 16_384;
/** Enough for the largest datagram over IPv4 (65,507 bytes) or IPv6 (65,527) without jumbograms. */
const RECEIVE_BUFFER = 65_536;

const BLOCKED = new Uint8Array(65_536);
for (const port of BLOCKED_SOURCE_PORTS) BLOCKED[port] = 1;

/** Counters of the UDP echo, plain numbers read by the metrics at scrape time. */
export interface UdpStats {
  /** Datagrams sent back. */
  datagramsEchoed: number;
  /** Bytes sent back in them. */
  bytesEchoed: number;
  /** Dropped: from a blocked source port. */
  droppedSourcePort: number;
  /** Dropped: the source is outside --allow or inside --deny. */
  droppedAccessRule: number;
  /** Dropped: the source's token bucket was empty. */
  droppedRateLimit: number;
  /** Sending the answer failed (the datagram is lost; the echo goes on). */
  sendErrors: number;
  /** Receiving failed for another reason than the socket closing. */
  receiveErrors: number;
}

/** Why a datagram was not answered, as counted and logged. */
export type DropReason = "source_port" | "access_rule" | "rate_limit";

interface Source {
  tokens: number;
  last: number;
  allowed: boolean;
}

/**
 * Per-source token buckets in a table of bounded size: a source may send `rate` datagrams per second on average
 * and `rate` at once after a quiet second. The table also remembers whether the access rules admit the source,
 * so a datagram costs one map look-up.
 */
export class SourceTable {
  readonly #sources = new Map<string, Source>();

  /**
   * @param rate datagrams per second per source (also the burst)
   * @param maxSources entries kept at most
   * @param admits whether the access rules let an address in (asked once per source in the table)
   * @param now the clock, in milliseconds
   */
  constructor(
    private readonly rate: number,
    private readonly maxSources: number,
    private readonly admits: (hostname: string) => boolean,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Sources in the table. */
  get size(): number {
    return this.#sources.size;
  }

  /**
   * Decides whether one datagram from `hostname` is answered, and takes a token if so.
   *
   * @param hostname the source address
   * @returns undefined to answer, or why not
   */
  take(hostname: string): "access_rule" | "rate_limit" | undefined {
    const now = this.now();
    let source = this.#sources.get(hostname);
    if (source === undefined) {
      if (this.#sources.size >= this.maxSources) this.#sources.delete(this.#sources.keys().next().value!);
      source = { tokens: this.rate, last: now, allowed: this.admits(hostname) };
      this.#sources.set(hostname, source);
    }
    if (!source.allowed) return "access_rule";
    source.tokens = Math.min(this.rate, source.tokens + ((now - source.last) * this.rate) / 1000);
    source.last = now;
    if (source.tokens < 1) return "rate_limit";
    source.tokens -= 1;
    return undefined;
  }
}

/** Options of {@link UdpEcho}. */
export interface UdpEchoOptions {
  /** Addresses to listen on (the TCP listeners' hosts). */
  hosts: readonly string[];
  /** Datagrams per second answered per source address. */
  ratePerSource: number;
  /** The --allow / --deny rules; absent = everyone. */
  allow?: CidrList;
  deny?: CidrList;
}

/** Fresh UDP counters, all zero. */
export function emptyUdpStats(): UdpStats {
  return {
    datagramsEchoed: 0,
    bytesEchoed: 0,
    droppedSourcePort: 0,
    droppedAccessRule: 0,
    droppedRateLimit: 0,
    sendErrors: 0,
    receiveErrors: 0,
  };
}

/**
 * The UDP echo service.
 *
 * @example
 * ```ts
 * const udp = new UdpEcho({ hosts: ["127.0.0.1"], ratePerSource: 100 });
 * await udp.start(40007); // the TCP port's number
 * // ... datagrams are echoed ...
 * await udp.close();
 * ```
 */
export class UdpEcho {
  /** Counters since start. */
  readonly stats: UdpStats = emptyUdpStats();
  readonly #options: UdpEchoOptions;
  readonly #sources: SourceTable;
  #sockets: Deno.DatagramConn[] = [];
  #loops: Promise<void>[] = [];
  #closing = false;
  readonly #drops: Record<DropReason, RateLimitedLog>;
  readonly #failures = new RateLimitedLog(
    10_000,
    (count, detail) => serverLog.warn("UDP: {count} send/receive error(s) (latest: {detail})", { count, detail }),
  );

  /** @param options addresses, rate and access rules */
  constructor(options: UdpEchoOptions) {
    this.#options = options;
    const { allow, deny } = options;
    const admits = (hostname: string) => allowedByRules(parseClientAddress(hostname), allow, deny);
    this.#sources = new SourceTable(options.ratePerSource, MAX_UDP_SOURCES, admits);
    const dropLog = (reason: string) =>
      new RateLimitedLog(
        10_000,
        (count, peer) =>
          serverLog.warn("UDP: dropped {count} datagram(s): {reason} (latest from {peer})", { count, reason, peer }),
      );
    this.#drops = {
      source_port: dropLog("source port of a service that answers back (reflection guard)"),
      access_rule: dropLog("refused by --allow/--deny"),
      rate_limit: dropLog(`over --udp-rate ${options.ratePerSource}/s for that source`),
    };
  }

  /** Source addresses in the rate-limit table. */
  get sources(): number {
    return this.#sources.size;
  }

  /**
   * Opens the sockets and starts echoing.
   *
   * @param port the port number (the TCP listeners' port)
   * @throws {ListenError} when a socket cannot be opened, or Deno runs without --unstable-net
   */
  async start(port: number): Promise<void> {
    const { sockets } = await openDatagramSockets({ hosts: this.#options.hosts, port });
    this.#sockets = sockets;
    this.#loops = sockets.map((s) => this.#echoLoop(s));
    serverLog.info(
      "echoing UDP on port {port} (at most {rate} datagrams/s per source; never to source ports {ports})",
      {
        port,
        rate: this.#options.ratePerSource,
        ports: BLOCKED_SOURCE_PORTS.join(", "),
      },
    );
  }

  /** Closes the sockets at once (UDP has no session to drain) and waits for the loops to end. */
  async close(): Promise<void> {
    this.#closing = true;
    for (const socket of this.#sockets) {
      try {
        socket.close();
      } catch {
        // closed already
      }
    }
    await Promise.all(this.#loops);
    for (const log of Object.values(this.#drops)) log.flush();
    this.#failures.flush();
  }

  async #echoLoop(socket: Deno.DatagramConn): Promise<void> {
    const buffer = new Uint8Array(RECEIVE_BUFFER);
    for (;;) {
      let data: Uint8Array;
      let from: Deno.NetAddr;
      try {
        const [received, addr] = await socket.receive(buffer);
        data = received;
        from = addr as Deno.NetAddr;
      } catch (error) {
        if (this.#closing || error instanceof Deno.errors.BadResource) return;
        this.stats.receiveErrors++;
        this.#failures.add(`receive: ${(error as Error).message}`);
        // An error that repeats at once (none is known to) must not spin the CPU.
        await new Promise((resolve) => setTimeout(resolve, 10));
        continue;
      }
      const drop: DropReason | undefined = BLOCKED[from.port] ? "source_port" : this.#sources.take(from.hostname);
      if (drop !== undefined) {
        if (drop === "source_port") this.stats.droppedSourcePort++;
        else if (drop === "access_rule") this.stats.droppedAccessRule++;
        else this.stats.droppedRateLimit++;
        this.#drops[drop].add(formatAddress(clientKey(from.hostname), from.port));
        continue;
      }
      try {
        await socket.send(data, from);
        this.stats.datagramsEchoed++;
        this.stats.bytesEchoed += data.length;
        if (connectionEventsEnabled()) {
          connLog.debug("UDP: echoed {bytes} bytes to {peer}", {
            bytes: data.length,
            peer: formatAddress(clientKey(from.hostname), from.port),
          });
        }
      } catch (error) {
        if (this.#closing || error instanceof Deno.errors.BadResource) return;
        this.stats.sendErrors++;
        this.#failures.add(
          `send to ${formatAddress(clientKey(from.hostname), from.port)}: ${(error as Error).message}`,
        );
      }
    }
  }
}
