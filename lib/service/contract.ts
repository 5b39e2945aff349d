// contract: what echosrv's service support is made of, shared by every platform (the shape of Go's
// kardianos/service). A ServiceProgram is what a service manager runs (start must not wait for the end, stop must
// return at once); a ServiceManager registers, starts, stops and reports on a service, one module per platform
// (systemd.ts, launchd.ts, windows.ts), and does so through a Plan: the files it would write and the commands it
// would run, which `--dry-run` prints and executePlan carries out, undoing what it did if a step fails.

/**
 * echosrv's service support: one contract, one module per platform.
 *
 * @example Install echosrv as a systemd service with baked options, showing first what will be done
 * ```ts
 * import { describePlan, executePlan, launcherOfThisProcess, type ServiceDefinition } from "./contract.ts";
 * import { SystemdManager } from "./systemd.ts";
 * import { parseCommandLine } from "../options.ts";
 *
 * const serverArgs = ["--port", "40007", "--max-connections", "5000"];
 * const parsed = parseCommandLine(serverArgs);
 * if (parsed.kind !== "run") throw new Error("not server options");
 * const definition: ServiceDefinition = {
 *   name: "echosrv",
 *   displayName: "echosrv TCP echo server",
 *   description: "TCP echo server on port 40007",
 *   start: "auto",
 *   launcher: launcherOfThisProcess(),
 *   serverArgs,
 *   config: parsed.config,
 * };
 * const manager = new SystemdManager();
 * const plan = manager.installPlan(definition);
 * console.log(describePlan(plan)); // what `echosrv service install --dry-run` prints
 * await manager.available(); // throws ServiceError where systemd is not running
 * await executePlan(plan, console.log); // needs root; undoes what it did if a step fails
 * ```
 *
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_HOSTS, type RunConfig } from "../config.ts";
import { serverFlags } from "../runtime.ts";

/** A running service, as its program hands it to the service manager's code. */
export interface RunningService {
  /** Begins a graceful stop and returns at once; `shutdown` means the machine is going down (less time). */
  stop(reason: "stop" | "shutdown"): void;
  /** Resolves with the exit code once the service has stopped (after {@link stop}, or by itself on a failure). */
  readonly finished: Promise<number>;
}

/** What a service manager runs. */
export interface ServiceProgram {
  /**
   * Starts the service and resolves once it serves, or with a non-zero exit code when it cannot start. Must not
   * wait for the service to end.
   *
   * @param startParameters arguments given to this start only (`sc start NAME a b` on Windows)
   * @param serviceName the name the service manager knows it by
   */
  start(startParameters: string[], serviceName: string): Promise<number | RunningService>;
}

/**
 * When the service starts: at boot (and now, on install), at boot after the other automatic services (Windows'
 * delayed auto-start; the same as auto elsewhere), or only when asked.
 */
export type StartMode = "auto" | "delayed" | "manual";

/** How the service's process is launched: the compiled executable, or Deno running main.ts. */
export type Launcher =
  | { kind: "compiled"; executable: string }
  | { kind: "source"; deno: string; config: string; main: string; denoDir?: string };

/** Everything a manager needs to register a service. */
export interface ServiceDefinition {
  /** The service's name (unit, label, SCM key): letters, digits, `-`, `_`, `.`. */
  name: string;
  /** The name people see (SCM display name, systemd Description=). */
  displayName: string;
  /** A sentence on what it is. */
  description: string;
  /** Boot start or manual start. */
  start: StartMode;
  /**
   * The account it runs as, as `--account` gave it; undefined for each manager's least-privileged default (Windows:
   * its virtual account NT SERVICE\NAME; systemd: a dynamic user; launchd: the user _NAME).
   */
  account?: string;
  /** What runs. */
  launcher: Launcher;
  /** The server options baked into the service's command line, already validated. */
  serverArgs: string[];
  /** What those options configure (limits, port, log file): the unit's settings follow from it. */
  config: RunConfig;
}

/**
 * The file descriptors a service may open, for the managers that set a limit (systemd's LimitNOFILE, launchd's
 * NumberOfFiles): the connection cap plus room for listeners, logs and the runtime.
 *
 * @param maxConnections `--max-connections` (0 = no limit)
 * @returns the descriptor limit
 */
