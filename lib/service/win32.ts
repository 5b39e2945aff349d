// win32: the Windows API basics echosrv's service modules share through Deno FFI: where the functions come from
// (the system DLLs, or on Linux a stand-in library the tests build) and UTF-16 strings. It runs nothing at load.

/** Where the Windows functions come from: the system DLLs, or (tests on Linux only) a stand-in library. */
export interface Win32Libraries {
  /** The library with StartServiceCtrlDispatcherW, RegisterServiceCtrlHandlerExW and SetServiceStatus. */
  advapi32: string;
  /** The library with CreateToolhelp32Snapshot, Process32FirstW/NextW, CloseHandle and ProcessIdToSessionId. */
  kernel32: string;
}

/** The system libraries on Windows. */
export const SYSTEM_LIBRARIES: Win32Libraries = { advapi32: "advapi32.dll", kernel32: "kernel32.dll" };

/** A NUL-terminated UTF-16LE copy of `text`, as the W functions take strings. */
export function wideString(text: string): Uint16Array {
  const out = new Uint16Array(text.length + 1);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/** Reads a NUL-terminated UTF-16LE string (at most 32767 units, the longest Windows path); "" for null. */
export function readWideString(pointer: Deno.PointerValue, offset = 0): string {
  if (pointer === null) return "";
  const view = new Deno.UnsafePointerView(pointer);
  const units: number[] = [];
  for (let i = 0; i < 32_767; i++) {
    const unit = view.getUint16(offset + i * 2);
    if (unit === 0) break;
    units.push(unit);
  }
  return String.fromCharCode(...units);
}
