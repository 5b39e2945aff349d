// console: echosrv run as a console program (a terminal, a script, or a supervisor that signals it: systemd, launchd,
// Docker), one of the two places it runs; the Windows SCM is the other (lib/service/scm.ts). As in kardianos/service,
// each place owns its run loop and runs a ServiceProgram (lib/service/contract.ts): here the loop starts the program
// and turns the stop requests of lib/stop_requests.ts into stops, the first graceful, a deliberate second one at
// once.

import type { RunConfig } from "../config.ts";
import { closeLogging, serverLog } from "../log.ts";
import { startProgram } from "../program.ts";
import { describeStopSource, listenForStopRequests } from "../stop_requests.ts";
import type { ServiceProgram } from "./contract.ts";

/**
 * echosrv as the console runs it: logging to standard output (and the log file), and a failure to start told on
 * standard error as well.
 *
 * @param config the validated configuration
 * @returns the program, for {@link runInConsole}
 */
export function consoleProgram(config: RunConfig): ServiceProgram {
  return {
    async start() {
      const started = await startProgram(config);
      if (!started.ok) {
        // Why it could not start goes to standard error, as usage errors do, also when the log (standard output, a
        // file) has it already: a script or a person watching standard error sees why the exit code is 1.
        console.error(`echosrv: ${started.message}`);
        return started.exitCode;
      }
      const program = started.program;
      return {
        stop: () => program.stop(),
        stopNow: () => program.stopNow(),
        finished: program.finished.then(() => 0),
      };
    },
  };
}

/**
 * Runs a program in the console until it stops: the first stop request stops it gracefully, a deliberate second one
 * (a second or more later) at once (see lib/stop_requests.ts). Once it has stopped, writes out the log.
 *
 * @param program what to run (see {@link consoleProgram})
 * @returns the process exit code: the program's, or the one it could not start with
 */
export async function runInConsole(program: ServiceProgram): Promise<number> {
  const running = await program.start([], "echosrv");
  if (typeof running === "number") return running;
  const stopListening = listenForStopRequests((decision, source) => {
    if (decision === "graceful") {
      serverLog.info(
        "stop requested ({source}); to stop at once, press Ctrl+C or send SIGTERM again a second or more later",
        {
          source: describeStopSource(source),
        },
      );
      running.stop("stop");
    } else if (decision === "immediate") {
      serverLog.info("second stop request ({source}): closing every connection now", {
        source: describeStopSource(source),
      });
      running.stopNow();
    } else if (decision === "ignored") {
      serverLog.info("SIGHUP ignored: echosrv has no terminal to lose; stop it with SIGTERM or Ctrl+C");
    } else {
      serverLog.debug(
        "{source} again: the same stop request (a process group gets each signal twice under deno task)",
        {
          source: describeStopSource(source),
        },
      );
    }
  });
  const code = await running.finished;
  stopListening();
  await closeLogging();
  return code;
}