export function fileLimit(maxConnections: number): number {
  return maxConnections === 0 ? 1_048_576 : Math.max(65_536, maxConnections + 1024);
}

/**
 * How long a manager waits for the service to stop before it kills it: `--shutdown-timeout` plus 5 s, so that a
 * graceful stop is never cut short.
 *
 * @param config the service's configuration
 * @returns the wait in whole seconds
 */
export function stopGraceSeconds(config: RunConfig): number {
  return Math.ceil(config.server.shutdownTimeoutMs / 1000) + 5;
}

/**
 * Where the server listens, in words for a description: "on port 40007 (IPv4 and IPv6)" for the default hosts,
 * otherwise the hosts themselves ("on port 7 of 127.0.0.1 and ::1").
 *
 * @param hosts the `--host` values (DEFAULT_HOSTS when none was given)
 * @param port the port
 */
export function listenWords(hosts: readonly string[], port: number): string {
  const same = hosts.length === DEFAULT_HOSTS.length && DEFAULT_HOSTS.every((h) => hosts.includes(h));
  if (same) return `on port ${port} (IPv4 and IPv6)`;
  const list = hosts.length === 1 ? hosts[0] : `${hosts.slice(0, -1).join(", ")} and ${hosts.at(-1)}`;
  return `on port ${port} of ${list}`;
}

/** What a manager reports about a service. */
export interface ServiceStatus {
  /** False when no service of that name is registered. */
  installed: boolean;
  /** running, stopped, starting, stopping, or what the manager said when it is none of those. */
  state: string;
  /** The process id while running, when the manager tells it. */
  pid?: number;
  /** The manager's own words, for people. */
  detail: string;
}

/** Thrown for every failure of a service command; the message says what went wrong and what to do. */
export class ServiceError extends Error {
  override name = "ServiceError";
}

/** One thing a plan does. Steps with an `undo` are reverted (in reverse order) when a later step fails. */
export type Step =
  | { kind: "mkdir"; path: string; mode: number }
  | { kind: "write"; path: string; content: string; mode: number; undo?: Step[] }
  | { kind: "remove"; path: string }
  | {
    kind: "run";
    argv: string[];
    /** Exit codes that count as success besides 0 (e.g. "already stopped"). */
    okCodes?: number[];
    /** Turns a failure into a clear message (exit code, standard error); undefined keeps the default. */
    explain?: (code: number, stderr: string) => string | undefined;
    undo?: Step[];
  }
  | {
    kind: "call";
    /** The function called and on what, as --dry-run prints it (e.g. `CreateServiceW echosrv: start auto, ...`). */
    what: string;
    /** Calls it; may return a note for the progress line. Fails with a {@link ServiceError}. */
    run: () => Promise<string | void>;
    undo?: Step[];
  }
  | { kind: "wait"; what: string; until: () => Promise<boolean>; timeoutMs: number };

/** What a service command would change, step by step. */
export interface Plan {
  /** One line on what the plan does. */
  summary: string;
  steps: Step[];
  /** Things worth saying about the plan (printed with it). */
  notes?: string[];
}

/** Every platform's manager offers this. */
export interface ServiceManager {
  /** The service manager's name as people know it: systemd, launchd, the Windows SCM. */
  readonly system: string;
  /** Formats a command as it would be typed on this platform (for --dry-run and messages). */
  formatCommand(argv: string[]): string;
  /** Throws {@link ServiceError} when the service manager is missing or not running here. */
  available(): Promise<void>;
  /** Whether a service of this name is registered. */
  installed(name: string): Promise<boolean>;
  /** Register the service (and start it now when it starts at boot). */
  installPlan(definition: ServiceDefinition): Plan;
  /** Stop it and remove the registration. */
  uninstallPlan(name: string): Plan;
  /** Start, stop or restart it. */
  controlPlan(action: "start" | "stop" | "restart", name: string): Plan;
  /** Ask the manager how it is. */
  status(name: string): Promise<ServiceStatus>;
}

