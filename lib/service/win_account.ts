// win_account: the account a Windows service runs as, and what it may write. By default its virtual account,
// `NT SERVICE\NAME` (no password, no rights beyond a user's, its own SID), or another account without a password:
// LocalService, NetworkService, LocalSystem or a group managed service account (DOMAIN\name$). The service's own
// SID (S-1-5-80-..., computed from its name as Windows does) is granted Modify on its log folder through the
// security API (ConvertStringSidToSidW, GetNamedSecurityInfoW, SetEntriesInAclW, SetNamedSecurityInfoW), so the
// service can write its log and nothing else of the file system's protected parts.

import { Kernel32, wideString, Win32Error, type Win32Libraries } from "./win32.ts";

/** The account names echosrv knows, as CreateServiceW takes them. */
export const LOCAL_SYSTEM = "LocalSystem";
/** The Local Service account: few rights on the machine, anonymous on the network. */
export const LOCAL_SERVICE = "NT AUTHORITY\\LocalService";
/** The Network Service account: few rights on the machine, the machine's identity on the network. */
export const NETWORK_SERVICE = "NT AUTHORITY\\NetworkService";

/** The virtual account of a service: `NT SERVICE\NAME`. */
export function virtualAccount(serviceName: string): string {
  return `NT SERVICE\\${serviceName}`;
}

/**
 * Reads the account a service is to run as, as an administrator may write it.
 *
 * @param text the `--account` value, or undefined for the default (the virtual account)
 * @param serviceName the service's name
 * @returns the name CreateServiceW takes
 * @throws {Error} with a message naming what is accepted, for an account that needs a password
 */
export function windowsAccount(text: string | undefined, serviceName: string): string {
  if (text === undefined) return virtualAccount(serviceName);
  const value = text.trim();
  if (/^(\.\\)?LocalSystem$|^NT AUTHORITY\\SYSTEM$/i.test(value)) return LOCAL_SYSTEM;
  if (/^(NT AUTHORITY\\)?LocalService$/i.test(value)) return LOCAL_SERVICE;
  if (/^(NT AUTHORITY\\)?NetworkService$/i.test(value)) return NETWORK_SERVICE;
  const virtual = /^NT SERVICE\\(.+)$/i.exec(value);
  if (virtual) {
    if (virtual[1].toLowerCase() === serviceName.toLowerCase()) return virtualAccount(serviceName);
    throw new Error(
      `${value} is the virtual account of another service; this one's is ${virtualAccount(serviceName)}`,
    );
  }
  if (/^[^\\\s]+\\[^\\\s]+\$$/.test(value)) return value; // a group managed service account: DOMAIN\name$
  throw new Error(
    `${value} needs a password, which echosrv does not take; use the virtual account (the default), ` +
      "LocalService, NetworkService, LocalSystem or a group managed service account (DOMAIN\\name$)",
  );
}

/**
 * The SID of a service (`NT SERVICE\NAME`), as Windows derives it: S-1-5-80 followed by the SHA-1 of the service
 * name in upper case (UTF-16LE), read as five little-endian 32-bit numbers. It exists as soon as the service does;
 * it is the virtual account's own SID, and is in the token of a service of any account whose SID type is
 * unrestricted.
 *
 * @param serviceName the service's name
 * @returns the SID as a string, e.g. S-1-5-80-956008885-... for TrustedInstaller
 */
export async function serviceSid(serviceName: string): Promise<string> {
  const upper = serviceName.toUpperCase();
  const bytes = new Uint8Array(upper.length * 2);
  for (let i = 0; i < upper.length; i++) {
    bytes[i * 2] = upper.charCodeAt(i) & 0xff;
    bytes[i * 2 + 1] = upper.charCodeAt(i) >> 8;
  }
  const hash = new DataView(await crypto.subtle.digest("SHA-1", bytes));
  return `S-1-5-80-${[0, 4, 8, 12, 16].map((offset) => hash.getUint32(offset, true)).join("-")}`;
}

