// runtime: how the server's Deno runtime must be set up before any of echosrv runs, and whether it was. Deno serves
// every pending read of a thread from one Tokio task with a budget of 128 polls a turn, behind up to 1024 sockets
// woken per turn; above 128 busy connections per thread some connections then wait hundreds of milliseconds while
// the rest are served (docs/latency-under-load.md). DENO_TOKIO_MAX_IO_EVENTS_PER_TICK=64, read by Deno when it
// creates a thread's runtime, removes that tail. The main thread reads it only at process start, so the start
// task, the Dockerfile and the services `echosrv service install` makes set it (the systemd unit's Environment=,
// the launchd property list's EnvironmentVariables, the Windows service's REG_MULTI_SZ registry value Environment);
// each worker's runtime reads it when the worker is spawned, so the worker pool sets it itself, which reaches every
// way echosrv starts, the compiled executable included. Also here:
// the Deno flags the server runs with (SERVER_FLAGS: one definition that deno.json's tasks, the service files, the
// compiled executable and the Dockerfile follow, checked by tests/runtime_test.ts), whether this runtime can run
// workers at all (SO_REUSEPORT needs Linux and --unstable-net), and so how many workers `auto`, the default, means.

/** The variable Deno reads when it creates a thread's Tokio runtime (undocumented; Deno's default is 1024). */
export const IO_EVENTS_VAR = "DENO_TOKIO_MAX_IO_EVENTS_PER_TICK";
/** Its value for echosrv: half of Tokio's budget of 128, chosen by measurement (docs/latency-under-load.md). */
export const IO_EVENTS = "64";
/**
 * The environment the server's process must start with. Set by the start task (deno.json), the Dockerfile (ENV), the
 * systemd unit (Environment=, lib/service/systemd.ts), the launchd property list (EnvironmentVariables,
 * lib/service/launchd.ts) and the Windows service (the REG_MULTI_SZ value Environment of its registry key, which the
 * SCM merges into its process's environment: lib/service/windows.ts); tests/runtime_test.ts checks each of them.
 */
export const SERVER_ENV: Readonly<Record<string, string>> = { [IO_EVENTS_VAR]: IO_EVENTS };

/**
 * The Deno flags the server runs with, however it starts: `deno task start` (which adds `--quiet` and
 * `--allow-run=ps`, for the quick start's npx watch of lib/stop_requests.ts), the service's command line (systemd,
 * launchd, Windows), the compiled executable and the Dockerfile. `--unstable-net`: `--udp` opens its sockets with
 * Deno.listenDatagram and `--workers` shares a port with reusePort, both unstable. `--max-semi-space-size=4`: V8's
 * young generation capped at 4 MiB semi-spaces keeps idle connections at about 6.7 KiB each instead of 8.6
 * (measured with `deno task bench`, GC cost about 1%). Then the network, the settings, the log file and the TLS
 * files.
 */
export const SERVER_FLAGS: readonly string[] = [
  "--unstable-net",
  "--v8-flags=--max-semi-space-size=4",
  "--allow-net",
  "--allow-env",
  "--allow-read",
  "--allow-write",
];

/**
 * The Deno flags of the server on `os`: {@link SERVER_FLAGS}, and on Windows `--allow-ffi`, with which a service
 * talks to the Service Control Manager (lib/service/scm.ts) and writes the event log.
 *
 * @param os the system the server runs on
 * @returns the flags, in order
 */
export function serverFlags(os: typeof Deno.build.os): string[] {
  return os === "windows" ? [...SERVER_FLAGS, "--allow-ffi"] : [...SERVER_FLAGS];
}

function readVar(): string | undefined {
  try {
    return Deno.env.get(IO_EVENTS_VAR);
  } catch {
    return undefined; // no --allow-env for it: treated as not set
  }
}

/** The value the main thread's runtime was created with (read when this module loads, before anything sets it). */
export const ioEventsAtStart: string | undefined = readVar();

/**
 * Makes sure the workers about to be spawned get the setting: sets the variable in this process's environment when
 * it is not there (a worker's runtime reads it at spawn). A value the user set is kept.
 *
 * @returns the value the workers will get, or undefined when it cannot be set (no --allow-env)
 */
export function settingForWorkers(): string | undefined {
  const current = readVar();
  if (current !== undefined) return current;
  try {
    Deno.env.set(IO_EVENTS_VAR, IO_EVENTS);
    return IO_EVENTS;
  } catch {
    return undefined;
  }
}

/**
 * Why `--workers` above 1 cannot be honoured here, or undefined when it can.
 *
 * @param os the operating system (Deno.build.os)
 * @param unstableNet whether Deno runs with `--unstable-net`
 * @returns the reason, in words for the log
 */
export function reusePortUnavailable(os: string = Deno.build.os, unstableNet = hasUnstableNet()): string | undefined {
  if (os !== "linux") {
    return `SO_REUSEPORT, which spreads one port's connections over several listeners, works only on Linux (this is ${os})`;
  }
  if (!unstableNet) {
    return "Deno was started without --unstable-net, which SO_REUSEPORT (Deno.listen's reusePort) needs; " +
      "`deno task start` passes it, or add it to `deno run`";
  }
  return undefined;
}

/**
 * True when Deno runs with `--unstable-net`. Asking Deno.listen for reusePort without it would exit the process, so
 * this looks for an API that Deno exposes only under that flag.
 */
export function hasUnstableNet(): boolean {
  return typeof (Deno as unknown as { listenDatagram?: unknown }).listenDatagram === "function";
}

/**
 * The most workers `auto` (the default) starts: each costs about 18 MB more memory (its own V8 isolate), and one
 * echosrv process rarely needs more than 16 cores' worth of echo; a larger `--workers N` is taken as given.
 */
export const MAX_AUTO_WORKERS = 16;

/**
 * What `--workers auto` means here: one per core, at most {@link MAX_AUTO_WORKERS}, where workers can run (see
 * {@link reusePortUnavailable}); 1 elsewhere (one loop in the main thread).
 *
 * @param cores the machine's logical cores (navigator.hardwareConcurrency)
 * @returns the worker count
 */
export function autoWorkers(cores: number = navigator.hardwareConcurrency || 1): number {
  if (reusePortUnavailable() !== undefined) return 1;
  return Math.max(1, Math.min(cores, MAX_AUTO_WORKERS));
}
