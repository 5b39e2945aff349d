// Closes the server starts deliver what it counted as echoed (lib/connection.ts's lingering close): the byte limit,
// the idle and send timeouts, the duration limit, the stop's deadline and the cap's refusal, each tried with the
// readers that expose a lossy close (a late reader, a 4 KiB receive buffer, a fast reader, a client that sends
// again after the server stopped echoing), played by a real Python client (tests/fixtures/echo_client.py). Before
// the lingering close, each of these ended in a reset that threw away echoed bytes the client had not read yet.

import assert from "node:assert/strict";
import {
  hasCommand,
  pseudoRandomBytes,
  readAll,
  ROOT,
  sameBytes,
  servedConnection,
  type ServerProcess,
  serverSocketsOpen,
  sleep,
  spawnServer,
  within,
  writeAll,
} from "./helpers.ts";

const HAVE_PYTHON = await hasCommand("python3", ["--version"]);
if (!HAVE_PYTHON) console.log("close_test: SKIPPED, needs python3 for its real socket clients");
const CLIENT = `${ROOT}tests/fixtures/echo_client.py`;
const KiB = 1024;
const MiB = 1024 * 1024;

/** One session as the Python client reports it. */
interface Outcome {
  received: number;
  end: string;
  intact: boolean;
}

/** Runs tests/fixtures/echo_client.py against the server with the given options; returns one outcome per session. */
async function clients(port: number, options: Record<string, number>): Promise<Outcome[]> {
  const args = [CLIENT, "--port", `${port}`, "--timeout", "30"];
  for (const [name, value] of Object.entries(options)) args.push(`--${name}`, `${value}`);
  const out = await within(
    60_000,
    `echo_client.py ${args.slice(1).join(" ")}`,
    new Deno.Command("python3", { args, stdout: "piped", stderr: "piped" }).output(),
  );
  const text = new TextDecoder().decode(out.stdout);
  assert.ok(out.success, `echo_client.py failed: ${new TextDecoder().decode(out.stderr)}`);
  return text.trim().split("\n").map((line) => JSON.parse(line) as Outcome);
}

/** The byte counts and reasons of the server's per-connection closing lines, in the order they were logged. */
function closings(server: ServerProcess): Array<{ bytes: number; reason: string }> {
  return server.records().filter((r) => r.message.startsWith("closed ")).map((r) => ({
    bytes: r.properties.bytes as number,
    reason: r.properties.reason as string,
  }));
}

/** Waits until the server has logged `count` closing lines. */
async function closed(server: ServerProcess, count: number): Promise<Array<{ bytes: number; reason: string }>> {
  await server.waitFor(() => closings(server).length >= count, `${count} closing line(s)`, 40_000);
  return closings(server);
}

const BASE = ["--port", "0", "-H", "127.0.0.1", "--log-level", "debug"];

for (
  const [name, options] of [
    ["a late reader (reads after 1 s)", { send: MiB, "read-after": 1 }],
    ["a 4 KiB receive buffer, reading after 1 s", { send: MiB, "read-after": 1, rcvbuf: 4 * KiB }],
    ["a fast reader", { send: 4 * MiB }],
  ] as const
) {
  for (const copy of ["loop", "pipe"]) {
    Deno.test({
      name:
        `--max-bytes-per-connection 256KiB, --copy ${copy}: ${name} gets exactly 256 KiB then end of stream, 10 of 10`,
      ignore: !HAVE_PYTHON,
      async fn() {
        await using server = await spawnServer([...BASE, "--copy", copy, "--max-bytes-per-connection", "256KiB"]);
        const outcomes = await clients(server.port, { ...options, sessions: 10 });
        for (const [i, outcome] of outcomes.entries()) {
          assert.deepEqual(outcome, { received: 256 * KiB, end: "eof", intact: true }, `session ${i + 1}`);
        }
        const logged = await closed(server, 10);
        assert.ok(logged.every((c) => c.bytes === 256 * KiB && c.reason === "byte limit"), JSON.stringify(logged));
      },
    });
  }
}

Deno.test({
  name: "--idle-timeout: a client that sends again just after the idle close still reads its whole echo, then EOF",
  ignore: !HAVE_PYTHON,
  async fn() {
    await using server = await spawnServer([...BASE, "--idle-timeout", "1s"]);
    const outcomes = await clients(server.port, {
      send: 256 * KiB,
      "read-after": 2.5,
      "send-again": 64 * KiB,
      "send-again-after": 1.4,
      sessions: 5,
    });
    for (const outcome of outcomes) assert.deepEqual(outcome, { received: 256 * KiB, end: "eof", intact: true });
    const logged = await closed(server, 5);
    assert.ok(logged.every((c) => c.reason === "idle timeout"), JSON.stringify(logged));
  },
});

Deno.test({
  name: "--idle-timeout 1s never cuts a slow reader: 1.5 MiB read at 200 KB/s arrives whole",
  ignore: !HAVE_PYTHON,
  async fn() {
    await using server = await spawnServer([...BASE, "--idle-timeout", "1s"]);
    const [outcome] = await clients(server.port, { send: 1.5 * MiB, pace: 200_000 });
    assert.equal(outcome.received, 1.5 * MiB, `the whole echo (${JSON.stringify(outcome)})`);
    assert.equal(outcome.intact, true);
  },
});

