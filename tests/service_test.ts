// `echosrv service ...` as users meet it, and what it would hand each service manager: the command line and its
// usage errors; Windows command lines read back by CommandLineToArgvW's rules (paths with spaces, quotes and
// backslashes); the sc.exe calls; launchd property lists parsed by Python's plistlib over expat, a strict XML parser.

import assert from "node:assert/strict";
import { parseCommandLine, type RunConfig } from "../lib/options.ts";
import { describePlan, executePlan, type ServiceDefinition, ServiceError } from "../lib/service/contract.ts";
import { quoteWindowsArg, windowsCommandLine, WindowsManager, windowsServiceArgv } from "../lib/service/windows.ts";
import { LaunchdManager, launchdPlist, launchdServiceArgv } from "../lib/service/launchd.ts";
import { absoluteLogFileArgs } from "../lib/service/commands.ts";
import { judgeStart, STAY_UP_MS, SystemdManager } from "../lib/service/systemd.ts";
import { plannedFile, ROOT, runServiceTask } from "./helpers.ts";
import { plistReader } from "./python.ts";

const plist = await plistReader();
if ("missing" in plist) console.log(`launchd property list test skipped: ${plist.missing}`);

/**
 * Splits a command line the way CommandLineToArgvW and the Microsoft C runtime do, written from Microsoft's
 * documentation ("Parsing C++ command-line arguments"): the program name ends at the first space or tab outside
 * quotes and takes no escapes; then 2n backslashes before a quote give n backslashes and the quote toggles quoting,
 * 2n+1 give n backslashes and a literal quote, other backslashes are literal, and "" inside quotes is a quote.
 */
