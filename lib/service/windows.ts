// windows: echosrv as a Windows service, registered and controlled through the SCM's own API (advapi32 through FFI:
// lib/service/scm_client.ts), as kardianos/service does: CreateServiceW with a quoted command line, the description,
// restart on failure (also after a failed start), the service's own SID, the service's environment (SERVER_ENV of
// lib/runtime.ts, which Deno reads when its process starts, written as the REG_MULTI_SZ value Environment of the
// service's registry key: registry.ts), the log folder made writable for the service's account (its virtual account
// NT SERVICE\NAME by default: win_account.ts), an event source in the Application log (eventlog.ts), StartServiceW
// and a wait for RUNNING. The service's process then speaks the SCM protocol itself (scm.ts). The command line is
// one string that the service's process splits back into arguments with CommandLineToArgvW's rules, so every
// argument is quoted here by those rules; paths with spaces and quotes survive. Errors name the Windows call and the
// Windows error in words, and say what to do.

import { posix, win32 } from "node:path";
import type { ServiceDefinition, ServiceManager, ServiceStatus, StartMode } from "./contract.ts";
import { ServiceError } from "./error.ts";
import { launchArgs } from "./launcher.ts";
import type { Plan, Step } from "./plan.ts";
import { SERVICE_MARKER } from "./scm.ts";
import {
  ConfigLevel,
  ScmAccess,
  ScmClient,
  SERVICE_SID_TYPE_UNRESTRICTED,
  ServiceAccess,
  type ServiceHandle,
  type ServiceStatusProcess,
  StartType,
} from "./scm_client.ts";
import { registerEventSource, removeEventSource } from "./eventlog.ts";
import { grantModify, LOCAL_SYSTEM, serviceSid, virtualAccount, windowsAccount } from "./win_account.ts";
import { SYSTEM_LIBRARIES, Win32Error, type Win32Libraries } from "./win32.ts";
import { ERROR_FILE_NOT_FOUND, KeyAccess, RegistryKey } from "./registry.ts";
import { SERVER_ENV } from "../runtime.ts";

/** The Windows errors a service command meets and explains. */
const ERROR_ACCESS_DENIED = 5;
const ERROR_INVALID_LEVEL = 124;
const ERROR_SERVICE_ALREADY_RUNNING = 1056;
const ERROR_ACCOUNT_INVALID = 1057;
const ERROR_SERVICE_DOES_NOT_EXIST = 1060;
const ERROR_SERVICE_CANNOT_ACCEPT_CTRL = 1061;
const ERROR_SERVICE_NOT_ACTIVE = 1062;
const ERROR_SERVICE_MARKED_FOR_DELETE = 1072;
const ERROR_SERVICE_EXISTS = 1073;
const ERROR_DUPLICATE_SERVICE_NAME = 1078;

/** A stop of a service that is not running is not a failure for stop, restart or uninstall. */
const STOP_OK = [ERROR_SERVICE_NOT_ACTIVE, ERROR_SERVICE_CANNOT_ACCEPT_CTRL];

/** How long `start`/`stop` wait for the service to reach RUNNING/STOPPED before giving up. */
const STATE_WAIT_MS = 60_000;

/** Restart after 5 s, 10 s, then every minute; the count starts again after a day without failures. */
export const FAILURE_ACTIONS = { resetSeconds: 86_400, restartDelaysMs: [5_000, 10_000, 60_000] };

/** The service states by number (SERVICE_STATUS.dwCurrentState). */
const STATE_NAMES: Record<number, string> = {
  1: "stopped",
  2: "starting",
  3: "stopping",
  4: "running",
  5: "continuing",
  6: "pausing",
  7: "paused",
};

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

/** The path functions for a path as the system it belongs to writes it (the tests' stand-in runs on Linux). */
function pathsFor(path: string): typeof win32 {
  return /^[A-Za-z]:|\\/.test(path) ? win32 : posix;
}

/**
 * The log file `service install` gives a service that names none: `%ProgramData%\NAME\NAME.log`, in a folder made
 * for it, which its account may write.
 *
 * @param name the service's name
 * @param programData the value of %ProgramData% (C:\ProgramData when unknown)
 * @returns the absolute path
 */
export function defaultServiceLogFile(name: string, programData: string = "C:\\ProgramData"): string {
  return pathsFor(programData).join(programData, name, `${name}.log`);
}

