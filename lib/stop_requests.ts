// stop_requests: what asks echosrv to stop, turned into one decision per request. Supervisors deliver stop signals
// in different ways: a terminal's Ctrl+C, `timeout` and systemd's default KillMode signal the whole process group, so
// a server started through `deno task` gets the signal once from the sender and once more from `deno task`, which
// forwards it (a few milliseconds apart); Docker (PID 1) and `kill PID` signal one process once. This module makes
// both one graceful stop: a repeat of a stop signal within {@link SAME_REQUEST_WINDOW_MS} of the latest request that
// decided something is the same request, and only a later, deliberate one stops at once (whose own copy, again, is
// the same request). It also stops the server when the terminal hangs up
// (SIGHUP, when a terminal is attached; without one a SIGHUP is ignored, as `nohup` users expect) and when the `npx` process of the quick start is killed (npm does not pass
// the signal on, so the server would otherwise be left running with no parent, holding its port; found with `ps`).

/**
 * A repeat of a stop signal this soon after the latest request that decided something (the first, graceful; a
 * deliberate second, at once) is that request, delivered twice (milliseconds).
 */
export const SAME_REQUEST_WINDOW_MS = 1000;

/** How often the launcher watch looks for the `npx` process (milliseconds). */
export const LAUNCHER_POLL_MS = 1000;

/** What asked for the stop: a signal's name, or the launcher that went away. */
export type StopSource = Deno.Signal | "launcher gone";

/** What a stop request means for the server. */
export type StopDecision =
  /** The first request: stop accepting, let open sessions finish within --shutdown-timeout. */
  | "graceful"
  /** A deliberate later request: close every connection now. */
  | "immediate"
  /** The latest request again (the process group's copy, or a hang-up during a stop): nothing new to do. */
  | "repeat";

/**
 * Decides what each stop request means. The first asks for a graceful stop. A stop signal (SIGINT, SIGTERM,
 * SIGBREAK) that arrives at least {@link SAME_REQUEST_WINDOW_MS} after the latest decisive request (the first, or
 * a deliberate second) stops at once; within the window it is that request again: under `deno task` the process
 * group gets every Ctrl+C twice, the second one's included. Copies do not stretch the window: it counts from the
 * decisive request. A hang-up or a vanished launcher asks for a graceful stop and never forces one: nobody pressed
 * anything.
 *
 * @example
 * ```ts
 * const requests = new StopRequests();
 * requests.decide("SIGINT"); // "graceful"
 * requests.decide("SIGINT"); // "repeat" (the copy sent by `deno task`, milliseconds later)
 * // a second or more later:
 * requests.decide("SIGINT"); // "immediate"
 * requests.decide("SIGINT"); // "repeat" (that one's copy)
 * ```
 */
export class StopRequests {
  /** When the latest decisive request (graceful or immediate) came; undefined before the first. */
  #latest: number | undefined;
  readonly #now: () => number;
  readonly #windowMs: number;

  /**
   * A decider that has seen no request yet.
   *
   * @param now the clock, in milliseconds (tests drive it)
   * @param windowMs the same-request window, in milliseconds
   */
  constructor(now: () => number = () => performance.now(), windowMs = SAME_REQUEST_WINDOW_MS) {
    this.#now = now;
    this.#windowMs = windowMs;
  }

