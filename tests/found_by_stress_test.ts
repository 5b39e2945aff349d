// Bugs the stress swarm and the fuzzers found, each pinned by the smallest test that reproduced it.

import assert from "node:assert/strict";
import { readAll, readExactly, sleep, within, withServer, writeAll } from "./helpers.ts";

Deno.test("the idle timeout never closes a connection before it has been silent for the full timeout", async () => {
  // Found by `deno task stress` (kind idle-timeout): with --idle-timeout 10s a connection was closed after 7.9 s of
  // silence. The idle sweep compared a clock it advances only once per tick (a tenth of the timeout), so a
  // connection active just after a tick looked a tick older than it was; before the first tick, much older.
  // Twenty connections, their last byte spread across a tick, each timed from before that byte was sent.
  const timeoutMs = 1000;
  await withServer({ idleTimeoutMs: timeoutMs }, async (port, server) => {
    const silences = await within(
      30_000,
      "the idle timeout to close every connection",
      Promise.all(Array.from({ length: 20 }, async (_, i) => {
        await sleep(i * 7);
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        try {
          const sent = performance.now();
          await writeAll(conn, Uint8Array.of(i));
          await readExactly(conn, 1, 10_000);
          assert.equal((await readAll(conn, 20_000)).length, 0, "closed by the server, nothing more echoed");
          return performance.now() - sent;
        } finally {
          conn.close();
        }
      })),
    );
    const early = silences.filter((ms) => ms < timeoutMs).map(Math.round);
    assert.deepEqual(early, [], `closed after less than ${timeoutMs} ms of silence`);
    assert.equal(server.stats.closedIdle >= 20, true, "closed by the idle timeout");
  });
});
