// scm_boot: the first module main.ts imports, so that it runs before the rest of the program loads. When the
// Windows Service Control Manager started this process (its parent is services.exe, or `--service` marks the
// command line), it connects to the SCM at once: the SCM gives a new service process 30 s to call
// StartServiceCtrlDispatcherW and kills a program that never does (`sc start` then reports error 1053). A console
// run, and every other system, goes on untouched.
//
// Tests on Linux name a stand-in for advapi32/kernel32 (support/fixtures/fake_advapi32.c) in the environment
// variable win32.ts names; it is read on Linux and macOS only, never on Windows, and is not an option of echosrv.

import { ScmConnection, type ScmLibraries, SERVICE_MARKER, startedByScm, WINDOWS_LIBRARIES } from "./scm.ts";
import { testLibraries } from "./win32.ts";

/** A process the SCM started: its connection, and its arguments without the marker. */
export interface ScmBoot {
  /** The connection, dispatcher already called. */
  connection: ScmConnection;
  /** The process arguments, without {@link SERVICE_MARKER}. */
  args: string[];
  /** True when the command line carried {@link SERVICE_MARKER} (so the SCM was expected). */
  marked: boolean;
  /** Where the Windows functions come from, for the service's other calls (its events). */
  libraries: ScmLibraries;
}

function granted(descriptor: Deno.PermissionDescriptor): boolean {
  try {
    return Deno.permissions.querySync(descriptor).state === "granted";
  } catch {
    return false;
  }
}

/** The libraries to use here, or undefined when this system has no SCM (and no test stand-in is named). */
function librariesHere(): ScmLibraries | undefined {
  return Deno.build.os === "windows" ? WINDOWS_LIBRARIES : testLibraries();
}

/**
 * Connects to the SCM when it started this process.
 *
 * @param args the process arguments
 * @returns the connection, or undefined for a console run
 */
export function bootScm(args: readonly string[]): ScmBoot | undefined {
  const libraries = librariesHere();
  if (libraries === undefined || !granted({ name: "ffi" })) return undefined;
  const marked = args[0] === SERVICE_MARKER;
  if (!marked && !startedByScm(libraries.kernel32)) return undefined;
  try {
    return {
      connection: ScmConnection.connect(libraries),
      args: marked ? args.slice(1) : [...args],
      marked,
      libraries,
    };
  } catch {
    // advapi32 could not be loaded: carry on as a console program, which reports what goes wrong.
    return undefined;
  }
}

/** This process's connection to the SCM, made while this module loads; undefined for a console run. */
export const scmBoot: ScmBoot | undefined = bootScm(Deno.args);