/** The service's command line (binPath): the program, the `--service` marker, the baked server options. */
export function windowsServiceArgv(definition: ServiceDefinition, logFile?: string): string[] {
  const argv = [...launchArgs(definition.launcher, "windows"), SERVICE_MARKER, ...definition.serverArgs];
  return definition.config.log.file === undefined && logFile !== undefined ? [...argv, "--log-file", logFile] : argv;
}

/**
 * The registry key where the SCM keeps a service's configuration (ImagePath, ObjectName, Start, ...), under
 * HKEY_LOCAL_MACHINE. CreateServiceW makes it; DeleteService removes it, with every value in it.
 *
 * @param name the service's name
 * @returns the key's path, e.g. `SYSTEM\CurrentControlSet\Services\echosrv`
 */
export function serviceKey(name: string): string {
  return `SYSTEM\\CurrentControlSet\\Services\\${name}`;
}

/** The name of the REG_MULTI_SZ value of {@link serviceKey} whose `NAME=value` strings a service's process gets. */
export const ENVIRONMENT_VALUE = "Environment";

/**
 * The service's environment as the Environment value holds it: {@link SERVER_ENV} (lib/runtime.ts), one
 * `NAME=value` string per variable. Deno reads these when its process starts, before any of echosrv runs, so the
 * service's process must be started with them. Windows' SCM merges the strings of this value into the environment
 * of the service's process (as NSSM's documentation, "Merged service environment", describes it; Windows was not
 * available here). Wine 10's services.exe ignores the value: the service then warns in its log (README).
 *
 * @returns the strings, in SERVER_ENV's order
 */
export function windowsServiceEnvironment(): string[] {
  return Object.entries(SERVER_ENV).map(([variable, value]) => `${variable}=${value}`);
}

/** Says what a failed Windows call means for this command and what to do; the call and the words come first. */
export function explainWin32(name: string, error: Win32Error): string {
  switch (error.code) {
    case ERROR_ACCESS_DENIED:
      return `${error.message}: service commands need an elevated prompt (right-click, Run as administrator)`;
    case ERROR_SERVICE_EXISTS:
      return `${error.message}: a service named ${name} already exists; remove it first with ` +
        `\`echosrv service uninstall --name ${name}\` or choose another --name`;
    case ERROR_DUPLICATE_SERVICE_NAME:
      return `${error.message}: another service has that name or display name; choose another --display-name`;
    case ERROR_SERVICE_DOES_NOT_EXIST:
      return `${error.message}: no service named ${name} is installed`;
    case ERROR_SERVICE_MARKED_FOR_DELETE:
      return `${error.message}: the service ${name} is marked for deletion; close the Services console (and ` +
        "anything else that has it open) and try again";
    case ERROR_ACCOUNT_INVALID:
      return `${error.message}: the account does not exist here (see --account)`;
    default:
      return error.message;
  }
}

/** What the steps of a plan share: the SCM's libraries. */
interface Calls {
  libraries: Win32Libraries;
}

/**
 * A step that calls the Windows API. A failure becomes a ServiceError that names the call and explains it; the
 * codes in `okCodes` are reported as a note instead.
 */
function call(
  name: string,
  what: string,
  run: () => Promise<string | void> | string | void,
  extra: { okCodes?: Record<number, string>; undo?: Step[] } = {},
): Step {
  return {
    kind: "call",
    what,
    undo: extra.undo,
    run: async () => {
      try {
        return await run();
      } catch (error) {
        if (!(error instanceof Win32Error)) throw error;
        const ok = extra.okCodes?.[error.code];
        if (ok !== undefined) return ok;
        throw new ServiceError(explainWin32(name, error));
      }
    },
  };
}

/** Opens the SCM and one service, runs `body`, closes both. */
function withService<T>(
  calls: Calls,
  name: string,
  access: number,
  body: (service: ServiceHandle) => T,
): T {
  using scm = ScmClient.open(calls.libraries, ScmAccess.CONNECT);
  using service = scm.open(name, access);
  if (service === undefined) {
    throw new Win32Error(`OpenServiceW(${name})`, ERROR_SERVICE_DOES_NOT_EXIST, "no such service");
  }
  return body(service);
}

/** A stopped service's exit codes, in words. */
function exitCodes(status: ServiceStatusProcess): string {
  if (status.win32ExitCode === 1066) {
    const meaning: Record<number, string> = {
      1: "runtime failure, such as the port in use or the log file",
      2: "bad options",
    };
    return `service-specific exit code ${status.serviceExitCode}` +
      (meaning[status.serviceExitCode] ? ` (${meaning[status.serviceExitCode]})` : "");
  }
  return status.win32ExitCode === 0 ? "exit code 0" : `Windows exit code ${status.win32ExitCode}`;
}

