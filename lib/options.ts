// options: the command line and the ECHOSRV_* environment, read into one validated configuration. It owns the
// list of options, their defaults, their help texts and their environment names; it runs nothing. Parsing is
// commander's (npm), standing in for the design card's @std/cli, which lives on JSR and cannot be fetched here.

import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { parseDuration, parseInteger, parseMask, UnitError } from "./units.ts";
import { VERSION } from "./version.ts";

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
  /** A connection that moves no byte for this long is closed; 0 = never. */
  idleTimeoutMs: number;
  /** How long a graceful stop waits for open sessions before closing them. */
  shutdownTimeoutMs: number;
  /** The copy strategy of each connection. */
  copy: CopyStrategy;
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
}

/** What the command line asks for. */
export type Invocation =
  | { kind: "run"; config: RunConfig }
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
  shutdownTimeout: "ECHOSRV_SHUTDOWN_TIMEOUT",
  logLevel: "ECHOSRV_LOG_LEVEL",
  traceFlags: "ECHOSRV_TRACE_FLAGS",
  logFormat: "ECHOSRV_LOG_FORMAT",
  logFile: "ECHOSRV_LOG_FILE",
  copy: "ECHOSRV_COPY",
} as const;

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

/** Reads one `--host` value (or a comma-separated list of them) and adds it to those given before. */
function collectHosts(text: string, previous: string[] | undefined): string[] {
  const hosts = text.split(",").map((h) => h.trim()).map((h) =>
    h.startsWith("[") && h.endsWith("]") ? h.slice(1, -1) : h
  );
  for (const host of hosts) {
    if (host === "" || !/^[A-Za-z0-9._:%-]+$/.test(host) || host.length > 253) {
      throw new InvalidArgumentError(
        `"${host}" is not an address or host name (examples: ::, 0.0.0.0, 127.0.0.1, ::1)`,
      );
    }
  }
  return [...(previous ?? []), ...hosts];
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
      new Option("--idle-timeout <duration>", "close a connection that moves no byte for this long; 0 = never")
        .default(5 * 60_000, "5m").env(ENV_VARS.idleTimeout).argParser(duration),
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
        .argParser((t) => {
          if (t.trim() === "") throw new InvalidArgumentError("the path is empty");
          return t;
        }),
    )
    .addOption(
      new Option("--copy <strategy>", "how bytes are copied back: loop (read/write loop) or pipe (readable.pipeTo)")
        .choices(["loop", "pipe"]).default("loop").env(ENV_VARS.copy),
    );
}

/** The raw option values commander hands over. */
interface RawServerOptions {
  port: number;
  host?: string[];
  maxConnections: number;
  idleTimeout: number;
  shutdownTimeout: number;
  logLevel: LogLevelName;
  traceFlags: number;
  logFormat: LogFormat;
  logFile?: string;
  copy: CopyStrategy;
}

function toRunConfig(raw: RawServerOptions): RunConfig {
  return {
    server: {
      port: raw.port,
      hosts: raw.host && raw.host.length > 0 ? [...new Set(raw.host)] : [...DEFAULT_HOSTS],
      maxConnections: raw.maxConnections,
      idleTimeoutMs: raw.idleTimeout,
      shutdownTimeoutMs: raw.shutdownTimeout,
      copy: raw.copy,
    },
    log: { level: raw.logLevel, traceFlags: raw.traceFlags, format: raw.logFormat, file: raw.logFile },
  };
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
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") return args;
    if (arg.startsWith("-") && arg !== "-") {
      // `--port 7` and `-p 7` take the next argument as their value; `--port=7` and `-p7` carry it.
      if (program.options.find((o) => o.long === arg || o.short === arg)?.required) i++;
      continue;
    }
    return arg === "run" ? [...args.slice(0, i), ...args.slice(i + 1)] : args;
  }
  return args;
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
  const configure = (command: Command) =>
    command
      .exitOverride()
      .configureOutput({
        writeOut: output.out,
        writeErr: output.err,
        outputError: (text, write) => write(`echosrv: ${text}`),
      })
      .showHelpAfterError("(run `echosrv --help` for the options)")
      .helpOption("-h, --help", "show this help and exit")
      .allowExcessArguments(false);

  const program = configure(addServerOptions(new Command("echosrv")))
    .description(
      "A TCP echo server: every byte received is sent back until the peer closes. The modern port of " +
        "Microsoft's WSK echosrv sample. Every option can also come from its ECHOSRV_* environment variable; " +
        "a flag wins over its variable.",
    )
    .usage("[run] [options]")
    .version(VERSION, "-V, --version", "print the version and exit")
    .action((opts: RawServerOptions) => {
      result = { kind: "run", config: toRunConfig(opts) };
    });

  try {
    program.parse(withoutRunCommand(args, program), { from: "user" });
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
  const known = new Set<string>(Object.values(ENV_VARS));
  return Object.keys(env).filter((name) => name.startsWith("ECHOSRV_") && !known.has(name)).sort();
}
