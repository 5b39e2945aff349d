// How the server's Deno runtime is started (lib/runtime.ts): one definition of its flags (SERVER_FLAGS) and of its
// environment (SERVER_ENV, the setting that keeps latency under many connections within reach of C:
// DENO_TOKIO_MAX_IO_EVENTS_PER_TICK=64, docs/latency-under-load.md), and every way echosrv starts checked against it:
// deno.json's tasks, the systemd unit, the launchd property list, the Windows service's command line and its
// Environment value, the compiled executable and the Dockerfile. The benchmark (`deno task bench`) shows what the setting changes; these tests fail
// when a start path loses it or a flag.

import assert from "node:assert/strict";
import {
  IO_EVENTS,
  IO_EVENTS_VAR,
  reusePortUnavailable,
  SERVER_ENV,
  SERVER_FLAGS,
  serverFlags,
} from "../lib/runtime.ts";
import { ROOT, spawnServer, taskArgs, taskEnv } from "./helpers.ts";
import type { ServiceDefinition } from "../lib/service/contract.ts";
import { executablePermissions, launchArgs } from "../lib/service/launcher.ts";
import { systemdServiceArgv, systemdUnit } from "../lib/service/systemd.ts";
import { launchdPlist } from "../lib/service/launchd.ts";
import { WindowsManager, windowsServiceArgv, windowsServiceEnvironment } from "../lib/service/windows.ts";
import { describePlan } from "../lib/service/plan.ts";

/** The Deno flags of a command line that runs main.ts: the words from `run` to the script. */
function denoFlags(argv: readonly string[]): string[] {
  const run = argv.indexOf("run");
  const script = argv.findIndex((word, i) => i > run && word.endsWith("main.ts"));
  assert.ok(run >= 0 && script > run, `a deno run of main.ts: ${argv.join(" ")}`);
  return argv.slice(run + 1, script).filter((word, i, all) => word !== "--config" && all[i - 1] !== "--config");
}

/** Asserts that `flags` are SERVER_FLAGS (for `os`) and, besides them, exactly `extra`. */
function assertServerFlags(flags: string[], extra: string[], what: string, os: typeof Deno.build.os = "linux"): void {
  assert.deepEqual(
    [...flags].sort(),
    [...serverFlags(os), ...extra].sort(),
    `${what}: the server's flags (lib/runtime.ts's SERVER_FLAGS) and, besides, only ${extra.join(" ") || "nothing"}`,
  );
}

Deno.test("one definition of the server's flags and environment: the tasks, the services and the Dockerfile follow it", () => {
  // deno task start: --quiet (the first run's download bar), --allow-run=ps (the npx watch of lib/stop_requests.ts).
  assertServerFlags(denoFlags(taskArgs("start")), ["--quiet", "--allow-run=ps"], "deno task start");
  assert.deepEqual(taskEnv("start"), SERVER_ENV, "deno task start's environment");
  // deno task service: the server's flags, and what the service commands need (systemctl or launchctl, the uid, FFI).
  assertServerFlags(
    denoFlags(taskArgs("service")),
    ["--allow-run", "--allow-sys=uid", "--allow-ffi"],
    "deno task service",
  );

  const source = { kind: "source", deno: "/usr/bin/deno", config: "/opt/e/deno.json", main: "/opt/e/main.ts" } as const;
  for (const os of ["linux", "darwin", "windows"] as const) {
    assertServerFlags(denoFlags(launchArgs(source, os)), [], `the service's command line on ${os}`, os);
    // The compiled executable embeds its permissions; the service commands' own come on top.
    const compiled = executablePermissions(os);
    for (const flag of serverFlags(os)) assert.ok(compiled.includes(flag), `deno compile for ${os}: ${flag}`);
  }
  const definition = service(source);
  assertServerFlags(denoFlags(systemdServiceArgv(definition)), [], "the systemd unit's ExecStart");
  assertServerFlags(denoFlags(windowsServiceArgv(definition)), [], "the Windows service's binPath", "windows");
  const plist = launchdPlist(definition);
  for (const flag of SERVER_FLAGS) assert.ok(plist.includes(`<string>${flag}</string>`), `launchd: ${flag}`);

  // The Dockerfile: deno itself is the entry point, with --quiet, and the image's packages fetched at build time.
  const dockerfile = Deno.readTextFileSync(`${ROOT}deploy/Dockerfile`);
  const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)![1]) as string[];
  assertServerFlags(denoFlags(entrypoint), ["--quiet", "--frozen", "--cached-only"], "the Dockerfile's ENTRYPOINT");
  for (const [name, value] of Object.entries(SERVER_ENV)) {
    assert.match(dockerfile, new RegExp(`^ENV ${name}=${value}$`, "m"), `the image sets ${name}`);
  }
});
import type { RunConfig } from "../lib/config.ts";
import { parseCommandLine } from "../lib/options.ts";

