// The default worker count (lib/runtime.ts's autoWorkers: one per core where SO_REUSEPORT works, at most 16) and
// what must stay exact across its workers: the connection cap, the per-client cap (counted in the main thread for
// every worker), the metrics, and the graceful stop. Started with no --workers at all, as users start it.

import assert from "node:assert/strict";
import { autoWorkers, reusePortUnavailable } from "../lib/runtime.ts";
import {
  closedWithoutEcho,
  metricsPortOf,
  pseudoRandomBytes,
  readAll,
  sameBytes,
  scrape,
  servedConnection,
  sleep,
  spawnServer,
  writeAll,
} from "./helpers.ts";

const multiCore = reusePortUnavailable() === undefined && autoWorkers() > 1;
if (!multiCore) console.log("default_workers_test: SKIPPED, the default here is one loop (one core, or not Linux)");

Deno.test({
  name: "by default echosrv runs one worker per core; caps, per-client caps, metrics and the stop stay exact",
  ignore: !multiCore,
  async fn() {
    await using server = await spawnServer([
      ...["--port", "0", "-H", "127.0.0.1", "--metrics", "127.0.0.1:0"],
      ...["--max-connections", "6", "--max-connections-per-ip", "3", "--shutdown-timeout", "30s"],
    ], { defaultWorkers: true });
    const ready = server.records().find((r) => r.message.startsWith("echoing on port"))!;
    assert.equal(ready.properties.workers, autoWorkers(), ready.message);
    assert.ok(!server.records().some((r) => r.level === "WARN"), "no warning: nothing is approximate");
    const metricsPort = await metricsPortOf(server);

    // One client address: the kernel spreads its connections over the workers, yet the per-client cap of 3 holds
    // for the process (counted per worker, four connections on two workers would have passed).
    const held: Deno.TcpConn[] = [];
    for (let i = 0; i < 3; i++) held.push(await servedConnection(server.port));
    try {
      for (let i = 0; i < 4; i++) assert.equal(await closedWithoutEcho(server.port), true, `attempt ${i + 4} refused`);
      const samples = await scrape(metricsPort);
      assert.equal(samples.get("echosrv_connections_active"), 3, "the gauge sums the workers");
      assert.equal(samples.get('echosrv_connections_rejected_total{reason="per_client_cap"}'), 4);

      // A session open across the stop finishes: every worker drains, exit 0.
      const data = pseudoRandomBytes(512 * 1024, 5);
      const reading = readAll(held[0], 30_000);
      await writeAll(held[0], data.subarray(0, 1000));
      server.signal("SIGTERM");
      await server.waitFor((r) => r.message.includes("stopped accepting"), "the drain to begin");
      await sleep(200);
      await writeAll(held[0], data.subarray(1000));
      await held[0].closeWrite();
      assert.equal(sameBytes(await reading, data), true, "the session open across the stop got its whole echo");
      held[1].close();
      held[2].close();
      assert.equal(await server.exited(), 0);
    } finally {
      for (const conn of held) {
        try {
          conn.close();
        } catch {
          // closed above
        }
      }
    }
  },
});