  /**
   * Decides what one request means.
   *
   * @param source what asked
   * @returns what the server should do about it
   */
  decide(source: StopSource): StopDecision {
    const now = this.#now();
    if (this.#latest === undefined) {
      this.#latest = now;
      return "graceful";
    }
    if (source === "SIGHUP" || source === "launcher gone") return "repeat";
    if (now - this.#latest < this.#windowMs) return "repeat";
    this.#latest = now;
    return "immediate";
  }
}

/**
 * Names a stop request's source for the log.
 *
 * @param source what asked
 * @returns a few words
 */
export function describeStopSource(source: StopSource): string {
  if (source === "launcher gone") return "the npx process that started echosrv has ended";
  if (source === "SIGHUP") return "SIGHUP: the terminal was closed";
  return source;
}

/**
 * The stop signals of this OS: Ctrl+C everywhere, SIGTERM and SIGHUP on Unix, Ctrl+Break on Windows. SIGHUP is
 * always listened for: Deno catches it itself and ends the process at once otherwise, even under `nohup`.
 *
 * @param os the operating system
 * @returns the signals to listen for
 */
export function stopSignals(os: string = Deno.build.os): Deno.Signal[] {
  return os === "windows" ? ["SIGINT", "SIGBREAK"] : ["SIGINT", "SIGTERM", "SIGHUP"];
}

/**
 * Whether a terminal is attached (standard input, output or error is one). A hang-up stops the server only then:
 * without a terminal (`nohup`, a service, a pipe), SIGHUP is not about this process, and `nohup` users asked for the
 * server to outlive the terminal.
 *
 * @returns true when a terminal is attached
 */
export function hasTerminal(): boolean {
  return Deno.stdin.isTerminal() || Deno.stdout.isTerminal() || Deno.stderr.isTerminal();
}

/**
 * Calls `onRequest` for every stop signal and for the end of the quick start's `npx` process, with what the request
 * means (see {@link StopRequests}); a SIGHUP without a terminal is passed on as "ignored".
 *
 * The function it returns ends the listening, but leaves the signal listeners in place, doing nothing, until the
 * process exits: a stop signal's default action is to kill the process, and the copy of a stop signal that
 * `deno task` forwards can arrive while the stopped server exits (a few milliseconds late, or more on a busy
 * machine), which would turn a clean exit 0 into a death by the signal (status 130 for SIGINT).
 *
 * @param onRequest called on the JavaScript thread for each request
 * @param terminal whether a terminal is attached (see {@link hasTerminal})
 * @returns a function that stops the watch and makes later stop signals do nothing (call it once the server has
 *   stopped, then exit)
 */
export function listenForStopRequests(
  onRequest: (decision: StopDecision | "ignored", source: StopSource) => void,
  terminal: boolean = hasTerminal(),
): () => void {
  const requests = new StopRequests();
  let ended = false;
  for (const signal of stopSignals()) {
    Deno.addSignalListener(signal, () => {
      if (ended) return;
      if (signal === "SIGHUP" && !terminal) onRequest("ignored", signal);
      else onRequest(requests.decide(signal), signal);
    });
  }
  const launcher = new LauncherWatch(() => onRequest(requests.decide("launcher gone"), "launcher gone"));
  return () => {
    ended = true;
    launcher.stop();
  };
}

/** One process as `ps` shows it. */
export interface ProcessEntry {
  /** Its process id. */
  pid: number;
  /** Its parent's process id. */
  ppid: number;
  /** When it started: tells a process apart from a later one that reuses its pid. */
  started: string;
  /** Its command line. */
  command: string;
}

/**
 * Lists processes with `ps` (Linux and macOS). Deno lets a program read /proc only with --allow-all, so this asks
 * `ps`, which the start task may run (`--allow-run=ps`).
 */
async function listProcesses(pids?: number[]): Promise<ProcessEntry[] | undefined> {
  const select = pids ? ["-p", pids.join(",")] : ["-A"];
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("ps", {
      args: ["-o", "pid=,ppid=,lstart=,args=", ...select],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
      env: { LC_ALL: "C" },
    }).output();
  } catch {
    return undefined; // no `ps` here, or no permission to run it
  }
  const entries: ProcessEntry[] = [];
  for (const line of new TextDecoder().decode(output.stdout).split("\n")) {
    // lstart is always five words: "Mon Nov 30 22:50:33 2026".
    const match = /^\s*(\d+)\s+(\d+)\s+(\S+\s+\S+\s+\S+\s+\S+\s+\S+)\s+(.*)$/.exec(line);
    if (match) entries.push({ pid: +match[1], ppid: +match[2], started: match[3], command: match[4] });
  }
  return entries;
}

/**
 * Finds the `npm exec` (npx) process among `processes`' ancestors of `pid`.
 *
 * @param processes the process list
 * @param pid where to start (this process's parent)
 * @returns the launcher, or undefined
 */
export function findLauncher(processes: ProcessEntry[], pid: number): ProcessEntry | undefined {
  const byPid = new Map(processes.map((p) => [p.pid, p]));
  for (let depth = 0; depth < 8 && pid > 1; depth++) {
    const entry = byPid.get(pid);
    if (!entry) return undefined;
    if (/^(npm exec|npx)\b/.test(entry.command)) return entry;
    pid = entry.ppid;
  }
  return undefined;
}

/**
 * Watches the quick start's `npx` process (npm sets `npm_command=exec` for what it runs) and calls `onGone` once if it
 * ends while this process still runs: npm does not pass a SIGTERM on to the task it runs, so without this the server
 * would be left running with no parent, holding its port. Checks every {@link LAUNCHER_POLL_MS}; does nothing when
 * not started through npx, or where `ps` cannot be run.
 */
class LauncherWatch {
  #timer: ReturnType<typeof setInterval> | undefined;
  #stopped = false;

  constructor(onGone: () => void) {
    if (Deno.build.os === "windows" || envValue("npm_command") !== "exec") return;
    void this.#start(onGone);
  }

  async #start(onGone: () => void): Promise<void> {
    const launcher = findLauncher(await listProcesses() ?? [], Deno.ppid);
    if (!launcher || this.#stopped) return;
    let checking = false;
    this.#timer = setInterval(async () => {
      if (checking) return;
      checking = true;
      const now = await listProcesses([launcher.pid]);
      checking = false;
      if (this.#stopped || now === undefined || now.some((p) => p.started === launcher.started)) return;
      this.stop();
      onGone();
    }, LAUNCHER_POLL_MS);
    Deno.unrefTimer(this.#timer);
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
  }
}

function envValue(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}
