// scm_client: the Windows Service Control Manager's client side, spoken through Deno FFI to advapi32: open the SCM,
// create, configure, start, stop, query and delete a service (OpenSCManagerW, CreateServiceW, ChangeServiceConfig2W,
// StartServiceW, ControlService, QueryServiceStatusEx, QueryServiceConfigW, DeleteService, CloseServiceHandle), the
// way Go's kardianos/service and golang.org/x/sys/windows/svc/mgr do. Every failure is a Win32Error that names the
// call and the Windows error in words. The other side, the service's own process, is lib/service/scm.ts.

import { addressOf, Kernel32, readWideString, wideString, Win32Error, type Win32Libraries } from "./win32.ts";

const SYMBOLS = {
  OpenSCManagerW: { parameters: ["pointer", "pointer", "u32"], result: "pointer" },
  CreateServiceW: {
    parameters: [
      ...["pointer", "buffer", "buffer", "u32", "u32", "u32", "u32", "buffer"],
      ...["pointer", "pointer", "pointer", "buffer", "pointer"],
    ],
    result: "pointer",
  },
  OpenServiceW: { parameters: ["pointer", "buffer", "u32"], result: "pointer" },
  ChangeServiceConfig2W: { parameters: ["pointer", "u32", "buffer"], result: "i32" },
  StartServiceW: { parameters: ["pointer", "u32", "buffer"], result: "i32" },
  ControlService: { parameters: ["pointer", "u32", "buffer"], result: "i32" },
  QueryServiceStatusEx: { parameters: ["pointer", "u32", "buffer", "u32", "buffer"], result: "i32" },
  QueryServiceConfigW: { parameters: ["pointer", "buffer", "u32", "buffer"], result: "i32" },
  DeleteService: { parameters: ["pointer"], result: "i32" },
  CloseServiceHandle: { parameters: ["pointer"], result: "i32" },
} as const;

type Advapi32 = Deno.DynamicLibrary<typeof SYMBOLS>;

/** Access rights on the SCM (OpenSCManagerW). */
export const ScmAccess = { CONNECT: 0x1, CREATE_SERVICE: 0x2 } as const;

/** Access rights on a service (OpenServiceW, CreateServiceW). */
export const ServiceAccess = {
  QUERY_CONFIG: 0x1,
  CHANGE_CONFIG: 0x2,
  QUERY_STATUS: 0x4,
  START: 0x10,
  STOP: 0x20,
  DELETE: 0x10000,
  ALL: 0xf01ff,
} as const;

/** dwStartType values. */
export const StartType = { AUTO: 2, DEMAND: 3, DISABLED: 4 } as const;

/** The ChangeServiceConfig2W information levels echosrv sets. */
export const ConfigLevel = {
  DESCRIPTION: 1,
  FAILURE_ACTIONS: 2,
  DELAYED_AUTO_START_INFO: 3,
  FAILURE_ACTIONS_FLAG: 4,
  SERVICE_SID_INFO: 5,
} as const;

/** SERVICE_SID_TYPE_UNRESTRICTED: the service's own SID (NT SERVICE\NAME) is in its process token. */
export const SERVICE_SID_TYPE_UNRESTRICTED = 1;

const SERVICE_WIN32_OWN_PROCESS = 0x10;
const SERVICE_ERROR_NORMAL = 1;
const SC_STATUS_PROCESS_INFO = 0;
const SC_ACTION_RESTART = 1;
const SERVICE_CONTROL_STOP = 1;
const ERROR_INSUFFICIENT_BUFFER = 122;
/** The error OpenServiceW gives for a name that is not installed. */
export const ERROR_SERVICE_DOES_NOT_EXIST = 1060;

