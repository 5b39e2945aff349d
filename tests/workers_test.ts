// --workers: several accept loops, each in its own Deno Worker with its own listener on one port (SO_REUSEPORT,
// Linux). Echo over IPv4 and IPv6 with both workers serving, the connection cap shared exactly by all workers, the
// idle timeout, the graceful stop of every worker (and the second signal), and the fallback to one worker where
// SO_REUSEPORT cannot be had. Processes are started as `deno task start` starts them; loopback and port 0 only.

import assert from "node:assert/strict";
import { parseCommandLine } from "../lib/options.ts";
import { SharedConnectionCap } from "../lib/connection_cap.ts";
import { autoWorkers, MAX_AUTO_WORKERS, reusePortUnavailable } from "../lib/runtime.ts";
import {
  closedWithoutEcho,
  echoSession,
  type LogLine,
  metricsPortOf,
  pseudoRandomBytes,
  readAll,
  sameBytes,
  scrape,
  servedConnection,
  type ServerProcess,
  sleep,
  spawnServer,
  startTaskArgs,
  writeAll,
} from "./helpers.ts";

const LOOPBACK = ["-H", "127.0.0.1", "-H", "::1"];
/** Two workers on a port the OS picks, on IPv4 loopback: how most tests here start the server. */
const TWO_WORKERS = ["--port", "0", "-H", "127.0.0.1", "--workers", "2"];
const linuxOnly = Deno.build.os !== "linux";

/** The "opened" lines of the workers (they need --log-level debug). */
function openedRecords(server: ServerProcess): LogLine[] {
  return server.records().filter((r) => /^worker \d+: opened /.test(r.message));
}

/** The worker numbers that logged a connection being opened. */
function workersThatServed(server: ServerProcess): Set<unknown> {
  return new Set(openedRecords(server).map((r) => r.properties.worker));
}

/**
 * Opens connections with `open` until there are at least `least` and both workers hold some (the kernel picks the
 * worker by a hash of addresses and ports, so a handful could all land on one). At most 64.
 */
async function spreadOverBothWorkers<T>(server: ServerProcess, least: number, open: () => Promise<T>): Promise<T[]> {
  const made: T[] = [];
  while (made.length < 64) {
    made.push(await open());
    const count = made.length;
    await server.waitFor(() => openedRecords(server).length >= count, `connection ${count} to be logged`);
    if (made.length >= least && workersThatServed(server).size === 2) return made;
  }
  throw new Error("64 connections all landed on one worker");
}

/** Waits until both workers have logged that they stopped accepting (the drain has begun in each). */
async function bothDraining(server: ServerProcess): Promise<void> {
  await server.waitFor(
    () => server.records().filter((r) => /^worker \d+: stopped accepting/.test(r.message)).length === 2,
    "both workers to begin draining",
  );
}

Deno.test({
  name: "--workers 2: both workers listen on the port the first picked and echo over IPv4 and IPv6",
  ignore: linuxOnly,
  async fn() {
    await using server = await spawnServer(["--port", "0", ...LOOPBACK, "--workers", "2", "--log-level", "debug"]);
    const listening = server.records().filter((r) => /^worker \d+: listening on/.test(r.message));
    assert.deepEqual(listening.map((r) => `${r.properties.worker} ${r.properties.address}`).sort(), [
      `1 127.0.0.1:${server.port}`,
      `1 [::1]:${server.port}`,
      `2 127.0.0.1:${server.port}`,
      `2 [::1]:${server.port}`,
    ]);
    // 40 sessions: the kernel spreads them over the two workers by their addresses and ports.
    for (let batch = 0; batch < 4; batch++) {
      await Promise.all(Array.from({ length: 10 }, async (_, i) => {
        const seed = batch * 10 + i + 1;
        const data = pseudoRandomBytes(64 * 1024 + seed, seed);
        const host = seed % 2 ? "127.0.0.1" : "::1";
        assert.equal(sameBytes(await echoSession(host, server.port, data), data), true, `session ${seed} (${host})`);
      }));
    }
    await server.waitFor(() => openedRecords(server).length === 40, "40 connections to be logged");
    assert.equal(workersThatServed(server).size, 2, "both workers served some of the 40");
    server.signal("SIGTERM");
    assert.equal(await server.exited(), 0);
    const summary = server.records().find((r) => r.message.startsWith("stopped:"));
    assert.ok(summary, "one closing summary for all workers");
    assert.equal(summary.properties.accepted, 40);
    assert.equal(summary.properties.workers, 2);
  },
});

