// `echosrv service ...` as users meet it, and what it would hand each service manager: the command line and its
// usage errors; Windows command lines read back by CommandLineToArgvW's rules (paths with spaces, quotes and
// backslashes); the Windows SCM API plans, accounts and service SIDs; launchd property lists parsed by Python's
// plistlib over expat, a strict XML parser; the default description; progress lines quoted for their system.

import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import type { RunConfig } from "../lib/config.ts";
import { parseCommandLine } from "../lib/options.ts";
import type { ServiceDefinition, ServiceManager } from "../lib/service/contract.ts";
import { ServiceError } from "../lib/service/error.ts";
import type { ServiceRequest } from "../lib/service/request.ts";
import { describePlan, executePlan, type Step } from "../lib/service/plan.ts";
import { quoteWindowsArg, windowsCommandLine, WindowsManager, windowsServiceArgv } from "../lib/service/windows.ts";
import { serviceSid, windowsAccount } from "../lib/service/win_account.ts";
import { LaunchdManager, launchdPlist, launchdServiceArgv } from "../lib/service/launchd.ts";
import { absoluteLogFileArgs, runServiceCommand } from "../lib/service/commands.ts";
import { type Launcher, transientDenoNote } from "../lib/service/launcher.ts";
import { judgeStart, STAY_UP_MS, SystemdManager } from "../lib/service/systemd.ts";
import { cannotRun, plannedFile, ROOT, runServiceTask } from "./helpers.ts";
import { commandLineToArgv } from "../support/fake_scm.ts";
import { plistReader } from "./python.ts";

const plist = await plistReader();
if ("missing" in plist) console.log(`launchd property list test skipped: ${plist.missing}`);

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

/** What each `call` step of a plan calls (its first word and the word after the service name), in order. */
function calls(steps: Step[]): string[] {
  return steps.map((s) => s.kind === "call" ? s.what.split(/[ :]/).slice(0, 1).join(" ") : s.kind);
}

