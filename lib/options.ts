// options: the command line and the ECHOSRV_* environment, read into one validated configuration. It owns the
// list of options, their defaults, their help texts and their environment names; it runs nothing. Parsing is
// commander's (npm), standing in for the design card's @std/cli, which lives on JSR and cannot be fetched here.

import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import ipaddr from "ipaddr.js";
import { type AdmissionRules, CidrError, CidrList, parseCidr } from "./access.ts";
import { loadTlsFiles, TlsFileError, type TlsMaterial } from "./tls.ts";
import { parseDuration, parseInteger, parseMask, parseSize, UnitError } from "./units.ts";
import { VERSION } from "./version.ts";
import { autoWorkers, MAX_AUTO_WORKERS } from "./runtime.ts";
import { addServiceCommand, type ServiceRequest } from "./service/cli.ts";
import type { FaultConfig } from "./faults/config.ts";
import {
  addFaultOptions,
  argsWithSeed,
  FAULT_ENV_VARS,
  faultConfig,
  FaultOptionError,
  type RawFaultOptions,
} from "./faults/options.ts";
import { addFaultCommand, type FaultRequest } from "./faults/cli.ts";

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
  admission?: AdmissionRules;
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
  /** Issue 14: the impairment profiles, their listeners and the control API (lib/faults/options.ts). */
  faults?: FaultConfig;
}

/** How PROXY headers are accepted (lib/proxy_protocol.ts, lib/admission.ts). */
export interface ProxyProtocolConfig {
  /** `--proxy-from`: the load balancers allowed to send a header; connections from anywhere else are refused. */
  from: CidrList;
  /** `--proxy-timeout`: how long a connection may take to send its header. */
  timeoutMs: number;
}

/** The UDP echo's guards (lib/udp.ts). */
export interface UdpConfig {
  /** `--udp-rate`: datagrams per second answered per source address (token bucket, burst of one second). */
  ratePerSource: number;
}

/** Where `--metrics` serves /metrics and /healthz (lib/metrics.ts). */
export interface MetricsConfig {
  hostname: string;
  port: number;
}

/** What `echosrv stats` reads and how often (lib/stats.ts). */
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
  server: ServerConfig;
  log: LogConfig;
  /** `--metrics HOST:PORT`, or undefined when off. */
  metrics?: MetricsConfig;
  /** Accept loops, each in its own worker thread with its own listener (lib/workers.ts); 1 = no worker threads. */
  workers: number;
  /**
   * The arguments this configuration was read from. Workers read them again (lib/worker_entry.ts): the rules and
   * certificates in a configuration are objects that cannot cross to another thread, but their source can.
   */
  args: string[];
}

/** What the command line asks for. */
export type Invocation =
  | { kind: "run"; config: RunConfig }
  | { kind: "stats"; config: StatsConfig }
  | { kind: "service"; request: ServiceRequest }
  // Issue 14: `echosrv fault ...` (lib/faults/cli.ts).
  | { kind: "fault"; request: FaultRequest }
  | { kind: "exit"; code: number };

/** Trace flags: the WSK sample's two WPP flags plus one for per-connection events. */
export const TRACE_ERRORS = 0x1;
/** Trace flag for informational lines (startup, stop, summaries). */
export const TRACE_INFO = 0x2;
/** Trace flag for one line per connection opened and closed. */
export const TRACE_CONNECTIONS = 0x4;
/** Every trace flag. */
export const TRACE_ALL = TRACE_ERRORS | TRACE_INFO | TRACE_CONNECTIONS;