/** The options of a {@link WindowsManager}. */
export interface WindowsManagerOptions {
  /** Where the Windows functions come from (the system's by default; a stand-in in the tests on Linux). */
  libraries?: Win32Libraries;
  /** %ProgramData%, where the default log folder goes (this process's by default). */
  programData?: string;
}

/** The Windows SCM, through its API. */
export class WindowsManager implements ServiceManager {
  readonly system = "the Windows Service Control Manager";
  readonly #calls: Calls;
  readonly #programData: string;
  readonly #standIn: boolean;

  /** The manager of Windows services, through the SCM's API. */
  constructor(options: WindowsManagerOptions = {}) {
    this.#calls = { libraries: options.libraries ?? SYSTEM_LIBRARIES };
    this.#standIn = options.libraries !== undefined && options.libraries !== SYSTEM_LIBRARIES;
    this.#programData = options.programData ?? envValue("ProgramData") ?? envValue("PROGRAMDATA") ??
      "C:\\ProgramData";
  }

  /** The SCM has every start mode: delayed is its delayed automatic start. */
  startModeProblem(_mode: StartMode): string | undefined {
    return undefined;
  }

  /** Formats commands as they would be typed at a Windows prompt. */
  formatCommand(argv: string[]): string {
    return argv.map(quoteWindowsArg).join(" ");
  }

  available(): Promise<void> {
    if (Deno.build.os !== "windows" && !this.#standIn) {
      return Promise.reject(new ServiceError("the Windows Service Control Manager exists on Windows only"));
    }
    try {
      ScmClient.open(this.#calls.libraries, ScmAccess.CONNECT).close();
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
        return Promise.reject(
          new ServiceError(
            "echosrv needs Deno's --allow-ffi to talk to the Service Control Manager (advapi32.dll); run it as " +
              "`deno task service ...` or the compiled echosrv.exe",
          ),
        );
      }
      if (error instanceof Win32Error) return Promise.reject(new ServiceError(explainWin32("echosrv", error)));
      return Promise.reject(error);
    }
    return Promise.resolve();
  }

  installed(name: string): Promise<boolean> {
    try {
      using scm = ScmClient.open(this.#calls.libraries, ScmAccess.CONNECT);
      using service = scm.open(name, ServiceAccess.QUERY_STATUS);
      return Promise.resolve(service !== undefined);
    } catch (error) {
      if (error instanceof Win32Error) return Promise.reject(new ServiceError(explainWin32(name, error)));
      return Promise.reject(error);
    }
  }

  /** The log file of a definition: its --log-file, or the one in %ProgramData%\NAME. */
  logFileOf(definition: ServiceDefinition): string {
    return definition.config.log.file ?? defaultServiceLogFile(definition.name, this.#programData);
  }

  /** Waits for RUNNING; a service that stops instead fails the wait with its exit codes. */
  #waitRunning(name: string, logFile?: string): Step {
    return {
      kind: "wait",
      what: `${name} is running`,
      timeoutMs: STATE_WAIT_MS,
      until: () => {
        const status = this.#query(name);
        if (status?.state === 1) {
          throw new ServiceError(
            `${name} stopped instead of running (${exitCodes(status)}); ` +
              (logFile
                ? `its log file ${logFile} says why`
                : "its log file says why (the --log-file of its command line: `echosrv service status` shows it)") +
              ", and so does the Application event log (source " + name + ")",
          );
        }
        return Promise.resolve(status?.state === 4);
      },
    };
  }

  #waitStopped(name: string): Step {
    return {
      kind: "wait",
      what: `${name} has stopped`,
      timeoutMs: STATE_WAIT_MS,
      until: () => {
        const status = this.#query(name);
        return Promise.resolve(status === undefined || status.state === 1);
      },
    };
  }

  /** The status, or undefined when the service is gone; other failures throw a ServiceError. */
  #query(name: string): ServiceStatusProcess | undefined {
    try {
      using scm = ScmClient.open(this.#calls.libraries, ScmAccess.CONNECT);
      using service = scm.open(name, ServiceAccess.QUERY_STATUS);
      return service?.status();
    } catch (error) {
      if (error instanceof Win32Error) throw new ServiceError(explainWin32(name, error));
      throw error;
    }
  }

  #start(name: string, okIfRunning: boolean, undo?: Step[]): Step {
    return call(
      name,
      `StartServiceW ${name}`,
      () => withService(this.#calls, name, ServiceAccess.START, (s) => s.start()),
      { okCodes: okIfRunning ? { [ERROR_SERVICE_ALREADY_RUNNING]: "it was running already" } : {}, undo },
    );
  }

