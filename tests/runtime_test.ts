// The Deno runtime setting that keeps latency under many connections within reach of C (lib/runtime.ts,
// docs/latency-under-load.md): every way echosrv starts gives it DENO_TOKIO_MAX_IO_EVENTS_PER_TICK=64. The
// benchmark (`deno task bench`) shows what it changes; these tests fail when a start path loses it.

import assert from "node:assert/strict";
import { IO_EVENTS, IO_EVENTS_VAR, SERVER_ENV } from "../lib/runtime.ts";
import { spawnServer, taskEnv } from "./helpers.ts";
import { reusePortUnavailable } from "../lib/runtime.ts";
import type { ServiceDefinition } from "../lib/service/contract.ts";
import { systemdUnit } from "../lib/service/systemd.ts";
import { launchdPlist } from "../lib/service/launchd.ts";
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

Deno.test("the systemd unit and the launchd property list start the server's process with the setting", () => {
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
  }
});