/** The environment variables read, by option; exported for the help text and the unknown-variable check. */
export const ENV_VARS = {
  port: "ECHOSRV_PORT",
  host: "ECHOSRV_HOST",
  maxConnections: "ECHOSRV_MAX_CONNECTIONS",
  idleTimeout: "ECHOSRV_IDLE_TIMEOUT",
  sendTimeout: "ECHOSRV_SEND_TIMEOUT",
  shutdownTimeout: "ECHOSRV_SHUTDOWN_TIMEOUT",
  logLevel: "ECHOSRV_LOG_LEVEL",
  traceFlags: "ECHOSRV_TRACE_FLAGS",
  logFormat: "ECHOSRV_LOG_FORMAT",
  logFile: "ECHOSRV_LOG_FILE",
  copy: "ECHOSRV_COPY",
  metrics: "ECHOSRV_METRICS",
  allow: "ECHOSRV_ALLOW",
  deny: "ECHOSRV_DENY",
  maxConnectionsPerIp: "ECHOSRV_MAX_CONNECTIONS_PER_IP",
  maxBytesPerConnection: "ECHOSRV_MAX_BYTES_PER_CONNECTION",
  maxConnectionDuration: "ECHOSRV_MAX_CONNECTION_DURATION",
  udp: "ECHOSRV_UDP",
  udpRate: "ECHOSRV_UDP_RATE",
  tlsCert: "ECHOSRV_TLS_CERT",
  tlsKey: "ECHOSRV_TLS_KEY",
  tlsHandshakeTimeout: "ECHOSRV_TLS_HANDSHAKE_TIMEOUT",
  proxyProtocol: "ECHOSRV_PROXY_PROTOCOL",
  proxyFrom: "ECHOSRV_PROXY_FROM",
  proxyTimeout: "ECHOSRV_PROXY_TIMEOUT",
  metricsUrl: "ECHOSRV_METRICS_URL",
  statsInterval: "ECHOSRV_STATS_INTERVAL",
  statsCount: "ECHOSRV_STATS_COUNT",
  workers: "ECHOSRV_WORKERS",
} as const;

/** The port `--metrics` is shown with in examples, and the one `echosrv stats` reads by default. */
export const EXAMPLE_METRICS_PORT = 9407;
/** `--udp-rate`'s default: enough for people and test tools, too little to make a useful reflector. */
export const DEFAULT_UDP_RATE = 100;

/** Adapts a units.ts reader to commander: its errors become commander's "invalid argument" errors. */
function reader<T>(read: (text: string) => T): (text: string) => T {
  return (text) => {
    try {
      return read(text);
    } catch (error) {
      if (error instanceof UnitError) throw new InvalidArgumentError(error.message);
      throw error;
    }
  };
}

/**
 * Checks one host as written: an IPv6 address (a zone such as `%eth0` allowed), an IPv4 address in dotted
 * decimal (four numbers from 0 to 255, no leading zeros), or a host name by RFC 1123 (labels of letters, digits and
 * inner hyphens, up to 63 characters; the last label not all digits, which would be a mistyped IPv4 address).
 *
 * @param host the value
 * @throws {InvalidArgumentError} saying which it looked like and what is wrong
 */
function checkHost(host: string): void {
  const examples = "(examples: ::, 0.0.0.0, 127.0.0.1, ::1, localhost)";
  if (!/^[A-Za-z0-9._:%-]+$/.test(host)) {
    throw new InvalidArgumentError(`"${host}" is not an address or host name ${examples}`);
  }
  if (host.includes(":")) {
    if (!ipaddr.IPv6.isValid(host)) throw new InvalidArgumentError(`"${host}" is not an IPv6 address ${examples}`);
    return;
  }
  if (/^[0-9.]+$/.test(host)) {
    if (!ipaddr.IPv4.isValidFourPartDecimal(host)) {
      throw new InvalidArgumentError(
        `"${host}" is not an IPv4 address: write four numbers from 0 to 255 without leading zeros, as in 192.0.2.10`,
      );
    }
    return;
  }
  const labels = host.split(".");
  const label = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
  if (host.length > 253 || !labels.every((l) => label.test(l)) || /^\d+$/.test(labels.at(-1)!)) {
    throw new InvalidArgumentError(`"${host}" is not an address or host name ${examples}`);
  }
}