/**
 * The permissions `echosrv` itself needs on `os`, baked into the compiled executable: the server's own, plus
 * (Linux, macOS) running the service manager's tool and reading the user id to say "run as root" up front. On
 * Windows `service ...` calls the SCM's API through FFI, which the service's own permissions already allow.
 * `--allow-ffi` stays unscoped on Windows on purpose: a scoped FFI permission makes Deno resolve "advapi32.dll"
 * against the working directory instead of letting Windows load its system DLL (both are KnownDLLs, always taken
 * from System32).
 *
 * @param os the target system
 * @returns the `deno compile` permission flags
 */
export function executablePermissions(os: typeof Deno.build.os): string[] {
  switch (os) {
    case "windows":
      return serverFlags(os);
    case "darwin":
      return [...serverFlags(os), "--allow-run=launchctl", "--allow-sys=uid"];
    default:
      return [...serverFlags(os), "--allow-run=systemctl", "--allow-sys=uid"];
  }
}

/**
 * How this process was launched, so the service runs the same program: the executable itself when compiled,
 * otherwise `deno run` of this main.ts with this deno.json, all as absolute paths.
 *
 * @returns the launcher of this process
 */
export function launcherOfThisProcess(): Launcher {
  if (Deno.build.standalone) return { kind: "compiled", executable: Deno.execPath() };
  const main = fileURLToPath(Deno.mainModule);
  const denoDir = denoDirOfThisProcess();
  return {
    kind: "source",
    deno: Deno.execPath(),
    config: join(dirname(main), "deno.json"),
    main,
    ...(denoDir ? { denoDir } : {}),
  };
}

/** Where this Deno keeps its cache (and so the npm packages echosrv needs): $DENO_DIR or the OS's default. */
function denoDirOfThisProcess(): string | undefined {
  const env = (name: string) => Deno.env.get(name) || undefined;
  const explicit = env("DENO_DIR");
  if (explicit) return explicit;
  switch (Deno.build.os) {
    case "windows": {
      const local = env("LOCALAPPDATA");
      return local ? join(local, "deno") : undefined;
    }
    case "darwin": {
      const home = env("HOME");
      return home ? join(home, "Library", "Caches", "deno") : undefined;
    }
    default: {
      const cache = env("XDG_CACHE_HOME") ?? (env("HOME") ? join(env("HOME")!, ".cache") : undefined);
      return cache ? join(cache, "deno") : undefined;
    }
  }
}

/**
 * The service's command line on `os`: the program and the arguments that come before the server options.
 *
 * @param launcher how the process is launched
 * @param os the system the service runs on
 * @returns argv, program first
 */
export function launchArgs(launcher: Launcher, os: typeof Deno.build.os): string[] {
  if (launcher.kind === "compiled") return [launcher.executable];
  return [launcher.deno, "run", ...serverFlags(os), "--config", launcher.config, launcher.main];
}

