// limits: the limits in force, in the words of their options and with their values written as the options are
// (`max bytes per connection 64KiB`, `idle timeout 5m`), made once from the configuration: the startup line of one
// server (lib/server.ts) and of the worker pool (lib/workers.ts), and the status page's list (lib/status_page.ts),
// all read them here, so the log and the page say the same thing the same way.

import { DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS, type ServerConfig } from "./config.ts";
import { formatDuration, formatSize } from "./units.ts";

/** One limit as configured: what the log and the page write, and its number for scripts. */
export interface Limit {
  /** Its option's words, as people read them: `max bytes per connection` for `--max-bytes-per-connection`. */
  name: string;
  /** Its key in /status.json's `limitValues`, with the unit in the name where it has one (`idleTimeoutMs`). */
  key: string;
  /** The value as the option is written (`64KiB`, `5m`, `100`); `unlimited` or `never` when off. */
  text: string;
  /** The value as a number: connections, bytes, milliseconds or datagrams per second; 0 when off. */
  value: number;
  /**
   * Whether the startup line names it even when off: the limits on by default (a cap or timeout of 0 was asked for,
   * and is news) and those that come with a feature that is on; not the optional ones (off unless asked for).
   */
  always: boolean;
}

/**
 * Every limit the configuration sets on connections, in a fixed order: `--max-connections`,
 * `--max-connections-per-ip`, `--idle-timeout`, `--send-timeout`, `--max-bytes-per-connection`,
 * `--max-connection-duration`, then those of the features that are on: `--tls-handshake-timeout` (TLS),
 * `--proxy-timeout` (PROXY protocol), `--udp-rate` (UDP).
 *
 * @param config the server's configuration
 * @returns the limits, off ones included (`text` says `unlimited` or `never`, `value` is 0)
 */
export function limitsOf(config: ServerConfig): Limit[] {
  const count = (name: string, key: string, n: number | undefined, always = false): Limit => ({
    name,
    key,
    text: n ? String(n) : "unlimited",
    value: n ?? 0,
    always,
  });
  const duration = (name: string, key: string, ms: number | undefined, off: string, always = false): Limit => ({
    name,
    key,
    text: ms ? formatDuration(ms) : off,
    value: ms ?? 0,
    always,
  });
  const bytes = config.maxBytesPerConnection ?? 0;
  const limits: Limit[] = [
    count("max connections", "maxConnections", config.maxConnections, true),
    count("max connections per IP", "maxConnectionsPerIp", config.access?.maxPerClient),
    duration("idle timeout", "idleTimeoutMs", config.idleTimeoutMs, "never", true),
    duration("send timeout", "sendTimeoutMs", config.sendTimeoutMs, "never", true),
    {
      name: "max bytes per connection",
      key: "maxBytesPerConnection",
      text: bytes ? formatSize(bytes, { decimal: true }) : "unlimited",
      value: bytes,
      always: false,
    },
    duration("max connection duration", "maxConnectionDurationMs", config.maxConnectionDurationMs, "unlimited"),
  ];
  if (config.tls) {
    const ms = config.tlsHandshakeTimeoutMs ?? DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS;
    limits.push(duration("TLS handshake timeout", "tlsHandshakeTimeoutMs", ms, "never", true));
  }
  if (config.proxyProtocol) {
    limits.push(duration("proxy timeout", "proxyTimeoutMs", config.proxyProtocol.timeoutMs, "never", true));
  }
  if (config.udp) limits.push(count("UDP rate", "udpRate", config.udp.ratePerSource, true));
  return limits;
}

/**
 * What the startup line says in its parentheses: the copy strategy, then every limit in force, each as its option
 * is written (`copy loop, max connections 10000, idle timeout 5m, send timeout 5m, max bytes per connection
 * 64KiB`). The limits on by default are named even when turned off (`idle timeout never`); the optional ones only
 * when set.
 *
 * @param config the server's configuration
 * @param pooled whether the line speaks for a pool of workers, whose connection cap is one for all of them (`max
 *   connections 10000 in total`)
 * @returns the properties of the startup line: the text as `limits` (its message has `({limits})`), and, for JSON
 *   log readers, `copy`, `maxConnections`, `idleTimeout` and `sendTimeout` as they were before the text listed more
 */
export function startupSummary(config: ServerConfig, pooled = false): Record<string, string | number> {
  const words = [`copy ${config.copy}`];
  for (const limit of limitsOf(config)) {
    if (!limit.always && limit.value === 0) continue;
    const total = pooled && limit.key === "maxConnections" && limit.value > 0 ? " in total" : "";
    words.push(`${limit.name} ${limit.text}${total}`);
  }
  return {
    limits: words.join(", "),
    copy: config.copy,
    maxConnections: config.maxConnections || "unlimited",
    idleTimeout: config.idleTimeoutMs ? formatDuration(config.idleTimeoutMs) : "never",
    sendTimeout: config.sendTimeoutMs ? formatDuration(config.sendTimeoutMs) : "never",
  };
}
