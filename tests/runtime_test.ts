// The Deno runtime setting that keeps latency under many connections within reach of C (lib/runtime.ts,
// docs/latency-under-load.md): every way echosrv starts gives it DENO_TOKIO_MAX_IO_EVENTS_PER_TICK=64. The
// benchmark (`deno task bench`) shows what it changes; these tests fail when a start path loses it.

import assert from "node:assert/strict";
import { IO_EVENTS, IO_EVENTS_VAR, SERVER_ENV } from "../lib/runtime.ts";
import { spawnServer, taskEnv } from "./helpers.ts";
import { reusePortUnavailable } from "../lib/runtime.ts";

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
