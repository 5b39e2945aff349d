// program: echosrv started from a configuration, the part that the console (lib/service/console.ts) and the Windows
// service (lib/service/windows_program.ts) share: logging, the startup lines, the TCP server listening, and the
// optional UDP echo and metrics endpoint (with its status page) beside it. Each caller adds its own way of being
// told to stop and of reporting the outcome.

import type { RunConfig } from "./config.ts";
import { unknownEnvVars } from "./environment.ts";
import { closeLogging, LogFileError, type LogTargets, serverLog, setupLogging } from "./log.ts";
import { ListenError } from "./listen.ts";
import { type MetricsServer, type MetricsSource, serveMetrics, serverSource, udpSource } from "./metrics.ts";
import { EchoServer } from "./server.ts";
import { statusInfoOf, statusPage } from "./status_page.ts";
import { createServer, type Server, WorkerPool } from "./workers.ts";
import { UdpEcho } from "./udp.ts";
import { VERSION } from "./version.ts";
import { IO_EVENTS, IO_EVENTS_VAR, ioEventsAtStart } from "./runtime.ts";
import { type RunningFaults, startFaults } from "./faults/program.ts";

/** A started echosrv: the TCP server and what runs beside it, stopped and awaited as one. */
export interface RunningProgram {
  /** The TCP echo server: one EchoServer, or a pool of `--workers` of them. */
  readonly server: Server;
  /**
   * Stops gracefully (see {@link EchoServer.stop}): UDP stops at once (it has no sessions to drain); the metrics
   * endpoint keeps answering (/healthz 503) until the TCP sessions are gone.
   */
  stop(graceMs?: number): void;
  /** Stops at once, or cuts a graceful stop short (see {@link EchoServer.stopNow}). */
  stopNow(): void;
  /** Resolves when everything is closed; then call {@link closeLogging}. */
  readonly finished: Promise<void>;
}

/** The outcome of {@link startProgram}. */
export type ProgramStart =
  /** Listening; stop it with `program.stop()`, wait with `program.finished`, then {@link closeLogging}. */
  | { ok: true; program: RunningProgram }
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
 * import { closeLogging } from "./log.ts";
 * import { parseCommandLine } from "./options.ts";
 *
 * const parsed = parseCommandLine(["--port", "0", "--host", "127.0.0.1"]);
 * if (parsed.kind === "run") {
 *   const started = await startProgram(parsed.config);
 *   if (started.ok) {
 *     started.program.stop();
 *     await started.program.finished;
 *     await closeLogging(); // writes out what is buffered
 *   } else console.error(started.message);
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

  const server = createServer(config); // one EchoServer, or --workers of them (lib/workers.ts)
  if (server instanceof EchoServer && ioEventsAtStart === undefined) {
    serverLog.warn(
      "started without {variable}={value} in its environment: with hundreds of busy connections some would wait far " +
        "longer than the rest (docs/latency-under-load.md). `deno task start`, the services `echosrv service install` " +
        "makes and the Dockerfile set it; set it before starting echosrv another way (workers set it themselves)",
      { variable: IO_EVENTS_VAR, value: IO_EVENTS },
    );
  }
  const { udp: udpConfig, access } = config.server;
  const udp = udpConfig
    ? new UdpEcho({ hosts: config.server.hosts, ratePerSource: udpConfig.ratePerSource, ...access })
    : undefined;
  let metrics: MetricsServer | undefined;
  let faults: RunningFaults | undefined; // issue 14: the fault control API (lib/faults/program.ts)
  try {
    const { port } = await server.start();
    await udp?.start(port);
    if (config.metrics) {
      const workers = server instanceof WorkerPool ? config.workers : 1;
      const page = statusPage(statusInfoOf(config, port, workers));
      metrics = serveMetrics(config.metrics, metricsSources(server, udp), page);
    }
    faults = startFaults(config.server.faults, server);
  } catch (error) {
    if (!(error instanceof ListenError)) throw error;
    serverLog.error("{message}", { message: error.message });
    await Promise.all([server.stopNow(), udp?.close(), metrics?.close(), faults?.close()]);
    await closeLogging();
    return { ok: false, exitCode: 1, message: error.message, logged: true };
  }
  const finished = server.finished.then(() => Promise.all([udp?.close(), metrics?.close(), faults?.close()])).then(
    () => {},
  );
  const program: RunningProgram = {
    server,
    stop(graceMs?: number) {
      void server.stop(graceMs);
      void udp?.close();
    },
    stopNow() {
      void server.stopNow();
      void udp?.close();
    },
    finished,
  };
  return { ok: true, program };
}

/** Where /metrics reads: the server (each worker, when there are several) and the UDP echo. */
function metricsSources(server: Server, udp: UdpEcho | undefined): MetricsSource[] {
  if (server instanceof EchoServer) return [serverSource(server, udp)];
  const sources = server instanceof WorkerPool ? server.metricsSources() : [];
  return udp ? [...sources, udpSource(udp)] : sources;
}
