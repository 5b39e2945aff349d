// The Windows service protocol (lib/service/scm.ts), driven for real on Linux: echosrv runs with the command line
// `echosrv service install` registers from source, its FFI calls going to tests/fixtures/fake_advapi32.c, a stand-in
// for advapi32 built here with `cc`. The stand-in keeps the SCM's threads (ServiceMain on a new thread, controls on
// the dispatcher's thread) and records every status report, so these tests see what the SCM would: the states, the
// checkpoints, the timing, the exit codes, and a real echo on loopback while RUNNING.

import assert from "node:assert/strict";
import { join } from "node:path";
import { launchArgs, type Launcher } from "../lib/service/contract.ts";
import { PENDING_WAIT_HINT_MS, ServiceState } from "../lib/service/scm.ts";
import {
  echoSession,
  pseudoRandomBytes,
  readAll,
  ROOT,
  sameBytes,
  ServerProcess,
  waitUntil,
  within,
  writeAll,
} from "./helpers.ts";

/** Builds the stand-in advapi32 once; undefined (with the reason printed) when there is no C compiler. */
async function buildFakeAdvapi32(): Promise<string | undefined> {
  const dir = await Deno.makeTempDir({ prefix: "echosrv-fake-scm-" });
  const library = join(dir, "fake_advapi32.so");
  try {
    const out = await new Deno.Command("cc", {
      args: ["-shared", "-fPIC", "-O2", "-o", library, join(ROOT, "tests/fixtures/fake_advapi32.c"), "-lpthread"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (out.code !== 0) throw new Error(new TextDecoder().decode(out.stderr));
    return library;
  } catch (error) {
    console.log(
      `SKIPPED scm_test.ts: cannot build the stand-in advapi32 with cc (${(error as Error).message.trim()}); ` +
        "install a C compiler (apt-get install gcc libc6-dev) to run these tests",
    );
    return undefined;
  }
}

const fakeLibrary = Deno.build.os === "linux" ? await buildFakeAdvapi32() : undefined;
if (Deno.build.os !== "linux") console.log("SKIPPED scm_test.ts: the stand-in advapi32 is built for Linux only");

/** One line of the stand-in's record: when (ms since it loaded), on which thread, what, and the details. */
interface ScmEvent {
  t: number;
  thread: string;
  event: string;
  fields: Record<string, string>;
}

/** A status report, as numbers. */
interface StatusReport {
  t: number;
  state: number;
  accepts: number;
  win32: number;
  specific: number;
  checkpoint: number;
  hint: number;
}

const STATE_NAMES: Record<number, string> = {
  1: "STOPPED",
  2: "START_PENDING",
  3: "STOP_PENDING",
  4: "RUNNING",
};

/** echosrv started by the stand-in SCM. */
class FakeScmService implements AsyncDisposable {
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
    return text.split("\n").filter((line) => line.trim() !== "").map((line) => {
      const [t, thread, event, ...rest] = line.split(" ");
      const fields: Record<string, string> = {};
      for (const pair of rest) {
        const cut = pair.indexOf("=");
        fields[pair.slice(0, cut)] = pair.slice(cut + 1);
      }
      return { t: Number(t), thread, event, fields };
    });
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
async function startUnderFakeScm(
  serverArgs: string[],
  options: { env?: Record<string, string>; marker?: boolean; logFile?: boolean } = {},
): Promise<FakeScmService> {
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
      _ECHOSRV_TEST_SCM_LIBRARY: fakeLibrary!,
      FAKE_SCM_LOG: recordPath,
      FAKE_SCM_CONTROL: controlPath,
      ...options.env,
    },
  }).spawn();
  return new FakeScmService(new ServerProcess(child), dir, recordPath, controlPath, logPath);
}

/** The states in order, each run of repeats (pending re-reports) counted once. */
function stateSequence(statuses: StatusReport[]): string[] {
  const out: string[] = [];
  for (const s of statuses) {
    const name = STATE_NAMES[s.state] ?? `state ${s.state}`;
    if (out.at(-1) !== name) out.push(name);
  }
  return out;
}

/** Checks what the SCM checks: pending reports carry a wait hint and a rising checkpoint, and come in time. */
function assertProtocol(statuses: StatusReport[]): void {
  for (const [i, s] of statuses.entries()) {
    const pending = s.state === ServiceState.START_PENDING || s.state === ServiceState.STOP_PENDING;
    if (pending) {
      assert.ok(s.hint > 0, `pending report ${i} has a wait hint`);
      assert.equal(s.accepts, 0, `no controls accepted while pending (report ${i})`);
      const previous = statuses[i - 1];
      const expected = previous?.state === s.state ? previous.checkpoint + 1 : 1;
      assert.equal(s.checkpoint, expected, `report ${i}: checkpoint rises by one within a pending state`);
    } else {
      assert.equal(s.checkpoint, 0, `report ${i}: no checkpoint outside pending states`);
      assert.equal(s.hint, 0, `report ${i}: no wait hint outside pending states`);
    }
    const next = statuses[i + 1];
    if (pending && next) {
      assert.ok(next.t - s.t < s.hint, `report ${i + 1} came ${next.t - s.t} ms after a wait hint of ${s.hint} ms`);
    }
  }
}

const skip = fakeLibrary === undefined;

Deno.test({
  name: "under the SCM: START_PENDING, RUNNING (echoing on IPv4 and IPv6), STOP_PENDING while draining, STOPPED, exit",
  ignore: skip,
  async fn() {
    await using service = await startUnderFakeScm(["--port", "0", "-H", "127.0.0.1", "-H", "::1"], {
      env: { FAKE_SCM_SERVICE_NAME: "echosrv-test", FAKE_SCM_START_ARGS: "--shutdown-timeout 30s" },
    });
    const running = await service.waitForState(ServiceState.RUNNING);
    assert.equal(running.accepts, 0x1 | 0x4, "RUNNING accepts STOP and SHUTDOWN");
    const port = await service.port();
    const data = pseudoRandomBytes(256 * 1024, 31);
    assert.equal(sameBytes(await echoSession("127.0.0.1", port, data), data), true, "IPv4 echo while RUNNING");
    assert.equal(sameBytes(await echoSession("::1", port, data), data), true, "IPv6 echo while RUNNING");

    await service.control(4); // INTERROGATE
    const interrogated = await service.waitForEvent(
      (e) => e.event === "control-return" && e.fields.control === "4",
      "the INTERROGATE answer",
    );
    assert.equal(interrogated.fields.result, "0", "INTERROGATE answered NO_ERROR");

    // A session in flight when STOP comes: the stop waits for it (STOP_PENDING re-reported with a rising
    // checkpoint), and it gets its whole echo.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      const first = pseudoRandomBytes(64 * 1024, 32);
      const reading = readAll(conn, 60_000);
      reading.catch(() => {});
      await writeAll(conn, first);
      await service.control(1); // STOP
      await service.waitForEvent(
        (e) => e.event === "status" && e.fields.state === "3" && e.fields.checkpoint === "2",
        "STOP_PENDING re-reported with checkpoint 2 while the session drains",
      );
      const refused = await Deno.connect({ hostname: "127.0.0.1", port }).then((c) => (c.close(), "connected"), (
        e: Error,
      ) => e.name);
      assert.notEqual(refused, "connected", "no new connections once STOP is handled");
      const second = pseudoRandomBytes(64 * 1024, 33);
      await writeAll(conn, second);
      await conn.closeWrite();
      const echo = await reading;
      assert.equal(echo.length, first.length + second.length, "the in-flight session got its whole echo");
    } finally {
      conn.close();
    }

    await service.waitForEvent((e) => e.event === "dispatcher-return", "the dispatcher to return");
    assert.equal(await service.process.exited(30_000), 0, "the process exits 0 once the dispatcher returns");

    const statuses = service.statuses();
    assert.deepEqual(stateSequence(statuses), ["START_PENDING", "RUNNING", "STOP_PENDING", "STOPPED"]);
    assertProtocol(statuses);
    const stopped = statuses.at(-1)!;
    assert.equal(stopped.win32, 0, "a clean stop reports NO_ERROR");
    assert.ok(statuses.every((s) => s.state !== ServiceState.STOP_PENDING || s.hint === PENDING_WAIT_HINT_MS));

    const events = service.events();
    const at = (match: (e: ScmEvent) => boolean) => events.findIndex(match);
    const serviceMain = events.find((e) => e.event === "service-main-enter")!;
    assert.equal(serviceMain.thread, "service-main", "ServiceMain ran on its own thread");
    assert.equal(events.find((e) => e.event === "register-handler")!.fields.name, "echosrv-test", "argv[0] named it");
    const stopCall = at((e) => e.event === "control-call" && e.fields.control === "1");
    const stopReturn = at((e) => e.event === "control-return" && e.fields.control === "1");
    assert.equal(events[stopCall].thread, "dispatcher", "controls arrive on the dispatcher's thread");
    const stopPending = at((e) => e.event === "status" && e.fields.state === "3");
    const stoppedAt = at((e) => e.event === "status" && e.fields.state === "1");
    assert.ok(stopCall < stopPending && stopPending < stopReturn, "the handler reports STOP_PENDING, then returns");
    assert.ok(stopReturn < stoppedAt, "the stop runs after the handler has returned");
    assert.equal(events[stopReturn].fields.result, "0");
    assert.ok(Number(events[stopReturn].fields.took_ms) < 30_000, "the handler returned inside the SCM's limit");

    assert.deepEqual(service.process.lines, [], "a service writes nothing to standard output");
    const log = Deno.readTextFileSync(service.logPath);
    assert.match(log, /running as the service echosrv-test/);
    assert.match(log, /waiting up to 30s/, "the start parameter --shutdown-timeout 30s was applied");
    assert.match(log, /the service manager asked to stop/);
  },
});

