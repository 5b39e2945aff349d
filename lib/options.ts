// options: echosrv's command line, every command and option of it in one place (run, stats, service ...), read with
// the ECHOSRV_* environment (lib/environment.ts) into one validated configuration (lib/config.ts): the options, their
// defaults and help texts, the checks of their combinations and of the files they name. One option's value is read
// by lib/option_values.ts. It runs nothing. Parsing is commander's (npm), standing in for the design card's
// @std/cli, which lives on JSR and cannot be fetched here.

import { Command, CommanderError, Option } from "commander";
import { parseCidr } from "./access.ts";
import {
  type CopyStrategy,
  DEFAULT_HOSTS,
  DEFAULT_METRICS_PORT,
  DEFAULT_PORT,
  DEFAULT_SEND_TIMEOUT_MS,
  DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_UDP_RATE,
  type LogFormat,
  type LogLevelName,
  type MetricsConfig,
  type RunConfig,
  type ServerConfig,
  type StatsConfig,
  TRACE_ALL,
} from "./config.ts";
import { loadTlsFiles, TlsFileError } from "./tls.ts";
import { parseDuration, parseInteger, parseMask, parseSize, UnitError } from "./units.ts";
import { ENV_VARS, optionInError } from "./environment.ts";
import {
  collectCidrs,
  collectHosts,
  nonEmptyPath,
  oneLineText,
  parseHostPort,
  parseMetricsUrl,
  reader,
  readWorkers,
  serviceName,
  WORKERS_AUTO,
} from "./option_values.ts";
import { VERSION } from "./version.ts";
import { autoWorkers, MAX_AUTO_WORKERS } from "./runtime.ts";
import type { StartMode } from "./service/contract.ts";
import { DEFAULT_SERVICE_NAME, type ServiceAction, type ServiceRequest } from "./service/request.ts";
import { addFaultOptions, faultConfig, FaultOptionError, type RawFaultOptions } from "./faults/options.ts";
import { addFaultCommand, type FaultRequest } from "./faults/cli.ts";

/** What the command line asks for. */
export type Invocation =
  | { kind: "run"; config: RunConfig }
  | { kind: "stats"; config: StatsConfig }
  | { kind: "service"; request: ServiceRequest }
  // Issue 14: `echosrv fault ...` (lib/faults/cli.ts).
  | { kind: "fault"; request: FaultRequest }
  | { kind: "exit"; code: number };

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
      ).default(WORKERS_AUTO, "auto").env(ENV_VARS.workers).argParser(readWorkers),
    );
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

/** Where an option's value came from, as commander says it: `cli`, `env`, `default`, or undefined (not given). */
type ValueSource = (option: keyof RawServerOptions) => string | undefined;

/**
 * Reads the options that only make sense together, and the files they name; throws {@link UsageError}, which names
 * an option whose value came from its ECHOSRV_* variable by that variable (lib/environment.ts optionInError).
 */