/** Reads one `--host` value (or a comma-separated list of them) and adds it to those given before. */
function collectHosts(text: string, previous: string[] | undefined): string[] {
  const hosts = text.split(",").map((h) => h.trim()).map((h) =>
    h.startsWith("[") && h.endsWith("]") ? h.slice(1, -1) : h
  );
  for (const host of hosts) checkHost(host);
  return [...(previous ?? []), ...hosts];
}

/** Reads one CIDR rule (or a comma-separated list) and adds it to those given before. */
function collectCidrs(text: string, previous: string[] | undefined): string[] {
  const rules = text.split(",").map((r) => r.trim());
  for (const rule of rules) {
    try {
      parseCidr(rule);
    } catch (error) {
      if (error instanceof CidrError) throw new InvalidArgumentError(error.message);
      throw error;
    }
  }
  return [...(previous ?? []), ...rules];
}

/**
 * Reads `HOST:PORT`, `[IPv6]:PORT` or a bare `PORT` (meaning 127.0.0.1: metrics stay private unless asked).
 *
 * @param text the value as written
 * @returns the address
 * @throws {InvalidArgumentError} when it is not such an address
 */
export function parseHostPort(text: string): MetricsConfig {
  const value = text.trim();
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d+)$/.exec(value) ?? /^()()(\d+)$/.exec(value);
  if (!match) {
    throw new InvalidArgumentError(
      `"${text}" is not HOST:PORT (examples: 127.0.0.1:${EXAMPLE_METRICS_PORT}, [::1]:${EXAMPLE_METRICS_PORT}, ` +
        `0.0.0.0:${EXAMPLE_METRICS_PORT}; IPv6 in brackets)`,
    );
  }
  const hostname = match[1] || match[2] || "127.0.0.1";
  checkHost(hostname);
  return { hostname, port: reader((t) => parseInteger(t, 0, 65535))(match[3]) };
}

