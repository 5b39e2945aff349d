// win32: the Windows API basics echosrv's service modules share through Deno FFI: where the functions come from
// (the system DLLs, or on Linux a stand-in library the tests build), UTF-16 strings, and Windows errors in words
// (FormatMessageW, with a table of the codes a service command meets when that fails). It runs nothing at load.

/** Where the Windows functions come from: the system DLLs, or (tests on Linux only) a stand-in library. */
export interface Win32Libraries {
  /** The library with the SCM, registry, security and event log functions. */
  advapi32: string;
  /** The library with GetLastError, FormatMessageW, LocalFree, the process snapshot. */
  kernel32: string;
}

/** The system libraries on Windows. */
export const SYSTEM_LIBRARIES: Win32Libraries = { advapi32: "advapi32.dll", kernel32: "kernel32.dll" };

/**
 * Names a stand-in for advapi32 and kernel32 in the tests (support/fixtures/fake_advapi32.c). It is read on Linux
 * and macOS only, never on Windows, and is not an option of echosrv.
 */
export const TEST_LIBRARY_VARIABLE = "_ECHOSRV_TEST_SCM_LIBRARY";

/**
 * The stand-in library the tests name, off Windows.
 *
 * @returns the stand-in for both libraries, or undefined (always on Windows, and when the variable is unset or
 *   not readable)
 */
export function testLibraries(): Win32Libraries | undefined {
  if (Deno.build.os === "windows") return undefined;
  try {
    if (Deno.permissions.querySync({ name: "env", variable: TEST_LIBRARY_VARIABLE }).state !== "granted") {
      return undefined;
    }
  } catch {
    return undefined;
  }
  const path = Deno.env.get(TEST_LIBRARY_VARIABLE);
  return path ? { advapi32: path, kernel32: path } : undefined;
}

/** A NUL-terminated UTF-16LE copy of `text`, as the W functions take strings. */
export function wideString(text: string): Uint16Array<ArrayBuffer> {
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
  let out = "";
  for (let i = 0; i < units.length; i += 4096) out += String.fromCharCode(...units.slice(i, i + 4096));
  return out;
}

/** A pointer to a buffer as a 64-bit integer, for building structures that hold pointers. */
export function addressOf(buffer: ArrayBufferView | null): bigint {
  if (buffer === null) return 0n;
  return Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer as Uint8Array<ArrayBuffer>));
}

/**
 * The Windows errors a service command meets, in Microsoft's words (the texts FormatMessageW gives on an English
 * system), for when FormatMessageW is not there or has no text.
 */
export const WINDOWS_ERRORS: Readonly<Record<number, string>> = {
  0: "The operation completed successfully.",
  2: "The system cannot find the file specified.",
  3: "The system cannot find the path specified.",
  5: "Access is denied.",
  6: "The handle is invalid.",
  87: "The parameter is incorrect.",
  120: "This function is not supported on this system.",
  122: "The data area passed to a system call is too small.",
  124: "The system call level is not correct.",
  1051: "A stop control has been sent to a service that other running services are dependent on.",
  1052: "The requested control is not valid for this service.",
  1053: "The service did not respond to the start or control request in a timely fashion.",
  1056: "An instance of the service is already running.",
  1057: "The account name is invalid or does not exist, or the password is invalid for the account name specified.",
  1058: "The service cannot be started, either because it is disabled or because it has no enabled devices " +
    "associated with it.",
  1060: "The specified service does not exist as an installed service.",
  1061: "The service cannot accept control messages at this time.",
  1062: "The service has not been started.",
  1066: "The service has returned a service-specific error code.",
  1069: "The service did not start due to a logon failure.",
  1072: "The specified service has been marked for deletion.",
  1073: "The specified service already exists.",
  1078: "The name is already in use as either a service name or a service display name.",
  1332: "No mapping between account names and security IDs was done.",
  1337: "The security ID structure is invalid.",
  1639: "Invalid command-line argument. Consult the Windows Installer SDK for detailed command line help.",
};

/** A Windows function that failed: which one, on what, and the Windows error (its code and its words). */
export class Win32Error extends Error {
  /** The error's name, as stack traces show it. */
  override name = "Win32Error";

  /**
   * A Windows function that failed.
   *
   * @param call the function, with what it was called on (e.g. `CreateServiceW(echosrv)`)
   * @param code the Windows error code (GetLastError, or the function's own result)
   * @param words the error in words
   */
  constructor(readonly call: string, readonly code: number, readonly words: string) {
    super(`${call} failed: Windows error ${code} (${words.replace(/[\s.]+$/, "")})`);
  }
}

const KERNEL32_SYMBOLS = {
  GetLastError: { parameters: [], result: "u32" },
  FormatMessageW: {
    parameters: ["u32", "pointer", "u32", "u32", "buffer", "u32", "pointer"],
    result: "u32",
  },
  LocalFree: { parameters: ["pointer"], result: "pointer" },
} as const;

const FORMAT_MESSAGE_IGNORE_INSERTS = 0x200;
const FORMAT_MESSAGE_FROM_SYSTEM = 0x1000;
/** MAKELANGID(LANG_ENGLISH, SUBLANG_ENGLISH_US): the words match the table and the documentation. */
const LANG_EN_US = 0x0409;

/** kernel32's error functions, opened once per library path. */
export class Kernel32 {
  static #opened = new Map<string, Kernel32>();
  readonly #library: Deno.DynamicLibrary<typeof KERNEL32_SYMBOLS>;

  private constructor(path: string) {
    this.#library = Deno.dlopen(path, KERNEL32_SYMBOLS);
  }

  /** kernel32 (or the stand-in) for these libraries; kept open for the life of the process. */
  static of(libraries: Win32Libraries): Kernel32 {
    let opened = Kernel32.#opened.get(libraries.kernel32);
    if (!opened) {
      opened = new Kernel32(libraries.kernel32);
      Kernel32.#opened.set(libraries.kernel32, opened);
    }
    return opened;
  }

  /** GetLastError, to be called right after the function that failed (nothing else on this thread in between). */
  lastError(): number {
    return this.#library.symbols.GetLastError();
  }

  /** Frees memory the system allocated for a result (security descriptors, ACLs, SIDs). */
  localFree(pointer: Deno.PointerValue): void {
    if (pointer !== null) this.#library.symbols.LocalFree(pointer);
  }

  /**
   * The words of a Windows error: FormatMessageW in English, else the system's language, else the table.
   *
   * @param code a Windows error code
   * @returns one line, e.g. "The specified service already exists."
   */
  words(code: number): string {
    const buffer = new Uint16Array(1024);
    for (const language of [LANG_EN_US, 0]) {
      let length = 0;
      try {
        length = this.#library.symbols.FormatMessageW(
          FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
          null,
          code,
          language,
          buffer,
          buffer.length,
          null,
        );
      } catch {
        length = 0;
      }
      if (length > 0) {
        const text = String.fromCharCode(...buffer.subarray(0, Math.min(length, buffer.length))).replace(/\s+/g, " ")
          .trim();
        if (text) return text;
      }
    }
    return WINDOWS_ERRORS[code] ?? "no description of this error is known";
  }

  /** The {@link Win32Error} for a call that just failed: GetLastError, then its words. */
  failure(call: string, code: number = this.lastError()): Win32Error {
    return new Win32Error(call, code, this.words(code));
  }
}