function operationsConfig(raw: RawServerOptions, source: ValueSource): Partial<ServerConfig> {
  /** The option in a message: as the command line gives it, or with its variable and that variable's value. */
  const named = (option: keyof typeof ENV_VARS & keyof RawServerOptions, flags: string) =>
    optionInError(
      flags,
      source(option) === "env"
        ? { flags, variable: ENV_VARS[option], value: Deno.env.get(ENV_VARS[option]) ?? "" }
        : undefined,
    );
  const out: Partial<ServerConfig> = {};
  // Issue 14: the --fault-* options (lib/faults/options.ts).
  try {
    const faults = faultConfig(raw, raw.port, source);
    if (faults) out.faults = faults;
  } catch (error) {
    if (error instanceof FaultOptionError) throw new UsageError(error.message);
    throw error;
  }
  // Each network in its canonical text (as parseCidr writes it): the configuration stays plain data.
  const cidrs = (rules: string[] | undefined) => (rules ?? []).map((rule) => parseCidr(rule).text);
  const access = { allow: cidrs(raw.allow), deny: cidrs(raw.deny), maxPerClient: raw.maxConnectionsPerIp };
  if (access.allow.length > 0 || access.deny.length > 0 || access.maxPerClient > 0) out.access = access;
  if (raw.maxBytesPerConnection > 0) out.maxBytesPerConnection = raw.maxBytesPerConnection;
  if (raw.maxConnectionDuration > 0) out.maxConnectionDurationMs = raw.maxConnectionDuration;
  if (raw.udp || envFlag(ENV_VARS.udp)) out.udp = { ratePerSource: raw.udpRate };
  const tlsCert = () => named("tlsCert", "--tls-cert <file>");
  const tlsKey = () => named("tlsKey", "--tls-key <file>");
  if ((raw.tlsCert === undefined) !== (raw.tlsKey === undefined)) {
    throw new UsageError(
      raw.tlsCert === undefined
        ? `${tlsKey()} needs --tls-cert <file> as well`
        : `${tlsCert()} needs --tls-key <file> as well`,
    );
  }
  if (raw.tlsCert !== undefined && raw.tlsKey !== undefined) {
    try {
      out.tls = loadTlsFiles(raw.tlsCert, raw.tlsKey);
      out.tlsHandshakeTimeoutMs = raw.tlsHandshakeTimeout;
    } catch (error) {
      if (error instanceof TlsFileError) {
        throw new UsageError(`${error.option === "--tls-cert" ? tlsCert() : tlsKey()}: ${error.message}`);
      }
      throw error;
    }
  }
  const proxy = raw.proxyProtocol || envFlag(ENV_VARS.proxyProtocol);
  if (proxy) {
    // A flag commander does not read from the environment (envFlag does): it came from there unless given.
    const proxyProtocol = optionInError(
      "--proxy-protocol",
      raw.proxyProtocol ? undefined : {
        flags: "--proxy-protocol",
        variable: ENV_VARS.proxyProtocol,
        value: Deno.env.get(ENV_VARS.proxyProtocol) ?? "",
      },
    );
    if (!raw.proxyFrom || raw.proxyFrom.length === 0) {
      throw new UsageError(
        `${proxyProtocol} needs --proxy-from <cidr>: the load balancers' addresses (for example ` +
          "--proxy-from 10.0.0.5 or --proxy-from 127.0.0.1), so that clients cannot forge a header",
      );
    }
    if (out.tls) {
      throw new UsageError(
        `${proxyProtocol} cannot be combined with --tls-cert: the load balancer sends the PROXY header ` +
          "before any TLS; terminate TLS at the load balancer, or send TLS through it untouched without --proxy-protocol",
      );
    }
    out.proxyProtocol = { from: cidrs(raw.proxyFrom), timeoutMs: raw.proxyTimeout };
  } else if (raw.proxyFrom && raw.proxyFrom.length > 0) {
    throw new UsageError(`${named("proxyFrom", "--proxy-from <cidr>")} has no effect without --proxy-protocol`);
  }
  return out;
}

function toRunConfig(raw: RawServerOptions, source: ValueSource): RunConfig {
  const operations = operationsConfig(raw, source);
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
    workers: raw.workers === WORKERS_AUTO ? autoWorkers() : raw.workers,
  };
  if (raw.metrics) config.metrics = raw.metrics;
  return config;
}