/** Reads the metrics address `echosrv stats` polls: a URL, or HOST:PORT meaning http://HOST:PORT/metrics. */
function parseMetricsUrl(text: string): string {
  const value = text.trim();
  if (!value.includes("://")) {
    const { hostname, port } = parseHostPort(value);
    return `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}/metrics`;
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError(
      `"${text}" is not a URL (example: http://127.0.0.1:${EXAMPLE_METRICS_PORT}/metrics)`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new InvalidArgumentError(`"${text}" is not an http:// or https:// URL`);
  }
  return url.href;
}

/** The options of `echosrv run` (and of bare `echosrv`), defined once for both. */
function addServerOptions(command: Command): Command {
  const duration = reader(parseDuration);
  return command
    .addOption(
      new Option("-p, --port <port>", "TCP port to listen on; 0 picks a free port")
        .default(DEFAULT_PORT).env(ENV_VARS.port).argParser(reader((t) => parseInteger(t, 0, 65535))),
    )
    .addOption(
      new Option(
        "-H, --host <address>",
        "address to listen on; repeat (or separate with commas) for several (default: [::] and 0.0.0.0)",
      )
        .env(ENV_VARS.host).argParser(collectHosts),
    )
    .addOption(
      new Option("--max-connections <n>", "open connections allowed at once; 0 = no limit")
        .default(10000).env(ENV_VARS.maxConnections).argParser(reader((t) => parseInteger(t, 0, 10_000_000))),
    )
    .addOption(
      new Option(
        "--idle-timeout <duration>",
        "close a connection that has nothing to echo and receives nothing for this long; 0 = never",
      ).default(5 * 60_000, "5m").env(ENV_VARS.idleTimeout).argParser(duration),
    )
    .addOption(
      new Option(
        "--send-timeout <duration>",
        "close a connection whose peer takes none of its echo for this long (it does not read); 0 = never",
      ).default(DEFAULT_SEND_TIMEOUT_MS, "5m").env(ENV_VARS.sendTimeout).argParser(duration),
    )
    .addOption(
      new Option("--shutdown-timeout <duration>", "on stop, how long open sessions may finish before they are closed")
        .default(10_000, "10s").env(ENV_VARS.shutdownTimeout).argParser(duration),
    )
    .addOption(
      new Option("--log-level <level>", "lowest level logged").choices(["error", "warn", "info", "debug"])
        .default("info").env(ENV_VARS.logLevel),
    )
    .addOption(
      new Option("--trace-flags <mask>", "WPP-style mask, hex or decimal: 0x1 errors, 0x2 info, 0x4 connection events")
        .default(TRACE_ALL, "0x7").env(ENV_VARS.traceFlags).argParser(reader((t) => parseMask(t, TRACE_ALL))),
    )
    .addOption(
      new Option("--log-format <format>", "text for people, json for one JSON object per line").choices([
        "text",
        "json",
      ])
        .default("text").env(ENV_VARS.logFormat),
    )
    .addOption(
      new Option("--log-file <path>", "also append the log lines to this file").env(ENV_VARS.logFile)
        .argParser(nonEmptyPath),
    )
    .addOption(
      new Option("--copy <strategy>", "how bytes are copied back: loop (read/write loop) or pipe (readable.pipeTo)")
        .choices(["loop", "pipe"]).default("loop").env(ENV_VARS.copy),
    )
    .addOption(
      new Option(
        "--workers <n>",
        `accept loops, each in its own thread with its own listener on the port (Linux); auto = one per core, at most ` +
          `${MAX_AUTO_WORKERS} (1 where workers cannot run)`,
      ).default(AUTO, "auto").env(ENV_VARS.workers).argParser(readWorkers),
    );
}

/** `--workers auto`, resolved by {@link autoWorkers} once the options are read. */
const AUTO = 0;

/** Reads `--workers`: a count, or `auto` (see {@link autoWorkers}). */
function readWorkers(text: string): number {
  if (text.trim().toLowerCase() === "auto") return AUTO;
  try {
    return parseInteger(text, 1, 1024);
  } catch (error) {
    if (error instanceof UnitError) throw new InvalidArgumentError(`${error.message} (or auto: one per core)`);
    throw error;
  }
}

/** The operations options (metrics, access, limits, UDP, TLS, PROXY protocol), after the core ones. */
function addOperationsOptions(command: Command): Command {
  const duration = reader(parseDuration);
  const count = reader((t) => parseInteger(t, 0, 10_000_000));
  return command
    .addOption(
      new Option(
        "--metrics <host:port>",
        "serve the status page (GET /), /metrics (Prometheus), /healthz and /livez here (default: off)",
      )
        .env(ENV_VARS.metrics).argParser(parseHostPort),
    )
    .addOption(
      new Option("--allow <cidr>", "only these networks may connect; repeat or separate with commas (default: all)")
        .env(ENV_VARS.allow).argParser(collectCidrs),
    )
    .addOption(
      new Option("--deny <cidr>", "these networks may never connect (wins over --allow); repeatable")
        .env(ENV_VARS.deny).argParser(collectCidrs),
    )
    .addOption(
      new Option("--max-connections-per-ip <n>", "open connections allowed per client address; 0 = no limit")
        .default(0).env(ENV_VARS.maxConnectionsPerIp).argParser(count),
    )
    .addOption(
      new Option("--max-bytes-per-connection <size>", "echo at most this much per connection, then close; 0 = no limit")
        .default(0).env(ENV_VARS.maxBytesPerConnection).argParser(reader(parseSize)),
    )
    .addOption(
      new Option("--max-connection-duration <duration>", "close a connection this old, busy or not; 0 = no limit")
        .default(0).env(ENV_VARS.maxConnectionDuration).argParser(duration),
    )
    .addOption(
      new Option("--udp", `also echo UDP datagrams on the same port and addresses (env: ${ENV_VARS.udp}=1)`),
    )
    .addOption(
      new Option("--udp-rate <n>", "UDP datagrams per second answered per source address")
        .default(DEFAULT_UDP_RATE).env(ENV_VARS.udpRate).argParser(reader((t) => parseInteger(t, 1, 1_000_000))),
    )
    .addOption(
      new Option("--tls-cert <file>", "serve echo over TLS with this PEM certificate chain (needs --tls-key)")
        .env(ENV_VARS.tlsCert).argParser(nonEmptyPath),
    )
    .addOption(
      new Option("--tls-key <file>", "the PEM private key of --tls-cert").env(ENV_VARS.tlsKey).argParser(nonEmptyPath),
    )
    .addOption(
      new Option("--tls-handshake-timeout <duration>", "close a TLS connection whose handshake takes longer than this")
        .default(DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS, "10s").env(ENV_VARS.tlsHandshakeTimeout).argParser(
          reader((t) => {
            const ms = parseDuration(t);
            if (ms === 0) throw new UnitError(`"${t}" would wait forever: give a duration such as 10s`);
            return ms;
          }),
        ),
    )
    .addOption(
      new Option(
        "--proxy-protocol",
        `connections start with a PROXY v1/v2 header from a load balancer (env: ${ENV_VARS.proxyProtocol}=1)`,
      ),
    )
    .addOption(
      new Option("--proxy-from <cidr>", "the load balancers allowed to send PROXY headers (needed by --proxy-protocol)")
        .env(ENV_VARS.proxyFrom).argParser(collectCidrs),
    )
    .addOption(
      new Option("--proxy-timeout <duration>", "close a connection whose PROXY header takes longer than this")
        .default(5000, "5s").env(ENV_VARS.proxyTimeout).argParser(reader((t) => {
          const ms = parseDuration(t);
          if (ms === 0) throw new UnitError(`"${t}" would wait forever: give a duration such as 5s`);
          return ms;
        })),
    );
}

/** Reads a file path option (--log-file, --tls-cert, --tls-key): any text but an empty or blank one. */
function nonEmptyPath(text: string): string {
  if (text.trim() === "") throw new InvalidArgumentError("the path is empty");
  return text;
}

/** Reads an on/off environment variable for a flag (commander would take any value, even "0", as on). */
function envFlag(name: string): boolean {
  const value = Deno.env.get(name);
  if (value === undefined) return false;
  const normalized = value.trim().toLowerCase();
  if (["1", "true", "yes", "on"].includes(normalized)) return true;
  if (["0", "false", "no", "off", ""].includes(normalized)) return false;
  throw new UsageError(`environment variable ${name} is '${value}': use 1, true, yes, on or 0, false, no, off`);
}

/** A usage error found after commander has read the options (combinations, files, flags from the environment). */
class UsageError extends Error {}

/** The raw option values commander hands over (with issue 14's --fault-* options). */
interface RawServerOptions extends RawFaultOptions {
  port: number;
  host?: string[];
  maxConnections: number;
  idleTimeout: number;
  sendTimeout: number;
  shutdownTimeout: number;
  logLevel: LogLevelName;
  traceFlags: number;
  logFormat: LogFormat;
  logFile?: string;
  copy: CopyStrategy;
  metrics?: MetricsConfig;
  allow?: string[];
  deny?: string[];
  maxConnectionsPerIp: number;
  maxBytesPerConnection: number;
  maxConnectionDuration: number;
  udp?: boolean;
  udpRate: number;
  tlsCert?: string;
  tlsKey?: string;
  tlsHandshakeTimeout: number;
  proxyProtocol?: boolean;
  proxyFrom?: string[];
  proxyTimeout: number;
  workers: number;
}

/** Reads the options that only make sense together, and the files they name; throws {@link UsageError}. */
function operationsConfig(
  raw: RawServerOptions,
  given: (option: keyof RawFaultOptions) => boolean,
): Partial<ServerConfig> {
  const out: Partial<ServerConfig> = {};
  // Issue 14: the --fault-* options (lib/faults/options.ts).
  try {
    const faults = faultConfig(raw, raw.port, given);
    if (faults) out.faults = faults;
  } catch (error) {
    if (error instanceof FaultOptionError) throw new UsageError(error.message);
    throw error;
  }
  const cidrs = (rules: string[] | undefined) => new CidrList((rules ?? []).map(parseCidr));
  const admission = { allow: cidrs(raw.allow), deny: cidrs(raw.deny), maxPerClient: raw.maxConnectionsPerIp };
  if (!admission.allow.empty || !admission.deny.empty || admission.maxPerClient > 0) out.admission = admission;
  if (raw.maxBytesPerConnection > 0) out.maxBytesPerConnection = raw.maxBytesPerConnection;
  if (raw.maxConnectionDuration > 0) out.maxConnectionDurationMs = raw.maxConnectionDuration;
  if (raw.udp || envFlag(ENV_VARS.udp)) out.udp = { ratePerSource: raw.udpRate };
  if ((raw.tlsCert === undefined) !== (raw.tlsKey === undefined)) {
    throw new UsageError(
      raw.tlsCert === undefined
        ? "option '--tls-key <file>' needs --tls-cert <file> as well"
        : "option '--tls-cert <file>' needs --tls-key <file> as well",
    );
  }
  if (raw.tlsCert !== undefined && raw.tlsKey !== undefined) {
    try {
      out.tls = loadTlsFiles(raw.tlsCert, raw.tlsKey);
      out.tlsHandshakeTimeoutMs = raw.tlsHandshakeTimeout;
    } catch (error) {
      if (error instanceof TlsFileError) throw new UsageError(`option '${error.option} <file>': ${error.message}`);
      throw error;
    }
  }
  const proxy = raw.proxyProtocol || envFlag(ENV_VARS.proxyProtocol);
  if (proxy) {
    if (!raw.proxyFrom || raw.proxyFrom.length === 0) {
      throw new UsageError(
        "option '--proxy-protocol' needs --proxy-from <cidr>: the load balancers' addresses (for example " +
          "--proxy-from 10.0.0.5 or --proxy-from 127.0.0.1), so that clients cannot forge a header",
      );
    }
    if (out.tls) {
      throw new UsageError(
        "option '--proxy-protocol' cannot be combined with --tls-cert: the load balancer sends the PROXY header " +
          "before any TLS; terminate TLS at the load balancer, or send TLS through it untouched without --proxy-protocol",
      );
    }
    out.proxyProtocol = { from: cidrs(raw.proxyFrom), timeoutMs: raw.proxyTimeout };
  } else if (raw.proxyFrom && raw.proxyFrom.length > 0) {
    throw new UsageError("option '--proxy-from <cidr>' has no effect without --proxy-protocol");
  }
  return out;
}

function toRunConfig(
  raw: RawServerOptions,
  args: string[],
  given: (option: keyof RawFaultOptions) => boolean,
): RunConfig {
  const operations = operationsConfig(raw, given);
  const config: RunConfig = {
    server: {
      port: raw.port,
      hosts: raw.host && raw.host.length > 0 ? [...new Set(raw.host)] : [...DEFAULT_HOSTS],
      maxConnections: raw.maxConnections,
      idleTimeoutMs: raw.idleTimeout,
      sendTimeoutMs: raw.sendTimeout,
      shutdownTimeoutMs: raw.shutdownTimeout,
      copy: raw.copy,
      ...operations,
    },
    log: { level: raw.logLevel, traceFlags: raw.traceFlags, format: raw.logFormat, file: raw.logFile },
    workers: raw.workers === AUTO ? autoWorkers() : raw.workers,
    // Issue 14: workers read the run's fault seed too, also when it was chosen at random.
    args: argsWithSeed(args, operations.faults),
  };
  if (raw.metrics) config.metrics = raw.metrics;
  return config;
}

/** Where commander writes; tests swap it to capture the text. */
export interface Output {
  out(text: string): void;
  err(text: string): void;
}

const stdio: Output = {
  out: (text) => void Deno.stdout.writeSync(new TextEncoder().encode(text)),
  err: (text) => void Deno.stderr.writeSync(new TextEncoder().encode(text)),
};

/**
 * `run` is the default and only command: `echosrv [options] run [options]` means `echosrv [options] [options]`.
 * Taking it out before parsing keeps one set of options, so flags before and after `run` both count and a flag
 * wins over its variable either way. (As a commander subcommand, `run` dropped the flags given before it, and the
 * program's own reading of the ECHOSRV_* variables failed on a bad variable that a flag after `run` overrode.)
 */
function withoutRunCommand(args: string[], program: Command): string[] {
  const i = firstWord(args, program);
  return i >= 0 && args[i] === "run" ? [...args.slice(0, i), ...args.slice(i + 1)] : args;
}

/**
 * Where the first argument that is neither an option nor an option's value is: the command, if any.
 *
 * @returns its index, or -1 when there is none before the end or a `--`
 */
function firstWord(args: string[], program: Command): number {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") return -1;
    if (arg.startsWith("-") && arg !== "-") {
      // `--port 7` and `-p 7` take the next argument as their value; `--port=7` and `-p7` carry it.
      if (program.options.find((o) => o.long === arg || o.short === arg)?.required) i++;
      continue;
    }
    return i;
  }
  return -1;
}

