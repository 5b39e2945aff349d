// Access rules, per-client cap, byte and duration limits against an in-process server over real loopback sockets:
// each refuses what it should, before a byte is echoed, counts it, and leaves everything else alone.

import assert from "node:assert/strict";
import type { ServerConfig } from "../lib/config.ts";
import {
  cannotRun,
  CLIENT_RESET,
  DUAL_STACK,
  echoSession,
  pseudoRandomBytes,
  readAll,
  readExactly,
  sameBytes,
  underWine,
  waitUntil,
  within,
  withServer,
  writeAll,
} from "./helpers.ts";

const rules = (allow: string[], deny: string[], maxPerClient = 0): Partial<ServerConfig> => ({
  access: {
    allow,
    deny,
    maxPerClient,
  },
});

/** Connects, sends a byte, and tells whether it came back (true) or the server closed without echo (false). */
async function echoes(hostname: string, port: number): Promise<boolean> {
  const conn = await Deno.connect({ hostname, port });
  try {
    await conn.write(Uint8Array.of(7)).catch(() => 0);
    const got = await readExactly(conn, 1, 10_000).catch(() => undefined);
    return got?.[0] === 7;
  } finally {
    conn.close();
  }
}

/** A connection proven served by one echoed byte. */
async function served(hostname: string, port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname, port });
  await writeAll(conn, Uint8Array.of(1));
  assert.deepEqual(await readExactly(conn, 1, 10_000), Uint8Array.of(1));
  return conn;
}

Deno.test("--deny refuses a network before any echo and counts it; others are served", async () => {
  await withServer({ hosts: ["127.0.0.1", "::1"], ...rules([], ["127.0.0.0/8"]) }, async (port, server) => {
    assert.equal(await echoes("127.0.0.1", port), false, "IPv4 loopback is denied");
    assert.equal(await echoes("::1", port), true, "IPv6 loopback is not in the rule");
    assert.equal(server.counters.refusedAccessRule, 1);
    assert.equal(server.counters.accepted, 1);
  });
});

Deno.test("--allow admits only its networks; deny wins; IPv4 clients of a dual-stack [::] match IPv4 rules", {
  ignore: cannotRun("a dual-stack [::] listener taking IPv4 clients", DUAL_STACK),
}, async () => {
  await withServer({ hosts: ["::"], ...rules(["127.0.0.0/8"], []) }, async (port, server) => {
    // On Linux [::] is dual-stack: the IPv4 client arrives as ::ffff:127.0.0.1 and must match 127.0.0.0/8.
    assert.equal(await echoes("127.0.0.1", port), true, "mapped IPv4 matches the IPv4 allow rule");
    assert.equal(await echoes("::1", port), false, "anything not allowed is denied");
    assert.equal(server.counters.refusedAccessRule, 1);
  });
  await withServer({ hosts: ["::"], ...rules(["127.0.0.0/8", "::1"], ["127.0.0.1"]) }, async (port, server) => {
    assert.equal(await echoes("127.0.0.1", port), false, "deny wins over allow");
    assert.equal(await echoes("::1", port), true);
    assert.equal(server.counters.refusedAccessRule, 1);
  });
});

Deno.test("--max-connections-per-ip refuses one more from the same client, and frees up when one closes", async () => {
  await withServer({ hosts: ["127.0.0.1", "::1"], ...rules([], [], 2) }, async (port, server) => {
    const open = [await served("127.0.0.1", port), await served("127.0.0.1", port)];
    try {
      assert.equal(await echoes("127.0.0.1", port), false, "a third from 127.0.0.1 is refused");
      assert.equal(server.counters.refusedPerClient, 1);
      const other = await served("::1", port); // another client is not affected
      other.close();
      open.pop()!.close();
      await within(10_000, "the closed session to end", waitUntil(() => server.activeConnections === 1));
      open.push(await served("127.0.0.1", port));
      assert.equal(server.counters.refusedPerClient, 1);
    } finally {
      for (const conn of open) conn.close();
    }
  });
});

for (const copy of ["loop", "pipe"] as const) {
  Deno.test(`--max-bytes-per-connection echoes exactly the limit, then closes (copy ${copy})`, {
    ignore: cannotRun("--max-bytes-per-connection's exact echo", underWine(CLIENT_RESET)),
  }, async () => {
    await withServer({ copy, maxBytesPerConnection: 100_000 }, async (port, server) => {
      const data = pseudoRandomBytes(300_000, 5);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        const reading = readAll(conn, 30_000);
        // The server stops reading at the limit, so the rest of the write may fail: that is the point.
        await writeAll(conn, data, 30_000).catch(() => {});
        const got = await reading.catch(() => new Uint8Array(0));
        assert.equal(got.length, 100_000, "exactly the limit comes back");
        assert.equal(sameBytes(got, data.subarray(0, 100_000)), true);
      } finally {
        conn.close();
      }
      await within(10_000, "the session to end", waitUntil(() => server.activeConnections === 0));
      assert.equal(server.counters.closedMaxBytes, 1);
      // Under the limit nothing changes.
      const small = pseudoRandomBytes(99_999, 6);
      assert.equal(sameBytes(await echoSession("127.0.0.1", port, small), small), true);
      await within(10_000, "the session to end", waitUntil(() => server.activeConnections === 0));
      assert.equal(server.counters.closedMaxBytes, 1, "a session under the limit is not counted");
    });
  });
}

Deno.test("--max-connection-duration closes a busy connection at its age, counts it, spares a young one", async () => {
  await withServer({ maxConnectionDurationMs: 600 }, async (port, server) => {
    const old = await served("127.0.0.1", port);
    try {
      // Keep it busy: it is closed for its age, not for idleness.
      let echoed = 0;
      for (let i = 0; i < 600; i++) {
        const ok = await writeAll(old, Uint8Array.of(i & 0xff), 5000).then(() => readExactly(old, 1, 5000)).then(
          () => true,
          () => false,
        );
        if (!ok) break;
        echoed++;
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.ok(echoed > 0 && echoed < 600, `closed while busy after ${echoed} round trips`);
      assert.equal(server.counters.closedMaxDuration, 1);
      assert.equal(server.counters.closedIdle, 0);
      assert.equal(await echoes("127.0.0.1", port), true, "a new connection is served");
    } finally {
      old.close();
    }
  });
});