function commandLineToArgv(line: string): string[] {
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

Deno.test("the reference splitter agrees with Microsoft's documented examples", () => {
  const examples: [string, string[]][] = [
    ['"a b c" d e', ["a b c", "d", "e"]],
    ['"ab\\"c" "\\\\" d', ['ab"c', "\\", "d"]],
    ['a\\\\\\b d"e f"g h', ["a\\\\\\b", "de fg", "h"]],
    ['a\\\\\\"b c d', ['a\\"b', "c", "d"]],
    ['a\\\\\\\\"b c" d e', ["a\\\\b c", "d", "e"]],
    ['a"b"" c d', ['ab" c d']],
  ];
  for (const [line, expected] of examples) assert.deepEqual(commandLineToArgv(`prog ${line}`).slice(1), expected, line);
  assert.deepEqual(commandLineToArgv('"C:\\Program Files\\x.exe" a'), ["C:\\Program Files\\x.exe", "a"]);
});

Deno.test("Windows command lines survive CommandLineToArgvW: spaces, quotes, backslashes, empty arguments", () => {
  const tricky = [
    "--log-file",
    "C:\\Program Files\\echosrv\\logs\\",
    'say "hi"',
    "trailing\\",
    "\\\\server\\share\\x y\\",
    "",
    'a\\"b',
    "%PATH%",
    "tab\there",
    "plain",
    "ünïcødé ✓",
  ];
  const program = "C:\\Program Files\\echo srv (x86)\\echosrv.exe";
  const line = windowsCommandLine([program, ...tricky]);
  assert.deepEqual(commandLineToArgv(line), [program, ...tricky]);
  assert.ok(line.startsWith(`"${program}" `), "the program is always quoted (no unquoted service path)");
  assert.equal(quoteWindowsArg("--port"), "--port", "plain words stay plain");
  assert.throws(() => windowsCommandLine(['C:\\a"b.exe']), ServiceError);
});

function runConfig(args: string[]): RunConfig {
  const what = parseCommandLine(args, { out: () => {}, err: () => {} });
  assert.equal(what.kind, "run");
  return (what as { config: RunConfig }).config;
}

function definition(overrides: Partial<ServiceDefinition> = {}): ServiceDefinition {
  const serverArgs = overrides.serverArgs ?? ["--port", "40007", "--max-connections", "5000"];
  return {
    name: "echosrv",
    displayName: "echosrv TCP echo server",
    description: "TCP echo server on port 40007",
    start: "auto",
    launcher: { kind: "compiled", executable: "C:\\Program Files\\echo srv\\echosrv.exe" },
    serverArgs,
    config: runConfig(serverArgs),
    ...overrides,
  };
}

Deno.test("Windows install: sc.exe create with a quoted binPath that reads back as the service's argv", () => {
  const def = definition({ serverArgs: ["--port", "40007", "--log-file", "D:\\echo logs\\echo.log"] });
  const plan = new WindowsManager().installPlan(def);
  const runs = plan.steps.filter((s) => s.kind === "run").map((s) => (s as { argv: string[] }).argv);
  const create = runs[0];
  assert.deepEqual(create.slice(0, 4), ["sc.exe", "create", "echosrv", "binPath="]);
  assert.deepEqual(create.slice(5), ["start=", "auto", "DisplayName=", "echosrv TCP echo server"]);
  assert.deepEqual(commandLineToArgv(create[4]), windowsServiceArgv(def));
  assert.deepEqual(windowsServiceArgv(def), [
    "C:\\Program Files\\echo srv\\echosrv.exe",
    "--service",
    "--port",
    "40007",
    "--log-file",
    "D:\\echo logs\\echo.log",
  ]);
  assert.deepEqual(runs.slice(1).map((argv) => argv.slice(0, 2)), [
    ["sc.exe", "description"],
    ["sc.exe", "failure"],
    ["sc.exe", "failureflag"],
    ["sc.exe", "start"],
  ]);
  assert.ok(plan.steps.at(-1)!.kind === "wait", "install waits for RUNNING (which means listening)");
  assert.ok((plan.steps[0] as { undo?: unknown[] }).undo?.length, "a failed later step deletes the service again");

  const manual = new WindowsManager().installPlan({ ...def, start: "manual" });
  const manualCreate = (manual.steps[0] as { argv: string[] }).argv;
  assert.equal(manualCreate[manualCreate.indexOf("start=") + 1], "demand");
  assert.ok(!manual.steps.some((s) => s.kind === "run" && s.argv[1] === "start"), "manual: not started");

  // From source the service is `deno run` with the Windows permissions (FFI for the SCM) and main.ts.
  const fromSource = windowsServiceArgv({
    ...def,
    launcher: { kind: "source", deno: "C:\\deno\\deno.exe", config: "C:\\src\\deno.json", main: "C:\\src\\main.ts" },
  });
  assert.deepEqual(fromSource.slice(0, 2), ["C:\\deno\\deno.exe", "run"]);
  assert.ok(fromSource.includes("--allow-ffi"));
  assert.deepEqual(fromSource.slice(fromSource.indexOf("C:\\src\\main.ts")), [
    "C:\\src\\main.ts",
    "--service",
    "--port",
    "40007",
    "--log-file",
    "D:\\echo logs\\echo.log",
  ]);

  const text = describePlan(plan, (argv) => new WindowsManager().formatCommand(argv));
  assert.match(text, /run: sc\.exe create echosrv binPath= "\\"C:\\Program Files\\echo srv\\echosrv\.exe\\" --service/);
});

Deno.test("Windows uninstall, stop, restart: sc.exe stop (not running is fine), wait, then delete / start", () => {
  const manager = new WindowsManager();
  const uninstall = manager.uninstallPlan("echosrv");
  assert.deepEqual(uninstall.steps.map((s) => s.kind === "run" ? s.argv.slice(1, 2)[0] : s.kind), [
    "stop",
    "wait",
    "delete",
  ]);
  assert.ok((uninstall.steps[0] as { okCodes?: number[] }).okCodes?.includes(1062), "1062: not started");
  const restart = manager.controlPlan("restart", "echosrv");
  assert.deepEqual(restart.steps.map((s) => s.kind === "run" ? s.argv[1] : s.kind), ["stop", "wait", "start", "wait"]);
});

/** A launchd definition with every character XML and the shell care about. */
function trickyDefinition(): ServiceDefinition {
  return definition({
    name: "echosrv-7",
    displayName: 'echo <&> "quoted" -- display',
    description: "a -- b & c < d",
    launcher: { kind: "compiled", executable: "/Applications/Echo Srv & Co/echosrv" },
    serverArgs: ["--port", "7", "--log-file", "/var/tmp/a <b> & 'c'.log", "--shutdown-timeout", "30s"],
  });
}

Deno.test({
  name: "launchd: the property list is well-formed XML and parses to the service's argv and settings",
  ignore: "missing" in plist,
  fn: async () => {
    if ("missing" in plist) return;
    const tricky = trickyDefinition();
    for (const def of [tricky, { ...tricky, start: "manual" as const }]) {
      const text = launchdPlist(def);
      // plistlib parses with expat: text that is not well-formed XML fails here.
      const parsed = await plist.read(text) as Record<string, unknown>;
      assert.equal(parsed.Label, "echosrv-7");
      assert.deepEqual(parsed.ProgramArguments, launchdServiceArgv(def));
      assert.deepEqual(parsed.ProgramArguments, [
        "/Applications/Echo Srv & Co/echosrv",
        "--port",
        "7",
        "--log-file",
        "/var/tmp/a <b> & 'c'.log",
        "--shutdown-timeout",
        "30s",
      ]);
      assert.equal(parsed.RunAtLoad, def.start === "auto");
      assert.deepEqual(parsed.KeepAlive, { SuccessfulExit: false }, "restarted when it exits with an error");
      assert.equal(parsed.ExitTimeOut, 35, "launchd waits out --shutdown-timeout before SIGKILL");
      assert.deepEqual(parsed.SoftResourceLimits, { NumberOfFiles: 65536 });
    }
    // No --log-file given: the log goes to /Library/Logs/NAME/.
    const plain = await plist.read(
      launchdPlist(definition({ launcher: { kind: "compiled", executable: "/usr/local/bin/echosrv" } })),
    ) as {
      ProgramArguments: string[];
    };
    assert.deepEqual(plain.ProgramArguments.slice(-2), ["--log-file", "/Library/Logs/echosrv/echosrv.log"]);
    await assert.rejects(
      plist.read(launchdPlist(tricky).replace("</string>", " & </string>")),
      /not well-formed/,
      "strict XML",
    );
  },
});

Deno.test("launchd: the install plan makes the folder, writes the plist, enables and bootstraps it", () => {
  const tricky = trickyDefinition();
  const plan = new LaunchdManager().installPlan(tricky);
  assert.deepEqual(plan.steps.map((s) => s.kind === "run" ? s.argv.slice(0, 2).join(" ") : s.kind), [
    "mkdir",
    "write",
    "launchctl enable",
    "launchctl bootstrap",
  ]);
  assert.equal((plan.steps[1] as { path: string }).path, "/Library/LaunchDaemons/echosrv-7.plist");
});

Deno.test("a failing step undoes the steps before it, in reverse, and reports the failure", async () => {
  const dir = await Deno.makeTempDir({ prefix: "echosrv-plan-" });
  try {
    const unit = `${dir}/unit.service`;
    const lines: string[] = [];
    await assert.rejects(
      executePlan({
        summary: "test",
        steps: [
          { kind: "write", path: unit, content: "x\n", mode: 0o644, undo: [{ kind: "remove", path: unit }] },
          { kind: "run", argv: [Deno.execPath(), "eval", "Deno.exit(3)"] },
        ],
      }, (line) => lines.push(line)),
      (error: Error) => error instanceof ServiceError && /failed \(exit 3\)/.test(error.message),
    );
    await assert.rejects(Deno.stat(unit), Deno.errors.NotFound, "the file written first was removed again");
    assert.deepEqual(lines, [`wrote ${unit}`, `undone: removed ${unit}`]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a relative --log-file is made absolute: a service does not start in this directory", () => {
  assert.deepEqual(absoluteLogFileArgs(["--log-file", "logs/e.log", "--port", "7"], "/srv/x"), [
    "--log-file",
    "/srv/x/logs/e.log",
    "--port",
    "7",
  ]);
  assert.deepEqual(absoluteLogFileArgs(["--log-file=e.log"], "/srv/x"), ["--log-file=/srv/x/e.log"]);
  assert.deepEqual(absoluteLogFileArgs(["--log-file", "/abs.log"], "/srv/x"), ["--log-file", "/abs.log"]);
});

Deno.test("echosrv service: usage errors exit 2 with a message naming what is wrong", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["install", "--name", "bad/name", "--dry-run"],
      /--name <name>' argument 'bad\/name' is invalid.*not a usable service name/,
    ],
    [["install", "--start", "sometimes", "--dry-run"], /--start <mode>' argument 'sometimes' is invalid/],
    [["install", "--dry-run", "--", "--port", "nope"], /--port <port>' argument 'nope' is invalid/],
    [["install", "--dry-run", "--", "--idle-timeout", "30"], /--idle-timeout <duration>' argument '30' is invalid/],
    [["install", "--dry-run", "40007"], /put the server options after --/],
    [["install", "--dry-run", "--port", "7"], /unknown option '--port'.*\n.*server options go after --/],
    [["install", "--dry-run", "--", "--help"], /--help and --version cannot be baked into a service/],
    [
      ["install", "--dry-run", "--display-name", "two\nlines"],
      /--display-name <text>' argument 'two\nlines' is invalid\. the text must be one line/,
    ],
    [["install", "--dry-run", "--", "service", "status"], /not another command/],
    [[], /name what to do: install, uninstall, start, stop, restart or status/],
    [["launch"], /unknown command 'launch'/],
  ];
  for (const [args, message] of cases) {
    const { code, stdout, stderr } = await runServiceTask(args);
    assert.equal(code, 2, `${args.join(" ")}: exit 2\n${stdout}${stderr}`);
    assert.match(stderr, message, args.join(" "));
    assert.doesNotMatch(stderr, /\n\s+at /, "no stack trace");
    assert.doesNotMatch(stdout, /----- begin/, "nothing planned");
  }
});

Deno.test("echosrv service --help and install --help list the actions and options", async () => {
  const top = await runServiceTask(["--help"]);
  assert.equal(top.code, 0);
  for (const action of ["install", "uninstall", "start", "stop", "restart", "status"]) {
    assert.match(top.stdout, new RegExp(`\\b${action}\\b`));
  }
  const install = await runServiceTask(["install", "--help"]);
  assert.equal(install.code, 0);
  for (
    const option of ["--name <name>", "--display-name <text>", "--description <text>", "--start <mode>", "--dry-run"]
  ) {
    assert.ok(install.stdout.includes(option), option);
  }
  assert.match(install.stdout, /default: "echosrv"/);
});

Deno.test("install --dry-run bakes the options, ignores this shell's ECHOSRV_* (and says so), changes nothing", async () => {
  const { code, stdout, stderr } = await runServiceTask(
    ["install", "--dry-run", "--name", "echosrv-dry", "--", "--max-connections", "70000", "--log-file", "rel.log"],
    { ECHOSRV_PORT: "80" },
  );
  assert.equal(code, 0, stderr);
  assert.match(stderr, /ECHOSRV_PORT is set in this shell but will not be in the service's environment/);
  const unit = plannedFile(stdout, "/etc/systemd/system/echosrv-dry.service");
  const execStart = /^ExecStart=(.*)$/m.exec(unit)![1];
  assert.ok(execStart.endsWith(` --max-connections 70000 --log-file ${ROOT}rel.log`), execStart);
  assert.match(unit, /^CapabilityBoundingSet=$/m, "port 40007 (not ECHOSRV_PORT=80): no capability");
  assert.match(unit, /^LimitNOFILE=71024$/m, "room for 70000 connections");
  assert.match(unit, /^ReadWritePaths=/m, "a log file outside LogsDirectory is made writable");
  assert.match(stdout, /^run: systemctl daemon-reload$/m);
  assert.match(stdout, /^run: systemctl enable --now echosrv-dry\.service$/m);
  await assert.rejects(Deno.stat("/etc/systemd/system/echosrv-dry.service"), Deno.errors.NotFound);

  for (
    const [action, command] of [["uninstall", "disable --now"], ["start", "start"], ["stop", "stop"], [
      "restart",
      "restart",
    ]]
  ) {
    const planned = await runServiceTask([action, "--dry-run", "--name", "echosrv-dry"]);
    assert.equal(planned.code, 0, planned.stderr);
    assert.match(planned.stdout, new RegExp(`^run: systemctl ${command} echosrv-dry\\.service$`, "m"), action);
  }
});

Deno.test("systemd: a start counts once the same process has stayed up; a crash loop fails the install", () => {
  const running = { ActiveState: "active", SubState: "running", MainPID: "120" };
  const first = judgeStart(running, undefined, 1000);
  assert.deepEqual(first, { verdict: "wait", since: { pid: "120", at: 1000 } });
  assert.equal(judgeStart(running, { pid: "120", at: 1000 }, 1000 + STAY_UP_MS - 1).verdict, "wait");
  assert.deepEqual(judgeStart(running, { pid: "120", at: 1000 }, 1000 + STAY_UP_MS), { verdict: "up" });
  // Restarted in between: a new process, so the clock starts again.
  assert.deepEqual(judgeStart({ ...running, MainPID: "130" }, { pid: "120", at: 1000 }, 9000), {
    verdict: "wait",
    since: { pid: "130", at: 9000 },
  });
  assert.equal(
    judgeStart({ ActiveState: "activating", SubState: "auto-restart", MainPID: "0" }, undefined, 0).verdict,
    "failed",
  );
  assert.equal(
    judgeStart({ ActiveState: "failed", SubState: "failed", Result: "exit-code" }, undefined, 0).verdict,
    "failed",
  );
  assert.equal(
    judgeStart({ ActiveState: "activating", SubState: "start", MainPID: "0" }, undefined, 0).verdict,
    "wait",
  );

  const def = definition({ launcher: { kind: "compiled", executable: "/usr/local/bin/echosrv" } });
  const plan = new SystemdManager().installPlan(def);
  assert.deepEqual(plan.steps.map((s) => s.kind === "run" ? s.argv.slice(1).join(" ") : s.kind), [
    "write",
    "daemon-reload",
    "enable --now echosrv.service",
    "wait",
  ]);
  const manual = new SystemdManager().installPlan({ ...def, start: "manual" });
  assert.deepEqual(manual.steps.map((s) => s.kind === "run" ? s.argv.slice(1).join(" ") : s.kind), [
    "write",
    "daemon-reload",
  ]);
  assert.deepEqual(new SystemdManager().controlPlan("stop", "echosrv").steps.length, 1, "stop does not wait for up");
});
