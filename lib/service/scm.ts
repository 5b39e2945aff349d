// scm: the Windows Service Control Manager (SCM) protocol, spoken through Deno FFI to advapi32.dll. It owns the
// connection to the SCM (StartServiceCtrlDispatcherW), ServiceMain, the control handler and every status report,
// and asks a ServiceProgram (lib/service/contract.ts) to start and stop. It also tells whether the SCM started this
// process, the way Go's golang.org/x/sys/windows/svc.IsWindowsService does (the parent is services.exe in session 0).
//
// Threads are why it is shaped this way. The dispatcher call blocks its thread until the service has stopped; the
// SCM calls ServiceMain on a new thread and the control handler on the dispatcher's thread. Deno runs a callback
// that a foreign thread invokes by queueing it to the JavaScript thread and blocking the foreign thread until the
// JavaScript function returns. So the dispatcher is called with `nonblocking: true` (it runs on a worker thread and
// returns a Promise), ServiceMain and the handler are `Deno.UnsafeCallback.threadSafe`, and neither ever waits for
// anything: the handler reports STOP_PENDING and returns, the stop runs afterwards on the event loop.
//
// This module imports nothing that runs code at load time (type imports and win32.ts's helpers only):
// lib/service/scm_boot.ts loads it before the rest of the program so that the dispatcher starts first.

import type { RunningService, ServiceProgram } from "./contract.ts";
import { readWideString, SYSTEM_LIBRARIES, wideString, type Win32Libraries } from "./win32.ts";

/** The marker `echosrv service install` puts first in a Windows service's command line (see scm_boot.ts). */
export const SERVICE_MARKER = "--service";

/** SERVICE_WIN32_OWN_PROCESS: one service in its own process. */
const SERVICE_WIN32_OWN_PROCESS = 0x10;

/** The states a service reports (dwCurrentState). */
export const ServiceState = {
  STOPPED: 1,
  START_PENDING: 2,
  STOP_PENDING: 3,
  RUNNING: 4,
} as const;

/** The controls a service says it accepts (dwControlsAccepted). */
export const Accept = { STOP: 0x1, SHUTDOWN: 0x4 } as const;

/** The control codes the handler is called with. */
export const Control = { STOP: 1, INTERROGATE: 4, SHUTDOWN: 5 } as const;

const NO_ERROR = 0;
const ERROR_CALL_NOT_IMPLEMENTED = 120;
/** dwWin32ExitCode meaning "see dwServiceSpecificExitCode". */
export const ERROR_SERVICE_SPECIFIC_ERROR = 1066;

/**
 * How long a pending state may go without a new report. Pending states are re-reported every
 * {@link PENDING_REPORT_MS} with the checkpoint incremented, well inside the hint, for as long as they last.
 */
export const PENDING_WAIT_HINT_MS = 5_000;
/** How often a pending state is re-reported with its checkpoint incremented. */
export const PENDING_REPORT_MS = 1_000;

/** TH32CS_SNAPPROCESS: a snapshot of every process. */
const TH32CS_SNAPPROCESS = 0x2;
/** sizeof(PROCESSENTRY32W) on 64-bit Windows: 44 bytes of fields, then szExeFile[260] of UTF-16, padded to 8. */
const PROCESSENTRY32W_SIZE = 568;
const PROCESSENTRY32W_PID = 8;
const PROCESSENTRY32W_PARENT_PID = 32;
const PROCESSENTRY32W_EXE_FILE = 44;
const INVALID_HANDLE_VALUE = 0xffff_ffff_ffff_ffffn;

/** The advapi32 functions of the SCM protocol. */
const ADVAPI32_SYMBOLS = {
  StartServiceCtrlDispatcherW: { parameters: ["buffer"], result: "i32", nonblocking: true },
  RegisterServiceCtrlHandlerExW: { parameters: ["buffer", "function", "pointer"], result: "pointer" },
  SetServiceStatus: { parameters: ["pointer", "buffer"], result: "i32" },
} as const;

/** The kernel32 functions that find this process's parent. */
const KERNEL32_SYMBOLS = {
  CreateToolhelp32Snapshot: { parameters: ["u32", "u32"], result: "pointer" },
  Process32FirstW: { parameters: ["pointer", "buffer"], result: "i32" },
  Process32NextW: { parameters: ["pointer", "buffer"], result: "i32" },
  CloseHandle: { parameters: ["pointer"], result: "i32" },
  ProcessIdToSessionId: { parameters: ["u32", "buffer"], result: "i32" },
} as const;