Deno.test({
  name: "--workers 2: the connection cap counts the connections of all workers together",
  ignore: linuxOnly,
  async fn() {
    await using server = await spawnServer([...TWO_WORKERS, "--max-connections", "4"]);
    const open = [];
    try {
      for (let i = 0; i < 4; i++) open.push(await servedConnection(server.port));
      // Were the cap per worker, some of these would land on a worker with room and be served.
      for (let i = 0; i < 8; i++) assert.equal(await closedWithoutEcho(server.port), true, `attempt ${i + 1} refused`);
      open.pop()!.close();
      // The freed place is taken by whichever worker gets the next connection; the close takes a moment to count.
      let again: Deno.TcpConn | undefined;
      for (let attempt = 0; attempt < 100 && !again; attempt++) {
        again = await servedConnection(server.port).catch(() => undefined);
        if (!again) await sleep(50);
      }
      assert.ok(again, "a place freed up");
      open.push(again);
      assert.equal(await closedWithoutEcho(server.port), true, "and the cap holds again");
    } finally {
      for (const conn of open) conn.close();
    }
    await server.waitFor((r) => /refused \d+ connection\(s\) over the cap of 4/.test(r.message), "the refusal warning");
    server.signal("SIGTERM");
    assert.equal(await server.exited(), 0);
  },
});

Deno.test({
  name: "--workers 2: the idle timeout closes silent connections on every worker",
  ignore: linuxOnly,
  async fn() {
    await using server = await spawnServer([...TWO_WORKERS, "--idle-timeout", "500ms", "--log-level", "debug"]);
    const conns = await spreadOverBothWorkers(server, 4, () => servedConnection(server.port));
    try {
      const ends = await Promise.all(conns.map((conn) => readAll(conn, 15_000)));
      assert.deepEqual(ends.map((b) => b.length), Array(conns.length).fill(0), "every one closed by the server");
      await server.waitFor(
        () => server.records().filter((r) => r.message.endsWith(": idle timeout")).length === conns.length,
        "an idle-timeout close for each",
      );
    } finally {
      for (const conn of conns) conn.close();
    }
    server.signal("SIGTERM");
    assert.equal(await server.exited(), 0);
  },
});

Deno.test({
  name: "--workers 2: SIGTERM stops every worker gracefully; in-flight sessions finish, new connections are refused",
  ignore: linuxOnly,
  async fn() {
    await using server = await spawnServer([...TWO_WORKERS, "--shutdown-timeout", "30s", "--log-level", "debug"]);
    let seed = 10;
    const sessions = await spreadOverBothWorkers(server, 4, async () => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      const first = pseudoRandomBytes(256 * 1024, seed++);
      const reading = readAll(conn, 60_000);
      reading.catch(() => {});
      await writeAll(conn, first);
      return { conn, first, reading };
    });
    try {
      server.signal("SIGTERM");
      await bothDraining(server);
      const attempt = await Deno.connect({ hostname: "127.0.0.1", port: server.port })
        .then((c) => (c.close(), "connected"), (e: Error) => e.name);
      assert.ok(["ConnectionRefused", "ConnectionReset"].includes(attempt), `refused while draining: ${attempt}`);
      await Promise.all(sessions.map(async ({ conn, first, reading }, i) => {
        const second = pseudoRandomBytes(128 * 1024, 20 + i);
        await writeAll(conn, second);
        await conn.closeWrite();
        const echo = await reading;
        assert.equal(echo.length, first.length + second.length, `session ${i}: the whole echo`);
        assert.equal(sameBytes(echo.subarray(0, first.length), first), true);
        assert.equal(sameBytes(echo.subarray(first.length), second), true);
      }));
      assert.equal(await server.exited(), 0);
      assert.ok(server.records().some((r) => r.message.startsWith("stopped:") && r.properties.workers === 2));
    } finally {
      for (const { conn } of sessions) conn.close();
    }
  },
});

Deno.test({
  name: "--workers 2: a second signal, a second or more later, closes the sessions of every worker at once",
  ignore: linuxOnly,
  async fn() {
    await using server = await spawnServer([...TWO_WORKERS, "--shutdown-timeout", "1h", "--log-level", "debug"]);
    const conns = await spreadOverBothWorkers(server, 2, () => servedConnection(server.port));
    try {
      server.signal("SIGTERM");
      await bothDraining(server);
      await sleep(1200); // a repeat within a second would be the same request (see stop_test.ts)
      server.signal("SIGTERM");
      assert.equal(await server.exited(15_000), 0);
      for (const conn of conns) assert.equal((await readAll(conn, 10_000)).length, 0, "closed by the server");
    } finally {
      for (const conn of conns) conn.close();
    }
  },
});

Deno.test({
  name: "--workers 2 without Deno's --unstable-net: a warning that says why, then one worker serves",
  ignore: linuxOnly,
  async fn() {
    const withoutFlag = startTaskArgs().filter((arg) => arg !== "--unstable-net");
    await using server = await spawnServer(TWO_WORKERS, {
      runArgs: withoutFlag,
    });
    const warning = server.records().find((r) => r.level === "WARN" && r.message.includes("--workers 2"));
    assert.ok(warning, server.lines.join("\n"));
    assert.match(warning.message, /--unstable-net.*Running 1 worker/);
    const data = pseudoRandomBytes(10_000, 7);
    assert.equal(sameBytes(await echoSession("127.0.0.1", server.port, data), data), true);
    server.signal("SIGTERM");
    assert.equal(await server.exited(), 0);
  },
});

