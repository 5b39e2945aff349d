// server_process: echosrv started as a process exactly as `deno task start` starts it (the task's own command line and
// environment, read from deno.json), with JSON logs, and read while it runs: its log records, its exit. Shared by the
// tests and the stress run.

import denoJson from "../deno.json" with { type: "json" };
import { fileURLToPath } from "node:url";
import { within } from "./time.ts";

/**
 * The project root, where `deno task start` runs, as a file path ending in the path separator. (A file URL's
 * `pathname` is no path on Windows: `/C:/src/` or, under Wine, `/Z:/w/p/`.)
 */
export const ROOT: string = fileURLToPath(new URL("..", import.meta.url));

/** The arguments `deno task start` passes to deno, e.g. `run --allow-net ... main.ts`. */
export function startTaskArgs(): string[] {
  return taskArgs("start");
}

/** The environment a task's command line sets before `deno` (`NAME=value deno run ...`), as deno task sets it. */
export function taskEnv(task: keyof typeof denoJson.tasks): Record<string, string> {
  const words = denoJson.tasks[task].split(/\s+/);
  return Object.fromEntries(words.slice(0, words.indexOf("deno")).map((w) => w.split("=", 2) as [string, string]));
}

/** The arguments a deno.json task passes to deno, e.g. `service`: `run --allow-net ... main.ts service`. */
export function taskArgs(task: keyof typeof denoJson.tasks): string[] {
  const words = denoJson.tasks[task].split(/\s+/);
  return words.slice(words.indexOf("deno") + 1);
}

/** A JSON log record as `--log-format json` writes it. */
export interface LogLine {
  "@timestamp": string;
  level: string;
  logger: string;
  message: string;
  properties: Record<string, unknown>;
}

/** An echosrv process started by a test. */
export class ServerProcess {
  /** Every line of standard output so far. */
  readonly lines: string[] = [];
  /** Standard error so far. */
  stderr = "";
  /** The port from the "echoing on port" line (0 until started). */
  port = 0;
  readonly #child: Deno.ChildProcess;
  readonly #done: Promise<void>;
  #waiters: Array<() => void> = [];
  #status: Deno.CommandStatus | undefined;

  constructor(child: Deno.ChildProcess) {
    this.#child = child;
    const out = this.#pump(child.stdout, (text) => {
      for (const line of text.split("\n")) if (line !== "") this.lines.push(line);
    });
    const err = this.#pump(child.stderr, (text) => this.stderr += text);
    this.#done = Promise.all([out, err, child.status.then((s) => this.#status = s)]).then(() => this.#wake());
  }

  /** The process id. */
  get pid(): number {
    return this.#child.pid;
  }

  async #pump(stream: ReadableStream<Uint8Array>, sink: (text: string) => void): Promise<void> {
    let partial = "";
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      const text = partial + decoder.decode(chunk, { stream: true });
      const cut = text.lastIndexOf("\n");
      partial = text.slice(cut + 1);
      if (cut >= 0) sink(text.slice(0, cut + 1));
      this.#wake();
    }
    if (partial) sink(partial);
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  /** The log lines parsed as JSON (throws if one is not JSON: the JSON format promises nothing else). */
  records(): LogLine[] {
    return this.lines.map((line) => JSON.parse(line) as LogLine);
  }

  /** Waits for a log line (parsed as JSON) that satisfies `match`; fails if the process exits first. */
  async waitFor(match: (record: LogLine) => boolean, what: string, ms = 20_000): Promise<LogLine> {
    return await within(
      ms,
      `waiting for ${what}; output so far:\n${this.lines.join("\n")}\n${this.stderr}`,
      (async () => {
        for (let seen = 0;;) {
          for (; seen < this.lines.length; seen++) {
            const record = JSON.parse(this.lines[seen]) as LogLine;
            if (match(record)) return record;
          }
          if (this.#status) {
            throw new Error(
              `echosrv exited (${this.#status.code}) before ${what}:\n${this.lines.join("\n")}\n${this.stderr}`,
            );
          }
          await new Promise<void>((resolve) => this.#waiters.push(resolve));
        }
      })(),
    );
  }

  /** Sends a signal (ignored if the process has already exited). */
  signal(signal: Deno.Signal): void {
    try {
      this.#child.kill(signal);
    } catch {
      // already gone
    }
  }

  /** Waits for the process to exit (all output read) and returns its exit code. */
  async exited(ms = 30_000): Promise<number> {
    await within(ms, "echosrv to exit", this.#done);
    return this.#status!.code;
  }

  /** Kills the process if still running and waits for it: for `finally` blocks. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#status) this.signal("SIGKILL");
    await this.#done;
  }
}

/** Options for {@link spawnServer}. */
export interface SpawnOptions {
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Wrap the command, e.g. `["prlimit", "--nofile=64"]`. */
  wrapper?: string[];
  /** Do not wait for the "echoing on port" line (for tests of startup failures). */
  noWait?: boolean;
  /** Deno's arguments before the server's own, instead of the start task's (e.g. without `--unstable-net`). */
  runArgs?: string[];
  /**
   * The whole command line before the server's own arguments, instead of `deno run` with the start task's flags
   * (e.g. `setsid deno task start`, to run it the way a terminal does).
   */
  command?: string[];
  /**
   * Keep the default `--workers` (one per core on Linux). Otherwise a test that does not choose a worker count runs
   * one loop (`--workers 1`), so that what it checks (log lines, counters) does not depend on the machine's cores;
   * tests/workers_test.ts and tests/default_workers_test.ts run the default and several workers.
   */
  defaultWorkers?: boolean;
}

/** `args` with `--workers 1` in front unless they (or the environment) choose a worker count. */
export function oneLoopUnlessChosen(args: string[], env: Record<string, string> = {}): string[] {
  const chosen = args.some((a) => a === "--workers" || a.startsWith("--workers=")) || "ECHOSRV_WORKERS" in env;
  return chosen ? args : ["--workers", "1", ...args];
}

/**
 * Starts echosrv the way `deno task start <args>` does, with JSON logs, and waits until it serves.
 * Tests pass `--port 0` (never a fixed port) and loopback hosts.
 */
export async function spawnServer(args: string[], options: SpawnOptions = {}): Promise<ServerProcess> {
  if (!options.defaultWorkers) args = oneLoopUnlessChosen(args, options.env);
  const argv = [...(options.runArgs ?? startTaskArgs()), "--log-format", "json", ...args];
  const [cmd, ...rest] = options.command
    ? [...options.command, "--log-format", "json", ...args]
    : options.wrapper
    ? [...options.wrapper, Deno.execPath(), ...argv]
    : [Deno.execPath(), ...argv];
  const child = new Deno.Command(cmd, {
    args: rest,
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...(options.runArgs || options.command ? {} : taskEnv("start")), ...options.env },
  }).spawn();
  const server = new ServerProcess(child);
  if (!options.noWait) {
    const ready = await server.waitFor((r) => r.message.startsWith("echoing on port"), "the server to start");
    server.port = ready.properties.port as number;
  }
  return server;
}
