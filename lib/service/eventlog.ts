// eventlog: echosrv in the Windows Event Log, where administrators look first. `service install` registers an
// event source named after the service in the Application log (a registry key under
// HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application, whose message file is Windows' own EventCreate.exe:
// its messages 1 to 1000 are each just "%1", so the text echosrv writes is the whole description, as Go's
// golang.org/x/sys/windows/svc/eventlog does); `uninstall` removes it. The service writes its start, its stop, a
// failed start with the reason, and an end by error, through RegisterEventSourceW and ReportEventW, besides its log
// file.

import { addressOf, Kernel32, wideString, Win32Error, type Win32Libraries } from "./win32.ts";

/** The registry key of an event source, under HKEY_LOCAL_MACHINE. */
export function eventSourceKey(source: string): string {
  return `SYSTEM\\CurrentControlSet\\Services\\EventLog\\Application\\${source}`;
}

/** The message file: EventCreate.exe's messages 1-1000 are "%1". */
export const EVENT_MESSAGE_FILE = "%SystemRoot%\\System32\\EventCreate.exe";

/** EVENTLOG_ERROR_TYPE | EVENTLOG_WARNING_TYPE | EVENTLOG_INFORMATION_TYPE. */
const TYPES_SUPPORTED = 0x7;

/** The kinds of event (wType). */
export const EventType = { ERROR: 0x1, WARNING: 0x2, INFORMATION: 0x4 } as const;

/** The events echosrv writes, by ID (1 to 1000, the range of EventCreate.exe's messages). */
export const EventId = {
  /** Information: the service is running (what it listens on). */
  STARTED: 1,
  /** Information: the service stopped (what it served). */
  STOPPED: 2,
  /** Error: the service could not start, and why (port in use, bad options, log file). */
  START_FAILED: 3,
  /** Error: the service ended with an error while running. */
  FAILED: 4,
} as const;

const REGISTRY_SYMBOLS = {
  RegCreateKeyExW: {
    parameters: ["pointer", "buffer", "u32", "pointer", "u32", "u32", "pointer", "buffer", "buffer"],
    result: "i32",
  },
  RegSetValueExW: { parameters: ["pointer", "buffer", "u32", "u32", "buffer", "u32"], result: "i32" },
  RegDeleteKeyW: { parameters: ["pointer", "buffer"], result: "i32" },
  RegCloseKey: { parameters: ["pointer"], result: "i32" },
} as const;

const EVENTLOG_SYMBOLS = {
  RegisterEventSourceW: { parameters: ["pointer", "buffer"], result: "pointer" },
  ReportEventW: {
    parameters: ["pointer", "u16", "u16", "u32", "pointer", "u16", "u32", "buffer", "pointer"],
    result: "i32",
  },
  DeregisterEventSource: { parameters: ["pointer"], result: "i32" },
} as const;

/** HKEY_LOCAL_MACHINE: (HKEY)(ULONG_PTR)(LONG)0x80000002, sign-extended on 64-bit Windows. */
const HKEY_LOCAL_MACHINE = 0xffff_ffff_8000_0002n;
const KEY_SET_VALUE = 0x2;
const KEY_CREATE_SUB_KEY = 0x4;
const REG_EXPAND_SZ = 2;
const REG_DWORD = 4;
const REG_CREATED_NEW_KEY = 1;
const ERROR_FILE_NOT_FOUND = 2;

function registryCall(kernel32: Kernel32) {
  return (code: number, call: string) => {
    if (code !== 0) throw new Win32Error(call, code, kernel32.words(code));
  };
}

/**
 * Registers `source` as an event source of the Application log (creates or updates its registry key).
 *
 * @param libraries where advapi32 and kernel32 come from
 * @param source the source's name (the service's)
 * @returns true when the key was created, false when it was there already (and was updated)
 * @throws {Win32Error} naming the registry call that failed (5: not elevated)
 */
