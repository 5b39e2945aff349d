// Bugs the stress swarm and the fuzzers found, each pinned by the smallest test that reproduced it.

import assert from "node:assert/strict";
import { parseCommandLine } from "../lib/options.ts";
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

Deno.test("flags before `run` count, and a flag after `run` still wins over a bad ECHOSRV_ variable", () => {
  // Found by the option fuzzer (tests/fuzz_test.ts): `echosrv --port 7 run` listened on 40007 (the flag before
  // `run` was dropped without a word), and `ECHOSRV_PORT=x echosrv run --port 5` exited 2 although the flag
  // overrides the variable.
  const errors: string[] = [];
  const sink = { out: () => {}, err: (text: string) => void errors.push(text) };
  const before = parseCommandLine(["--port", "7", "-H", "127.0.0.1", "run", "-H", "::1"], sink);
  assert.equal(before.kind, "run", errors.join(""));
  if (before.kind === "run") {
    assert.equal(before.config.server.port, 7);
    assert.deepEqual(before.config.server.hosts, ["127.0.0.1", "::1"]);
  }
  const saved = Deno.env.get("ECHOSRV_PORT");
  Deno.env.set("ECHOSRV_PORT", "x");
  try {
    const after = parseCommandLine(["run", "--port", "5"], sink);
    assert.equal(after.kind === "run" && after.config.server.port, 5, errors.join(""));
    assert.deepEqual(parseCommandLine(["run"], sink), { kind: "exit", code: 2 }, "the bad variable alone is refused");
  } finally {
    if (saved === undefined) Deno.env.delete("ECHOSRV_PORT");
    else Deno.env.set("ECHOSRV_PORT", saved);
  }
  assert.deepEqual(parseCommandLine(["run", "run"], sink), { kind: "exit", code: 2 });
});