Deno.test({
  name: "--workers 2 on a port another program listens on exits 1 naming the port (no silent sharing)",
  ignore: linuxOnly,
  async fn() {
    const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const port = holder.addr.port;
      await using server = await spawnServer(["--port", String(port), "-H", "127.0.0.1", "--workers", "2"], {
        noWait: true,
      });
      assert.equal(await server.exited(), 1);
      const errors = server.records().filter((r) => r.level === "ERROR");
      assert.equal(errors.length, 1, server.lines.join("\n"));
      assert.match(errors[0].message, new RegExp(`port ${port} .*already in use`));
    } finally {
      holder.close();
    }
  },
});

Deno.test("reusePortUnavailable: only Linux with --unstable-net spreads a port over workers", () => {
  assert.equal(reusePortUnavailable("linux", true), undefined);
  assert.match(reusePortUnavailable("linux", false)!, /--unstable-net/);
  assert.match(reusePortUnavailable("windows", true)!, /only on Linux \(this is windows\)/);
  assert.match(reusePortUnavailable("darwin", true)!, /only on Linux \(this is darwin\)/);
});

Deno.test("SharedConnectionCap: workers sharing one buffer share one exact cap", () => {
  const shared = new SharedArrayBuffer(4);
  const one = new SharedConnectionCap(shared, 3);
  const two = new SharedConnectionCap(shared, 3);
  assert.deepEqual([one.tryAcquire(), two.tryAcquire(), one.tryAcquire()], [true, true, true]);
  assert.equal(two.tryAcquire(), false, "the fourth, on either worker, is refused");
  assert.equal(one.tryAcquire(), false);
  assert.equal(one.open, 3, "a refusal leaves the count as it was");
  two.release();
  assert.equal(two.tryAcquire(), true, "a place freed on one worker is taken on the other");
  const uncapped = new SharedConnectionCap(new SharedArrayBuffer(4), 0);
  for (let i = 0; i < 100; i++) assert.equal(uncapped.tryAcquire(), true);
  assert.equal(uncapped.open, 100);
});

Deno.test("--workers takes a count or auto; anything else exits 2 naming the option", () => {
  const quiet = { out: () => {}, err: () => {} };
  const auto = parseCommandLine(["--workers", "auto"], quiet);
  const cores = navigator.hardwareConcurrency;
  const expected = reusePortUnavailable() === undefined ? Math.min(cores, MAX_AUTO_WORKERS) : 1;
  assert.equal(auto.kind === "run" && auto.config.workers, expected, "auto: one per core, at most 16, where possible");
  const three = parseCommandLine(["--workers", "3"], quiet);
  assert.equal(three.kind === "run" && three.config.workers, 3);
  const fallback = parseCommandLine([], quiet);
  assert.equal(fallback.kind === "run" && fallback.config.workers, expected, "the default is auto");
  assert.equal(autoWorkers(64), reusePortUnavailable() === undefined ? MAX_AUTO_WORKERS : 1, "the cap");
  for (const bad of ["0", "-1", "two", "1.5", ""]) {
    let text = "";
    const what = parseCommandLine(["--workers", bad], { out: () => {}, err: (t) => text += t });
    assert.deepEqual(what, { kind: "exit", code: 2 }, bad);
    assert.match(text, /--workers/, bad);
  }
});

Deno.test({
  name: "--workers 2 with the operations features: access rules and byte limit in every worker, /metrics sums them",
  ignore: linuxOnly,
  async fn() {
    await using server = await spawnServer([
      "--port",
      "0",
      ...LOOPBACK,
      "--workers",
      "2",
      "--log-level",
      "debug",
      "--metrics",
      "127.0.0.1:0",
      "--allow",
      "127.0.0.0/8",
      "--max-bytes-per-connection",
      "1000",
    ]);
    const metricsPort = await metricsPortOf(server);
    // Connections from 127.0.0.1 are allowed; spread them until both workers served some.
    await spreadOverBothWorkers(server, 4, async () => {
      const data = pseudoRandomBytes(3000, 9);
      const echo = await echoSession("127.0.0.1", server.port, data);
      assert.equal(sameBytes(echo, data.subarray(0, 1000)), true, "the byte limit holds in every worker");
    });
    const served = openedRecords(server).length;
    // From ::1: outside the allow rule, so every worker refuses it before any byte is echoed.
    for (let i = 0; i < 8; i++) assert.equal(await closedWithoutEcho(server.port, "::1"), true, "::1 is refused");
    const samples = await scrape(metricsPort);
    assert.equal(samples.get("echosrv_connections_accepted_total"), served, "accepted, summed over the workers");
    assert.equal(samples.get("echosrv_echoed_bytes_total"), served * 1000);
    assert.equal(samples.get('echosrv_connections_closed_total{reason="max_bytes"}'), served);
    assert.equal(samples.get('echosrv_connections_rejected_total{reason="access_rule"}'), 8, "refusals summed");
    server.signal("SIGTERM");
    assert.equal(await server.exited(), 0);
  },
});