const SERVICE_MAIN = { parameters: ["u32", "pointer"], result: "void" } as const;
const HANDLER_EX = { parameters: ["u32", "u32", "pointer", "pointer"], result: "u32" } as const;

/** Where the Windows functions come from (see win32.ts). */
export type ScmLibraries = Win32Libraries;

/** The system libraries on Windows. */
export const WINDOWS_LIBRARIES: ScmLibraries = SYSTEM_LIBRARIES;

/** Reads ServiceMain's argv: `argc` pointers to UTF-16 strings; argv[0] is the service name. */
function readArgv(argc: number, argv: Deno.PointerValue): string[] {
  if (argv === null) return [];
  const view = new Deno.UnsafePointerView(argv);
  const out: string[] = [];
  for (let i = 0; i < Math.min(argc, 1024); i++) out.push(readWideString(view.getPointer(i * 8)));
  return out;
}

/**
 * Tells whether the SCM started this process: its parent is `services.exe` running in session 0. This is what Go's
 * `svc.IsWindowsService` and .NET's `WindowsServiceHelpers.IsWindowsService` check. Any failure means "no".
 *
 * @param kernel32 the library to ask (kernel32.dll on Windows)
 * @returns true when the parent process is the Service Control Manager
 */
export function startedByScm(kernel32: string = WINDOWS_LIBRARIES.kernel32): boolean {
  let library: Deno.DynamicLibrary<typeof KERNEL32_SYMBOLS> | undefined;
  try {
    library = Deno.dlopen(kernel32, KERNEL32_SYMBOLS);
    const k = library.symbols;
    const snapshot = k.CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
    if (snapshot === null || Deno.UnsafePointer.value(snapshot) === INVALID_HANDLE_VALUE) return false;
    const parents = new Map<number, number>();
    const images = new Map<number, string>();
    try {
      const entry = new Uint8Array(PROCESSENTRY32W_SIZE);
      const fields = new DataView(entry.buffer);
      fields.setUint32(0, PROCESSENTRY32W_SIZE, true);
      const pointer = Deno.UnsafePointer.of(entry);
      // A snapshot lists every process once; the bound only guards against a misbehaving library.
      for (let ok = k.Process32FirstW(snapshot, entry), n = 0; ok !== 0 && n < 1_000_000; n++) {
        const pid = fields.getUint32(PROCESSENTRY32W_PID, true);
        parents.set(pid, fields.getUint32(PROCESSENTRY32W_PARENT_PID, true));
        images.set(pid, readWideString(pointer, PROCESSENTRY32W_EXE_FILE));
        ok = k.Process32NextW(snapshot, entry);
      }
    } finally {
      k.CloseHandle(snapshot);
    }
    const parent = parents.get(Deno.pid);
    if (parent === undefined) return false;
    if (images.get(parent)?.toLowerCase() !== "services.exe") return false;
    const session = new Uint32Array(1);
    return k.ProcessIdToSessionId(parent, session) !== 0 && session[0] === 0;
  } catch {
    return false;
  } finally {
    library?.close();
  }
}

/** What {@link ScmConnection.run} ends with. */
export type ScmOutcome =
  /** The SCM ran the service and it has stopped: exit with this code. */
  | { kind: "served"; exitCode: number }
  /** The dispatcher failed at once: the SCM did not start this process (a console run). */
  | { kind: "not-a-service" };

/** One line of what the connection did, for the program's log (it may not be set up yet when this happens). */
export type ScmNote = (message: string) => void;

/**
 * The connection to the SCM of a process it started. {@link ScmConnection.connect} calls the dispatcher at once;
 * {@link ScmConnection.run} hands over the program, which ServiceMain then starts and the handler stops.
 *
 * @example
 * ```ts
 * import { windowsServiceProgram } from "./windows_program.ts";
 *
 * const scm = ScmConnection.connect(WINDOWS_LIBRARIES); // first thing: the SCM is waiting for this
 * const outcome = await scm.run(windowsServiceProgram(Deno.args)); // ServiceMain starts it, STOP stops it
 * if (outcome.kind === "served") Deno.exit(outcome.exitCode);
 * ```
 */