/** SERVICE_STATUS_PROCESS, as numbers. */
export interface ServiceStatusProcess {
  /** 1 STOPPED, 2 START_PENDING, 3 STOP_PENDING, 4 RUNNING, 5-7 the pause states. */
  state: number;
  /** The controls the service accepts (SERVICE_ACCEPT_*). */
  controlsAccepted: number;
  /** The Windows error it stopped with, or 0. */
  win32ExitCode: number;
  /** Its own error code, when win32ExitCode is ERROR_SERVICE_SPECIFIC_ERROR (1066). */
  serviceExitCode: number;
  /** Progress through a long start or stop. */
  checkpoint: number;
  /** How long (ms) until the next status report is due. */
  waitHint: number;
  /** 0 when not running. */
  processId: number;
}

/** QUERY_SERVICE_CONFIGW, the parts echosrv reads. */
export interface ServiceConfig {
  /** 2 automatic, 3 on demand, 4 disabled (SERVICE_*_START). */
  startType: number;
  /** The command line the SCM runs (lpBinaryPathName). */
  binaryPath: string;
  /** The account it runs as (lpServiceStartName), e.g. `NT SERVICE\echosrv` or `LocalSystem`. */
  account: string;
  /** The name people see. */
  displayName: string;
}

/** What CreateServiceW is given. */
export interface NewService {
  /** The service's name, its registry key. */
  name: string;
  /** The name people see. */
  displayName: string;
  /** The command line, program quoted (see windowsCommandLine). */
  binaryPath: string;
  /** 2 automatic, 3 on demand (SERVICE_*_START). */
  startType: number;
  /** The account, or undefined for LocalSystem. */
  account?: string;
}

/** One restart of the failure actions: after how many milliseconds. */
export interface FailureActions {
  /** Seconds without a failure after which the count starts again. */
  resetSeconds: number;
  /** The delay before each restart, in milliseconds; the last one repeats. */
  restartDelaysMs: number[];
}

/**
 * A connection to the SCM of this machine. Close it (or use `using`) when done.
 *
 * @example Install, start and query a service (an elevated prompt)
 * ```ts
 * import { SYSTEM_LIBRARIES } from "./win32.ts";
 *
 * using scm = ScmClient.open(SYSTEM_LIBRARIES, ScmAccess.CONNECT | ScmAccess.CREATE_SERVICE);
 * using service = scm.create({
 *   name: "echosrv",
 *   displayName: "echosrv TCP echo server",
 *   binaryPath: '"C:\\echosrv\\echosrv.exe" --service',
 *   startType: StartType.AUTO,
 *   account: "NT SERVICE\\echosrv",
 * });
 * service.start([]);
 * console.log(service.status().state); // 2 (START_PENDING), then 4 (RUNNING)
 * ```
 */
export class ScmClient implements Disposable {
  readonly #library: Advapi32;
  readonly #kernel32: Kernel32;
  #handle: Deno.PointerValue;

  private constructor(library: Advapi32, kernel32: Kernel32, handle: Deno.PointerValue) {
    this.#library = library;
    this.#kernel32 = kernel32;
    this.#handle = handle;
  }

  /**
   * Opens the SCM (OpenSCManagerW).
   *
   * @param libraries where advapi32 and kernel32 come from
   * @param access what the caller will do (see {@link ScmAccess}); creating needs an elevated process
   * @throws {Win32Error} for OpenSCManagerW (5: not elevated)
   */
  static open(libraries: Win32Libraries, access: number): ScmClient {
    const kernel32 = Kernel32.of(libraries);
    const library = Deno.dlopen(libraries.advapi32, SYMBOLS);
    const handle = library.symbols.OpenSCManagerW(null, null, access);
    if (handle === null) {
      const error = kernel32.failure("OpenSCManagerW");
      library.close();
      throw error;
    }
    return new ScmClient(library, kernel32, handle);
  }

  /**
   * Creates a service that runs in its own process (CreateServiceW), with normal error control.
   *
   * @throws {Win32Error} 1073 when it exists, 1072 when marked for deletion, 1078 for a display name in use
   */
  create(service: NewService): ServiceHandle {
    const handle = this.#library.symbols.CreateServiceW(
      this.#handle,
      wideString(service.name),
      wideString(service.displayName),
      ServiceAccess.ALL,
      SERVICE_WIN32_OWN_PROCESS,
      service.startType,
      SERVICE_ERROR_NORMAL,
      wideString(service.binaryPath),
      null,
      null,
      null,
      service.account === undefined ? null : wideString(service.account),
      null,
    );
    if (handle === null) throw this.#kernel32.failure(`CreateServiceW(${service.name})`);
    return new ServiceHandle(this.#library, this.#kernel32, handle, service.name);
  }

