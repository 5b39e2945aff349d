// main: echosrv's entry point. It only wires: read the options, set up logging, start the server, stop it
// gracefully on a signal, exit with the code the outcome calls for (0 clean stop, 1 runtime failure, 2 usage error).

// Keep this import first: when the Windows SCM started this process, it connects to the SCM while the rest of the
// program is still loading (see lib/service/scm_boot.ts). Elsewhere it does nothing.
import { scmBoot } from "./lib/service/scm_boot.ts";
import { parseCommandLine, type RunConfig } from "./lib/options.ts";
import { closeLogging, serverLog } from "./lib/log.ts";
import { startProgram } from "./lib/program.ts";
import { runStats } from "./lib/stats.ts";
import { windowsServiceProgram } from "./lib/service/windows_program.ts";
import { runServiceCommand } from "./lib/service/commands.ts";
import { describeStopSource, listenForStopRequests } from "./lib/stop_requests.ts";
import { runFaultCommand } from "./lib/faults/cli.ts";

/**
 * Runs the server in the foreground until asked to stop (see lib/stop_requests.ts): the first request stops
 * gracefully, a deliberate second one (a second or more later) at once.
 *
 * @param config the validated configuration
 * @returns the process exit code
 */
export async function runForeground(config: RunConfig): Promise<number> {
  const started = await startProgram(config);
  if (!started.ok) {
    // Why it could not start goes to standard error, as usage errors do, also when the log (standard output, a
    // file) has it already: a script or a person watching standard error sees why the exit code is 1.
    console.error(`echosrv: ${started.message}`);
    return started.exitCode;
  }
  const program = started.program;
  const stopListening = listenForStopRequests((decision, source) => {
    if (decision === "graceful") {
      serverLog.info(
        "stop requested ({source}); to stop at once, press Ctrl+C or send SIGTERM again a second or more later",
        {
          source: describeStopSource(source),
        },
      );
      program.stop();
    } else if (decision === "immediate") {
      serverLog.info("second stop request ({source}): closing every connection now", {
        source: describeStopSource(source),
      });
      program.stop(0);
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
  await program.finished;
  stopListening();
  await closeLogging();
  return 0;
}

/**
 * Runs echosrv with the given arguments.
 *
 * @param args the command-line arguments after the program name
 * @returns the process exit code
 */
export async function main(args: string[]): Promise<number> {
  const what = parseCommandLine(args);
  if (what.kind === "exit") return what.code;
  if (what.kind === "stats") return await runStats(what.config);
  if (what.kind === "service") return await runServiceCommand(what.request);
  if (what.kind === "fault") return await runFaultCommand(what.request); // issue 14: lib/faults/cli.ts
  return await runForeground(what.config);
}

/**
 * Runs echosrv as the Windows service the SCM started (see lib/service/scm.ts). When the dispatcher finds no SCM
 * (a console run of a command line marked `--service`), runs in the foreground instead.
 *
 * @returns the process exit code
 */
async function runAsWindowsService(boot: NonNullable<typeof scmBoot>): Promise<number> {
  const outcome = await boot.connection.run(windowsServiceProgram(boot.args, boot.libraries));
  if (outcome.kind === "served") return outcome.exitCode;
  console.error("echosrv: --service is for the Windows service manager; running in the foreground instead");
  return await main(boot.args);
}

if (import.meta.main) {
  Deno.exit(scmBoot ? await runAsWindowsService(scmBoot) : await main(Deno.args));
}
