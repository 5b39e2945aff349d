// windows: echosrv as a Windows service, registered and controlled through sc.exe, the SCM's own command-line
// client: `sc create` with a quoted binPath, `sc description`, `sc failure` (restart on failure), `sc start`,
// `sc stop`, `sc delete`, `sc queryex`. The service's process then speaks the SCM protocol itself (scm.ts).
// binPath is one string that the service's process splits back into arguments with CommandLineToArgvW's rules,
// so every argument is quoted here by those rules; paths with spaces and quotes survive.

import {
  launchArgs,
  type Plan,
  runTool,
  type ServiceDefinition,
  ServiceError,
  type ServiceManager,
  type ServiceStatus,
  type Step,
} from "./contract.ts";
import { SERVICE_MARKER } from "./scm.ts";

/** sc.exe's exit codes are Win32 error codes; these are the ones a user can meet. */
const ERROR_ACCESS_DENIED = 5;
const ERROR_SERVICE_ALREADY_RUNNING = 1056;
const ERROR_SERVICE_DOES_NOT_EXIST = 1060;
const ERROR_SERVICE_CANNOT_ACCEPT_CTRL = 1061;
const ERROR_SERVICE_NOT_ACTIVE = 1062;
const ERROR_SERVICE_EXISTS = 1073;
const ERROR_SERVICE_MARKED_FOR_DELETE = 1072;

/** `sc stop` of a service that is not running is not a failure for stop, restart or uninstall. */
const stopOk = [ERROR_SERVICE_NOT_ACTIVE, ERROR_SERVICE_CANNOT_ACCEPT_CTRL];

/** How long `start`/`stop` wait for the service to reach RUNNING/STOPPED before giving up. */
const STATE_WAIT_MS = 60_000;

/**
 * Quotes one argument so that CommandLineToArgvW (and the C runtime) read it back unchanged: arguments without
 * spaces, tabs or quotes stay as they are; others are put in quotes, with each quote escaped by a backslash and
 * the backslashes that precede a quote (or the closing quote) doubled.
 *
 * @param arg the argument
 * @returns the argument as it must appear in a command line
 */