  /**
   * Opens an installed service (OpenServiceW).
   *
   * @param name the service's name
   * @param access what the caller will do (see {@link ServiceAccess})
   * @returns the service, or undefined when no service of that name is installed
   * @throws {Win32Error} for other failures (5: not allowed)
   */
  open(name: string, access: number): ServiceHandle | undefined {
    const handle = this.#library.symbols.OpenServiceW(this.#handle, wideString(name), access);
    if (handle === null) {
      const code = this.#kernel32.lastError();
      if (code === ERROR_SERVICE_DOES_NOT_EXIST) return undefined;
      throw this.#kernel32.failure(`OpenServiceW(${name})`, code);
    }
    return new ServiceHandle(this.#library, this.#kernel32, handle, name);
  }

  /** Closes the SCM handle and the library. */
  close(): void {
    if (this.#handle === null) return;
    this.#library.symbols.CloseServiceHandle(this.#handle);
    this.#handle = null;
    this.#library.close();
  }

  /** Closes the handle, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** An open service. Close it (or use `using`) when done. */
export class ServiceHandle implements Disposable {
  readonly #library: Advapi32;
  readonly #kernel32: Kernel32;
  #handle: Deno.PointerValue;

  /** @internal made by {@link ScmClient} */
  constructor(library: Advapi32, kernel32: Kernel32, handle: Deno.PointerValue, readonly name: string) {
    this.#library = library;
    this.#kernel32 = kernel32;
    this.#handle = handle;
  }

  #check(ok: number, call: string): void {
    if (ok === 0) throw this.#kernel32.failure(`${call}(${this.name})`);
  }

  #config2(level: number, info: Uint8Array, what: string): void {
    this.#check(
      this.#library.symbols.ChangeServiceConfig2W(this.#handle, level, info),
      `ChangeServiceConfig2W ${what}`,
    );
  }

  /** The description services.msc shows (SERVICE_CONFIG_DESCRIPTION). */
  setDescription(text: string): void {
    const wide = wideString(text);
    const info = new BigUint64Array([addressOf(wide)]);
    this.#config2(ConfigLevel.DESCRIPTION, new Uint8Array(info.buffer), "description");
  }

  /** Restart on failure (SERVICE_CONFIG_FAILURE_ACTIONS): one SC_ACTION_RESTART per delay. */
  setFailureActions(actions: FailureActions): void {
    const list = new Uint32Array(actions.restartDelaysMs.length * 2);
    actions.restartDelaysMs.forEach((delay, i) => {
      list[i * 2] = SC_ACTION_RESTART;
      list[i * 2 + 1] = delay;
    });
    // SERVICE_FAILURE_ACTIONSW: dwResetPeriod @0, lpRebootMsg @8, lpCommand @16, cActions @24, lpsaActions @32.
    const info = new Uint8Array(40);
    const view = new DataView(info.buffer);
    view.setUint32(0, actions.resetSeconds, true);
    view.setUint32(24, actions.restartDelaysMs.length, true);
    view.setBigUint64(32, addressOf(list), true);
    this.#config2(ConfigLevel.FAILURE_ACTIONS, info, "failure actions");
  }

