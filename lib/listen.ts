// listen: opening the TCP listeners (plain or TLS) and the UDP sockets for a list of addresses on one port, with
// the rules of each OS for IPv4 and IPv6. On Linux and macOS `[::]` is dual-stack, for TCP and UDP alike, so
// `0.0.0.0` on the same port then fails with AddrInUse: that means IPv4 is already served. On Windows IPv6 sockets
// are v6-only and both binds succeed. Without IPv6 in the kernel, `[::]` fails with EAFNOSUPPORT and IPv4 carries
// on alone.

import { formatAddress, formatHost } from "./address.ts";
import { serverLog } from "./log.ts";
import { listenTls, type TlsConnection, type TlsListener } from "./tls.ts";

/** Thrown when the listeners cannot be opened; the message names the address, the port and the reason. */
export class ListenError extends Error {
  /** The error's name, as stack traces show it. */
  override name = "ListenError";
}

/** An accepted connection: plain TCP, or TLS when `--tls-cert` is given (lib/tls.ts). */
export type EchoConn = Deno.TcpConn | TlsConnection;
/** A listener of {@link EchoConn}s. */
export type EchoListener = Deno.TcpListener | TlsListener;

/** The outcome of {@link openListeners}: the open listeners and the port they share. */
export interface Listeners {
  /** One per address bound. */
  listeners: EchoListener[];
  /** The port they share (the one the OS picked for port 0). */
  port: number;
}

/** Options for {@link openListeners}. */
export interface ListenOptions {
  /** Addresses, in the order they are bound. */
  hosts: readonly string[];
  /** The port; 0 lets the first bind pick one, which the others then share. */
  port: number;
  /** SO_REUSEPORT, for several workers on one port (Linux; needs `--unstable-net`). */
  reusePort?: boolean;
  /** Serve TLS with this PEM certificate chain and key (lib/tls.ts's TlsListener) instead of plain TCP. */
  tls?: { cert: string; key: string };
}

function isWildcardV4(host: string): boolean {
  return host === "0.0.0.0";
}

function isV6(host: string): boolean {
  return host.includes(":");
}

function errorCode(error: unknown): string | undefined {
  return (error as { code?: string })?.code;
}

/** True for the errors that mean "this machine has no IPv6" (no kernel support, or no such address family). */
function isNoIPv6(error: unknown): boolean {
  const code = errorCode(error);
  return code === "EAFNOSUPPORT" || code === "EADDRNOTAVAIL" || code === "EPROTONOSUPPORT";
}

/**
 * Opens one listener per address on one port and logs one line for each (or for the address covered by another).
 * When every bind fails, or a bind fails for any reason other than the ones above, closes what was opened and
 * throws {@link ListenError}.
 *
 * @param options the addresses and the port
 * @returns the listeners and their port
 * @throws {ListenError} naming the address and port, e.g. "port 40007 on 0.0.0.0 is already in use"
 * @example
 * ```ts
 * const { listeners, port } = await openListeners({ hosts: ["127.0.0.1"], port: 0 });
 * console.log(port); // the port the OS picked
 * for (const l of listeners) l.close();
 * ```
 */
export async function openListeners(options: ListenOptions): Promise<Listeners> {
  const { bound, port } = await bindEach(
    options.hosts,
    options.port,
    options.tls ? "TLS" : "TCP",
    (hostname, port) => listenOne(hostname, port, options.reusePort, options.tls),
    !options.reusePort,
  );
  return { listeners: bound, port };
}

/**
 * Opens one UDP socket per address on one port, with the same dual-stack rules and log lines as
 * {@link openListeners}. Needs Deno's `--unstable-net` (Deno.listenDatagram is undefined without it).
 *
 * @param options the addresses and the port (the TCP listeners' port, so both share one number)
 * @returns the sockets and their port
 * @throws {ListenError} naming the address and port, or saying that `--unstable-net` is missing
 */
export async function openDatagramSockets(
  options: ListenOptions,
): Promise<{ sockets: Deno.DatagramConn[]; port: number }> {
  if (typeof Deno.listenDatagram !== "function") {
    throw new ListenError(
      "UDP needs Deno's --unstable-net flag (deno task start has it; with deno run, add --unstable-net)",
    );
  }
  const { bound, port } = await bindEach(
    options.hosts,
    options.port,
    "UDP",
    (hostname, port) => Deno.listenDatagram({ hostname, port, transport: "udp" }),
    true,
  );
  return { sockets: bound, port };
}

