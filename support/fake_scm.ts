// fake_scm: the Windows service manager as the tests stand it up on Linux, shared by tests/scm_test.ts,
// tests/windows_service_test.ts and the stress suite's stop through the service manager (stress/service_stop.ts). It
// builds support/fixtures/fake_advapi32.c with `cc`, starts echosrv with the command line `echosrv service install`
// registers from source (its FFI calls going to that stand-in), sends it control codes through a FIFO, and reads back
// what the stand-in recorded: every status report with its state, checkpoint and wait hint, the threads that did
// what, and the events written. It also runs `echosrv service ...` as on Windows against the stand-in's service
// database (FakeScmHost). And it holds a reference reader of Windows command lines (commandLineToArgv).

import assert from "node:assert/strict";
import { join } from "node:path";
import { launchArgs, type Launcher } from "../lib/service/launcher.ts";
import { serverFlags } from "../lib/runtime.ts";
import { ServiceState } from "../lib/service/scm.ts";
import { ROOT, ServerProcess } from "./server_process.ts";
import { waitUntil, within } from "./time.ts";

let built: Promise<{ library: string } | { reason: string }> | undefined;
let fakeLibrary: string | undefined;

/**
 * Builds the stand-in advapi32 (once per process).
 *
 * @returns the shared library's path, or why it cannot be built here (not Linux, no C compiler)
 */
