// registry: the Windows registry as echosrv's service modules use it, through advapi32 (Deno FFI): a key under
// HKEY_LOCAL_MACHINE created or opened, values written (REG_EXPAND_SZ, REG_DWORD, REG_MULTI_SZ) and deleted, a key
// deleted. Every failure is a Win32Error that names the call and the key (the registry functions return the
// Windows error themselves; GetLastError is not involved).

import { Kernel32, wideString, Win32Error, type Win32Libraries } from "./win32.ts";

const SYMBOLS = {
  RegCreateKeyExW: {
    parameters: ["pointer", "buffer", "u32", "pointer", "u32", "u32", "pointer", "buffer", "buffer"],
    result: "i32",
  },
  RegOpenKeyExW: { parameters: ["pointer", "buffer", "u32", "u32", "buffer"], result: "i32" },
  RegSetValueExW: { parameters: ["pointer", "buffer", "u32", "u32", "buffer", "u32"], result: "i32" },
  RegDeleteValueW: { parameters: ["pointer", "buffer"], result: "i32" },
  RegDeleteKeyW: { parameters: ["pointer", "buffer"], result: "i32" },
  RegCloseKey: { parameters: ["pointer"], result: "i32" },
} as const;

type Advapi32 = Deno.DynamicLibrary<typeof SYMBOLS>;

/** HKEY_LOCAL_MACHINE: (HKEY)(ULONG_PTR)(LONG)0x80000002, sign-extended on 64-bit Windows. */
const HKEY_LOCAL_MACHINE = 0xffff_ffff_8000_0002n;

/** Access rights on a key (REGSAM). */
export const KeyAccess = { SET_VALUE: 0x2, CREATE_SUB_KEY: 0x4 } as const;

/** The value types echosrv writes. */
export const ValueType = { EXPAND_SZ: 2, DWORD: 4, MULTI_SZ: 7 } as const;

const REG_CREATED_NEW_KEY = 1;
/** What the registry functions answer for a key or value that is not there. */
export const ERROR_FILE_NOT_FOUND = 2;

/**
 * The data of a REG_MULTI_SZ value: each string in UTF-16LE followed by a NUL, and one more NUL after the last
 * ("a\0b\0\0"); an empty list is a lone NUL (Microsoft, "Registry Value Types":
 * https://learn.microsoft.com/windows/win32/sysinfo/registry-value-types).
 *
 * @param strings the strings, none empty (an empty string would end the list) and none holding a NUL
 * @returns the bytes, to be written with their whole length
 * @throws {RangeError} for an empty string or one that holds a NUL
 */
export function multiString(strings: readonly string[]): Uint8Array<ArrayBuffer> {
  for (const text of strings) {
    if (text === "" || text.includes("\0")) {
      throw new RangeError(`a REG_MULTI_SZ string can be neither empty nor hold a NUL: ${JSON.stringify(text)}`);
    }
  }
  const units = new Uint16Array(strings.reduce((sum, text) => sum + text.length + 1, 1));
  let at = 0;
  for (const text of strings) {
    for (let i = 0; i < text.length; i++) units[at++] = text.charCodeAt(i);
    at++; // the string's NUL (the array starts zeroed); the list's own NUL is the last unit
  }
  return new Uint8Array(units.buffer);
}

function check(kernel32: Kernel32, code: number, call: string): void {
  if (code !== 0) throw new Win32Error(call, code, kernel32.words(code));
}

/** An open key under HKEY_LOCAL_MACHINE. Close it (or use `using`) when done. */
export class RegistryKey implements Disposable {
  readonly #library: Advapi32;
  readonly #kernel32: Kernel32;
  #handle: Deno.PointerValue;

  private constructor(library: Advapi32, kernel32: Kernel32, handle: Deno.PointerValue, readonly path: string) {
    this.#library = library;
    this.#kernel32 = kernel32;
    this.#handle = handle;
  }

  /** The key as people write it, e.g. `HKLM\SYSTEM\CurrentControlSet\Services\echosrv`. */
  get name(): string {
    return `HKLM\\${this.path}`;
  }

  /**
   * Creates the key, or opens it when it is there (RegCreateKeyExW, a key kept across restarts).
   *
   * @param libraries where advapi32 and kernel32 come from
   * @param path the key's path under HKEY_LOCAL_MACHINE
   * @param access what the caller will do (see {@link KeyAccess})
   * @returns the key, and whether it was created (false: it was there)
   * @throws {Win32Error} for RegCreateKeyExW (5: not elevated)
   */
  static create(libraries: Win32Libraries, path: string, access: number): { key: RegistryKey; created: boolean } {
    const kernel32 = Kernel32.of(libraries);
    const library = Deno.dlopen(libraries.advapi32, SYMBOLS);
    const keyOut = new BigUint64Array(1);
    const disposition = new Uint32Array(1);
    const code = library.symbols.RegCreateKeyExW(
      Deno.UnsafePointer.create(HKEY_LOCAL_MACHINE),
      wideString(path),
      0,
      null,
      0,
      access,
      null,
      keyOut,
      disposition,
    );
    if (code !== 0) {
      library.close();
      check(kernel32, code, `RegCreateKeyExW(HKLM\\${path})`);
    }
    const key = new RegistryKey(library, kernel32, Deno.UnsafePointer.create(keyOut[0]), path);
    return { key, created: disposition[0] === REG_CREATED_NEW_KEY };
  }

