// config: what echosrv's configuration is, apart from how it is read (lib/options.ts reads the command line and the
// ECHOSRV_* environment into it): the types of the server's, the log's, the metrics endpoint's and `echosrv stats`'
// settings, and the defaults. Every value is plain data (numbers, strings, arrays, plain objects) that survives
// structuredClone, so the main thread hands a worker (lib/workers.ts) its configuration by value; the modules that
// use a setting compile it into what they need (lib/access.ts reads the networks of the access rules).
//
// It imports nothing, so that every module may import it without a cycle.

/**
 * `--send-timeout`'s default (ms). Linux wakes a writer blocked on a full send buffer only once about a third of the
 * buffer is free; with the largest automatic send buffer (4 MiB) a peer reading 10 KB/s frees that in about 140 s,
 * and must never be cut: 5 minutes leaves room for twice that.
 */
export const DEFAULT_SEND_TIMEOUT_MS = 5 * 60_000;

/**
 * `--tls-handshake-timeout`'s default (ms): a handshake takes a few round trips, so 10 s is generous for a slow
 * network and short for a client that opens connections and never speaks (as nginx's ssl_handshake_timeout, 60 s,
 * and HAProxy's `timeout client-hs` bound the same thing).
 */
export const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/** The port the WSK sample listened on, kept as the default. */
export const DEFAULT_PORT = 40007;
/** The addresses bound when no `--host` is given: IPv6 and IPv4 wildcards (see lib/listen.ts). */
export const DEFAULT_HOSTS: readonly string[] = ["::", "0.0.0.0"];

/** How each connection's bytes are copied back: see lib/echo.ts. */
export type CopyStrategy = "loop" | "pipe";
/** The logging thresholds of `--log-level`. */
export type LogLevelName = "error" | "warn" | "info" | "debug";
/** The line formats of `--log-format`. */
export type LogFormat = "text" | "json";

/** What the server itself needs: where to listen and the limits it enforces. */
export interface ServerConfig {
  /** TCP port; 0 asks the OS for a free one (the log says which). */
  port: number;
  /** Addresses to listen on, in order. */
  hosts: string[];
  /** Cap on open connections; 0 = no cap. */
  maxConnections: number;
  /** A connection with nothing to echo that receives nothing for this long is closed; 0 = never. */
  idleTimeoutMs: number;
  /**
   * A connection whose echo is in flight and whose peer takes none of it for this long is closed; 0 = never.
   * Optional, so that code building a ServerConfig by hand may leave it out (absent means never).
   */
  sendTimeoutMs?: number;
  /** How long a graceful stop waits for open sessions before closing them. */
  shutdownTimeoutMs: number;
  /** The copy strategy of each connection. */
  copy: CopyStrategy;
  // The operations options (issue 5). Optional, so that code building a ServerConfig by hand may leave them out:
  // absent means off.
  /** `--allow`, `--deny`, `--max-connections-per-ip` (lib/access.ts). */
  access?: AccessRules;
  /** `--max-bytes-per-connection`: bytes echoed before the server closes the connection; 0 = no limit. */
  maxBytesPerConnection?: number;
  /** `--max-connection-duration`: age at which the server closes a connection; 0 = no limit. */
  maxConnectionDurationMs?: number;
  /** `--proxy-protocol`: every connection starts with a PROXY header from one of these peers. */
  proxyProtocol?: ProxyProtocolConfig;
  /** `--tls-cert`/`--tls-key`: serve echo over TLS instead of plain TCP. */
  tls?: TlsMaterial;
  /** `--tls-handshake-timeout`: how long a TLS client may take to finish its handshake (default 10 s). */
  tlsHandshakeTimeoutMs?: number;
  /** `--udp`: also echo UDP datagrams (RFC 862) on the same port and addresses. */
  udp?: UdpConfig;
}

