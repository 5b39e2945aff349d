// main: echosrv's entry point. It only wires: read the options, set up logging, start the server, stop it
// gracefully on a signal, exit with the code the outcome calls for (0 clean stop, 1 runtime failure, 2 usage error).

import { parseCommandLine, type RunConfig, unknownEnvVars } from "./lib/options.ts";
import { closeLogging, LogFileError, serverLog, setupLogging } from "./lib/log.ts";
import { ListenError } from "./lib/listen.ts";
import { createServer } from "./lib/workers.ts";
import { VERSION } from "./lib/version.ts";

/** The signals that ask for a stop: Ctrl+C everywhere, SIGTERM on Unix, Ctrl+Break on Windows. */
const STOP_SIGNALS: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT", "SIGBREAK"] : ["SIGINT", "SIGTERM"];

/**
 * Runs the server in the foreground until a stop signal: the first stops gracefully, a second at once.
 *
 * @param config the validated configuration
 * @returns the process exit code
 */
export async function runForeground(config: RunConfig): Promise<number> {
  try {
    await setupLogging(config.log);
  } catch (error) {
    if (!(error instanceof LogFileError)) throw error;
    console.error(`echosrv: ${error.message}`);
    return 1;
  }
  // A rejection nobody handled would kill the process and every connection with it; log it and keep serving.
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    serverLog.error("internal error (please report it): {error}", { error: String(event.reason) });
  });
  serverLog.info("echosrv {version} starting (Deno {deno}, {os})", {
    version: VERSION,
    deno: Deno.version.deno,
    os: Deno.build.os,
  });
  for (const name of unknownEnvVars(Deno.env.toObject())) {
    serverLog.warn("ignoring the environment variable {name}: no option reads it (see --help)", { name });
  }

  const server = createServer(config); // one EchoServer, or --workers of them (lib/workers.ts)
  try {
    await server.start();
  } catch (error) {
    if (!(error instanceof ListenError)) throw error;
    serverLog.error("{message}", { message: error.message });
    await closeLogging();
    return 1;
  }

  let signals = 0;
  const onSignal = () => {
    signals++;
    if (signals === 1) {
      serverLog.info("stop requested; a second Ctrl+C or SIGTERM stops at once");
      server.stop();
    } else {
      serverLog.info("second stop request: closing every connection now");
      server.stop(0);
    }
  };
  for (const signal of STOP_SIGNALS) Deno.addSignalListener(signal, onSignal);
  await server.finished;
  for (const signal of STOP_SIGNALS) Deno.removeSignalListener(signal, onSignal);
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
  return await runForeground(what.config);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