/**
 * Reads the command line (and, for options not given there, the ECHOSRV_* environment).
 * Help and version are printed here and come back as `{ kind: "exit", code: 0 }`; a usage error is printed (naming
 * the option and the value) and comes back as `{ kind: "exit", code: 2 }`.
 *
 * @param args the arguments after the program name
 * @param output where help, version and errors are written (standard output and error by default)
 * @returns what to do
 * @example
 * ```ts
 * const what = parseCommandLine(["--port", "0", "--idle-timeout", "30s"]);
 * if (what.kind === "run") console.log(what.config.server.idleTimeoutMs); // 30000
 * ```
 */
export function parseCommandLine(args: string[], output: Output = stdio): Invocation {
  let result: Invocation = { kind: "exit", code: 0 };
  /** Rewrites one of commander's error messages (see below); until then, leaves them as they are. */
  let rewriteError = (text: string) => text;
  const configure = (command: Command) =>
    command
      .exitOverride()
      .configureOutput({
        writeOut: output.out,
        writeErr: output.err,
        outputError: (text, write) => write(`echosrv: ${rewriteError(text)}`),
      })
      .showHelpAfterError("(run `echosrv --help` for the options)")
      .helpOption("-h, --help", "show this help and exit")
      .allowExcessArguments(false);

  /** Turns a {@link UsageError} found after parsing into commander's usage error (message, exit 2). */
  const runConfig = (command: Command, opts: RawServerOptions): Invocation => {
    try {
      // WPP's rule (`tracelog -flags`): flags select events, and every level is on unless one is given. So a mask
      // given on purpose shows its events, per-connection ones included, unless --log-level is given too.
      const given = (name: string) => command.getOptionValueSource(name) !== "default";
      if (given("traceFlags") && !given("logLevel")) opts = { ...opts, logLevel: "debug" };
      const onCommandLine = (name: string) => command.getOptionValueSource(name) === "cli";
      return { kind: "run", config: toRunConfig(opts, args, onCommandLine) };
    } catch (error) {
      if (error instanceof UsageError) command.error(`error: ${error.message}`, { exitCode: 2 });
      throw error;
    }
  };

  const program = configure(addFaultOptions(addOperationsOptions(addServerOptions(new Command("echosrv")))))
    .description(
      "A TCP echo server: every byte received is sent back until the peer closes. The modern port of " +
        "Microsoft's WSK echosrv sample. Every option can also come from its ECHOSRV_* environment variable; " +
        "a flag wins over its variable.",
    )
    .usage("[run] [options]")
    .version(VERSION, "-V, --version", "print the version and exit")
    // Options after a subcommand (`stats`, `service`) belong to it, not to the program. (`run` is not a subcommand:
    // withoutRunCommand takes it out first.)
    .enablePositionalOptions()
    .action((opts: RawServerOptions, command: Command) => {
      result = runConfig(command, opts);
    });
  program.addCommand(
    configure(new Command("stats"))
      .description("show a live one-line summary of a running echosrv, read from its --metrics endpoint")
      .addOption(
        new Option("--metrics-url <url>", "the /metrics URL (or HOST:PORT) of the echosrv to watch")
          .default(`http://127.0.0.1:${EXAMPLE_METRICS_PORT}/metrics`).env(ENV_VARS.metricsUrl)
          .argParser(parseMetricsUrl),
      )
      .addOption(
        new Option("--interval <duration>", "time between two samples").default(1000, "1s")
          .env(ENV_VARS.statsInterval).argParser(reader((t) => {
            const ms = parseDuration(t);
            if (ms < 100) throw new UnitError(`"${t}" is too short: use 100ms or more`);
            return ms;
          })),
      )
      .addOption(
        new Option("--count <n>", "samples to show, then exit; 0 = until Ctrl+C").default(0)
          .env(ENV_VARS.statsCount).argParser(reader((t) => parseInteger(t, 0, 1_000_000))),
      )
      .action((opts: { metricsUrl: string; interval: number; count: number }) => {
        result = { kind: "stats", config: { url: opts.metricsUrl, intervalMs: opts.interval, count: opts.count } };
      }),
  );

  // `echosrv service install|uninstall|start|stop|restart|status` (lib/service/cli.ts).
  addServiceCommand(program, configure, (request) => result = { kind: "service", request }, args);
  // Issue 14: `echosrv fault list|set|remove|listener|connections` (lib/faults/cli.ts).
  addFaultCommand(program, configure, (request) => result = { kind: "fault", request });

  let argv = withoutRunCommand(args, program);
  const at = firstWord(argv, program);
  if (at >= 0 && argv[at] === "help") argv = [...argv.slice(at + 1), "--help"]; // `echosrv help [command]`
  // Once the options are read (so a bad option is still the error reported first), commander calls a word that is
  // not a command "too many arguments": say instead which word it is, and what was probably meant.
  const commands = program.commands.map((c) => c.name());
  rewriteError = (text) => {
    if (at < 0 || commands.includes(argv[at])) return text;
    const word = argv[at];
    const services = program.commands.find((c) => c.name() === "service")?.commands.map((c) => c.name()) ?? [];
    if (services.includes(word) && /^error: (too many arguments\.|unknown option)/.test(text)) {
      // `echosrv stop --name x`: its options are the service command's, unknown here.
      const meant = `echosrv service ${argv.slice(at).join(" ")}`;
      return `error: unknown command '${word}': the service commands are under \`service\`: did you mean \`${meant}\`?\n`;
    }
    if (!/^error: too many arguments\. /.test(text)) return text;
    return `error: unknown command '${word}': the commands are run (the default), ${commands.join(" and ")}; ` +
      "see `echosrv --help`\n";
  };
  try {
    program.parse(argv, { from: "user" });
  } catch (error) {
    if (error instanceof CommanderError) {
      const success = error.code === "commander.helpDisplayed" || error.code === "commander.version" ||
        error.code === "commander.help";
      return { kind: "exit", code: success ? 0 : 2 };
    }
    throw error;
  }
  return result;
}

/**
 * Names the ECHOSRV_* variables in `env` that no option reads, so a misspelt variable is reported, not ignored.
 *
 * @param env the environment, as `Deno.env.toObject()` returns it
 * @returns the unknown names, sorted
 */
export function unknownEnvVars(env: Record<string, string>): string[] {
  const known = new Set<string>([...Object.values(ENV_VARS), ...Object.values(FAULT_ENV_VARS)]);
  return Object.keys(env).filter((name) => name.startsWith("ECHOSRV_") && !known.has(name)).sort();
}