const SYMBOLS = {
  ConvertStringSidToSidW: { parameters: ["buffer", "buffer"], result: "i32" },
  GetNamedSecurityInfoW: {
    parameters: ["buffer", "u32", "u32", "pointer", "pointer", "buffer", "pointer", "buffer"],
    result: "u32",
  },
  SetEntriesInAclW: { parameters: ["u32", "buffer", "pointer", "buffer"], result: "u32" },
  SetNamedSecurityInfoW: {
    parameters: ["buffer", "u32", "u32", "pointer", "pointer", "pointer", "pointer"],
    result: "u32",
  },
} as const;

const SE_FILE_OBJECT = 1;
const DACL_SECURITY_INFORMATION = 0x4;
const GRANT_ACCESS = 1;
const SUB_CONTAINERS_AND_OBJECTS_INHERIT = 0x3;
const TRUSTEE_IS_SID = 0;
const TRUSTEE_IS_USER = 1;
/** "Modify": FILE_GENERIC_READ | FILE_GENERIC_WRITE | FILE_GENERIC_EXECUTE | DELETE. */
export const FILE_MODIFY = 0x1301bf;

/**
 * Grants a SID Modify on a folder, inherited by what is and will be in it (an ACE added to the folder's DACL;
 * the others stay).
 *
 * @param libraries where advapi32 and kernel32 come from
 * @param folder the folder (it must exist)
 * @param sid the SID as a string (S-1-5-80-... for a service)
 * @throws {Win32Error} naming the call that failed
 */
export function grantModify(libraries: Win32Libraries, folder: string, sid: string): void {
  const kernel32 = Kernel32.of(libraries);
  const library = Deno.dlopen(libraries.advapi32, SYMBOLS);
  const s = library.symbols;
  const sidOut = new BigUint64Array(1);
  const daclOut = new BigUint64Array(1);
  const descriptorOut = new BigUint64Array(1);
  const newDaclOut = new BigUint64Array(1);
  const pointer = (value: bigint) => Deno.UnsafePointer.create(value);
  try {
    if (s.ConvertStringSidToSidW(wideString(sid), sidOut) === 0) {
      throw kernel32.failure(`ConvertStringSidToSidW(${sid})`);
    }
    const path = wideString(folder);
    let code = s.GetNamedSecurityInfoW(
      path,
      SE_FILE_OBJECT,
      DACL_SECURITY_INFORMATION,
      null,
      null,
      daclOut,
      null,
      descriptorOut,
    );
    if (code !== 0) throw new Win32Error(`GetNamedSecurityInfoW(${folder})`, code, kernel32.words(code));
    // EXPLICIT_ACCESS_W: grfAccessPermissions @0, grfAccessMode @4, grfInheritance @8, then TRUSTEE_W @16:
    // pMultipleTrustee @16, MultipleTrusteeOperation @24, TrusteeForm @28, TrusteeType @32, ptstrName @40.
    const access = new Uint8Array(48);
    const view = new DataView(access.buffer);
    view.setUint32(0, FILE_MODIFY, true);
    view.setUint32(4, GRANT_ACCESS, true);
    view.setUint32(8, SUB_CONTAINERS_AND_OBJECTS_INHERIT, true);
    view.setUint32(28, TRUSTEE_IS_SID, true);
    view.setUint32(32, TRUSTEE_IS_USER, true);
    view.setBigUint64(40, sidOut[0], true);
    code = s.SetEntriesInAclW(1, access, pointer(daclOut[0]), newDaclOut);
    if (code !== 0) throw new Win32Error(`SetEntriesInAclW(${sid})`, code, kernel32.words(code));
    code = s.SetNamedSecurityInfoW(
      path,
      SE_FILE_OBJECT,
      DACL_SECURITY_INFORMATION,
      null,
      null,
      pointer(newDaclOut[0]),
      null,
    );
    if (code !== 0) throw new Win32Error(`SetNamedSecurityInfoW(${folder})`, code, kernel32.words(code));
  } finally {
    kernel32.localFree(pointer(newDaclOut[0]));
    kernel32.localFree(pointer(descriptorOut[0]));
    kernel32.localFree(pointer(sidOut[0]));
    library.close();
  }
}
