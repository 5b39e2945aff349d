// eventlog: echosrv in the Windows Event Log, where administrators look first. `service install` registers an
// event source named after the service in the Application log (a registry key under
// HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application, whose message file is Windows' own EventCreate.exe:
// its messages 1 to 1000 are each just "%1", so the text echosrv writes is the whole description, as Go's
// golang.org/x/sys/windows/svc/eventlog does); `uninstall` removes it. The service writes its start, its stop, a
// failed start with the reason, and an end by error, through RegisterEventSourceW and ReportEventW, besides its log
// file.

import { addressOf, Kernel32, wideString, Win32Error, type Win32Libraries } from "./win32.ts";
import { deleteKey, KeyAccess, RegistryKey } from "./registry.ts";

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

const EVENTLOG_SYMBOLS = {
  RegisterEventSourceW: { parameters: ["pointer", "buffer"], result: "pointer" },
  ReportEventW: {
    parameters: ["pointer", "u16", "u16", "u32", "pointer", "u16", "u32", "buffer", "pointer"],
    result: "i32",
  },
  DeregisterEventSource: { parameters: ["pointer"], result: "i32" },
} as const;

/**
 * Registers `source` as an event source of the Application log (creates or updates its registry key).
 *
 * @param libraries where advapi32 and kernel32 come from
 * @param source the source's name (the service's)
 * @returns true when the key was created, false when it was there already (and was updated)
 * @throws {Win32Error} naming the registry call that failed (5: not elevated)
 */
export function registerEventSource(libraries: Win32Libraries, source: string): boolean {
  const opened = RegistryKey.create(libraries, eventSourceKey(source), KeyAccess.SET_VALUE | KeyAccess.CREATE_SUB_KEY);
  using key = opened.key;
  key.setExpandString("EventMessageFile", EVENT_MESSAGE_FILE);
  key.setDword("TypesSupported", TYPES_SUPPORTED);
  return opened.created;
}

/**
 * Removes the event source's registry key (the events already written stay in the log).
 *
 * @returns false when there was no such source
 * @throws {Win32Error} for RegDeleteKeyW (5: not elevated)
 */
export function removeEventSource(libraries: Win32Libraries, source: string): boolean {
  return deleteKey(libraries, eventSourceKey(source));
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
