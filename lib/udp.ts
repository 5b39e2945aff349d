// udp: the RFC 862 UDP echo of `--udp`: each datagram is sent back whole to where it came from, on the TCP port's
// number and addresses. UDP echo is the textbook reflector (CVE-1999-0103: a forged source address makes the echo
// hit a victim, or loop against another echo or chargen service; CVE-2024-2169, CERT VU#417980: application-layer
// loops between any two services that answer back), so these guards run before any answer: a datagram from a source
// port of a service that answers back (the advisory's list: echo, daytime, chargen, DNS, NTP, TFTP, systat, ...) or
// from this echo's own port (a datagram forged as from the server itself, or from another echosrv) is dropped; the
// --allow/--deny rules apply; a source that sends back what it was just sent, again and again, is a loop partner and
// is not answered for a while; and each source address has a token bucket (`--udp-rate` per second, a burst of one
// second). The per-source state lives in a table of bounded size. Off by default.

import { allowedByRules, cidrList, parseClientAddress } from "./access.ts";
import { formatPeer } from "./address.ts";
import { openDatagramSockets } from "./listen.ts";
import { connectionEventsEnabled, connLog, RateLimitedLog, serverLog } from "./log.ts";

/**
 * Source ports never answered: the services that answer whatever they receive, or answer more than they get. Port 0
 * is "no port"; the loop advisory (CERT VU#417980, CVE-2024-2169) names echo 7, systat 11, daytime 13, qotd 17,
 * chargen 19, time 37, DNS 53, TFTP 69 and NTP 123; the usual reflectors add portmap 111, NetBIOS 137, SNMP 161,
 * CLDAP 389, RIP 520, SSDP 1900, WS-Discovery 3702, mDNS 5353, CoAP 5683, Ubiquiti discovery 10001 and memcached
 * 11211.
 */
export const BLOCKED_SOURCE_PORTS: readonly number[] = [
  0,
  7,
  11,
  13,
  17,
  19,
  37,
  53,
  69,
  111,
  123,
  137,
  161,
  389,
  520,
  1900,
  3702,
  5353,
  5683,
  10001,
  11211,
];
/**
 * A datagram from a source equal (same length and bytes) to the one answered to that source at most this long ago
 * (ms) is an echo of our echo: a loop partner answers in well under a millisecond on a LAN. A client that sends the
 * same datagram again this soon after its answer sends over 100 a second, the default --udp-rate, anyway.
 */
export const LOOP_ECHO_WINDOW_MS = 10;
/** Echoes of our echo in a row after which a source is taken for a loop partner. */
export const LOOP_BOUNCES = 3;
/** How long a loop partner goes unanswered (ms). */
export const LOOP_QUIET_MS = 10_000;
/** Source addresses remembered at most; beyond it the oldest entry is forgotten. */
export const MAX_UDP_SOURCES = 16_384;
/** Enough for the largest datagram over IPv4 (65,507 bytes) or IPv6 (65,527) without jumbograms. */
const RECEIVE_BUFFER = 65_536;

const BLOCKED = new Uint8Array(65_536);
for (const port of BLOCKED_SOURCE_PORTS) BLOCKED[port] = 1;

/** Counters of the UDP echo, plain numbers read by the metrics at scrape time. */
export interface UdpCounters {
  /** Datagrams sent back. */
  datagramsEchoed: number;
  /** Bytes sent back in them. */
  bytesEchoed: number;
  /** Dropped: from a blocked source port. */
  droppedSourcePort: number;
  /** Dropped: from this echo's own port number (forged as from the server, or another echosrv). */
  droppedOwnPort: number;
  /** Dropped: the source sends back what it is sent (an echo loop partner). */
  droppedLoop: number;
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
export type DropReason = "source_port" | "own_port" | "access_rule" | "loop" | "rate_limit";

interface Source {
  tokens: number;
  last: number;
  allowed: boolean;
  /** The datagram last answered to this source (a fingerprint) and when, to see it come back. */
  sentPrint: number;
  sentAt: number;
  /** Echoes of our echo in a row, and until when the source goes unanswered as a loop partner. */
  bounces: number;
  quietUntil: number;
}

/**
 * A fingerprint of a datagram: its length and an FNV-1a hash of up to its first 256 bytes. Cheap, and enough to
 * tell a loop (the same datagram coming back) from traffic that changes (a counter, a timestamp).
 *
 * @param data the datagram
 * @returns a 32-bit number
 */
export function fingerprint(data: Uint8Array): number {
  let hash = 0x811c9dc5 ^ data.length;
  const n = Math.min(data.length, 256);
  for (let i = 0; i < n; i++) hash = Math.imul(hash ^ data[i], 0x01000193);
  return hash >>> 0;
}

/**
 * Per-source token buckets in a table of bounded size: a source may send `rate` datagrams per second on average
 * and `rate` at once after a quiet second. The table also remembers whether the access rules admit the source,
 * so a datagram costs one map look-up.
 */
export class SourceTable {
  readonly #sources = new Map<string, Source>();

