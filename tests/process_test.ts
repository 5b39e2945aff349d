// echosrv as a process, started the way `deno task start` starts it: IPv4 and IPv6, signals and exit codes, the
// port in use, the log (JSON, file, trace flags), descriptor exhaustion, and memory under a client that never
// reads. Loopback addresses and port 0 only.

import assert from "node:assert/strict";
import { reusePortUnavailable } from "../lib/runtime.ts";
import {
  cannotRun,
  connectWhenUp,
  echoSession,
  freePort,
  hasCommand,
  NO_STOP_SIGNALS,
  pseudoRandomBytes,
  readAll,
  readExactly,
  residentKiB,
  sameBytes,
  SIGTERM_EXIT_CODE,
  sleep,
  spawnServer,
  within,
  writeAll,
  writeUntilStalled,
} from "./helpers.ts";

const LOOPBACK = ["-H", "::1", "-H", "127.0.0.1"];

Deno.test("echoes over IPv4 and IPv6 on one port, logs one line per listener, stops on SIGTERM with exit 0", {
  ignore: cannotRun("the tests of stopping echosrv with a signal", NO_STOP_SIGNALS),
}, async () => {
  await using server = await spawnServer(["--port", "0", ...LOOPBACK]);
  const data = pseudoRandomBytes(1024 * 1024, 2);
  assert.equal(sameBytes(await echoSession("127.0.0.1", server.port, data), data), true, "IPv4");
  assert.equal(sameBytes(await echoSession("::1", server.port, data), data), true, "IPv6");
  const listening = server.records().filter((r) => r.message.startsWith("listening on"));
  assert.deepEqual(listening.map((r) => r.properties.address).sort(), [
    `127.0.0.1:${server.port}`,
    `[::1]:${server.port}`,
  ]);
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
  assert.ok(server.records().some((r) => r.message.startsWith("stopped:")), "a closing summary is logged");
});

Deno.test("SIGINT stops gracefully: the in-flight session finishes, new connections are refused, exit 0", {
  ignore: cannotRun("the tests of stopping echosrv with a signal", NO_STOP_SIGNALS),
}, async () => {
  await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", "--shutdown-timeout", "30s"]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    const first = pseudoRandomBytes(1024 * 1024, 3);
    const second = pseudoRandomBytes(2 * 1024 * 1024, 4);
    const reading = readAll(conn, 60_000);
    reading.catch(() => {});
    await writeAll(conn, first);
    server.signal("SIGINT");
    await server.waitFor((r) => r.message.startsWith("stopped accepting"), "the drain to begin");
    const attempt = await Deno.connect({ hostname: "127.0.0.1", port: server.port })
      .then((c) => (c.close(), "connected"), (e: Error) => e.name);
    assert.ok(["ConnectionRefused", "ConnectionReset"].includes(attempt), `refused while draining: ${attempt}`);
    await writeAll(conn, second);
    await conn.closeWrite();
    const echo = await reading;
    assert.equal(echo.length, first.length + second.length, "the whole echo");
    assert.equal(sameBytes(echo.subarray(first.length), second), true);
    assert.equal(await server.exited(), 0);
  } finally {
    conn.close();
  }
});

Deno.test("a second signal, a second or more later, stops at once, closing sessions that would hold the stop", {
  ignore: cannotRun("the tests of stopping echosrv with a signal", NO_STOP_SIGNALS),
}, async () => {
  await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", "--shutdown-timeout", "1h"]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    await writeAll(conn, Uint8Array.of(1));
    await readExactly(conn, 1, 10_000);
    server.signal("SIGTERM");
    await server.waitFor((r) => r.message.startsWith("stopped accepting"), "the drain to begin");
    await sleep(1200); // a repeat within a second would be the same request (see stop_test.ts)
    server.signal("SIGTERM");
    assert.equal(await server.exited(15_000), 0);
    assert.equal((await readAll(conn, 10_000)).length, 0, "the session was closed");
  } finally {
    conn.close();
  }
});

Deno.test("a port in use: exit 1, a message naming the port, no summary of a server that never ran", async () => {
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = holder.addr.port;
    // One loop, and the default on a machine with several cores: a pool of workers (where workers can run).
    const workers = reusePortUnavailable() === undefined ? ["1", "2"] : ["1"];
    for (const count of workers) {
      await using server = await spawnServer(["--port", String(port), "-H", "127.0.0.1", "--workers", count], {
        noWait: true,
      });
      assert.equal(await server.exited(), 1);
      const log = server.lines.join("\n");
      const errors = server.records().filter((r) => r.level === "ERROR");
      assert.equal(errors.length, 1, log);
      assert.match(errors[0].message, new RegExp(`port ${port} .*already in use`));
      assert.doesNotMatch(server.stderr, /\n\s+at /, "no stack trace");
      // Nothing started, so nothing stopped: "stopped: 0 connection(s) served, ... by 0 workers" was noise.
      assert.ok(!server.records().some((r) => /stopped:/.test(r.message)), `--workers ${count}: ${log}`);
      const [first, ...rest] = server.records();
      assert.match(first.message, /^echosrv \S+ starting/);
      assert.deepEqual(rest, errors, `--workers ${count}: after the start line, the error and nothing else`);
    }
  } finally {
    holder.close();
  }
});

