// environment: the ECHOSRV_* variables, one per option (a flag on the command line wins over its variable; commander
// reads them, lib/options.ts), and the check that reports a variable no option reads, so that a misspelt one is not
// silently ignored.

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

/**
 * Names the ECHOSRV_* variables in `env` that no option reads, so a misspelt variable is reported, not ignored.
 *
 * @param env the environment, as `Deno.env.toObject()` returns it
 * @returns the unknown names, sorted
 */
export function unknownEnvVars(env: Record<string, string>): string[] {
  const known = new Set<string>(Object.values(ENV_VARS));
  return Object.keys(env).filter((name) => name.startsWith("ECHOSRV_") && !known.has(name)).sort();
}