Deno.test("Windows install: CreateServiceW with a quoted command line that reads back as the service's argv", () => {
  const def = definition({ serverArgs: ["--port", "40007", "--log-file", "D:\\echo logs\\echo.log"] });
  const manager = new WindowsManager({ programData: "C:\\ProgramData" });
  const plan = manager.installPlan(def);
  assert.deepEqual(calls(plan.steps), [
    "CreateServiceW",
    "ChangeServiceConfig2W",
    "ChangeServiceConfig2W",
    "ChangeServiceConfig2W",
    "ChangeServiceConfig2W",
    "RegSetValueExW",
    "mkdir",
    "SetNamedSecurityInfoW",
    "RegCreateKeyExW",
    "StartServiceW",
    "wait",
  ]);
  const create = (plan.steps[0] as { what: string }).what;
  assert.match(create, /^CreateServiceW echosrv: start auto, account NT SERVICE\\echosrv, display name "echosrv TCP /);
  const binPath = create.slice(create.indexOf("command line ") + 13);
  assert.deepEqual(commandLineToArgv(binPath), windowsServiceArgv(def));
  assert.deepEqual(windowsServiceArgv(def), [
    "C:\\Program Files\\echo srv\\echosrv.exe",
    "--service",
    "--port",
    "40007",
    "--log-file",
    "D:\\echo logs\\echo.log",
  ]);
  // The service's environment (lib/runtime.ts's SERVER_ENV), after CreateServiceW made the key it goes in.
  assert.equal(
    (plan.steps[5] as { what: string }).what,
    "RegSetValueExW HKLM\\SYSTEM\\CurrentControlSet\\Services\\echosrv\\Environment (REG_MULTI_SZ, the service's " +
      "environment): DENO_TOKIO_MAX_IO_EVENTS_PER_TICK=64",
  );
  assert.ok((plan.steps[5] as { undo?: unknown[] }).undo?.length, "a failed later step deletes the value again");
  assert.deepEqual((plan.steps[6] as { path: string }).path, "D:\\echo logs", "the log folder is made");
  assert.match((plan.steps[7] as { what: string }).what, /^SetNamedSecurityInfoW D:\\echo logs: Modify for NT SERVICE/);
  assert.ok(plan.steps.at(-1)!.kind === "wait", "install waits for RUNNING (which means listening)");
  assert.ok((plan.steps[0] as { undo?: unknown[] }).undo?.length, "a failed later step deletes the service again");
  assert.ok((plan.steps[8] as { undo?: unknown[] }).undo?.length, "and removes the event source it made");

  // No --log-file: the service gets %ProgramData%\NAME\NAME.log, in a folder its account may write.
  const plain = manager.installPlan(definition());
  const plainBin = (plain.steps[0] as { what: string }).what;
  assert.deepEqual(commandLineToArgv(plainBin.slice(plainBin.indexOf("command line ") + 13)).slice(-2), [
    "--log-file",
    "C:\\ProgramData\\echosrv\\echosrv.log",
  ]);
  assert.equal((plain.steps[6] as { path: string }).path, "C:\\ProgramData\\echosrv");

  const manual = manager.installPlan({ ...def, start: "manual" });
  assert.match((manual.steps[0] as { what: string }).what, /: start demand,/);
  assert.ok(!calls(manual.steps).includes("StartServiceW"), "manual: not started");
  const delayed = manager.installPlan({ ...def, start: "delayed" });
  assert.match((delayed.steps[0] as { what: string }).what, /: start auto \(delayed\),/);
  assert.ok(delayed.steps.some((s) => s.kind === "call" && /delayed auto-start/.test(s.what)));
  assert.ok(calls(delayed.steps).includes("StartServiceW"), "delayed: started now too");

  // Another account: its name goes to CreateServiceW; LocalSystem needs no grant (it may write anything).
  const local = manager.installPlan({ ...def, account: "LocalService" });
  assert.match((local.steps[0] as { what: string }).what, /account NT AUTHORITY\\LocalService,/);
  const system = manager.installPlan({ ...def, account: "localsystem" });
  assert.match((system.steps[0] as { what: string }).what, /account LocalSystem,/);
  assert.ok(!calls(system.steps).includes("SetNamedSecurityInfoW"));
  assert.throws(
    () => manager.installPlan({ ...def, account: "CORP\\bob" }),
    (error: Error) => error instanceof ServiceError && /--account: CORP\\bob needs a password/.test(error.message),
  );

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

  const text = describePlan(plan, (argv) => manager.formatCommand(argv));
  assert.match(
    text,
    /^call: CreateServiceW echosrv: .* command line "C:\\Program Files\\echo srv\\echosrv\.exe" --service/m,
  );
  assert.match(text, /^call: RegSetValueExW HKLM\\SYSTEM\\.*\\echosrv\\Environment \(REG_MULTI_SZ, .*\): DENO_TOKIO_/m);
});

Deno.test("Windows uninstall, stop, restart: ControlService STOP (not running is fine), wait, then delete / start", () => {
  const manager = new WindowsManager();
  const uninstall = manager.uninstallPlan("echosrv");
  assert.deepEqual(calls(uninstall.steps), ["ControlService", "wait", "DeleteService", "RegDeleteKeyW"]);
  assert.deepEqual(calls(manager.controlPlan("restart", "echosrv").steps), [
    "ControlService",
    "wait",
    "StartServiceW",
    "wait",
  ]);
  assert.deepEqual(calls(manager.controlPlan("stop", "echosrv").steps), ["ControlService", "wait"]);
});

Deno.test("Windows accounts: the virtual account by default, the password-less ones by any usual name", () => {
  assert.equal(windowsAccount(undefined, "echosrv-7"), "NT SERVICE\\echosrv-7");
  const same: [string, string][] = [
    ["nt service\\ECHOSRV-7", "NT SERVICE\\echosrv-7"],
    ["LocalSystem", "LocalSystem"],
    [".\\LocalSystem", "LocalSystem"],
    ["NT AUTHORITY\\SYSTEM", "LocalSystem"],
    ["LocalService", "NT AUTHORITY\\LocalService"],
    ["nt authority\\networkservice", "NT AUTHORITY\\NetworkService"],
    ["CORP\\echo-gmsa$", "CORP\\echo-gmsa$"],
  ];
  for (const [given, expected] of same) assert.equal(windowsAccount(given, "echosrv-7"), expected, given);
  assert.throws(() => windowsAccount("NT SERVICE\\other", "echosrv-7"), /virtual account of another service/);
  assert.throws(() => windowsAccount("bob", "echosrv-7"), /needs a password/);
});

Deno.test("a service's SID is Windows' own (S-1-5-80 and the SHA-1 of its upper-case name)", async () => {
  // TrustedInstaller's SID, as every Windows shows it (`sc showsid TrustedInstaller`).
  assert.equal(
    await serviceSid("TrustedInstaller"),
    "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464",
  );
  assert.equal(await serviceSid("trustedinstaller"), await serviceSid("TrustedInstaller"), "case does not matter");
});

Deno.test("progress lines and failures quote commands for the system they are typed on", async () => {
  const argv = [Deno.execPath(), "eval", "Deno.exit(Deno.args.length === 1 ? 0 : 3)", "a b"];
  const windows = new WindowsManager();
  const lines: string[] = [];
  await executePlan(
    { summary: "t", steps: [{ kind: "run", argv }] },
    (l) => lines.push(l),
    (a) => windows.formatCommand(a),
  );
  assert.deepEqual(lines, [`ran: ${windows.formatCommand(argv)}`]);
  assert.match(lines[0], / eval "Deno\.exit\(Deno\.args\.length === 1 \? 0 : 3\)" "a b"$/, "Windows quoting");
  await assert.rejects(
    executePlan(
      { summary: "t", steps: [{ kind: "run", argv: [...argv, "c"] }] },
      () => {},
      (a) => windows.formatCommand(a),
    ),
    (error: Error) => error.message.startsWith(`${windows.formatCommand([...argv, "c"])} failed (exit 3)`),
  );
  const posix: string[] = [];
  await executePlan({ summary: "t", steps: [{ kind: "run", argv }] }, (l) => posix.push(l));
  assert.match(posix[0], / eval 'Deno\.exit\(Deno\.args\.length === 1 \? 0 : 3\)' 'a b'$/, "POSIX shell quoting");
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

Deno.test("launchd: the install plan makes the folder, writes the plist, enables and bootstraps it", async () => {
  const tricky = trickyDefinition();
  const plan = new LaunchdManager().installPlan(tricky);
  assert.deepEqual(plan.steps.map((s) => s.kind === "run" ? s.argv.slice(0, 2).join(" ") : s.kind), [
    "dscl .",
    "mkdir",
    "chown -R",
    "write",
    "launchctl enable",
    "launchctl bootstrap",
  ]);
  assert.deepEqual((plan.steps[0] as { argv: string[] }).argv, ["dscl", ".", "-read", "/Users/_echosrv-7", "UniqueID"]);
  assert.match(
    (plan.steps[0] as { explain: (code: number, said: string) => string }).explain(56, ""),
    /the user _echosrv-7 that the daemon is to run as does not exist on this Mac; create it first/,
  );
  assert.deepEqual((plan.steps[2] as { argv: string[] }).argv, [
    "chown",
    "-R",
    "_echosrv-7",
    "/Library/Logs/echosrv-7",
  ]);
  assert.equal((plan.steps[3] as { path: string }).path, "/Library/LaunchDaemons/echosrv-7.plist");
  // The plist's UserName, read by a real plist parser where there is one (Python's plistlib), else from the text.
  const userName = async (text: string) =>
    "missing" in plist
      ? /<key>UserName<\/key>\s*<string>([^<]*)<\/string>/.exec(text)?.[1]
      : (await plist.read(text) as { UserName: string }).UserName;
  assert.equal(await userName(launchdPlist(tricky)), "_echosrv-7", "a dedicated user");
  assert.equal(await userName(launchdPlist({ ...tricky, account: "_echo" })), "_echo", "--account names it");
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
  // By this system's rules: /srv/x is C:\srv\x on Windows.
  const cwd = resolve("/srv/x");
  assert.deepEqual(absoluteLogFileArgs(["--log-file", "logs/e.log", "--port", "7"], cwd), [
    "--log-file",
    join(cwd, "logs", "e.log"),
    "--port",
    "7",
  ]);
  assert.deepEqual(absoluteLogFileArgs(["--log-file=e.log"], cwd), [`--log-file=${join(cwd, "e.log")}`]);
  const absolute = resolve("/abs.log");
  assert.deepEqual(absoluteLogFileArgs(["--log-file", absolute], cwd), ["--log-file", absolute]);
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

/** Why the systemd plan cannot be printed here: `service install` plans for this system's manager. */
const NOT_SYSTEMD = Deno.build.os === "linux"
  ? undefined
  : `\`service install\` plans a systemd unit on Linux only (here, ${Deno.build.os}, it plans this system's service)`;

Deno.test("install --dry-run bakes the options, ignores this shell's ECHOSRV_* (and says so), changes nothing", {
  ignore: cannotRun("the dry runs of a systemd install", NOT_SYSTEMD),
}, async () => {
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

Deno.test({
  name: "install --start delayed on Linux: a usage error (exit 2) that names Windows' delayed start and what to use",
  ignore: cannotRun("the systemd dry run of --start delayed", NOT_SYSTEMD),
}, async () => {
  const { code, stdout, stderr } = await runServiceTask(["install", "--dry-run", "--start", "delayed"]);
  assert.equal(code, 2, `exit 2\n${stdout}${stderr}`);
  assert.match(stderr, /^echosrv: error: --start delayed is Windows' delayed automatic start/);
  assert.match(stderr, /systemd has no such start/);
  assert.match(stderr, /use --start auto .* or --start manual/);
  assert.equal(stderr.split("\n").length, 2, "one line");
  assert.equal(stdout, "", "nothing planned");
});

Deno.test("--start delayed: refused by systemd and launchd with what to use instead, taken by the Windows SCM", async () => {
  const request: ServiceRequest = {
    action: "install",
    name: "echosrv-delayed",
    start: "delayed",
    dryRun: true,
    serverArgs: ["--port", "40007"],
  };
  const refusing: Array<[ServiceManager, RegExp]> = [
    [new SystemdManager(), /network-online\.target/],
    [new LaunchdManager(), /RunAtLoad/],
  ];
  for (const [manager, instead] of refusing) {
    let out = "";
    let err = "";
    const code = await runServiceCommand(request, { out: (t) => out += t, err: (t) => err += t }, manager);
    assert.equal(code, 2, `${manager.system}: ${out}${err}`);
    assert.match(err, /--start delayed is Windows' delayed automatic start/, manager.system);
    assert.match(err, new RegExp(`${manager.system} has no such start`), manager.system);
    assert.match(err, instead, manager.system);
    assert.equal(out, "", `${manager.system}: nothing planned`);
    assert.equal(manager.startModeProblem("auto"), undefined, manager.system);
    assert.equal(manager.startModeProblem("manual"), undefined, manager.system);
  }
  assert.equal(new WindowsManager().startModeProblem("delayed"), undefined, "Windows has it");
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

Deno.test("the default description says where it listens: IPv4 and IPv6 only when -H does not restrict it", async () => {
  const cases: [string[], string][] = [
    [[], "TCP echo server on port 40007 (IPv4 and IPv6): every byte"],
    [["-H", "127.0.0.1"], "TCP echo server on port 40007 of 127.0.0.1: every byte"],
    [["--port", "7", "-H", "127.0.0.1", "-H", "::1"], "TCP echo server on port 7 of 127.0.0.1 and ::1: every byte"],
  ];
  for (const [args, expected] of cases) {
    const { code, stdout, stderr } = await runServiceTask([
      "install",
      "--dry-run",
      "--name",
      "echosrv-d",
      "--",
      ...args,
    ]);
    assert.equal(code, 0, stderr);
    // In the unit's comment (systemd), the description call (Windows), the plist's comment (launchd).
    assert.ok(stdout.includes(expected), `${args.join(" ")}:\n${stdout}`);
  }
});

Deno.test("--account: systemd runs the unit as that user instead of a dynamic one", {
  ignore: cannotRun("the dry runs of a systemd install", NOT_SYSTEMD),
}, async () => {
  const { code, stdout, stderr } = await runServiceTask([
    ...["install", "--dry-run", "--name", "echosrv-u", "--account", "echo", "--"],
    ...["--port", "40007"],
  ]);
  assert.equal(code, 0, stderr);
  const unit = plannedFile(stdout, "/etc/systemd/system/echosrv-u.service");
  assert.match(unit, /^User=echo$/m);
  assert.doesNotMatch(unit, /^DynamicUser=/m);
});

Deno.test("a service from source run by npx's cached Deno is flagged: npm deletes that copy when it cleans its cache", () => {
  const source = (deno: string): Launcher => ({
    kind: "source",
    deno,
    config: "/srv/echosrv/deno.json",
    main: "/srv/echosrv/main.ts",
  });
  for (
    const deno of [
      "/root/.npm/_npx/7a40be787520bede/node_modules/deno/deno",
      "C:\\Users\\me\\AppData\\Local\\npm-cache\\_npx\\1f2e\\node_modules\\deno\\deno.exe",
    ]
  ) {
    const note = transientDenoNote(source(deno));
    assert.ok(note?.includes(deno), `${deno}: ${note}`);
    assert.match(note!, /npm install -g deno@/);
  }
  for (const deno of ["/usr/local/bin/deno", "/home/me/.deno/bin/deno", "/opt/my_npx_tools/deno"]) {
    assert.equal(transientDenoNote(source(deno)), undefined, deno);
  }
  assert.equal(transientDenoNote({ kind: "compiled", executable: "/root/.npm/_npx/x/echosrv" }), undefined);
});
