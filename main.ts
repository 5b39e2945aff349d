// main: echosrv's entry point. It only wires: where this process runs (under the Windows SCM, or in a console), what
// the command line asks for (run the server, `stats`, `service ...`), and the exit code the outcome calls for (0 clean
// stop, 1 runtime failure, 2 usage error).

// Keep this import first: when the Windows SCM started this process, it connects to the SCM while the rest of the
// program is still loading (see lib/service/scm_boot.ts). Elsewhere it does nothing.
import { scmBoot } from "./lib/service/scm_boot.ts";
import { parseCommandLine } from "./lib/options.ts";
import { runStats } from "./lib/stats_command.ts";
import { consoleProgram, runInConsole } from "./lib/service/console.ts";
import { windowsServiceProgram } from "./lib/service/windows_program.ts";
import { runServiceCommand } from "./lib/service/commands.ts";

/**
 * Runs echosrv where this process was started, the one entry for both places. Under the Windows SCM (which
 * lib/service/scm_boot.ts connected to while this module loaded), the SCM's run loop runs the service program
 * (lib/service/windows_program.ts); when the dispatcher finds no SCM after all (a console run of a command line
 * marked `--service`), it runs in the console instead. In the console, the command line says what to do, and the
 * server runs in the console's run loop (lib/service/console.ts).
 *
 * @param args the command-line arguments after the program name
 * @returns the process exit code
 */
export async function main(args: string[]): Promise<number> {
  if (scmBoot) {
    const outcome = await scmBoot.connection.run(windowsServiceProgram(scmBoot.args, scmBoot.libraries));
    if (outcome.kind === "served") return outcome.exitCode;
    console.error("echosrv: --service is for the Windows service manager; running in the foreground instead");
    args = scmBoot.args;
  }
  const what = parseCommandLine(args);
  if (what.kind === "exit") return what.code;
  if (what.kind === "stats") return await runStats(what.config);
  if (what.kind === "service") return await runServiceCommand(what.request);
  return await runInConsole(consoleProgram(what.config));
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