Deno.test({
  name: "under the SCM: SHUTDOWN stops like STOP; unknown controls get ERROR_CALL_NOT_IMPLEMENTED",
  ignore: skip,
  async fn() {
    await using service = await startUnderFakeScm(["--port", "0", "-H", "127.0.0.1"]);
    await service.waitForState(ServiceState.RUNNING);
    await service.control(200); // a user-defined control code
    const unknown = await service.waitForEvent(
      (e) => e.event === "control-return" && e.fields.control === "200",
      "the answer to control 200",
    );
    assert.equal(unknown.fields.result, "120");
    await service.control(5); // SHUTDOWN
    assert.equal(await service.process.exited(30_000), 0);
    const statuses = service.statuses();
    assert.deepEqual(stateSequence(statuses), ["START_PENDING", "RUNNING", "STOP_PENDING", "STOPPED"]);
    assertProtocol(statuses);
    assert.match(Deno.readTextFileSync(service.logPath), /asked to shut down/);
  },
});

Deno.test({
  name: "under the SCM: a port in use reports STOPPED with service-specific error 1, the log says why, exit 1",
  ignore: skip,
  async fn() {
    const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      await using service = await startUnderFakeScm(["--port", String(taken.addr.port), "-H", "127.0.0.1"]);
      assert.equal(await service.process.exited(30_000), 1);
      const statuses = service.statuses();
      assert.deepEqual(stateSequence(statuses), ["START_PENDING", "STOPPED"]);
      assertProtocol(statuses);
      assert.equal(statuses.at(-1)!.win32, 1066, "ERROR_SERVICE_SPECIFIC_ERROR");
      assert.equal(statuses.at(-1)!.specific, 1);
      assert.match(Deno.readTextFileSync(service.logPath), new RegExp(`port ${taken.addr.port} .*in use`));
    } finally {
      taken.close();
    }
  },
});

