// The RFC 862 UDP echo and its guards, over real loopback sockets: datagrams come back whole (up to the largest
// UDP payload) over IPv4 and IPv6, and never to the source ports of services that answer back; the per-source
// rate limit and the access rules drop what they should and count it; and UDP is refused, not crashed into,
// when Deno runs without --unstable-net.

import assert from "node:assert/strict";
import { BLOCKED_SOURCE_PORTS, fingerprint, LOOP_BOUNCES, LOOP_QUIET_MS, SourceTable, UdpEcho } from "../lib/udp.ts";
import {
  cannotRun,
  pseudoRandomBytes,
  ROOT,
  runEchosrv,
  sameBytes,
  SIGTERM_EXIT_CODE,
  spawnServer,
  underWine,
  waitUntil,
  within,
} from "./helpers.ts";

/** A UDP echo on a free port of `hosts`, stopped after `body`. */
async function withUdp(
  options: { hosts: string[]; ratePerSource?: number; allow?: string[]; deny?: string[] },
  body: (port: number, udp: UdpEcho) => Promise<void>,
): Promise<void> {
  // Take a port number the OS hands out for UDP, then let the echo bind it (as the server does with its TCP port).
  const probe = Deno.listenDatagram({ hostname: options.hosts[0], port: 0, transport: "udp" });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const udp = new UdpEcho({
    hosts: options.hosts,
    ratePerSource: options.ratePerSource ?? 1000,
    allow: options.allow,
    deny: options.deny,
  });
  await udp.start(port);
  try {
    await body(port, udp);
  } finally {
    await within(10_000, "the UDP echo to close", udp.close());
  }
}

/** Sends one datagram from `client` and waits (bounded) for the answer. */
async function roundTrip(client: Deno.DatagramConn, hostname: string, port: number, data: Uint8Array) {
  await client.send(data, { transport: "udp", hostname, port });
  // Deno's receive() without a buffer allocates 65,507 bytes and would cut an IPv6 maximum; give it room.
  const [answer] = await within(5000, "the echoed datagram", client.receive(new Uint8Array(65_536)));
  return answer.slice();
}

Deno.test("UDP: datagrams come back whole over IPv4 and IPv6, empty ones and the largest ones too", {
  ignore: cannotRun(
    "UDP echo of every datagram size over IPv4 and IPv6",
    underWine("the echoed datagram does not come back within 5 s"),
  ),
}, async () => {
  await withUdp({ hosts: ["::"] }, async (port, udp) => {
    const v4 = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
    const v6 = Deno.listenDatagram({ hostname: "::1", port: 0, transport: "udp" });
    try {
      // [::] is dual-stack on Linux: the IPv4 client is answered through it.
      for (const size of [0, 1, 1472, 9000, 65_507]) {
        const data = pseudoRandomBytes(size, size + 1);
        assert.equal(sameBytes(await roundTrip(v4, "127.0.0.1", port, data), data), true, `IPv4 ${size} bytes`);
      }
      const largest = pseudoRandomBytes(65_527, 3); // the IPv6 maximum without jumbograms
      assert.equal(sameBytes(await roundTrip(v6, "::1", port, largest), largest), true, "IPv6 65527 bytes");
      assert.equal(udp.counters.datagramsEchoed, 6);
      assert.equal(udp.counters.bytesEchoed, 1 + 1472 + 9000 + 65_507 + 65_527);
    } finally {
      v4.close();
      v6.close();
    }
  });
});

/** The source ports of the loop advisory (CERT VU#417980, CVE-2024-2169), written out here independently of lib/. */
const ADVISORY_PORTS = [7, 11, 13, 17, 19, 37, 53, 69, 123];