  #stop(name: string): Step {
    return call(
      name,
      `ControlService ${name} STOP`,
      () => withService(this.#calls, name, ServiceAccess.STOP, (s) => s.stop()),
      { okCodes: Object.fromEntries(STOP_OK.map((code) => [code, "it was not running"])) },
    );
  }

  /** A ChangeServiceConfig2W setting that an SCM may lack (Wine does): error 124 skips it with a note. */
  #optionalConfig(name: string, what: string, level: number, set: (s: ServiceHandle) => void): Step {
    return call(
      name,
      `ChangeServiceConfig2W ${name} ${what}`,
      () => withService(this.#calls, name, ServiceAccess.CHANGE_CONFIG, set),
      {
        okCodes: {
          [ERROR_INVALID_LEVEL]: `skipped: this Service Control Manager does not support information level ${level} ` +
            "(Windows error 124); Windows itself does",
        },
      },
    );
  }

  /** Deletes the service's Environment value; a note when there was none (or no key: the service is gone). */
  #removeEnvironment(name: string): string | void {
    let key: RegistryKey;
    try {
      key = RegistryKey.open(this.#calls.libraries, serviceKey(name), KeyAccess.SET_VALUE);
    } catch (error) {
      if (error instanceof Win32Error && error.code === ERROR_FILE_NOT_FOUND) return "the service's key is gone";
      throw error;
    }
    using _key = key;
    if (!key.deleteValue(ENVIRONMENT_VALUE)) return "there was none";
  }

