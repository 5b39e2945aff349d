// The echo itself, against an in-process server on loopback, for both copy strategies: byte exactness, half-close
// with data in flight, zero-byte sessions, resets at both points, a client that never reads, many at once.

import assert from "node:assert/strict";
import type { CopyStrategy } from "../lib/config.ts";
import {
  cannotRun,
  echoSession,
  pseudoRandomBytes,
  readAll,
  readExactly,
  sameBytes,
  sleep,
  underWine,
  waitUntil,
  within,
  withServer,
  writeAll,
  writeUntilStalled,
} from "./helpers.ts";

const STRATEGIES: CopyStrategy[] = ["loop", "pipe"];

for (const copy of STRATEGIES) {
  Deno.test(`[${copy}] echoes random bytes exactly, in order`, async () => {
    await withServer({ copy }, async (port) => {
      const data = pseudoRandomBytes(3 * 1024 * 1024 + 17, 7);
      assert.equal(sameBytes(await echoSession("127.0.0.1", port, data), data), true);
    });
  });

  Deno.test(`[${copy}] echoes every byte value 0-255, one write at a time and all at once`, async () => {
    await withServer({ copy }, async (port) => {
      const all = Uint8Array.from({ length: 256 * 64 }, (_, i) => i & 0xff);
      assert.equal(sameBytes(await echoSession("127.0.0.1", port, all), all), true);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        for (let value = 0; value < 256; value++) {
          await writeAll(conn, Uint8Array.of(value));
          assert.deepEqual(await readExactly(conn, 1, 10_000), Uint8Array.of(value));
        }
      } finally {
        conn.close();
      }
    });
  });

  Deno.test(`[${copy}] a half-close with megabytes in flight still gets the whole echo`, async () => {
    await withServer({ copy }, async (port) => {
      const data = pseudoRandomBytes(12 * 1024 * 1024, 11);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        // Write everything first, reading nothing: when the half-close is sent, megabytes are still in flight.
        const reading = (async () => {
          await sleep(200);
          return await readAll(conn, 60_000);
        })();
        await writeAll(conn, data, 60_000);
        await conn.closeWrite();
        assert.equal(sameBytes(await reading, data), true);
      } finally {
        conn.close();
      }
    });
  });

  Deno.test(`[${copy}] zero-byte sessions: connect and close, connect and half-close`, async () => {
    await withServer({ copy }, async (port, server) => {
      for (let i = 0; i < 20; i++) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        conn.close();
      }
      assert.equal((await echoSession("127.0.0.1", port, new Uint8Array(0))).length, 0);
      const data = pseudoRandomBytes(1000, 3);
      assert.equal(sameBytes(await echoSession("127.0.0.1", port, data), data), true, "still serving");
      await within(10_000, "sessions to end", waitUntil(() => server.activeConnections === 0));
    });
  });

  Deno.test(`[${copy}] a reset while the server reads ends that connection only`, async () => {
    await withServer({ copy }, async (port, server) => {
      const keep = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        for (let i = 0; i < 10; i++) {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port });
          await writeAll(conn, pseudoRandomBytes(100, i + 1));
          await sleep(20); // the echo arrives and stays unread: closing now sends RST, the server is in read()
          conn.close();
        }
        await within(10_000, "the reset sessions to end", waitUntil(() => server.activeConnections === 1));
        const data = pseudoRandomBytes(5000, 99);
        await writeAll(keep, data);
        assert.equal(sameBytes(await readExactly(keep, data.length), data), true, "the other connection still works");
        assert.equal(sameBytes(await echoSession("127.0.0.1", port, data), data), true, "new connections work");
      } finally {
        keep.close();
      }
    });
  });

  Deno.test(`[${copy}] a reset while the server is blocked writing ends that connection only`, {
    ignore: cannotRun(
      "a reset while the server is blocked writing",
      underWine("the server's write blocked on a peer that reset is not ended by the reset"),
    ),
  }, async () => {
    await withServer({ copy }, async (port, server) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const written = await writeUntilStalled(conn, 256 * 1024 * 1024);
      assert.ok(written < 256 * 1024 * 1024, "the server stopped reading once its writes blocked");
      conn.close(); // unread echo in our receive buffer: the kernel sends RST while the server waits in write()
      await within(10_000, "the reset session to end", waitUntil(() => server.activeConnections === 0));
      assert.ok(server.counters.resets >= 1, `resets counted: ${JSON.stringify(server.counters)}`);
      const data = pseudoRandomBytes(64 * 1024, 5);
      assert.equal(sameBytes(await echoSession("127.0.0.1", port, data), data), true, "still serving");
    });
  });

  Deno.test(`[${copy}] hundreds of concurrent connections each get their own bytes back`, async () => {
    await withServer({ copy }, async (port) => {
      const sessions = Array.from({ length: 300 }, (_, i) => pseudoRandomBytes(16 * 1024 + i, i + 1));
      const results = await within(
        60_000,
        "300 sessions",
        Promise.all(sessions.map((d) => echoSession("127.0.0.1", port, d))),
      );
      results.forEach((echo, i) => assert.equal(sameBytes(echo, sessions[i]), true, `session ${i}`));
    });
  });
}

Deno.test("the loop echoes over IPv6 too", async () => {
  await withServer({ hosts: ["::1"] }, async (port) => {
    const data = pseudoRandomBytes(100_000, 8);
    assert.equal(sameBytes(await echoSession("::1", port, data), data), true);
  });
});
