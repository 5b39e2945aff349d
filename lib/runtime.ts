// runtime: how the server's Deno runtime must be set up before any of echosrv runs, and whether it was. Deno serves
// every pending read of a thread from one Tokio task with a budget of 128 polls a turn, behind up to 1024 sockets
// woken per turn; above 128 busy connections per thread some connections then wait hundreds of milliseconds while
// the rest are served (docs/latency-under-load.md). DENO_TOKIO_MAX_IO_EVENTS_PER_TICK=64, read by Deno when it
// creates a thread's runtime, removes that tail. The main thread reads it only at process start, so the start
// task, the service units and the Dockerfile set it; each worker's runtime reads it when the worker is spawned, so
// the worker pool sets it itself, which reaches every way echosrv starts, the compiled executable included. Also here:
// whether this runtime can run workers at all (SO_REUSEPORT needs Linux and --unstable-net), and so how many
// workers `auto`, the default, means.

/** The variable Deno reads when it creates a thread's Tokio runtime (undocumented; Deno's default is 1024). */
export const IO_EVENTS_VAR = "DENO_TOKIO_MAX_IO_EVENTS_PER_TICK";
/** Its value for echosrv: half of Tokio's budget of 128, chosen by measurement (docs/latency-under-load.md). */
export const IO_EVENTS = "64";
/** The environment the server's process must start with (the start task, service units, Dockerfile). */
export const SERVER_ENV: Readonly<Record<string, string>> = { [IO_EVENTS_VAR]: IO_EVENTS };

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