export class ScmConnection {
  /** Name, ServiceMain, then the all-zero entry that ends the table: 2 x SERVICE_TABLE_ENTRYW (16 bytes each). */
  readonly #table = new BigUint64Array(4);
  /** The name in the table; the SCM ignores it for an own-process service but reads it, so it stays referenced. */
  readonly #tableName = wideString("echosrv");
  /** The name the handler is registered under: argv[0] of ServiceMain, kept referenced while the SCM may read it. */
  #handlerName = wideString("echosrv");
  /** SERVICE_STATUS: type, state, controls accepted, win32 exit code, service exit code, checkpoint, wait hint. */
  readonly #status = new Uint32Array(7);
  readonly #library: Deno.DynamicLibrary<typeof ADVAPI32_SYMBOLS>;
  readonly #serviceMain: Deno.UnsafeCallback<typeof SERVICE_MAIN>;
  readonly #handler: Deno.UnsafeCallback<typeof HANDLER_EX>;
  /** Resolves when StartServiceCtrlDispatcherW returns: every service of the process has stopped (or never ran). */
  readonly #dispatcher: Promise<number>;
  /** Resolved by {@link run}: ServiceMain may be called before the program is handed over. */
  readonly #program = Promise.withResolvers<ServiceProgram>();
  #statusHandle: Deno.PointerValue = null;
  #serviceMainCalled = false;
  #running: RunningService | undefined;
  #stopping = false;
  #stopped = false;
  #exitCode = 0;
  #pendingTimer: ReturnType<typeof setInterval> | undefined;
  #note: ScmNote = () => {};

  private constructor(libraries: ScmLibraries) {
    this.#library = Deno.dlopen(libraries.advapi32, ADVAPI32_SYMBOLS);
    this.#serviceMain = Deno.UnsafeCallback.threadSafe(SERVICE_MAIN, (argc, argv) => this.#onServiceMain(argc, argv));
    this.#handler = Deno.UnsafeCallback.threadSafe(HANDLER_EX, (control) => this.#onControl(control));
    this.#table[0] = Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#tableName));
    this.#table[1] = Deno.UnsafePointer.value(this.#serviceMain.pointer);
    this.#dispatcher = this.#library.symbols.StartServiceCtrlDispatcherW(this.#table);
  }

  /**
   * Connects to the SCM: calls StartServiceCtrlDispatcherW (on a worker thread) with this process's one service.
   * Call it first, before loading anything slow: the SCM gives a new service process 30 s to connect.
   *
   * @param libraries where advapi32's functions come from
   * @returns the connection; hand it the program with {@link run}
   */
  static connect(libraries: ScmLibraries): ScmConnection {
    return new ScmConnection(libraries);
  }