  /**
   * Opens a key that must be there (RegOpenKeyExW).
   *
   * @param libraries where advapi32 and kernel32 come from
   * @param path the key's path under HKEY_LOCAL_MACHINE
   * @param access what the caller will do (see {@link KeyAccess})
   * @returns the key
   * @throws {Win32Error} for RegOpenKeyExW (2: no such key, 5: not allowed)
   */
  static open(libraries: Win32Libraries, path: string, access: number): RegistryKey {
    const kernel32 = Kernel32.of(libraries);
    const library = Deno.dlopen(libraries.advapi32, SYMBOLS);
    const keyOut = new BigUint64Array(1);
    const code = library.symbols.RegOpenKeyExW(
      Deno.UnsafePointer.create(HKEY_LOCAL_MACHINE),
      wideString(path),
      0,
      access,
      keyOut,
    );
    if (code !== 0) {
      library.close();
      check(kernel32, code, `RegOpenKeyExW(HKLM\\${path})`);
    }
    return new RegistryKey(library, kernel32, Deno.UnsafePointer.create(keyOut[0]), path);
  }

  /**
   * Writes a value (RegSetValueExW), replacing one of the same name.
   *
   * @param name the value's name
   * @param type its type (see {@link ValueType})
   * @param data its bytes, all of which are written
   * @throws {Win32Error} for RegSetValueExW (5: not allowed)
   */
  setValue(name: string, type: number, data: Uint8Array<ArrayBuffer>): void {
    check(
      this.#kernel32,
      this.#library.symbols.RegSetValueExW(this.#handle, wideString(name), 0, type, data, data.length),
      `RegSetValueExW(${this.name}\\${name})`,
    );
  }

  /** Writes a REG_EXPAND_SZ value (a string whose %VARIABLES% the reader expands), NUL included. */
  setExpandString(name: string, text: string): void {
    this.setValue(name, ValueType.EXPAND_SZ, new Uint8Array(wideString(text).buffer));
  }

  /** Writes a REG_DWORD value (a 32-bit unsigned number). */
  setDword(name: string, value: number): void {
    this.setValue(name, ValueType.DWORD, new Uint8Array(new Uint32Array([value]).buffer));
  }

  /** Writes a REG_MULTI_SZ value: a list of strings (see {@link multiString} for what they may hold). */
  setMultiString(name: string, strings: readonly string[]): void {
    this.setValue(name, ValueType.MULTI_SZ, multiString(strings));
  }

  /**
   * Deletes a value (RegDeleteValueW).
   *
   * @returns false when there was no such value
   * @throws {Win32Error} for RegDeleteValueW (5: not allowed)
   */
  deleteValue(name: string): boolean {
    const code = this.#library.symbols.RegDeleteValueW(this.#handle, wideString(name));
    if (code === ERROR_FILE_NOT_FOUND) return false;
    check(this.#kernel32, code, `RegDeleteValueW(${this.name}\\${name})`);
    return true;
  }

  /** Closes the key (RegCloseKey) and the library. */
  close(): void {
    if (this.#handle === null) return;
    this.#library.symbols.RegCloseKey(this.#handle);
    this.#handle = null;
    this.#library.close();
  }

  /** Closes the key, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Deletes a key that has no subkeys (RegDeleteKeyW), with its values.
 *
 * @param libraries where advapi32 and kernel32 come from
 * @param path the key's path under HKEY_LOCAL_MACHINE
 * @returns false when there was no such key
 * @throws {Win32Error} for RegDeleteKeyW (5: not elevated)
 */
export function deleteKey(libraries: Win32Libraries, path: string): boolean {
  const kernel32 = Kernel32.of(libraries);
  const library = Deno.dlopen(libraries.advapi32, SYMBOLS);
  try {
    const code = library.symbols.RegDeleteKeyW(Deno.UnsafePointer.create(HKEY_LOCAL_MACHINE), wideString(path));
    if (code === ERROR_FILE_NOT_FOUND) return false;
    check(kernel32, code, `RegDeleteKeyW(HKLM\\${path})`);
    return true;
  } finally {
    library.close();
  }
}