Deno.test("deno task start sets DENO_TOKIO_MAX_IO_EVENTS_PER_TICK=64 before deno starts", () => {
  assert.deepEqual(taskEnv("start"), SERVER_ENV);
  assert.equal(SERVER_ENV[IO_EVENTS_VAR], IO_EVENTS);
});

Deno.test("started as the start task starts it, the server runs with the setting and says so; without it, it warns", async () => {
  {
    await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", "--workers", "1"]);
    const ready = server.records().find((r) => r.message.startsWith("echoing on port"))!;
    assert.equal(ready.properties.ioEventsPerTick, IO_EVENTS);
    assert.ok(!server.records().some((r) => r.level === "WARN"), "no warning");
  }
  {
    // `deno run main.ts` by hand, without the variable: one loop in the main thread cannot get it any more.
    await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", "--workers", "1"], {
      runArgs: ["run", "--unstable-net", "--allow-net", "--allow-env", "--allow-read", "main.ts"],
    });
    const warning = server.records().find((r) => r.level === "WARN");
    assert.ok(warning && warning.message.includes(IO_EVENTS_VAR), "a warning names the variable");
  }
});

Deno.test({
  name: "workers get the setting from the pool even when the process was started without it",
  ignore: reusePortUnavailable() !== undefined,
  async fn() {
    await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", "--workers", "2"], {
      runArgs: ["run", "--unstable-net", "--allow-net", "--allow-env", "--allow-read", "main.ts"],
    });
    const ready = server.records().filter((r) => r.message.includes("echoing on port"));
    const perWorker = ready.filter((r) => r.message.startsWith("worker "));
    assert.equal(perWorker.length, 2, JSON.stringify(ready));
    for (const line of perWorker) assert.equal(line.properties.ioEventsPerTick, IO_EVENTS, line.message);
    assert.ok(!server.records().some((r) => r.level === "WARN"), "nothing to warn about");
  },
});

/** A service as `echosrv service install` would define it, from source or compiled. */
function service(launcher: ServiceDefinition["launcher"]): ServiceDefinition {
  const serverArgs = ["--port", "40007", "--workers", "1"];
  const what = parseCommandLine(serverArgs, { out: () => {}, err: () => {} });
  assert.equal(what.kind, "run");
  return {
    name: "echosrv",
    displayName: "echosrv TCP echo server",
    description: "TCP echo server on port 40007",
    start: "auto",
    launcher,
    serverArgs,
    config: (what as { config: RunConfig }).config,
  };
}

Deno.test("the systemd unit, the launchd property list and the Windows service's environment carry the setting", () => {
  const launchers: ServiceDefinition["launcher"][] = [
    { kind: "compiled", executable: "/usr/local/bin/echosrv" },
    {
      kind: "source",
      deno: "/usr/local/bin/deno",
      config: "/opt/echosrv/deno.json",
      main: "/opt/echosrv/main.ts",
      denoDir: "/var/cache/deno",
    },
  ];
  for (const launcher of launchers) {
    const unit = systemdUnit(service(launcher));
    assert.match(unit, new RegExp(`^Environment=${IO_EVENTS_VAR}=${IO_EVENTS}$`, "m"), `${launcher.kind}: systemd`);
    const plist = launchdPlist(service(launcher));
    assert.match(
      plist,
      new RegExp(`<key>${IO_EVENTS_VAR}</key>\\s*<string>${IO_EVENTS}</string>`),
      `${launcher.kind}: launchd`,
    );
    // Windows: `service install` writes every variable into the REG_MULTI_SZ value Environment of the service's key,
    // a step of the plan that --dry-run prints (the bytes written: tests/windows_service_test.ts).
    assert.deepEqual(windowsServiceEnvironment(), [`${IO_EVENTS_VAR}=${IO_EVENTS}`]);
    const plan = describePlan(new WindowsManager({ programData: "C:\\ProgramData" }).installPlan(service(launcher)));
    const line = plan.split("\n").find((l) => l.startsWith("call: RegSetValueExW "));
    assert.ok(line, `the Windows install plan writes the service's environment:\n${plan}`);
    assert.match(line, /^call: RegSetValueExW HKLM\\SYSTEM\\CurrentControlSet\\Services\\echosrv\\Environment /);
    for (const [name, value] of Object.entries(SERVER_ENV)) {
      assert.ok(line.split(" ").includes(`${name}=${value}`), `${launcher.kind}: Windows: ${name}=${value} in ${line}`);
    }
  }
});