  /**
   * Runs `program` as the service: ServiceMain starts it, STOP and SHUTDOWN stop it, its end is reported to the
   * SCM. Resolves when the dispatcher has returned and the callbacks are closed, so the process can exit.
   *
   * @param program what to start and stop
   * @param note receives a line for each step that the program's own log cannot show
   * @returns the exit code, or "not-a-service" when the SCM did not start this process
   */
  async run(program: ServiceProgram, note: ScmNote = () => {}): Promise<ScmOutcome> {
    this.#note = note;
    this.#program.resolve(program);
    let result = 0;
    try {
      result = await this.#dispatcher;
    } finally {
      this.#stopPendingReports();
      this.#serviceMain.close();
      this.#handler.close();
      this.#library.close();
    }
    if (result === 0 && !this.#serviceMainCalled) return { kind: "not-a-service" };
    return { kind: "served", exitCode: this.#exitCode };
  }

  /** ServiceMain, on the JavaScript thread (the SCM's thread waits): register, report START_PENDING, return. */
  #onServiceMain(argc: number, argv: Deno.PointerValue): void {
    this.#serviceMainCalled = true;
    try {
      const args = readArgv(argc, argv);
      this.#handlerName = wideString(args[0] ?? "");
      this.#statusHandle = this.#library.symbols.RegisterServiceCtrlHandlerExW(
        this.#handlerName,
        this.#handler.pointer,
        null,
      );
      if (this.#statusHandle === null) {
        // Without a status handle nothing can be reported; the SCM will give up on the start.
        this.#note("RegisterServiceCtrlHandlerExW failed; the service cannot report its state");
        return;
      }
      this.#reportPending(ServiceState.START_PENDING);
      // The start runs on the event loop after ServiceMain has returned: the SCM's thread is not held.
      setTimeout(() => void this.#start(args.slice(1), args[0] ?? ""), 0);
    } catch (error) {
      this.#note(`ServiceMain failed: ${(error as Error)?.message ?? error}`);
    }
  }

  async #start(startParameters: string[], serviceName: string): Promise<void> {
    let started: number | RunningService;
    try {
      const program = await this.#program.promise;
      started = await program.start(startParameters, serviceName);
    } catch (error) {
      this.#note(`the service failed to start: ${(error as Error)?.message ?? error}`);
      started = 1;
    }
    if (typeof started === "number") {
      this.#reportStopped(started === 0 ? 1 : started);
      return;
    }
    this.#running = started;
    started.finished.then(
      (code) => this.#reportStopped(code),
      (error) => {
        this.#note(`the service failed: ${(error as Error)?.message ?? error}`);
        this.#reportStopped(1);
      },
    );
    if (!this.#stopped) this.#report(ServiceState.RUNNING, Accept.STOP | Accept.SHUTDOWN);
  }

  /** The control handler, on the JavaScript thread (the dispatcher's thread waits): answer and return at once. */
  #onControl(control: number): number {
    try {
      switch (control) {
        case Control.INTERROGATE:
          // The SCM answers from the last reported status; reporting again here is optional.
          return NO_ERROR;
        case Control.STOP:
        case Control.SHUTDOWN: {
          const running = this.#running;
          if (running === undefined || this.#stopping || this.#stopped) return NO_ERROR;
          this.#stopping = true;
          this.#reportPending(ServiceState.STOP_PENDING);
          const reason = control === Control.SHUTDOWN ? "shutdown" : "stop";
          // Outside the handler: the dispatcher's thread is released as soon as this function returns.
          setTimeout(() => running.stop(reason), 0);
          return NO_ERROR;
        }
        default:
          return ERROR_CALL_NOT_IMPLEMENTED;
      }
    } catch (error) {
      this.#note(`the control handler failed: ${(error as Error)?.message ?? error}`);
      return NO_ERROR;
    }
  }

  /** Reports a pending state now and again every second with the checkpoint incremented, until the next state. */
  #reportPending(state: number): void {
    this.#stopPendingReports();
    let checkpoint = 1;
    this.#report(state, 0, { checkpoint, waitHint: PENDING_WAIT_HINT_MS });
    this.#pendingTimer = setInterval(() => {
      checkpoint++;
      this.#report(state, 0, { checkpoint, waitHint: PENDING_WAIT_HINT_MS });
    }, PENDING_REPORT_MS);
  }

  #stopPendingReports(): void {
    clearInterval(this.#pendingTimer);
    this.#pendingTimer = undefined;
  }

  /** Reports STOPPED, the last report: exit code 0 as NO_ERROR, any other as a service-specific error. */
  #reportStopped(exitCode: number): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#exitCode = exitCode;
    this.#report(ServiceState.STOPPED, 0, {
      win32ExitCode: exitCode === 0 ? NO_ERROR : ERROR_SERVICE_SPECIFIC_ERROR,
      serviceExitCode: exitCode,
    });
  }

  #report(
    state: number,
    accepted: number,
    extra: { checkpoint?: number; waitHint?: number; win32ExitCode?: number; serviceExitCode?: number } = {},
  ): void {
    if (state !== ServiceState.START_PENDING && state !== ServiceState.STOP_PENDING) this.#stopPendingReports();
    if (this.#statusHandle === null) return;
    const status = this.#status;
    status[0] = SERVICE_WIN32_OWN_PROCESS;
    status[1] = state;
    status[2] = accepted;
    status[3] = extra.win32ExitCode ?? NO_ERROR;
    status[4] = extra.serviceExitCode ?? 0;
    status[5] = extra.checkpoint ?? 0;
    status[6] = extra.waitHint ?? 0;
    if (this.#library.symbols.SetServiceStatus(this.#statusHandle, status) === 0) {
      this.#note(`SetServiceStatus(state ${state}) failed`);
    }
  }
}
