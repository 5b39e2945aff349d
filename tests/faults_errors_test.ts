// What `echosrv fault` says when something is wrong, as a newcomer trying the README meets it: an address where
// nothing listens is explained as `echosrv stats` explains it. echosrv runs as `deno task start` runs it, on
// loopback, port 0.

import assert from "node:assert/strict";
import { freePort, runEchosrv } from "./helpers.ts";

Deno.test("echosrv fault: nothing listening at --api says so, as `echosrv stats` does, exit 1", async () => {
  const port = freePort(); // just closed: nothing listens there
  const result = await runEchosrv(["fault", "list", "--api", `127.0.0.1:${port}`]);
  assert.equal(result.code, 1, result.stderr);
  assert.equal(
    result.stderr,
    `echosrv: cannot reach the fault API at http://127.0.0.1:${port}: connection refused (nothing listens there) ` +
      `(is echosrv running with --fault-api 127.0.0.1:${port}?)\n`,
  );
  const stats = await runEchosrv(["stats", "--metrics-url", `127.0.0.1:${port}`, "--count", "1"]);
  assert.match(stats.stderr, /: connection refused \(nothing listens there\) /, "the same words as echosrv stats");
});