/** Formats an argv as a POSIX shell would need it typed (for messages and --dry-run). */
export function shellQuote(argv: string[]): string {
  return argv.map((arg) => /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`)
    .join(" ");
}

/** Describes the plan exactly: every file with its whole content, every command, in order. */
export function describePlan(plan: Plan, quote: (argv: string[]) => string = shellQuote): string {
  const lines = [`# ${plan.summary}`, "# dry run: nothing was changed. A real run would do, in order:"];
  for (const step of plan.steps) {
    switch (step.kind) {
      case "mkdir":
        lines.push(`create directory ${step.path} (mode ${step.mode.toString(8)})`);
        break;
      case "write":
        lines.push(`write ${step.path} (mode ${step.mode.toString(8)}):`);
        lines.push(`----- begin ${step.path} -----`);
        lines.push(step.content.replace(/\n$/, ""));
        lines.push(`----- end ${step.path} -----`);
        break;
      case "remove":
        lines.push(`remove ${step.path}`);
        break;
      case "run":
        lines.push(`run: ${quote(step.argv)}`);
        break;
      case "call":
        lines.push(`call: ${step.what}`);
        break;
      case "wait":
        lines.push(`wait until ${step.what} (at most ${Math.round(step.timeoutMs / 1000)} s)`);
        break;
    }
  }
  for (const note of plan.notes ?? []) lines.push(`note: ${note}`);
  return lines.join("\n") + "\n";
}

/** What a tool printed and how it ended. */
export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a service manager's tool and collects its output. A missing tool becomes a {@link ServiceError}.
 *
 * @param argv the tool and its arguments
 * @returns exit code and output
 */
export async function runTool(argv: string[]): Promise<ToolResult> {
  const [program, ...args] = argv;
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(program, { args, stdin: "null", stdout: "piped", stderr: "piped" }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new ServiceError(`${program} was not found on this machine`);
    if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
      throw new ServiceError(`not allowed to run ${program}: ${(error as Error).message}`);
    }
    throw error;
  }
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function executeStep(step: Step, quote: (argv: string[]) => string): Promise<string> {
  switch (step.kind) {
    case "mkdir":
      try {
        await Deno.mkdir(step.path, { recursive: true, mode: step.mode });
      } catch (error) {
        throw new ServiceError(`cannot create ${step.path}: ${describeFsError(error)}`);
      }
      return `created ${step.path}`;
    case "write":
      try {
        await Deno.writeTextFile(step.path, step.content, { createNew: true, mode: step.mode });
        await Deno.chmod(step.path, step.mode);
      } catch (error) {
        if (error instanceof Deno.errors.AlreadyExists) {
          throw new ServiceError(`${step.path} already exists; nothing was changed`);
        }
        throw new ServiceError(`cannot write ${step.path}: ${describeFsError(error)}`);
      }
      return `wrote ${step.path}`;
    case "remove":
      try {
        await Deno.remove(step.path);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) {
          throw new ServiceError(`cannot remove ${step.path}: ${describeFsError(error)}`);
        }
      }
      return `removed ${step.path}`;
    case "run": {
      const result = await runTool(step.argv);
      if (result.code !== 0 && !(step.okCodes ?? []).includes(result.code)) {
        const said = (result.stderr.trim() || result.stdout.trim()).split("\n").slice(-3).join(" / ");
        throw new ServiceError(
          step.explain?.(result.code, said) ??
            `${quote(step.argv)} failed (exit ${result.code})${said ? `: ${said}` : ""}`,
        );
      }
      return `ran: ${quote(step.argv)}`;
    }
    case "call": {
      const note = await step.run();
      return `called: ${step.what}${note ? ` (${note})` : ""}`;
    }
    case "wait": {
      const deadline = performance.now() + step.timeoutMs;
      while (!(await step.until())) {
        if (performance.now() > deadline) {
          throw new ServiceError(`gave up waiting until ${step.what} after ${Math.round(step.timeoutMs / 1000)} s`);
        }
        await sleep(250);
      }
      return `${step.what}`;
    }
  }
}

function describeFsError(error: unknown): string {
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied (run as root / Administrator)";
  return (error as Error)?.message ?? String(error);
}

/**
 * Carries out a plan in order. When a step fails, the `undo` steps of the steps already done run in reverse, so
 * nothing is left half-done, and the failure is thrown as a {@link ServiceError}.
 *
 * @param plan what to do
 * @param report receives one line per step done
 * @param quote formats a command as it is typed on this system, for the progress lines (POSIX shell by default;
 *   the manager's {@link ServiceManager.formatCommand})
 */
export async function executePlan(
  plan: Plan,
  report: (line: string) => void,
  quote: (argv: string[]) => string = shellQuote,
): Promise<void> {
  const undo: Step[][] = [];
  for (const step of plan.steps) {
    try {
      report(await executeStep(step, quote));
    } catch (error) {
      for (const steps of undo.reverse()) {
        for (const undoStep of steps) {
          try {
            report(`undone: ${await executeStep(undoStep, quote)}`);
          } catch (undoError) {
            report(`could not undo (${(undoError as Error).message}); check by hand`);
          }
        }
      }
      throw error;
    }
    if ((step.kind === "write" || step.kind === "run" || step.kind === "call") && step.undo) undo.push(step.undo);
  }
}