Deno.test("UDP: datagrams from the source ports of echo, chargen, DNS, NTP, SSDP, memcached... are never answered", async () => {
  for (const advised of ADVISORY_PORTS) {
    assert.ok(BLOCKED_SOURCE_PORTS.includes(advised), `port ${advised} of the loop advisory is blocked`);
  }
  await withUdp({ hosts: ["127.0.0.1"] }, async (port, udp) => {
    const tried: number[] = [];
    const skipped: string[] = [];
    for (const sourcePort of BLOCKED_SOURCE_PORTS.filter((p) => p !== 0)) {
      let client: Deno.DatagramConn;
      try {
        client = Deno.listenDatagram({ hostname: "127.0.0.1", port: sourcePort, transport: "udp" });
      } catch (error) {
        skipped.push(`${sourcePort} (${(error as Error).name})`); // privileged port without root, or in use
        continue;
      }
      try {
        await client.send(Uint8Array.of(1, 2, 3), { transport: "udp", hostname: "127.0.0.1", port });
        tried.push(sourcePort);
      } finally {
        client.close();
      }
    }
    if (skipped.length > 0) console.log(`  (could not bind source ports ${skipped.join(", ")}: not tested here)`);
    assert.ok(tried.includes(1900) && tried.includes(11211), "the unprivileged ones at least");
    // Then one from an ordinary port: once it is answered, every datagram sent before it has been handled.
    const ordinary = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
    try {
      await roundTrip(ordinary, "127.0.0.1", port, Uint8Array.of(9));
    } finally {
      ordinary.close();
    }
    assert.equal(udp.counters.droppedSourcePort, tried.length);
    assert.equal(udp.counters.datagramsEchoed, 1, "only the ordinary one");
  });
});

Deno.test("UDP: over --udp-rate a source is dropped and counted; another source has its own bucket", async () => {
  await withUdp({ hosts: ["127.0.0.1"], ratePerSource: 5 }, async (port, udp) => {
    const flood = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
    const sent = 50;
    try {
      for (let i = 0; i < sent; i++) {
        await flood.send(Uint8Array.of(i), { transport: "udp", hostname: "127.0.0.1", port });
      }
      // Every datagram is either echoed or dropped: wait for the count, not for a time.
      await within(
        10_000,
        "every datagram to be handled",
        waitUntil(() => udp.counters.datagramsEchoed + udp.counters.droppedRateLimit === sent),
      );
    } finally {
      flood.close();
    }
    assert.ok(udp.counters.datagramsEchoed >= 5, `the burst of 5 is answered (${udp.counters.datagramsEchoed})`);
    assert.ok(udp.counters.droppedRateLimit > 0, "the rest of the flood is dropped");
    const polite = Deno.listenDatagram({ hostname: "127.0.0.2", port: 0, transport: "udp" });
    try {
      assert.deepEqual(await roundTrip(polite, "127.0.0.1", port, Uint8Array.of(42)), Uint8Array.of(42));
    } finally {
      polite.close();
    }
    assert.equal(udp.sources, 2, "one bucket per source address");
  });
});

Deno.test("UDP: --deny and --allow apply to datagrams too", {
  ignore: cannotRun("UDP access rules", underWine("the denied datagram is not counted within 5 s")),
}, async () => {
  await withUdp({ hosts: ["::"], deny: ["127.0.0.0/8"] }, async (port, udp) => {
    const v4 = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
    const v6 = Deno.listenDatagram({ hostname: "::1", port: 0, transport: "udp" });
    try {
      await v4.send(Uint8Array.of(1), { transport: "udp", hostname: "127.0.0.1", port });
      assert.deepEqual(await roundTrip(v6, "::1", port, Uint8Array.of(2)), Uint8Array.of(2));
      await within(5000, "the denied datagram to be counted", waitUntil(() => udp.counters.droppedAccessRule === 1));
      assert.equal(udp.counters.datagramsEchoed, 1);
    } finally {
      v4.close();
      v6.close();
    }
  });
});

Deno.test("SourceTable: token bucket refills with time; the table never outgrows its bound", () => {
  let now = 0;
  const table = new SourceTable(2, 3, (h) => h !== "bad", () => now);
  let print = 0; // a different datagram each time (the same one coming back at once is a loop: see below)
  assert.equal(table.take("a", ++print), undefined);
  assert.equal(table.take("a", ++print), undefined);
  assert.equal(table.take("a", ++print), "rate_limit", "the burst is the rate");
  now += 500; // half a second: one token back
  assert.equal(table.take("a", ++print), undefined);
  assert.equal(table.take("a", ++print), "rate_limit");
  assert.equal(table.take("bad", ++print), "access_rule");
  for (const source of ["b", "c", "d", "e"]) assert.equal(table.take(source, ++print), undefined);
  assert.equal(table.size, 3, "bounded");
});

