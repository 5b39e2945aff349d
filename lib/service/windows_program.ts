// windows_program: echosrv as the program the Windows SCM runs (lib/service/scm.ts drives it). Its options are the
// service's command line (binPath) followed by the start parameters of `sc start NAME ...`. A service has no
// console and starts in C:\Windows\System32, so it logs to a file only, and every path is resolved from the
// executable's folder: by default NAME.log beside the executable, or %ProgramData%\NAME\NAME.log when that folder
// cannot be written. Its start, its stop, a failed start with the reason and an end by error also go to the
// Application event log (lib/service/eventlog.ts), under the service's name.

import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type LogConfig, TRACE_ALL } from "../config.ts";
import { parseCommandLine } from "../options.ts";
import { closeLogging, serverLog, setupLogging } from "../log.ts";
import { startProgram } from "../program.ts";
import { listenWords, type RunningService, type ServiceProgram } from "./contract.ts";
import { EventId, EventLog, EventType } from "./eventlog.ts";
import type { Win32Libraries } from "./win32.ts";

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

/**
 * The `--log-file` a command line names (the last one wins, as when parsing), read even when the line as a whole is
 * not valid, so that the reason goes where the administrator looks.
 *
 * @param args the service's arguments
 * @returns the value, or undefined when none is given
 */
export function logFileNamedIn(args: readonly string[]): string | undefined {
  let file: string | undefined;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--") break;
    if (args[i] === "--log-file" && i + 1 < args.length) file = args[++i];
    else if (args[i].startsWith("--log-file=")) file = args[i].slice("--log-file=".length);
  }
  return file || undefined;
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

/**
 * The events of one run of the service. Opening the source or writing may fail (the Event Log is a second copy of
 * what the log file says); the failure is logged once, and the service carries on.
 */
class ServiceEvents {
  #log: EventLog | undefined;
  #failure: string | undefined;
  #warned = false;

  constructor(libraries: Win32Libraries | undefined, source: string) {
    if (libraries === undefined) return;
    try {
      this.#log = EventLog.open(libraries, source);
    } catch (error) {
      this.#failure = (error as Error)?.message ?? String(error);
    }
  }

  /** Writes one event (see {@link EventLog.report}); a failure goes to the log file, once. */
  write(type: number, id: number, message: string): void {
    const failure = this.#log ? this.#log.report(type, id, message)?.message : this.#failure;
    if (failure !== undefined && !this.#warned) {
      this.#warned = true;
      serverLog.warn("cannot write to the Windows event log: {failure}", { failure });
    }
  }

  close(): void {
    this.#log?.close();
    this.#log = undefined;
  }
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
 * @param libraries where advapi32 comes from, for the Application event log; undefined writes no events
 * @returns the program; see {@link ServiceProgram}
 */
export function windowsServiceProgram(processArgs: string[], libraries?: Win32Libraries): ServiceProgram {
  return {
    async start(startParameters: string[], serviceName: string): Promise<number | RunningService> {
      const events = new ServiceEvents(libraries, serviceName || "echosrv");
      const folder = programDirectory();
      const defaultLogs = () =>
        defaultLogFiles(serviceName, folder, envValue("ProgramData") ?? envValue("PROGRAMDATA"));
      const fallbackLog = () => firstWritable(defaultLogs());
      const usage: string[] = [];
      const what = parseCommandLine([...processArgs, ...startParameters], {
        out: (text) => usage.push(text),
        err: (text) => usage.push(text),
      });
      if (what.kind !== "run") {
        // No console to say it on: the log file it names (else the default one) gets the message, the SCM the code.
        const named = logFileNamedIn([...processArgs, ...startParameters]);
        const file = firstWritable([
          ...(named === undefined ? [] : [isAbsolute(named) ? named : resolve(folder, named)]),
          ...defaultLogs(),
        ]);
        const log: LogConfig = { level: "info", traceFlags: TRACE_ALL, format: "text", file };
        await setupLogging(log, { console: false }).catch(() => {});
        const args = [...processArgs, ...startParameters].join(" ");
        const message = oneLine(usage.join("")) || "it does not ask to run the server";
        serverLog.error("the service's command line is not valid ({args}): {message}", { args, message });
        events.write(
          EventType.ERROR,
          EventId.START_FAILED,
          `${serviceName} could not start: its command line is not valid (${args}): ${message}`,
        );
        events.close();
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
      if (!started.ok) {
        events.write(EventType.ERROR, EventId.START_FAILED, `${serviceName} could not start: ${started.message}`);
        events.close();
        return started.exitCode;
      }
      const program = started.program;
      serverLog.info("running as the service {name} (log file {file})", { name: serviceName, file: config.log.file });
      const where = config.server.port === 0
        ? "on a port the system picked"
        : listenWords(config.server.hosts, config.server.port);
      events.write(
        EventType.INFORMATION,
        EventId.STARTED,
        `${serviceName} is running: echosrv echoes TCP ${where}; its log file is ${config.log.file}`,
      );
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
        stopNow() {
          program.stopNow();
        },
        finished: program.finished.then(
          async () => {
            events.write(EventType.INFORMATION, EventId.STOPPED, `${serviceName} has stopped`);
            events.close();
            await closeLogging();
            return 0;
          },
          async (error) => {
            const reason = (error as Error)?.message ?? String(error);
            serverLog.error("the service failed: {reason}", { reason });
            events.write(EventType.ERROR, EventId.FAILED, `${serviceName} failed: ${reason}`);
            events.close();
            await closeLogging();
            throw error;
          },
        ),
      };
    },
  };
}