  installPlan(definition: ServiceDefinition): Plan {
    const { name } = definition;
    const calls = this.#calls;
    let account: string;
    try {
      account = windowsAccount(definition.account, name);
    } catch (error) {
      throw new ServiceError(`--account: ${(error as Error).message}`);
    }
    const logFile = this.logFileOf(definition);
    const logFolder = pathsFor(logFile).dirname(logFile);
    const binPath = windowsCommandLine(windowsServiceArgv(definition, logFile));
    const startType = definition.start === "manual" ? StartType.DEMAND : StartType.AUTO;
    const startWords = { auto: "auto", delayed: "auto (delayed)", manual: "demand" }[definition.start];
    const deleteService = call(
      name,
      `DeleteService ${name}`,
      () => withService(calls, name, ServiceAccess.DELETE, (s) => s.delete()),
    );
    let createdSource = false;
    const environment = windowsServiceEnvironment();
    const environmentValue = `HKLM\\${serviceKey(name)}\\${ENVIRONMENT_VALUE}`;
    const steps: Step[] = [
      call(
        name,
        `CreateServiceW ${name}: start ${startWords}, account ${account}, display name "${definition.displayName}", ` +
          `command line ${binPath}`,
        () => {
          using scm = ScmClient.open(calls.libraries, ScmAccess.CONNECT | ScmAccess.CREATE_SERVICE);
          scm.create({
            name,
            displayName: definition.displayName,
            binaryPath: binPath,
            startType,
            account,
          }).close();
        },
        { undo: [deleteService] },
      ),
      call(
        name,
        `ChangeServiceConfig2W ${name} description "${definition.description}"`,
        () => withService(calls, name, ServiceAccess.CHANGE_CONFIG, (s) => s.setDescription(definition.description)),
      ),
      call(
        name,
        `ChangeServiceConfig2W ${name} failure actions: restart after 5 s, 10 s, then every 60 s; count reset ` +
          "after a day without failures",
        () => withService(calls, name, ServiceAccess.CHANGE_CONFIG, (s) => s.setFailureActions(FAILURE_ACTIONS)),
      ),
      this.#optionalConfig(
        name,
        "failure actions also after a failed start (failure flag)",
        ConfigLevel.FAILURE_ACTIONS_FLAG,
        (s) => s.setFailureActionsOnNonCrashFailures(true),
      ),
      this.#optionalConfig(
        name,
        "service SID type unrestricted (NT SERVICE\\" + name + " in its token, whatever the account)",
        ConfigLevel.SERVICE_SID_INFO,
        (s) => s.setServiceSidType(SERVICE_SID_TYPE_UNRESTRICTED),
      ),
      ...(definition.start === "delayed"
        ? [this.#optionalConfig(
          name,
          "delayed auto-start (after the other automatic services at boot)",
          ConfigLevel.DELAYED_AUTO_START_INFO,
          (s) => s.setDelayedAutoStart(true),
        )]
        : []),
      call(
        name,
        `RegSetValueExW ${environmentValue} (REG_MULTI_SZ, the service's environment): ${environment.join(" ")}`,
        () => {
          using key = RegistryKey.open(calls.libraries, serviceKey(name), KeyAccess.SET_VALUE);
          key.setMultiString(ENVIRONMENT_VALUE, environment);
        },
        { undo: [call(name, `RegDeleteValueW ${environmentValue}`, () => this.#removeEnvironment(name))] },
      ),
      { kind: "mkdir", path: logFolder, mode: 0o755 },
      ...(account === LOCAL_SYSTEM ? [] : [call(
        name,
        `SetNamedSecurityInfoW ${logFolder}: Modify for NT SERVICE\\${name} (the service's SID), inherited`,
        async () => {
          const sid = await serviceSid(name);
          grantModify(calls.libraries, logFolder, sid);
          return sid;
        },
      )]),
      call(
        name,
        `RegCreateKeyExW HKLM\\SYSTEM\\CurrentControlSet\\Services\\EventLog\\Application\\${name} (event source)`,
        () => {
          createdSource = registerEventSource(calls.libraries, name);
          return createdSource ? undefined : "it existed; updated";
        },
        {
          undo: [call(name, `RegDeleteKeyW (event source ${name})`, () => {
            if (createdSource) removeEventSource(calls.libraries, name);
          })],
        },
      ),
    ];
    if (definition.start !== "manual") {
      steps.push(
        this.#start(name, false, [this.#stop(name), this.#waitStopped(name)]),
        this.#waitRunning(name, logFile),
      );
    }
    return {
      summary: `install ${name} as a Windows service (${
        { auto: "starts at boot", delayed: "starts at boot, delayed", manual: "manual" }[definition.start]
      })`,
      steps,
      notes: [
        `it runs as ${account}${
          account === virtualAccount(name) ? " (its virtual account: no password, a user's rights)" : ""
        }; its log file is ${logFile}; events go to the Application log (source ${name})`,
      ],
    };
  }

  uninstallPlan(name: string): Plan {
    return {
      summary: `stop and remove the Windows service ${name}`,
      steps: [
        this.#stop(name),
        this.#waitStopped(name),
        call(
          name,
          `DeleteService ${name}`,
          () => withService(this.#calls, name, ServiceAccess.DELETE, (s) => s.delete()),
        ),
        call(name, `RegDeleteKeyW HKLM\\...\\EventLog\\Application\\${name} (event source)`, () => {
          if (!removeEventSource(this.#calls.libraries, name)) return "there was none";
        }),
      ],
      notes: [
        `DeleteService removes the service's registry key HKLM\\${serviceKey(name)}, its ${ENVIRONMENT_VALUE} value ` +
        "with it; the log file and the events already written are kept",
      ],
    };
  }

  controlPlan(action: "start" | "stop" | "restart", name: string): Plan {
    const start = [this.#start(name, true), this.#waitRunning(name)];
    const stop = [this.#stop(name), this.#waitStopped(name)];
    return {
      summary: `${action} the Windows service ${name}`,
      steps: action === "start" ? start : action === "stop" ? stop : [...stop, ...start],
    };
  }

  status(name: string): Promise<ServiceStatus> {
    try {
      using scm = ScmClient.open(this.#calls.libraries, ScmAccess.CONNECT);
      using service = scm.open(name, ServiceAccess.QUERY_STATUS | ServiceAccess.QUERY_CONFIG);
      if (service === undefined) return Promise.resolve({ installed: false, state: "not installed", detail: "" });
      const status = service.status();
      const config = service.config();
      const state = STATE_NAMES[status.state] ?? `state ${status.state}`;
      const start: Record<number, string> = {
        [StartType.AUTO]: "at boot",
        [StartType.DEMAND]: "on demand",
        [StartType.DISABLED]: "disabled",
      };
      const detail = [
        `display name: ${config.displayName}`,
        `starts: ${start[config.startType] ?? `start type ${config.startType}`}`,
        `account: ${config.account}`,
        `command line: ${config.binaryPath}`,
        ...(status.state === 1 ? [`last exit: ${exitCodes(status)}`] : []),
      ].join("\n");
      return Promise.resolve({
        installed: true,
        state,
        ...(status.processId > 0 ? { pid: status.processId } : {}),
        detail,
      });
    } catch (error) {
      if (error instanceof Win32Error) return Promise.reject(new ServiceError(explainWin32(name, error)));
      return Promise.reject(error);
    }
  }
}

function envValue(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}