Deno.test("SourceTable: a source that sends back what it was just sent is a loop partner after a few bounces", () => {
  let now = 0;
  const table = new SourceTable(1000, 10, () => true, () => now);
  const same = fingerprint(Uint8Array.of(1, 2, 3));
  assert.equal(table.take("peer", same), undefined, "first: answered");
  for (let bounce = 1; bounce < LOOP_BOUNCES; bounce++) {
    now += 0.2;
    assert.equal(table.take("peer", same), undefined, `bounce ${bounce}: still answered`);
  }
  now += 0.2;
  assert.equal(table.take("peer", same), "loop", "then taken for a loop");
  now += 1000;
  assert.equal(table.take("peer", fingerprint(Uint8Array.of(9))), "loop", "and left unanswered for a while");
  now += LOOP_QUIET_MS;
  assert.equal(table.take("peer", fingerprint(Uint8Array.of(9))), undefined, "then answered again");
  // The same datagram again, but not at once (a client repeating a probe every 100 ms): never a loop.
  for (let i = 0; i < 10; i++) {
    now += 100;
    assert.equal(table.take("prober", same), undefined);
  }
  assert.notEqual(fingerprint(Uint8Array.of(1, 2, 3)), fingerprint(Uint8Array.of(1, 2, 4)));
  assert.notEqual(fingerprint(new Uint8Array(10)), fingerprint(new Uint8Array(11)), "the length counts");
});

Deno.test("UDP: a datagram from the echo's own port (forged as from itself, or another echosrv) is never answered", async () => {
  await withUdp({ hosts: ["127.0.0.1"] }, async (port, udp) => {
    // Another address of this host, same port: what a second echosrv on the default port looks like.
    const twin = Deno.listenDatagram({ hostname: "127.0.0.2", port, transport: "udp" });
    const ordinary = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
    try {
      await twin.send(Uint8Array.of(1), { transport: "udp", hostname: "127.0.0.1", port });
      await roundTrip(ordinary, "127.0.0.1", port, Uint8Array.of(2)); // handled after the twin's, in order
      await within(5000, "the twin's datagram to be counted", waitUntil(() => udp.counters.droppedOwnPort === 1));
      assert.equal(udp.counters.datagramsEchoed, 1, "only the ordinary one");
    } finally {
      twin.close();
      ordinary.close();
    }
  });
});

Deno.test("UDP: a loop with another echo service ends after a few datagrams, not a rate limit's worth", async () => {
  await withUdp({ hosts: ["127.0.0.1"], ratePerSource: 100 }, async (port, udp) => {
    // A real echo on an ordinary port (no port rule can know it): it sends back everything it receives, at once.
    const partner = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
    let bounced = 0;
    const echoing = (async () => {
      const buffer = new Uint8Array(2048);
      for (;;) {
        const [data, from] = await partner.receive(buffer).catch(() => [null, null] as const);
        if (data === null || from === null) return;
        bounced++;
        await partner.send(data, from).catch(() => {});
      }
    })();
    try {
      await partner.send(new TextEncoder().encode("loop me"), { transport: "udp", hostname: "127.0.0.1", port });
      await within(5000, "the loop to be cut", waitUntil(() => udp.counters.droppedLoop >= 1));
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.ok(udp.counters.datagramsEchoed <= LOOP_BOUNCES + 1, `echoed ${udp.counters.datagramsEchoed} times`);
      assert.equal(udp.counters.droppedLoop, 1, "and it stays cut: the partner has nothing more to bounce");
      assert.equal(udp.counters.droppedRateLimit, 0, "cut before the rate limit had to");
    } finally {
      partner.close();
      await echoing;
    }
    assert.ok(bounced <= LOOP_BOUNCES + 1);
  });
});

Deno.test("--udp without Deno's --unstable-net exits 1 with a message saying so (no crash)", async () => {
  const out = await within(
    30_000,
    "echosrv without --unstable-net",
    new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", "--allow-env", "--allow-read", "main.ts", "--udp", "-p", "0", "-H", "127.0.0.1"],
      cwd: ROOT,
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output(),
  );
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 1, text);
  assert.match(text, /UDP needs Deno's --unstable-net/);
  assert.doesNotMatch(text, /\n\s+at /);
});

Deno.test("echosrv --udp as a user runs it: TCP and UDP on one port; bad --udp-rate exits 2", async () => {
  await using server = await spawnServer(["--port", "0", "--host", "127.0.0.1", "--udp"]);
  await server.waitFor((r) => r.message.startsWith("echoing UDP on port"), "the UDP echo to start");
  const client = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  try {
    const answer = await roundTrip(client, "127.0.0.1", server.port, new TextEncoder().encode("ping"));
    assert.equal(new TextDecoder().decode(answer), "ping");
  } finally {
    client.close();
  }
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
  assert.equal((await runEchosrv(["--udp", "--udp-rate", "0"])).code, 2);
});