Deno.test("--log-format json writes one JSON object per line and nothing else", async () => {
  await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", "--log-level", "debug"]);
  await echoSession("127.0.0.1", server.port, pseudoRandomBytes(10, 1));
  await server.waitFor((r) => r.logger === "echosrv.conn" && r.message.startsWith("closed"), "the close event");
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
  assert.ok(server.lines.length >= 5);
  for (const line of server.lines) {
    const record = JSON.parse(line);
    assert.equal(typeof record.message, "string");
    assert.equal(typeof record["@timestamp"], "string");
    assert.ok(["DEBUG", "INFO", "WARN", "ERROR"].includes(record.level), line);
  }
  const closed = server.records().find((r) => r.message.startsWith("closed"))!;
  assert.equal(closed.properties.bytes, 10);
  assert.equal(closed.properties.reason, "closed by peer");
  assert.match(String(closed.properties.peer), /^127\.0\.0\.1:\d+$/);
});

Deno.test("--log-file appends the same lines to a file", {
  // The file holds every line once the server has stopped gracefully (it flushes then), which Windows cannot ask.
  ignore: cannotRun("the tests of stopping echosrv with a signal", NO_STOP_SIGNALS),
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/echosrv.log`;
    await Deno.writeTextFile(file, "an earlier line\n");
    await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", "--log-file", file]);
    server.signal("SIGTERM");
    assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
    const lines = (await Deno.readTextFile(file)).trim().split("\n");
    assert.equal(lines[0], "an earlier line", "appended, not overwritten");
    const records = lines.slice(1).map((l) => JSON.parse(l));
    assert.ok(records.some((r) => r.message.startsWith("listening on")));
    assert.ok(records.some((r) => r.message.startsWith("stopped:")));
    assert.equal(records.length, server.lines.length, "the file has what standard output has");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a log file that cannot be opened exits 1 with a message naming it", async () => {
  await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", "--log-file", "/nonexistent/dir/x.log"], {
    noWait: true,
  });
  assert.equal(await server.exited(), 1);
  assert.match(server.stderr, /cannot open the log file \/nonexistent\/dir\/x\.log/);
  assert.doesNotMatch(server.stderr, /\n\s+at /, "no stack trace");
});

Deno.test("trace flags filter as documented: 0x1 errors only, 0x2 info, 0x4 connection events", async () => {
  const run = async (flags: string) => {
    // Without the info flag there is no startup line that names the port, so the test picks the port itself.
    const port = freePort();
    await using server = await spawnServer(
      ["--port", String(port), "-H", "127.0.0.1", "--log-level", "debug", "--trace-flags", flags],
      { noWait: true },
    );
    await within(20_000, "the server to accept", connectWhenUp(port));
    await echoSession("127.0.0.1", port, Uint8Array.of(1, 2, 3));
    await sleep(300);
    server.signal("SIGTERM");
    assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
    return server.records();
  };
  const infoOnly = await run("0x2");
  assert.ok(infoOnly.length > 0 && infoOnly.every((r) => r.level === "INFO"));
  const connOnly = await run("4");
  assert.ok(connOnly.length >= 2 && connOnly.every((r) => r.logger === "echosrv.conn"), JSON.stringify(connOnly));
  const errorsOnly = await run("0x1");
  assert.equal(errorsOnly.length, 0, "a clean run has no errors or warnings");
  const all = await run("0x7");
  assert.ok(all.some((r) => r.level === "INFO") && all.some((r) => r.logger === "echosrv.conn"));
});

Deno.test("--trace-flags given alone shows its events, as WPP's tracelog -flags does; --log-level still wins", async () => {
  const run = async (extra: string[], env: Record<string, string> = {}) => {
    await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", ...extra], { env });
    await echoSession("127.0.0.1", server.port, Uint8Array.of(1, 2, 3));
    await sleep(300);
    server.signal("SIGTERM");
    assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
    return server.records().filter((r) => r.logger === "echosrv.conn").length;
  };
  assert.ok(await run(["--trace-flags", "0x7"]) >= 2, "--trace-flags 0x7: the per-connection lines");
  assert.ok(await run([], { ECHOSRV_TRACE_FLAGS: "0x6" }) >= 2, "ECHOSRV_TRACE_FLAGS=0x6 too");
  assert.equal(
    await run(["--trace-flags", "0x7", "--log-level", "info"]),
    0,
    "an explicit --log-level info hides them",
  );
  assert.equal(await run([]), 0, "by default (info) they stay hidden");
});

Deno.test("the text format is one readable line per record", async () => {
  await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", "--log-format", "text"], {
    noWait: true,
  });
  await within(
    20_000,
    "startup",
    (async () => {
      while (!server.lines.some((l) => l.includes("echoing on port"))) await sleep(50);
    })(),
  );
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
  assert.match(
    server.lines[0],
    /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[INF\] echosrv\.server: echosrv \S+ starting/,
  );
});

const NO_PRLIMIT = await hasCommand("prlimit", ["--version"])
  ? undefined
  : "prlimit (util-linux) is not installed; it sets the descriptor limit";

Deno.test({
  name: "out of file descriptors (EMFILE), the server keeps serving and accepts again when clients leave",
  ignore: cannotRun("the out-of-descriptors test", NO_PRLIMIT),
}, async () => {
  await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", "--log-level", "debug"], {
    wrapper: ["prlimit", "--nofile=64"],
  });
  const clients: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 80; i++) clients.push(await Deno.connect({ hostname: "127.0.0.1", port: server.port }));
    // Each client sends one byte; those the server could accept echo it, the rest wait in the backlog.
    await Promise.all(clients.map((c, i) => writeAll(c, Uint8Array.of(i))));
    await server.waitFor((r) => r.level === "ERROR" && /accept failed/.test(r.message), "the EMFILE report");
    // One pending read per client, kept: a second read on the same connection would race the first.
    const reads = clients.map((c) => readExactly(c, 1, 30_000));
    reads.forEach((r) => r.catch(() => {}));
    await sleep(1500);
    const settled = await Promise.all(reads.map((r) => Promise.race([r.then(() => true), sleep(0).then(() => false)])));
    const count = settled.filter(Boolean).length;
    assert.ok(count > 0 && count < clients.length, `some served, some waiting: ${count} of ${clients.length}`);
    // Still out of descriptors (the waiting ones are still queued): the connections it has keep being served.
    const served = clients.filter((_, i) => settled[i]);
    await within(
      30_000,
      "the served connections to echo again",
      Promise.all(served.map(async (c, i) => {
        const data = pseudoRandomBytes(4096, i + 1);
        await writeAll(c, data);
        assert.equal(sameBytes(await readExactly(c, data.length, 30_000), data), true);
      })),
    );
    // The served ones leave; the waiting ones must now be accepted and echoed.
    clients.forEach((c, i) => settled[i] && c.close());
    const waiting = clients.filter((_, i) => !settled[i]);
    await within(30_000, "the late echoes", Promise.all(reads.filter((_, i) => !settled[i])));
    const reports = server.records().filter((r) => /accept failed/.test(r.message));
    assert.ok(reports.length <= 3, `the condition is logged once per interval, not per failure: ${reports.length}`);
    waiting.forEach((c) => c.close());
    clients.length = 0;
    const data = pseudoRandomBytes(1000, 4);
    assert.equal(sameBytes(await echoSession("127.0.0.1", server.port, data), data), true, "serving normally");
    server.signal("SIGTERM");
    assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
    // Every failed accept is counted, but they come out folded: the first at once, the rest in a summary.
    const lines = server.records().filter((r) => /accept failed/.test(r.message));
    const failures = lines.reduce((sum, r) => sum + Number(r.properties.count), 0);
    assert.ok(failures > lines.length, `${failures} failed accepts logged in ${lines.length} line(s)`);
  } finally {
    for (const c of clients) {
      try {
        c.close();
      } catch { /* closed above */ }
    }
  }
});

Deno.test("a client that sends without reading stalls its own connection; the others are served", async () => {
  await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1"]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const written = await writeUntilStalled(conn, 512 * 1024 * 1024);
  conn.close();
  assert.ok(written < 128 * 1024 * 1024, `the server stopped reading after ${written} bytes`);
  const data = pseudoRandomBytes(100_000, 6);
  assert.equal(sameBytes(await echoSession("127.0.0.1", server.port, data), data), true, "others are served");
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

/** Why a process's resident memory cannot be read here (support/process_info.ts reads /proc), or undefined. */
const NO_MEMORY_READING = residentKiB(Deno.pid) === undefined
  ? "a process's resident memory is read from /proc/PID/status, which only Linux has"
  : undefined;

Deno.test({
  name: "a client that sends without reading: the server's memory does not grow with what it sends",
  ignore: cannotRun("the memory check of a client that never reads", NO_MEMORY_READING),
}, async () => {
  await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1"]);
  const before = residentKiB(server.pid);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const written = await writeUntilStalled(conn, 512 * 1024 * 1024);
  const after = residentKiB(server.pid);
  conn.close();
  assert.ok(before !== undefined && after !== undefined, "the server's memory was read");
  assert.ok(after - before < 64 * 1024, `server memory grew by ${after - before} KiB after ${written} bytes sent`);
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});
