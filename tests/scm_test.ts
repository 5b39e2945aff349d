// The Windows service protocol (lib/service/scm.ts), driven for real on Linux: echosrv runs with the command line
// `echosrv service install` registers from source, its FFI calls going to support/fixtures/fake_advapi32.c, a stand-in
// for advapi32 built here with `cc` (support/fake_scm.ts). The stand-in keeps the SCM's threads (ServiceMain on a new
// thread, controls on the dispatcher's thread) and records every status report, so these tests see what the SCM
// would: the states, the checkpoints, the timing, the exit codes, and a real echo on loopback while RUNNING.

import assert from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { PENDING_WAIT_HINT_MS, ServiceState } from "../lib/service/scm.ts";
import {
  assertProtocol,
  buildFakeAdvapi32,
  type ScmEvent,
  startUnderFakeScm,
  stateSequence,
} from "../support/fake_scm.ts";
import { echoSession, pseudoRandomBytes, readAll, ROOT, sameBytes, writeAll } from "./helpers.ts";

const built = await buildFakeAdvapi32();
if ("reason" in built) console.log(`SKIPPED scm_test.ts: ${built.reason}`);

const skip = "reason" in built;

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

    // The Application event log: the source opened under the service's name, the start and the stop written.
    assert.equal(events.find((e) => e.event === "register-event-source")?.fields.source, "echosrv-test");
    const written = reportedEvents(events);
    assert.deepEqual(written.map((e) => [e.type, e.id]), [[4, 1], [4, 2]], "information 1 (started), 2 (stopped)");
    assert.equal(
      written[0].message,
      `echosrv-test is running: echosrv echoes TCP on a port the system picked; its log file is ${service.logPath}`,
    );
    assert.equal(written[1].message, "echosrv-test has stopped");
    assert.ok(events.some((e) => e.event === "deregister-event-source"), "the source is closed");
  },
});

/** The events the service wrote to the Application log, as the stand-in recorded them. */
function reportedEvents(events: ScmEvent[]): { type: number; id: number; message: string }[] {
  return events.filter((e) => e.event === "report-event").map((e) => ({
    type: Number(e.fields.type),
    id: Number(e.fields.id),
    message: e.fields.message,
  }));
}

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
      const [failed, ...more] = reportedEvents(service.events());
      assert.deepEqual([failed.type, failed.id, more.length], [1, 3, 0], "one error event: 3, could not start");
      assert.match(failed.message, new RegExp(`^echosrv could not start: port ${taken.addr.port} .*in use`));
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
      assert.equal(log.trim().split("\n").length, 1, `one line:\n${log}`);
      assert.doesNotMatch(log, /\\n/, "no literal \\n in the line");
      const [failed] = reportedEvents(service.events());
      assert.deepEqual([failed.type, failed.id], [1, 3]);
      assert.match(
        failed.message,
        new RegExp(`^${name} could not start: its command line is not valid \\(--port nope\\): `),
      );
      assert.match(failed.message, /--port <port>' argument 'nope' is invalid\. "nope" is not a whole number \(run/);
    } finally {
      await Deno.remove(defaultLog).catch(() => {});
    }
  },
});

Deno.test({
  name: "under the SCM: a bad option with --log-file given: the reason goes to that log file, not the default one",
  ignore: skip,
  async fn() {
    const name = `echosrv-test-${Deno.pid}-named`;
    const defaultLog = join(ROOT, `${name}.log`);
    await using service = await startUnderFakeScm(["--port", "nope"], { env: { FAKE_SCM_SERVICE_NAME: name } });
    assert.equal(await service.process.exited(30_000), 2);
    assert.match(Deno.readTextFileSync(service.logPath), /not valid.*--port <port>' argument 'nope' is invalid/);
    await assert.rejects(Deno.stat(defaultLog), Deno.errors.NotFound, "nothing written to the default log");
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

Deno.test("the module that connects to the SCM runs nothing but itself, scm.ts and win32.ts first (the dispatcher starts first)", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    // A file URL: Windows' deno reads a path such as z:\src\x.ts as a URL whose scheme is z: (and loads nothing).
    args: ["info", "--json", pathToFileURL(join(ROOT, "lib/service/scm_boot.ts")).href],
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
  assert.deepEqual(names, ["lib/service/scm.ts", "lib/service/scm_boot.ts", "lib/service/win32.ts"]);
});