/**
 * `--allow`, `--deny` and `--max-connections-per-ip`, as read: each network in its canonical text (`10.0.0.0/8`,
 * `2001:db8::/32`; lib/access.ts's parseCidr wrote it, and its AccessControl matches against it).
 */
export interface AccessRules {
  /** `--allow`: when not empty, only these networks may connect. */
  allow: string[];
  /** `--deny`: these networks may never connect; deny wins over allow. */
  deny: string[];
  /** `--max-connections-per-ip`: open connections per client address; 0 = no limit. */
  maxPerClient: number;
}

/** How PROXY headers are accepted (lib/proxy_protocol.ts, lib/admission.ts). */
export interface ProxyProtocolConfig {
  /**
   * `--proxy-from`: the load balancers allowed to send a header, each network in its canonical text; connections
   * from anywhere else are refused.
   */
  from: string[];
  /** `--proxy-timeout`: how long a connection may take to send its header. */
  timeoutMs: number;
}

/** The UDP echo's guards (lib/udp.ts). */
export interface UdpConfig {
  /** `--udp-rate`: datagrams per second answered per source address (token bucket, burst of one second). */
  ratePerSource: number;
}

/** `--tls-cert` and `--tls-key`, read and checked (lib/tls.ts's loadTlsFiles): what the TLS listener serves with. */
export interface TlsMaterial {
  /** The certificate chain, PEM. */
  cert: string;
  /** The private key, PEM. */
  key: string;
  /** The file the certificate came from, for logs. */
  certFile: string;
  /** The file the key came from, for logs. */
  keyFile: string;
  /** The leaf certificate's subject, for the status page. */
  subject: string;
  /** The leaf certificate's expiry, as X509Certificate.validTo writes it. */
  validTo: string;
}

/** Where `--metrics` serves /metrics and /healthz (lib/metrics.ts). */
export interface MetricsConfig {
  /** The address to listen on (IPv4, IPv6 or a host name). */
  hostname: string;
  /** The port; 0 lets the OS pick one (the log says which). */
  port: number;
}

/** What `echosrv stats` reads and how often (lib/stats_command.ts). */
export interface StatsConfig {
  /** The /metrics address of a running echosrv. */
  url: string;
  /** Time between two samples. */
  intervalMs: number;
  /** Samples to show before exiting; 0 = until Ctrl+C. */
  count: number;
}

/** How and where the server logs. */
export interface LogConfig {
  /** The lowest level written. */
  level: LogLevelName;
  /** WPP-style mask: 0x1 errors and warnings, 0x2 info, 0x4 per-connection events. */
  traceFlags: number;
  /** Text for people, JSON lines for machines. */
  format: LogFormat;
  /** A file that receives the same lines (appended), or undefined. */
  file?: string;
}

/** Everything `echosrv run` needs. */
export interface RunConfig {
  /** What the TCP server needs (lib/server.ts). */
  server: ServerConfig;
  /** How and where it logs (lib/log.ts). */
  log: LogConfig;
  /** `--metrics HOST:PORT`, or undefined when off. */
  metrics?: MetricsConfig;
  /** Accept loops, each in its own worker thread with its own listener (lib/workers.ts); 1 = no worker threads. */
  workers: number;
}

/** Trace flags: the WSK sample's two WPP flags plus one for per-connection events. */
export const TRACE_ERRORS = 0x1;
/** Trace flag for informational lines (startup, stop, summaries). */
export const TRACE_INFO = 0x2;
/** Trace flag for one line per connection opened and closed. */
export const TRACE_CONNECTIONS = 0x4;
/** Every trace flag. */
export const TRACE_ALL = TRACE_ERRORS | TRACE_INFO | TRACE_CONNECTIONS;

/** The metrics port `echosrv stats` reads by default (`--metrics-url`), and the one the examples of `--metrics` use. */
export const DEFAULT_METRICS_PORT = 9407;
/** `--udp-rate`'s default: enough for people and test tools, too little to make a useful reflector. */
export const DEFAULT_UDP_RATE = 100;
