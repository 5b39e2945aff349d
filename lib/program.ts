// program: echosrv started from a configuration, the part that the foreground run (main.ts) and the Windows
// service (lib/service/windows_program.ts) share: logging, the startup lines, the server listening. Each of them
// adds its own way of being told to stop and of reporting the outcome.

import { type RunConfig, unknownEnvVars } from "./options.ts";
import { closeLogging, LogFileError, type LogTargets, serverLog, setupLogging } from "./log.ts";
import { ListenError } from "./listen.ts";
import { EchoServer } from "./server.ts";
import { VERSION } from "./version.ts";

/** The outcome of {@link startProgram}. */
export type ProgramStart =
  /** Listening; stop it with `server.stop()`, wait with `server.finished`, then {@link closeLogging}. */
  | { ok: true; server: EchoServer }
  /** Could not start: exit with `exitCode`. `logged` tells whether the message reached the log already. */
  | { ok: false; exitCode: number; message: string; logged: boolean };

let rejectionGuard = false;

/**
 * Sets up logging, writes the startup lines and starts the server.
 *
 * @param config the validated configuration
 * @param targets whether log lines also go to standard output (not in a Windows service: it has no console)
 * @returns the running server, or why it could not start (the log file cannot be opened, the port is in use)
 * @example
 * ```ts
 * import { parseCommandLine } from "./options.ts";
 *
 * const parsed = parseCommandLine(["--port", "0", "--host", "127.0.0.1"]);
 * if (parsed.kind === "run") {
 *   const started = await startProgram(parsed.config);
 *   if (started.ok) await started.server.stop();
 *   else console.error(started.message);
 * }
 * ```
 */
export async function startProgram(config: RunConfig, targets: LogTargets = {}): Promise<ProgramStart> {
  try {
    await setupLogging(config.log, targets);
  } catch (error) {
    if (!(error instanceof LogFileError)) throw error;
    return { ok: false, exitCode: 1, message: error.message, logged: false };
  }
  if (!rejectionGuard) {
    rejectionGuard = true;
    // A rejection nobody handled would kill the process and every connection with it; log it and keep serving.
    globalThis.addEventListener("unhandledrejection", (event) => {
      event.preventDefault();
      serverLog.error("internal error (please report it): {error}", { error: String(event.reason) });
    });
  }
  serverLog.info("echosrv {version} starting (Deno {deno}, {os})", {
    version: VERSION,
    deno: Deno.version.deno,
    os: Deno.build.os,
  });
  for (const name of unknownEnvVars(Deno.env.toObject())) {
    serverLog.warn("ignoring the environment variable {name}: no option reads it (see --help)", { name });
  }

  const server = new EchoServer(config.server);
  try {
    server.start();
  } catch (error) {
    if (!(error instanceof ListenError)) throw error;
    serverLog.error("{message}", { message: error.message });
    await closeLogging();
    return { ok: false, exitCode: 1, message: error.message, logged: true };
  }
  return { ok: true, server };
}
