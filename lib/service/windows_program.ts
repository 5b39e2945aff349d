// windows_program: echosrv as the program the Windows SCM runs (lib/service/scm.ts drives it). Its options are the
// service's command line (binPath) followed by the start parameters of `sc start NAME ...`. A service has no
// console and starts in C:\Windows\System32, so it logs to a file only, and every path is resolved from the
// executable's folder: by default NAME.log beside the executable, or %ProgramData%\NAME\NAME.log when that folder
// cannot be written.

import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type LogConfig, parseCommandLine, TRACE_ALL } from "../options.ts";
import { closeLogging, serverLog, setupLogging } from "../log.ts";
import { startProgram } from "../program.ts";
import type { RunningService, ServiceProgram } from "./contract.ts";

/**
 * At system shutdown the SCM waits only about 20 s for services (WaitToKillServiceTimeout), so a shutdown stop
 * gives open sessions at most this long, whatever `--shutdown-timeout` says.
 */
export const SHUTDOWN_GRACE_MS = 15_000;

/** Exit code of a service whose command line is not valid (reported as its service-specific error). */
export const EXIT_USAGE = 2;

/**
 * The folder the service's relative paths are resolved from: the executable's (compiled), or main.ts's.
 *
 * @returns an absolute folder
 */
export function programDirectory(): string {
  return Deno.build.standalone ? dirname(Deno.execPath()) : dirname(fileURLToPath(Deno.mainModule));
}

/**
 * The log files a service tries, in order, when none is given: NAME.log beside the program, then under
 * %ProgramData%\NAME (when ProgramData is known).
 *
 * @param serviceName the service's name
 * @param folder the program's folder
 * @param programData the value of %ProgramData%
 * @returns absolute paths
 */
export function defaultLogFiles(serviceName: string, folder: string, programData: string | undefined): string[] {
  const file = `${serviceName || "echosrv"}.log`;
  const candidates = [join(folder, file)];
  if (programData) candidates.push(join(programData, serviceName || "echosrv", file));
  return candidates;
}

/** The first candidate that can be opened for appending (its folder is created if needed), or the first one. */
function firstWritable(candidates: string[]): string {
  for (const candidate of candidates) {
    try {
      Deno.mkdirSync(dirname(candidate), { recursive: true });
      Deno.openSync(candidate, { append: true, create: true }).close();
      return candidate;
    } catch {
      // try the next one
    }
  }
  return candidates[0];
}

/** Text made one line: commander's usage messages come in several. */
function oneLine(text: string): string {
  return text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== "").join(" ");
}

function envValue(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/**
 * The program the SCM runs.
 *
 * @param processArgs the process's arguments (the service's command line without the program and the marker)
 * @returns the program; see {@link ServiceProgram}
 */
export function windowsServiceProgram(processArgs: string[]): ServiceProgram {
  return {
    async start(startParameters: string[], serviceName: string): Promise<number | RunningService> {
      const folder = programDirectory();
      const fallbackLog = () =>
        firstWritable(defaultLogFiles(serviceName, folder, envValue("ProgramData") ?? envValue("PROGRAMDATA")));
      const usage: string[] = [];
      const what = parseCommandLine([...processArgs, ...startParameters], {
        out: (text) => usage.push(text),
        err: (text) => usage.push(text),
      });
      if (what.kind !== "run") {
        // No console to say it on: the log file gets the message, the SCM gets the exit code.
        const log: LogConfig = { level: "info", traceFlags: TRACE_ALL, format: "text", file: fallbackLog() };
        await setupLogging(log, { console: false }).catch(() => {});
        serverLog.error("the service's command line is not valid ({args}): {message}", {
          args: [...processArgs, ...startParameters].join(" "),
          message: oneLine(usage.join("")) || "it does not ask to run the server",
        });
        await closeLogging();
        return EXIT_USAGE;
      }
      const config = what.config;
      config.log.file = config.log.file === undefined
        ? fallbackLog()
        : isAbsolute(config.log.file)
        ? config.log.file
        : resolve(folder, config.log.file);

      const started = await startProgram(config, { console: false });
      if (!started.ok) return started.exitCode;
      const program = started.program;
      serverLog.info("running as the service {name} (log file {file})", { name: serviceName, file: config.log.file });
      return {
        stop(reason) {
          const graceMs = reason === "shutdown"
            ? Math.min(config.server.shutdownTimeoutMs, SHUTDOWN_GRACE_MS)
            : config.server.shutdownTimeoutMs;
          serverLog.info("the service manager asked to {reason}; stopping", {
            reason: reason === "shutdown" ? "shut down" : "stop",
          });
          program.stop(graceMs);
        },
        finished: program.finished.then(async () => {
          await closeLogging();
          return 0;
        }),
      };
    },
  };
}