Deno.test({
  name: "under the SCM: a bad option in the service's command line reports error 2 in the default log beside main.ts",
  ignore: skip,
  async fn() {
    const name = `echosrv-test-${Deno.pid}`;
    const defaultLog = join(ROOT, `${name}.log`);
    try {
      await using service = await startUnderFakeScm(["--port", "nope"], {
        logFile: false,
        env: { FAKE_SCM_SERVICE_NAME: name },
      });
      assert.equal(await service.process.exited(30_000), 2);
      const statuses = service.statuses();
      assert.deepEqual(stateSequence(statuses), ["START_PENDING", "STOPPED"]);
      assert.equal(statuses.at(-1)!.win32, 1066);
      assert.equal(statuses.at(-1)!.specific, 2);
      assert.deepEqual(service.process.lines, []);
      const log = Deno.readTextFileSync(defaultLog);
      assert.match(log, /not valid.*--port <port>' argument 'nope' is invalid/);
    } finally {
      await Deno.remove(defaultLog).catch(() => {});
    }
  },
});

Deno.test({
  name: "plain `sc create` (no arguments, no marker): a parent services.exe in session 0 means service mode",
  ignore: skip,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "echosrv-scm-env-" });
    const logFile = join(dir, "env.log");
    try {
      // No arguments at all: the options come from the environment only, so the test can still use port 0.
      const env = { ECHOSRV_PORT: "0", ECHOSRV_HOST: "127.0.0.1", ECHOSRV_LOG_FILE: logFile };
      {
        await using service = await startUnderFakeScm([], { marker: false, logFile: false, env });
        await service.waitForState(ServiceState.RUNNING);
        const snapshot = service.events().find((e) => e.event === "session")!;
        assert.ok(snapshot, "the parent's session was asked for");
        await service.control(1);
        assert.equal(await service.process.exited(30_000), 0);
        assert.deepEqual(stateSequence(service.statuses()), ["START_PENDING", "RUNNING", "STOP_PENDING", "STOPPED"]);
        assert.match(Deno.readTextFileSync(logFile), /running as the service echosrv/);
      }
      const consoleParents: Record<string, string>[] = [{ FAKE_SCM_PARENT_IMAGE: "explorer.exe" }, {
        FAKE_SCM_PARENT_SESSION: "1",
      }];
      for (const parent of consoleParents) {
        await using consoleRun = await startUnderFakeScm(["--log-format", "json"], {
          marker: false,
          logFile: false,
          env: { ...env, ...parent },
        });
        await consoleRun.process.waitFor((r) => r.message.startsWith("echoing on port"), "a console run to serve");
        assert.equal(consoleRun.events().some((e) => e.event === "dispatcher-enter"), false, JSON.stringify(parent));
        consoleRun.process.signal("SIGTERM");
        assert.equal(await consoleRun.process.exited(), 0);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "--service outside the SCM: the dispatcher fails at once, echosrv says so and serves in the foreground",
  ignore: skip,
  async fn() {
    await using service = await startUnderFakeScm(["--port", "0", "-H", "127.0.0.1", "--log-format", "json"], {
      logFile: false,
      env: { FAKE_SCM_NOT_SERVICE: "1" },
    });
    const ready = await service.process.waitFor((r) => r.message.startsWith("echoing on port"), "the server");
    const port = ready.properties.port as number;
    const data = pseudoRandomBytes(4096, 34);
    assert.equal(sameBytes(await echoSession("127.0.0.1", port, data), data), true);
    assert.match(service.process.stderr, /--service is for the Windows service manager; running in the foreground/);
    service.process.signal("SIGTERM");
    assert.equal(await service.process.exited(), 0);
  },
});

Deno.test("the module that connects to the SCM runs nothing but itself and scm.ts first (the dispatcher starts first)", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", join(ROOT, "lib/service/scm_boot.ts")],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  interface Module {
    specifier: string;
    dependencies?: { code?: { specifier: string } }[];
  }
  const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as { roots: string[]; modules: Module[] };
  const bySpecifier = new Map(graph.modules.map((m) => [m.specifier, m]));
  // Follow the imports that run code (type-only imports are erased and run nothing).
  const evaluated = new Set<string>();
  const pending = [...graph.roots];
  while (pending.length > 0 && evaluated.size < 100) {
    const specifier = pending.pop()!;
    if (evaluated.has(specifier)) continue;
    evaluated.add(specifier);
    for (const dependency of bySpecifier.get(specifier)?.dependencies ?? []) {
      if (dependency.code) pending.push(dependency.code.specifier);
    }
  }
  const names = [...evaluated].map((s) => s.replace(/^.*\/lib\//, "lib/")).sort();
  assert.deepEqual(names, ["lib/service/scm.ts", "lib/service/scm_boot.ts"]);
});