export function registerEventSource(libraries: Win32Libraries, source: string): boolean {
  const kernel32 = Kernel32.of(libraries);
  const library = Deno.dlopen(libraries.advapi32, REGISTRY_SYMBOLS);
  const check = registryCall(kernel32);
  const s = library.symbols;
  const keyOut = new BigUint64Array(1);
  const disposition = new Uint32Array(1);
  const keyName = `HKLM\\${eventSourceKey(source)}`;
  try {
    check(
      s.RegCreateKeyExW(
        Deno.UnsafePointer.create(HKEY_LOCAL_MACHINE),
        wideString(eventSourceKey(source)),
        0,
        null,
        0,
        KEY_SET_VALUE | KEY_CREATE_SUB_KEY,
        null,
        keyOut,
        disposition,
      ),
      `RegCreateKeyExW(${keyName})`,
    );
    const key = Deno.UnsafePointer.create(keyOut[0]);
    try {
      const file = wideString(EVENT_MESSAGE_FILE);
      const fileBytes = new Uint8Array(file.buffer);
      check(
        s.RegSetValueExW(key, wideString("EventMessageFile"), 0, REG_EXPAND_SZ, fileBytes, fileBytes.length),
        `RegSetValueExW(${keyName}\\EventMessageFile)`,
      );
      const types = new Uint8Array(new Uint32Array([TYPES_SUPPORTED]).buffer);
      check(
        s.RegSetValueExW(key, wideString("TypesSupported"), 0, REG_DWORD, types, 4),
        `RegSetValueExW(${keyName}\\TypesSupported)`,
      );
    } finally {
      s.RegCloseKey(key);
    }
    return disposition[0] === REG_CREATED_NEW_KEY;
  } finally {
    library.close();
  }
}

/**
 * Removes the event source's registry key (the events already written stay in the log).
 *
 * @returns false when there was no such source
 * @throws {Win32Error} for RegDeleteKeyW (5: not elevated)
 */
export function removeEventSource(libraries: Win32Libraries, source: string): boolean {
  const kernel32 = Kernel32.of(libraries);
  const library = Deno.dlopen(libraries.advapi32, REGISTRY_SYMBOLS);
  try {
    const code = library.symbols.RegDeleteKeyW(
      Deno.UnsafePointer.create(HKEY_LOCAL_MACHINE),
      wideString(eventSourceKey(source)),
    );
    if (code === ERROR_FILE_NOT_FOUND) return false;
    registryCall(kernel32)(code, `RegDeleteKeyW(HKLM\\${eventSourceKey(source)})`);
    return true;
  } finally {
    library.close();
  }
}

/**
 * Writes a service's events to the Application log (RegisterEventSourceW, ReportEventW). Writing never throws: a
 * failure is returned, for the caller's own log, since the Event Log is a second copy of what the log file says.
 */
export class EventLog {
  readonly #library: Deno.DynamicLibrary<typeof EVENTLOG_SYMBOLS>;
  readonly #kernel32: Kernel32;
  #handle: Deno.PointerValue;

  private constructor(
    library: Deno.DynamicLibrary<typeof EVENTLOG_SYMBOLS>,
    kernel32: Kernel32,
    handle: Deno.PointerValue,
  ) {
    this.#library = library;
    this.#kernel32 = kernel32;
    this.#handle = handle;
  }

  /**
   * Opens the event source for writing.
   *
   * @param libraries where advapi32 and kernel32 come from
   * @param source the source's name (the service's)
   * @returns the writer
   * @throws {Win32Error} for RegisterEventSourceW
   */
  static open(libraries: Win32Libraries, source: string): EventLog {
    const kernel32 = Kernel32.of(libraries);
    const library = Deno.dlopen(libraries.advapi32, EVENTLOG_SYMBOLS);
    const handle = library.symbols.RegisterEventSourceW(null, wideString(source));
    if (handle === null) {
      const error = kernel32.failure(`RegisterEventSourceW(${source})`);
      library.close();
      throw error;
    }
    return new EventLog(library, kernel32, handle);
  }

  /**
   * Writes one event (ReportEventW) with `message` as its only string.
   *
   * @param type {@link EventType}
   * @param id {@link EventId}
   * @param message the whole description (at most 31,839 characters, ReportEventW's limit; longer is cut)
   * @returns undefined when written, or the failure
   */
  report(type: number, id: number, message: string): Win32Error | undefined {
    if (this.#handle === null) return new Win32Error("ReportEventW", 6, this.#kernel32.words(6));
    const text = wideString(message.slice(0, 31_839));
    const strings = new BigUint64Array([addressOf(text)]);
    if (this.#library.symbols.ReportEventW(this.#handle, type, 0, id, null, 1, 0, strings, null) === 0) {
      return this.#kernel32.failure(`ReportEventW(event ${id})`);
    }
    return undefined;
  }

  /** Closes the source (DeregisterEventSource). */
  close(): void {
    if (this.#handle === null) return;
    this.#library.symbols.DeregisterEventSource(this.#handle);
    this.#handle = null;
    this.#library.close();
  }
}