Deno.test({
  name: "--send-timeout: a client that never reads is closed; reading later it gets exactly what was counted, then EOF",
  ignore: !HAVE_PYTHON,
  async fn() {
    await using server = await spawnServer([...BASE, "--send-timeout", "1s", "--idle-timeout", "0"]);
    const outcomes = await clients(server.port, { send: 16 * MiB, "read-after": 4, sessions: 3 });
    const logged = await closed(server, 3);
    assert.ok(logged.every((c) => c.reason === "send timeout"), JSON.stringify(logged));
    const counted = logged.map((c) => c.bytes).sort((a, b) => a - b);
    const received = outcomes.map((o) => o.received).sort((a, b) => a - b);
    assert.deepEqual(received, counted, "each client read exactly what the server counted as echoed");
    assert.ok(outcomes.every((o) => o.end === "eof" && o.intact), JSON.stringify(outcomes));
    assert.ok(counted.every((bytes) => bytes > 0 && bytes < 16 * MiB));
  },
});

Deno.test({
  name: "--max-connection-duration: a client still sending at the limit reads exactly what was counted, then EOF",
  ignore: !HAVE_PYTHON,
  async fn() {
    await using server = await spawnServer([...BASE, "--max-connection-duration", "1s"]);
    const outcomes = await clients(server.port, { send: 32 * MiB, "read-after": 2, pace: 4 * MiB, sessions: 3 });
    const logged = await closed(server, 3);
    assert.ok(logged.every((c) => c.reason === "duration limit"), JSON.stringify(logged));
    const counted = logged.map((c) => c.bytes).sort((a, b) => a - b);
    const received = outcomes.map((o) => o.received).sort((a, b) => a - b);
    assert.deepEqual(received, counted, "each client read exactly what the server counted as echoed");
    assert.ok(outcomes.every((o) => o.end === "eof" && o.intact), JSON.stringify(outcomes));
  },
});

Deno.test({
  name: "the stop's deadline: a session cut by --shutdown-timeout reads exactly what was counted, then EOF",
  ignore: !HAVE_PYTHON,
  async fn() {
    await using server = await spawnServer([...BASE, "--shutdown-timeout", "1s"]);
    const running = clients(server.port, {
      send: 512 * KiB,
      "read-after": 2.5,
      "send-again": 64 * KiB,
      "send-again-after": 1.5,
    });
    await server.waitFor((r) => r.message.startsWith("opened "), "the session to open");
    await sleep(300);
    server.signal("SIGTERM");
    const [outcome] = await running;
    const [logged] = await closed(server, 1);
    assert.equal(logged.reason, "server stopping");
    assert.deepEqual(outcome, { received: logged.bytes, end: "eof", intact: true });
    assert.equal(logged.bytes, 512 * KiB, "everything sent before the stop was echoed");
    assert.equal(await server.exited(), 0);
  },
});

Deno.test({
  name: "--max-connections: a refused client that had sent data reads end of stream, not a reset",
  ignore: !HAVE_PYTHON,
  async fn() {
    await using server = await spawnServer([...BASE, "--max-connections", "1"]);
    const holder = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    try {
      await server.waitFor((r) => r.message.startsWith("opened "), "the first connection to be served");
      const outcomes = await clients(server.port, { send: 16 * KiB, "read-after": 0.3, sessions: 5 });
      for (const outcome of outcomes) assert.deepEqual(outcome, { received: 0, end: "eof", intact: true });
    } finally {
      holder.close();
    }
  },
});

for (
  const [deadline, args] of [
    ["--idle-timeout", ["--idle-timeout", "1s"]],
    ["--max-connection-duration", ["--max-connection-duration", "1s", "--idle-timeout", "0"]],
    ["--proxy-timeout", ["--proxy-protocol", "--proxy-from", "127.0.0.1", "--proxy-timeout", "1s"]],
  ] as const
) {
  Deno.test({
    name: `${deadline} 1s: the server's sockets are closed within the deadline plus a second, silent clients or not`,
    ignore: Deno.build.os !== "linux",
    async fn() {
      await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", ...args]);
      const proxied = deadline === "--proxy-timeout";
      // Five clients that say nothing more (behind a PROXY listener, not even the header) and never close.
      const clients = await Promise.all(
        Array.from(
          { length: 5 },
          () => proxied ? Deno.connect({ hostname: "127.0.0.1", port: server.port }) : servedConnection(server.port),
        ),
      );
      try {
        await sleep(200);
        assert.equal(await serverSocketsOpen(server.port), 5, "open while within the deadline");
        await sleep(1800); // the deadline (1 s from connecting) plus a second
        assert.equal(await serverSocketsOpen(server.port), 0, "the server's sockets are gone");
      } finally {
        for (const conn of clients) conn.close();
      }
    },
  });
}

Deno.test({
  name: "--send-timeout 1s with the echo still in flight: the server waits 5 s of the client's silence, not 0.75 s; " +
    "the client then reads exactly what was counted, then end of stream",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await using server = await spawnServer([...BASE, "--send-timeout", "1s"]);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    try {
      // 16 MiB without reading: the echo stalls, then our writes do, until the send timeout makes the server discard.
      const data = pseudoRandomBytes(16 * MiB, 77);
      await writeAll(conn, data, 30_000);
      // The server gave up on our echo; its write is still in flight, and we stay silent, reading nothing, for 2 s:
      // a client starved of CPU for a moment. The server still holds the connection, waiting for us to read.
      await sleep(2000);
      assert.equal(await serverSocketsOpen(server.port), 1, "the lingering close waits for the reader");
      const echo = await readAll(conn, 30_000);
      const [closing] = await closed(server, 1);
      assert.equal(closing.reason, "send timeout");
      assert.equal(echo.length, closing.bytes, "exactly what the server counted as echoed, then end of stream");
      assert.equal(sameBytes(echo, data.subarray(0, echo.length)), true, "the echo is the data, in order");
    } finally {
      conn.close();
    }
  },
});