  /** Whether the failure actions also apply when the service stops itself with an error (a failed start). */
  setFailureActionsOnNonCrashFailures(on: boolean): void {
    this.#config2(
      ConfigLevel.FAILURE_ACTIONS_FLAG,
      new Uint8Array(new Uint32Array([on ? 1 : 0]).buffer),
      "failure flag",
    );
  }

  /** Start after the other automatic services at boot (SERVICE_CONFIG_DELAYED_AUTO_START_INFO). */
  setDelayedAutoStart(on: boolean): void {
    this.#config2(
      ConfigLevel.DELAYED_AUTO_START_INFO,
      new Uint8Array(new Uint32Array([on ? 1 : 0]).buffer),
      "delayed auto-start",
    );
  }

  /** Which SID the service's token carries (SERVICE_CONFIG_SERVICE_SID_INFO). */
  setServiceSidType(type: number): void {
    this.#config2(ConfigLevel.SERVICE_SID_INFO, new Uint8Array(new Uint32Array([type]).buffer), "service SID type");
  }

  /**
   * Starts the service (StartServiceW); `args` reach its ServiceMain after the name, as `sc start NAME a b` does.
   *
   * @throws {Win32Error} 1056 when it runs already, 1058 when disabled
   */
  start(args: string[] = []): void {
    const strings = args.map(wideString);
    const argv = new BigUint64Array(Math.max(1, strings.length));
    strings.forEach((s, i) => argv[i] = addressOf(s));
    this.#check(
      this.#library.symbols.StartServiceW(this.#handle, strings.length, strings.length ? argv : null),
      "StartServiceW",
    );
  }

  /**
   * Asks the service to stop (ControlService SERVICE_CONTROL_STOP); returns at once, the stop takes its course.
   *
   * @throws {Win32Error} 1062 when it is not running, 1061 when it cannot take controls now
   */
  stop(): void {
    const status = new Uint32Array(7);
    this.#check(
      this.#library.symbols.ControlService(this.#handle, SERVICE_CONTROL_STOP, status),
      "ControlService STOP",
    );
  }

  /** The service's status (QueryServiceStatusEx). */
  status(): ServiceStatusProcess {
    const buffer = new Uint32Array(9);
    const needed = new Uint32Array(1);
    this.#check(
      this.#library.symbols.QueryServiceStatusEx(this.#handle, SC_STATUS_PROCESS_INFO, buffer, 36, needed),
      "QueryServiceStatusEx",
    );
    return {
      state: buffer[1],
      controlsAccepted: buffer[2],
      win32ExitCode: buffer[3],
      serviceExitCode: buffer[4],
      checkpoint: buffer[5],
      waitHint: buffer[6],
      processId: buffer[7],
    };
  }

  /** The service's configuration (QueryServiceConfigW). */
  config(): ServiceConfig {
    let buffer = new Uint8Array(8192);
    const needed = new Uint32Array(1);
    for (let attempt = 0;; attempt++) {
      if (this.#library.symbols.QueryServiceConfigW(this.#handle, buffer, buffer.length, needed) !== 0) break;
      const code = this.#kernel32.lastError();
      if (code !== ERROR_INSUFFICIENT_BUFFER || attempt > 0 || needed[0] > 1 << 20) {
        throw this.#kernel32.failure(`QueryServiceConfigW(${this.name})`, code);
      }
      buffer = new Uint8Array(needed[0]);
    }
    // QUERY_SERVICE_CONFIGW: dwServiceType @0, dwStartType @4, dwErrorControl @8, lpBinaryPathName @16,
    // lpLoadOrderGroup @24, dwTagId @32, lpDependencies @40, lpServiceStartName @48, lpDisplayName @56.
    const view = new DataView(buffer.buffer);
    const text = (offset: number) => readWideString(Deno.UnsafePointer.create(view.getBigUint64(offset, true)));
    return {
      startType: view.getUint32(4, true),
      binaryPath: text(16),
      account: text(48),
      displayName: text(56),
    };
  }

  /** Marks the service for deletion (DeleteService); it goes once every handle is closed and it has stopped. */
  delete(): void {
    this.#check(this.#library.symbols.DeleteService(this.#handle), "DeleteService");
  }

  /** Closes the handle. */
  close(): void {
    if (this.#handle === null) return;
    this.#library.symbols.CloseServiceHandle(this.#handle);
    this.#handle = null;
  }

  /** Closes the handle, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

export { Win32Error };