  /**
   * An empty table.
   *
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
   * @param print the datagram's {@link fingerprint}
   * @returns undefined to answer, or why not
   */
  take(hostname: string, print: number): "access_rule" | "loop" | "rate_limit" | undefined {
    const now = this.now();
    let source = this.#sources.get(hostname);
    if (source === undefined) {
      if (this.#sources.size >= this.maxSources) this.#sources.delete(this.#sources.keys().next().value!);
      source = {
        tokens: this.rate,
        last: now,
        allowed: this.admits(hostname),
        sentPrint: 0,
        sentAt: -Infinity,
        bounces: 0,
        quietUntil: 0,
      };
      this.#sources.set(hostname, source);
    }
    if (!source.allowed) return "access_rule";
    // A loop partner sends back what it was just sent; legitimate traffic changes, or is not that fast.
    if (print === source.sentPrint && now - source.sentAt <= LOOP_ECHO_WINDOW_MS) {
      if (++source.bounces >= LOOP_BOUNCES) source.quietUntil = now + LOOP_QUIET_MS;
    } else if (now >= source.quietUntil) source.bounces = 0;
    if (now < source.quietUntil) return "loop";
    source.tokens = Math.min(this.rate, source.tokens + ((now - source.last) * this.rate) / 1000);
    source.last = now;
    if (source.tokens < 1) return "rate_limit";
    source.tokens -= 1;
    source.sentPrint = print;
    source.sentAt = now;
    return undefined;
  }
}

/** Options of {@link UdpEcho}. */
export interface UdpEchoOptions {
  /** Addresses to listen on (the TCP listeners' hosts). */
  hosts: readonly string[];
  /** Datagrams per second answered per source address. */
  ratePerSource: number;
  /** `--allow`: when not empty, only these networks are answered (as the configuration writes them). */
  allow?: readonly string[];
  /** `--deny`: these networks are never answered. */
  deny?: readonly string[];
}

/** The counter of each drop reason. */
const DROP_COUNTERS: Record<DropReason, keyof UdpCounters> = {
  source_port: "droppedSourcePort",
  own_port: "droppedOwnPort",
  access_rule: "droppedAccessRule",
  loop: "droppedLoop",
  rate_limit: "droppedRateLimit",
};

/** Fresh UDP counters, all zero. */
export function emptyUdpCounters(): UdpCounters {
  return {
    datagramsEchoed: 0,
    bytesEchoed: 0,
    droppedSourcePort: 0,
    droppedOwnPort: 0,
    droppedLoop: 0,
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
  readonly counters: UdpCounters = emptyUdpCounters();
  readonly #options: UdpEchoOptions;
  readonly #sources: SourceTable;
  #sockets: Deno.DatagramConn[] = [];
  #loops: Promise<void>[] = [];
  #closing = false;
  /** The port listened on: a datagram from it is from this echo itself (forged) or from another echo. */
  #port = -1;
  readonly #drops: Record<DropReason, RateLimitedLog>;
  readonly #failures = new RateLimitedLog(
    10_000,
    (count, detail) => serverLog.warn("UDP: {count} send/receive error(s) (latest: {detail})", { count, detail }),
  );

  /**
   * A UDP echo, not yet listening: {@link start} opens the sockets.
   *
   * @param options addresses, rate and access rules
   */
  constructor(options: UdpEchoOptions) {
    this.#options = options;
    const allow = cidrList(options.allow ?? []);
    const deny = cidrList(options.deny ?? []);
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
      own_port: dropLog("from this echo's own port: forged as from itself, or from another echo (loop guard)"),
      access_rule: dropLog("refused by --allow/--deny"),
      loop: dropLog(`the source sends back what it is sent: an echo loop, unanswered for ${LOOP_QUIET_MS / 1000} s`),
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
    this.#port = port;
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
        this.counters.receiveErrors++;
        this.#failures.add(`receive: ${(error as Error).message}`);
        // An error that repeats at once (none is known to) must not spin the CPU.
        await new Promise((resolve) => setTimeout(resolve, 10));
        continue;
      }
      const drop: DropReason | undefined = BLOCKED[from.port]
        ? "source_port"
        : from.port === this.#port
        ? "own_port"
        : this.#sources.take(from.hostname, fingerprint(data));
      if (drop !== undefined) {
        this.counters[DROP_COUNTERS[drop]]++;
        this.#drops[drop].add(formatPeer(from));
        continue;
      }
      try {
        await socket.send(data, from);
        this.counters.datagramsEchoed++;
        this.counters.bytesEchoed += data.length;
        if (connectionEventsEnabled()) {
          connLog.debug("UDP: echoed {bytes} bytes to {peer}", {
            bytes: data.length,
            peer: formatPeer(from),
          });
        }
      } catch (error) {
        if (this.#closing || error instanceof Deno.errors.BadResource) return;
        this.counters.sendErrors++;
        this.#failures.add(
          `send to ${formatPeer(from)}: ${(error as Error).message}`,
        );
      }
    }
  }
}
