// environment: the ECHOSRV_* variables, one per option (a flag on the command line wins over its variable; commander
// reads them, lib/options.ts), the check that reports a variable no option reads, so that a misspelt one is not
// silently ignored, and how a usage error names an option whose value came from its variable.

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

/** The environment variables of the --fault-* options (and of `echosrv fault`'s --api and --token). */
export const FAULT_ENV_VARS = {
  faultProfile: "ECHOSRV_FAULT_PROFILE",
  faultListen: "ECHOSRV_FAULT_LISTEN",
  faultClient: "ECHOSRV_FAULT_CLIENT",
  faultSeed: "ECHOSRV_FAULT_SEED",
  faultApi: "ECHOSRV_FAULT_API",
  faultApiToken: "ECHOSRV_FAULT_API_TOKEN",
} as const;

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

/** An option's value as it came from its ECHOSRV_* variable, for {@link optionInError}. */
export interface FromEnvironment {
  /** The option's flags as its help shows them, e.g. `--fault-api <host:port>`. */
  flags: string;
  /** The variable, e.g. `ECHOSRV_FAULT_API`. */
  variable: string;
  /** The value, as the variable holds it (or, for a list, the item at fault). */
  value: string;
}

/**
 * Names an option in a usage error found once the options are read (two that do not fit together, a file that
 * cannot be used), by the rule commander follows for a value it cannot read: the option as written on the command
 * line, or, when its value came from the environment, its flags, the value and the variable (commander:
 * `option '--port <n>' value 'x' from env 'ECHOSRV_PORT' is invalid`), so the message points where the value must
 * be fixed: a unit file or a container's environment, not the command line.
 *
 * @param written the option as the command line gave it, e.g. `--fault-api 0.0.0.0:9408` or `--tls-cert <file>`
 * @param fromEnvironment the flags, variable and value, when the value came from the environment
 * @returns e.g. `option '--fault-api 0.0.0.0:9408'`, or `option '--fault-api <host:port>' value '0.0.0.0:9408'
 * from env 'ECHOSRV_FAULT_API'`
 */
export function optionInError(written: string, fromEnvironment?: FromEnvironment): string {
  if (fromEnvironment === undefined) return `option '${written}'`;
  const { flags, value, variable } = fromEnvironment;
  return `option '${flags}' value '${value}' from env '${variable}'`;
}