export function quoteWindowsArg(arg: string): string {
  if (arg !== "" && !/[ \t\n\v"]/.test(arg)) return arg;
  let out = '"';
  let backslashes = 0;
  for (const ch of arg) {
    if (ch === "\\") {
      backslashes++;
      continue;
    }
    out += ch === '"' ? "\\".repeat(backslashes * 2 + 1) + '"' : "\\".repeat(backslashes) + ch;
    backslashes = 0;
  }
  return out + "\\".repeat(backslashes * 2) + '"';
}

/**
 * A whole command line. The program is always quoted: an unquoted path with spaces in binPath is the classic
 * "unquoted service path" hole (C:\Program.exe would run first). CommandLineToArgvW reads the program name without
 * backslash escapes, so it must not contain a quote (Windows file names cannot).
 *
 * @param argv the program (absolute path) and its arguments
 * @returns the command line, e.g. `"C:\Program Files\echosrv\echosrv.exe" --service --port 40007`
 */
export function windowsCommandLine(argv: string[]): string {
  const [program, ...args] = argv;
  if (program.includes('"')) throw new ServiceError(`a program path cannot contain a quote: ${program}`);
  return [`"${program}"`, ...args.map(quoteWindowsArg)].join(" ");
}

/** The service's command line (binPath): the program, the `--service` marker, the baked server options. */
export function windowsServiceArgv(definition: ServiceDefinition): string[] {
  return [...launchArgs(definition.launcher, "windows"), SERVICE_MARKER, ...definition.serverArgs];
}

function explainSc(name: string, code: number, said: string): string | undefined {
  switch (code) {
    case ERROR_ACCESS_DENIED:
      return "access denied: service commands need an elevated prompt (right-click, Run as administrator)";
    case ERROR_SERVICE_EXISTS:
      return `a service named ${name} already exists; remove it first with \`echosrv service uninstall --name ${name}\``;
    case ERROR_SERVICE_DOES_NOT_EXIST:
      return `no service named ${name} is installed`;
    case ERROR_SERVICE_MARKED_FOR_DELETE:
      return `the service ${name} is marked for deletion; close the Services console (and anything else that has ` +
        "it open) and try again";
    default:
      return said ? undefined : `sc.exe failed with Windows error ${code}`;
  }
}

/** What `sc queryex NAME` says: the state number and name, and the process id. */
export function parseScQuery(output: string): { state: number; stateName: string; pid?: number } | undefined {
  const state = /STATE\s*:\s*(\d+)\s+(\w+)/.exec(output);
  if (!state) return undefined;
  const pid = /PID\s*:\s*(\d+)/.exec(output);
  return {
    state: Number(state[1]),
    stateName: state[2],
    ...(pid && Number(pid[1]) > 0 ? { pid: Number(pid[1]) } : {}),
  };
}

/** The Windows SCM, through sc.exe. */
export class WindowsManager implements ServiceManager {
  readonly system = "the Windows Service Control Manager";

  /** Formats commands for --dry-run as they would be typed at a Windows prompt. */
  formatCommand(argv: string[]): string {
    return argv.map(quoteWindowsArg).join(" ");
  }

  available(): Promise<void> {
    if (Deno.build.os !== "windows") {
      return Promise.reject(new ServiceError("the Windows Service Control Manager exists on Windows only"));
    }
    return Promise.resolve();
  }

  async installed(name: string): Promise<boolean> {
    const result = await runTool(["sc.exe", "query", name]);
    if (result.code === ERROR_SERVICE_DOES_NOT_EXIST) return false;
    if (result.code === 0) return true;
    throw new ServiceError(explainSc(name, result.code, result.stdout) ?? `sc.exe query ${name}: ${result.stdout}`);
  }

  #run(name: string, args: string[], extra: Partial<Extract<Step, { kind: "run" }>> = {}): Step {
    return { kind: "run", argv: ["sc.exe", ...args], explain: (code, said) => explainSc(name, code, said), ...extra };
  }

  /** Waits for RUNNING; a service that stops instead fails the wait with its exit codes. */
  #waitRunning(name: string): Step {
    return {
      kind: "wait",
      what: `${name} is running`,
      timeoutMs: STATE_WAIT_MS,
      until: async () => {
        const result = await runTool(["sc.exe", "queryex", name]);
        const parsed = parseScQuery(result.stdout);
        if (parsed?.state === 1) {
          const exit = /SERVICE_EXIT_CODE\s*:\s*(\d+)/.exec(result.stdout)?.[1] ?? "?";
          throw new ServiceError(
            `${name} stopped instead of running (service-specific exit code ${exit}: 1 = runtime failure such as ` +
              "the port in use, 2 = bad options); its log file says why (by default NAME.log beside the executable)",
          );
        }
        return parsed?.state === 4;
      },
    };
  }

  #waitStopped(name: string): Step {
    return {
      kind: "wait",
      what: `${name} has stopped`,
      timeoutMs: STATE_WAIT_MS,
      until: async () => {
        const result = await runTool(["sc.exe", "queryex", name]);
        return result.code === ERROR_SERVICE_DOES_NOT_EXIST || parseScQuery(result.stdout)?.state === 1;
      },
    };
  }

  installPlan(definition: ServiceDefinition): Plan {
    const { name } = definition;
    const binPath = windowsCommandLine(windowsServiceArgv(definition));
    const remove = [this.#run(name, ["delete", name])];
    const steps: Step[] = [
      this.#run(name, [
        "create",
        name,
        "binPath=",
        binPath,
        "start=",
        definition.start === "auto" ? "auto" : "demand",
        "DisplayName=",
        definition.displayName,
      ], { undo: remove }),
      this.#run(name, ["description", name, definition.description]),
      // Restart after 5 s, 10 s, then every minute; the count resets after a day without failures.
      this.#run(name, ["failure", name, "reset=", "86400", "actions=", "restart/5000/restart/10000/restart/60000"]),
      // Also when the service stops itself with an error (a failed start), not only when the process dies.
      this.#run(name, ["failureflag", name, "1"]),
    ];
    if (definition.start === "auto") {
      steps.push(
        this.#run(name, ["start", name], { undo: [this.#run(name, ["stop", name], { okCodes: stopOk })] }),
        this.#waitRunning(name),
      );
    }
    return {
      summary: `install ${name} as a Windows service (${definition.start === "auto" ? "starts at boot" : "manual"})`,
      steps,
      notes: [
        `binPath is ${binPath}`,
        "the service runs as LocalSystem; its log file is NAME.log beside the executable unless --log-file says " +
        "otherwise",
      ],
    };
  }

  uninstallPlan(name: string): Plan {
    return {
      summary: `stop and remove the Windows service ${name}`,
      steps: [
        this.#run(name, ["stop", name], { okCodes: stopOk }),
        this.#waitStopped(name),
        this.#run(name, ["delete", name]),
      ],
      notes: ["the log file is kept"],
    };
  }

  controlPlan(action: "start" | "stop" | "restart", name: string): Plan {
    const start = [
      this.#run(name, ["start", name], { okCodes: [ERROR_SERVICE_ALREADY_RUNNING] }),
      this.#waitRunning(name),
    ];
    const stop = [this.#run(name, ["stop", name], { okCodes: stopOk }), this.#waitStopped(name)];
    return {
      summary: `${action} the Windows service ${name}`,
      steps: action === "start" ? start : action === "stop" ? stop : [...stop, ...start],
    };
  }

  async status(name: string): Promise<ServiceStatus> {
    const result = await runTool(["sc.exe", "queryex", name]);
    if (result.code === ERROR_SERVICE_DOES_NOT_EXIST) {
      return { installed: false, state: "not installed", detail: result.stdout.trim() };
    }
    const parsed = parseScQuery(result.stdout);
    if (result.code !== 0 || !parsed) {
      throw new ServiceError(explainSc(name, result.code, result.stdout) ?? `sc.exe queryex ${name}: ${result.stdout}`);
    }
    const states: Record<number, string> = { 1: "stopped", 2: "starting", 3: "stopping", 4: "running" };
    return {
      installed: true,
      state: states[parsed.state] ?? parsed.stateName.toLowerCase(),
      ...(parsed.pid ? { pid: parsed.pid } : {}),
      detail: result.stdout.trim(),
    };
  }
}