/**
 * Binds each host in turn on one port (the first bind picks it when it is 0), applying the dual-stack and
 * no-IPv6 rules above; closes what was opened and throws {@link ListenError} on any other failure.
 */
async function bindEach<T extends { addr: Deno.Addr; close(): void }>(
  hosts: readonly string[],
  firstPort: number,
  kind: "TCP" | "TLS" | "UDP",
  open: (hostname: string, port: number) => T | Promise<T>,
  v4CoveredByDualStack: boolean,
): Promise<{ bound: T[]; port: number }> {
  const bound: T[] = [];
  let port = firstPort;
  const suffix = kind === "TCP" ? "" : ` (${kind})`;
  const dualStackV6 = () => bound.find((b) => (b.addr as Deno.NetAddr).hostname === "::");
  try {
    for (const host of hosts) {
      let socket: T;
      try {
        socket = await open(host, port);
      } catch (error) {
        // Not on Windows: there `[::]` is v6-only, so AddrInUse on 0.0.0.0 means another program holds the port.
        if (
          error instanceof Deno.errors.AddrInUse && isWildcardV4(host) && dualStackV6() && v4CoveredByDualStack &&
          Deno.build.os !== "windows"
        ) {
          serverLog.info(`IPv4 on port {port} is served by the dual-stack listener on [::]${suffix}`, { port });
          continue;
        }
        if (isV6(host) && isNoIPv6(error) && hosts.some((h) => !isV6(h))) {
          serverLog.warn("IPv6 is not available here ({code}); not listening on {address}, serving IPv4 only", {
            code: errorCode(error),
            address: formatAddress(host, port),
          });
          continue;
        }
        throw listenError(error, host, port, kind);
      }
      bound.push(socket);
      const addr = socket.addr as Deno.NetAddr;
      port = addr.port;
      serverLog.info(`listening on {address}${suffix}`, {
        address: formatAddress(addr.hostname, port),
        hostname: addr.hostname,
        port,
        transport: kind.toLowerCase(),
      });
    }
  } catch (error) {
    for (const b of bound) b.close();
    throw error;
  }
  if (bound.length === 0) throw new ListenError(`no address could be bound on ${kind} port ${port}`);
  return { bound, port };
}

/**
 * The listen backlog: how many connections the kernel completes and queues for accept(). Deno's default is 511; when
 * more clients than that connect at once (a load test opening 1000 connections), Linux drops the handshakes that do
 * not fit (TcpExtListenOverflows) and those clients wait for the SYN to be sent again, a whole second later. 4096 is
 * Linux's default cap (net.core.somaxconn), which the kernel applies to a larger value; measured in
 * docs/latency-under-load.md.
 */
export const TCP_BACKLOG = 4096;

function listenOne(
  hostname: string,
  port: number,
  reusePort?: boolean,
  tls?: { cert: string; key: string },
): EchoListener | Promise<EchoListener> {
  const tcpBacklog = TCP_BACKLOG;
  if (tls) return listenTls(hostname, port, reusePort, tls, tcpBacklog);
  // reusePort is only in Deno's unstable types, hence the cast; the caller checks `--unstable-net` first.
  return reusePort
    ? Deno.listen({ hostname, port, transport: "tcp", reusePort, tcpBacklog } as Deno.TcpListenOptions)
    : Deno.listen({ hostname, port, transport: "tcp", tcpBacklog });
}

/**
 * The {@link ListenError} for a bind that failed, in words a user can act on ("port 40007 on 0.0.0.0 is already in
 * use ...", "permission denied", "no such address").
 *
 * @param error what the bind threw
 * @param host the address it bound
 * @param port the port
 * @param kind the transport, named in the message for UDP
 * @returns the error to throw
 */
export function listenError(error: unknown, host: string, port: number, kind: "TCP" | "TLS" | "UDP"): ListenError {
  const where = `${kind === "UDP" ? "UDP " : ""}port ${port} on ${formatHost(host)}`;
  if (error instanceof Deno.errors.AddrInUse) {
    return new ListenError(`${where} is already in use (another echosrv or program holds it); choose another --port`);
  }
  if (error instanceof Deno.errors.PermissionDenied || errorCode(error) === "EACCES") {
    return new ListenError(`${where}: permission denied (ports below 1024 need privileges)`);
  }
  if (error instanceof Deno.errors.AddrNotAvailable || errorCode(error) === "EADDRNOTAVAIL") {
    return new ListenError(`${where}: no such address on this machine`);
  }
  const message = (error as Error)?.message ?? String(error);
  return new ListenError(`cannot listen on ${where}: ${message}`);
}