export function buildFakeAdvapi32(): Promise<{ library: string } | { reason: string }> {
  built ??= (async () => {
    if (Deno.build.os !== "linux") return { reason: "the stand-in advapi32 is built for Linux only" };
    const dir = await Deno.makeTempDir({ prefix: "echosrv-fake-scm-" });
    const library = join(dir, "fake_advapi32.so");
    try {
      const out = await new Deno.Command("cc", {
        args: ["-shared", "-fPIC", "-O2", "-o", library, join(ROOT, "support/fixtures/fake_advapi32.c"), "-lpthread"],
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (out.code !== 0) throw new Error(new TextDecoder().decode(out.stderr));
      fakeLibrary = library;
      return { library };
    } catch (error) {
      return {
        reason: `cannot build the stand-in advapi32 with cc (${(error as Error).message.trim()}); ` +
          "install a C compiler (apt-get install gcc libc6-dev)",
      };
    }
  })();
  return built;
}

/** One line of the stand-in's record: when (ms since it loaded), on which thread, what, and the details. */
export interface ScmEvent {
  t: number;
  thread: string;
  event: string;
  fields: Record<string, string>;
}

/**
 * Reads the stand-in's record: `<ms> <thread> <event> key=value ...`, where a `message=` field, always last, takes
 * the rest of the line (with `\n` for its line breaks).
 */
export function parseRecord(text: string): ScmEvent[] {
  return text.split("\n").filter((line) => line.trim() !== "").map((line) => {
    const messageAt = line.indexOf(" message=");
    const head = messageAt < 0 ? line : line.slice(0, messageAt);
    const [t, thread, event, ...rest] = head.split(" ");
    const fields: Record<string, string> = {};
    for (const pair of rest) {
      const cut = pair.indexOf("=");
      fields[pair.slice(0, cut)] = pair.slice(cut + 1);
    }
    if (messageAt >= 0) fields.message = line.slice(messageAt + 9).replaceAll("\\n", "\n");
    return { t: Number(t), thread, event, fields };
  });
}

/** A status report, as numbers. */
export interface StatusReport {
  t: number;
  state: number;
  accepts: number;
  win32: number;
  specific: number;
  checkpoint: number;
  hint: number;
}

export const STATE_NAMES: Record<number, string> = {
  1: "STOPPED",
  2: "START_PENDING",
  3: "STOP_PENDING",
  4: "RUNNING",
};

/** echosrv started by the stand-in SCM. */
export class FakeScmService implements AsyncDisposable {
  /** The exit code once the process has exited, so waits fail at once instead of timing out. */
  #exitCode: number | undefined;
  readonly #exitWatch: Promise<void>;

  constructor(
    readonly process: ServerProcess,
    readonly dir: string,
    readonly recordPath: string,
    readonly controlPath: string,
    readonly logPath: string,
  ) {
    this.#exitWatch = process.exited(300_000).then((code) => void (this.#exitCode = code), () => {});
  }

  #failIfExited(what: string): void {
    if (this.#exitCode === undefined) return;
    throw new Error(
      `echosrv exited (${this.#exitCode}) before ${what}:\n${this.process.stderr}\nrecord:\n${this.describe()}`,
    );
  }

  events(): ScmEvent[] {
    let text = "";
    try {
      text = Deno.readTextFileSync(this.recordPath);
    } catch {
      return [];
    }
    return parseRecord(text);
  }

  statuses(): StatusReport[] {
    return this.events().filter((e) => e.event === "status").map((e) => ({
      t: e.t,
      state: Number(e.fields.state),
      accepts: Number(e.fields.accepts),
      win32: Number(e.fields.win32),
      specific: Number(e.fields.specific),
      checkpoint: Number(e.fields.checkpoint),
      hint: Number(e.fields.hint),
    }));
  }

  /** Waits (bounded) until an event satisfies `match`; fails early if the process exits first. */
  async waitForEvent(match: (e: ScmEvent) => boolean, what: string, ms = 30_000): Promise<ScmEvent> {
    let found: ScmEvent | undefined;
    await within(
      ms,
      `${what}; record so far:\n${this.describe()}`,
      waitUntil(() => {
        found = this.events().find(match);
        if (found === undefined) this.#failIfExited(what);
        return found !== undefined;
      }),
    );
    return found!;
  }

  async waitForState(state: number, ms = 30_000): Promise<StatusReport> {
    await this.waitForEvent(
      (e) => e.event === "status" && Number(e.fields.state) === state,
      `status ${STATE_NAMES[state]}`,
      ms,
    );
    return this.statuses().find((s) => s.state === state)!;
  }

  /** Sends a control code, as `sc stop` / `sc interrogate` / a shutdown would. */
  async control(code: number): Promise<void> {
    const fifo = await Deno.open(this.controlPath, { write: true });
    try {
      await fifo.write(new TextEncoder().encode(`${code}\n`));
    } finally {
      fifo.close();
    }
  }

  /** The port from the "echoing on port" line of the JSON log file. */
  async port(): Promise<number> {
    let port = 0;
    await within(
      20_000,
      `the "echoing on port" line in ${this.logPath}`,
      waitUntil(() => {
        try {
          const match = /"message":"echoing on port (\d+)/.exec(Deno.readTextFileSync(this.logPath));
          if (match) port = Number(match[1]);
        } catch {
          // not written yet
        }
        if (port === 0) this.#failIfExited("serving");
        return port > 0;
      }),
    );
    return port;
  }

  describe(): string {
    try {
      return Deno.readTextFileSync(this.recordPath);
    } catch {
      return "(nothing recorded)";
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.process[Symbol.asyncDispose]();
    await this.#exitWatch;
    await Deno.remove(this.dir, { recursive: true });
  }
}

/**
 * Starts echosrv as the SCM would start the service `echosrv service install` registers from source: the same
 * command line (deno run, the Windows permissions, main.ts, `--service`, the server options), with FFI pointed at
 * the stand-in.
 */
export async function startUnderFakeScm(
  serverArgs: string[],
  options: { env?: Record<string, string>; marker?: boolean; logFile?: boolean } = {},
): Promise<FakeScmService> {
  const library = fakeLibrary;
  if (library === undefined) throw new Error("build the stand-in advapi32 first (buildFakeAdvapi32)");
  const dir = await Deno.makeTempDir({ prefix: "echosrv-scm-" });
  const recordPath = join(dir, "scm.record");
  const controlPath = join(dir, "control.fifo");
  const logPath = join(dir, "service.log");
  const mkfifo = await new Deno.Command("mkfifo", { args: [controlPath] }).output();
  assert.equal(mkfifo.code, 0, "mkfifo");
  const launcher: Launcher = {
    kind: "source",
    deno: Deno.execPath(),
    config: join(ROOT, "deno.json"),
    main: join(ROOT, "main.ts"),
  };
  const [program, ...launch] = launchArgs(launcher, "windows");
  assert.ok(launch.includes("--allow-ffi"), "the Windows service command line grants FFI");
  const args = [
    ...launch,
    ...(options.marker === false ? [] : ["--service"]),
    ...serverArgs,
    ...(options.logFile === false ? [] : ["--log-file", logPath, "--log-format", "json"]),
  ];
  const child = new Deno.Command(program, {
    args,
    cwd: dir,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: {
      NO_COLOR: "1",
      _ECHOSRV_TEST_SCM_LIBRARY: library,
      FAKE_SCM_LOG: recordPath,
      FAKE_SCM_CONTROL: controlPath,
      ...options.env,
    },
  }).spawn();
  return new FakeScmService(new ServerProcess(child), dir, recordPath, controlPath, logPath);
}

/** What `echosrv service ...` printed and how it ended. */
export interface CommandOutput {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * `echosrv service ...` as it runs on Windows (the Windows manager, the SCM API through FFI), its calls going to the
 * stand-in, whose service database and record live in a folder of their own; %ProgramData% is a folder in it too.
 */
export class FakeScmHost implements AsyncDisposable {
  private constructor(readonly dir: string) {}

  /** A new, empty host (build the stand-in first with {@link buildFakeAdvapi32}). */
  static async create(): Promise<FakeScmHost> {
    if (fakeLibrary === undefined) throw new Error("build the stand-in advapi32 first (buildFakeAdvapi32)");
    const dir = await Deno.makeTempDir({ prefix: "echosrv-scm-host-" });
    await Deno.mkdir(join(dir, "db"));
    await Deno.mkdir(join(dir, "ProgramData"));
    return new FakeScmHost(dir);
  }

  /** %ProgramData% of this host. */
  get programData(): string {
    return join(this.dir, "ProgramData");
  }

  /** Runs `echosrv service <args>` with the Windows service permissions (FFI), bounded in time. */
  async service(args: string[], env: Record<string, string> = {}): Promise<CommandOutput> {
    const out = await within(
      60_000,
      `echosrv service ${args.join(" ")}`,
      new Deno.Command(Deno.execPath(), {
        args: [
          ...["run", ...serverFlags("windows"), "--config", join(ROOT, "deno.json"), join(ROOT, "main.ts")],
          ...["service", ...args],
        ],
        cwd: this.dir,
        stdin: "null",
        env: {
          NO_COLOR: "1",
          _ECHOSRV_TEST_SCM_LIBRARY: fakeLibrary!,
          FAKE_SCM_LOG: join(this.dir, "scm.record"),
          FAKE_SCM_DIR: join(this.dir, "db"),
          // A console command: its parent is no services.exe.
          FAKE_SCM_PARENT_IMAGE: "cmd.exe",
          ProgramData: this.programData,
          ...env,
        },
      }).output(),
    );
    const decoder = new TextDecoder();
    return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
  }

  /** What the stand-in recorded so far. */
  events(): ScmEvent[] {
    try {
      return parseRecord(Deno.readTextFileSync(join(this.dir, "scm.record")));
    } catch {
      return [];
    }
  }

  /** Forgets the record (the database stays). */
  clearRecord(): void {
    Deno.writeTextFileSync(join(this.dir, "scm.record"), "");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true });
  }
}

/** The states in order, each run of repeats (pending re-reports) counted once. */
export function stateSequence(statuses: StatusReport[]): string[] {
  const out: string[] = [];
  for (const s of statuses) {
    const name = STATE_NAMES[s.state] ?? `state ${s.state}`;
    if (out.at(-1) !== name) out.push(name);
  }
  return out;
}

/**
 * What the SCM checks of the status reports, as problems found: pending reports carry a wait hint, accept no
 * control and a checkpoint rising by one; other reports carry neither; each report after a pending one comes
 * within its wait hint.
 *
 * @param statuses the reports, in order
 * @returns one line per problem (none when the protocol was kept)
 */
export function protocolProblems(statuses: StatusReport[]): string[] {
  const problems: string[] = [];
  for (const [i, s] of statuses.entries()) {
    const pending = s.state === ServiceState.START_PENDING || s.state === ServiceState.STOP_PENDING;
    if (pending) {
      if (!(s.hint > 0)) problems.push(`pending report ${i} has no wait hint`);
      if (s.accepts !== 0) problems.push(`pending report ${i} accepts controls (${s.accepts})`);
      const previous = statuses[i - 1];
      const expected = previous?.state === s.state ? previous.checkpoint + 1 : 1;
      if (s.checkpoint !== expected) {
        problems.push(`report ${i}: checkpoint ${s.checkpoint}, expected ${expected} (rising by one while pending)`);
      }
    } else {
      if (s.checkpoint !== 0) problems.push(`report ${i}: checkpoint ${s.checkpoint} outside a pending state`);
      if (s.hint !== 0) problems.push(`report ${i}: wait hint ${s.hint} outside a pending state`);
    }
    const next = statuses[i + 1];
    if (pending && next && !(next.t - s.t < s.hint)) {
      problems.push(`report ${i + 1} came ${next.t - s.t} ms after a wait hint of ${s.hint} ms`);
    }
  }
  return problems;
}

/** Asserts {@link protocolProblems} finds none. */
export function assertProtocol(statuses: StatusReport[]): void {
  assert.deepEqual(protocolProblems(statuses), [], "the SCM's status protocol");
}

/**
 * Splits a command line the way CommandLineToArgvW and the Microsoft C runtime do, written from Microsoft's
 * documentation ("Parsing C++ command-line arguments"): the program name ends at the first space or tab outside
 * quotes and takes no escapes; then 2n backslashes before a quote give n backslashes and the quote toggles quoting,
 * 2n+1 give n backslashes and a literal quote, other backslashes are literal, and "" inside quotes is a quote.
 */
export function commandLineToArgv(line: string): string[] {
  const argv: string[] = [];
  let i = 0;
  let program = "";
  let quoted = false;
  for (; i < line.length && (quoted || (line[i] !== " " && line[i] !== "\t")); i++) {
    if (line[i] === '"') quoted = !quoted;
    else program += line[i];
  }
  argv.push(program);
  for (;;) {
    while (i < line.length && (line[i] === " " || line[i] === "\t")) i++;
    if (i >= line.length) return argv;
    let arg = "";
    quoted = false;
    while (i < line.length && (quoted || (line[i] !== " " && line[i] !== "\t"))) {
      let backslashes = 0;
      while (line[i] === "\\") {
        backslashes++;
        i++;
      }
      if (line[i] === '"') {
        arg += "\\".repeat(Math.floor(backslashes / 2));
        if (backslashes % 2 === 1) {
          arg += '"';
          i++;
        } else if (quoted && line[i + 1] === '"') {
          arg += '"';
          i += 2;
        } else {
          quoted = !quoted;
          i++;
        }
      } else {
        arg += "\\".repeat(backslashes);
        if (i < line.length && (quoted || (line[i] !== " " && line[i] !== "\t"))) arg += line[i++];
      }
    }
    argv.push(arg);
  }
}