/** Where commander writes; tests swap it to capture the text. */
export interface Output {
  /** Writes help and version text (standard output). */
  out(text: string): void;
  /** Writes error messages (standard error). */
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

// The `echosrv service install|uninstall|start|stop|restart|status` subcommands (lib/service/commands.ts carries
// them out).

/** The raw option values commander hands over. */
interface RawServiceOptions {
  name: string;
  displayName?: string;
  description?: string;
  start: StartMode;
  account?: string;
  dryRun?: boolean;
}

/**
 * Adds `service` and its subcommands to the program.
 *
 * @param program the `echosrv` command
 * @param configure applies the program's shared settings (output, errors, help) to each new command
 * @param onRequest receives the parsed request when a subcommand is given
 * @param args the whole command line being parsed (to tell whether the server options came after `--`)
 */
function addServiceCommand(
  program: Command,
  configure: (command: Command) => Command,
  onRequest: (request: ServiceRequest) => void,
  args: readonly string[],
): void {
  const service = configure(program.createCommand("service"))
    .description(
      "install echosrv as a system service (Windows SCM, systemd, launchd) and control it; see `echosrv service " +
        "install --help`",
    )
    .allowExcessArguments()
    .action((_opts: unknown, command: Command) => {
      const [word] = command.args;
      service.error(
        word === undefined
          ? "error: name what to do: install, uninstall, start, stop, restart or status"
          : `error: unknown command '${word}' (known: install, uninstall, start, stop, restart, status)`,
        { exitCode: 2, code: "echosrv.service.noAction" },
      );
    });
  const nameOption = () =>
    new Option("--name <name>", "the service's name").default(DEFAULT_SERVICE_NAME).argParser(serviceName);
  const dryRunOption = () => new Option("--dry-run", "print exactly what would be written and run; change nothing");

  const install = configure(service.createCommand("install"))
    .description(
      "register echosrv as a service and (with --start auto) start it now; put server options after --, e.g. " +
        "`echosrv service install -- --port 40007 --max-connections 5000`",
    )
    .addOption(nameOption())
    .addOption(new Option("--display-name <text>", 'the name people see (default: "<name> TCP echo server")')
      .argParser(oneLineText(256)))
    .addOption(new Option("--description <text>", "one sentence on what it is").argParser(oneLineText(1024)))
    .addOption(
      new Option(
        "--start <mode>",
        "auto: start at boot, and now; delayed: the same, after the other services at boot (Windows only: " +
          "systemd and launchd have no such start); manual: only when started",
      ).choices(["auto", "delayed", "manual"]).default("auto"),
    )
    .addOption(
      new Option(
        "--account <name>",
        "the account it runs as (default, least privilege: Windows NT SERVICE\\<name>, its virtual account; " +
          "Linux a dynamic user; macOS the user _<name>)",
      ).argParser(oneLineText(256)),
    )
    .addOption(dryRunOption())
    .argument("[server-options...]", "echosrv's server options for the service, after --")
    .showHelpAfterError(
      "(see `echosrv service install --help`; server options go after --, as in `echosrv service install -- --port 7`)",
    )
    .action((serverArgs: string[], opts: RawServiceOptions) => {
      if (serverArgs.length > 0 && !args.includes("--")) {
        install.error(
          `error: put the server options after --, as in \`echosrv service install -- ${serverArgs.join(" ")}\``,
          { exitCode: 2, code: "echosrv.service.noDashDash" },
        );
      }
      onRequest({
        action: "install",
        name: opts.name,
        ...(opts.displayName ? { displayName: opts.displayName } : {}),
        ...(opts.description ? { description: opts.description } : {}),
        start: opts.start,
        ...(opts.account ? { account: opts.account } : {}),
        dryRun: opts.dryRun ?? false,
        serverArgs,
      });
    });
  service.addCommand(install);

  const simple: [ServiceAction, string, boolean][] = [
    ["uninstall", "stop the service and remove its registration (its log files are kept)", true],
    ["start", "start the installed service", true],
    ["stop", "stop the service (gracefully: open sessions get --shutdown-timeout to finish)", true],
    ["restart", "stop the service, then start it", true],
    [
      "status",
      "say whether the service is installed and running (exit 0 running, 3 not running, 4 not installed)",
      false,
    ],
  ];
  for (const [action, description, mutates] of simple) {
    const command = configure(service.createCommand(action)).description(description).addOption(nameOption());
    if (mutates) command.addOption(dryRunOption());
    command.action((opts: RawServiceOptions) => {
      onRequest({ action, name: opts.name, start: "auto", dryRun: opts.dryRun ?? false, serverArgs: [] });
    });
    service.addCommand(command);
  }
  program.addCommand(service);
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
      return { kind: "run", config: toRunConfig(opts, (name) => command.getOptionValueSource(name)) };
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
          .default(`http://127.0.0.1:${DEFAULT_METRICS_PORT}/metrics`).env(ENV_VARS.metricsUrl)
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

  // `echosrv service install|uninstall|start|stop|restart|status`.
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
