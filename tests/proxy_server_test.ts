// `echosrv --proxy-protocol` as a load balancer and its clients meet it: the header is never echoed, the bytes
// that came with it are; the carried client address is the one logged and the one the access rules and the
// per-client cap see; a malformed, missing or slow header closes the connection and is counted; a header from a
// peer outside --proxy-from is refused, so a client cannot forge its address.

import assert from "node:assert/strict";
import {
  metricsPortOf,
  proxyV2Header,
  readAll,
  readExactly,
  scrape,
  SIGTERM_EXIT_CODE,
  spawnServer,
  within,
  writeAll,
} from "./helpers.ts";

const text = (s: string) => new TextEncoder().encode(s);
const concat = (...parts: Uint8Array[]) => Uint8Array.from(parts.flatMap((p) => [...p]));

/** One session through a "load balancer": the header and the first data in one write, more data, half-close. */
async function proxiedSession(port: number, header: Uint8Array, first: string, more: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const reading = readAll(conn, 10_000);
    await writeAll(conn, concat(header, text(first)));
    await writeAll(conn, text(more));
    await conn.closeWrite();
    return new TextDecoder().decode(await reading);
  } finally {
    conn.close();
  }
}

/** Sends `bytes` and tells what came back before the server closed (empty: refused without echo). */
async function answerTo(port: number, bytes: Uint8Array, closeWrite = false): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(bytes).catch(() => 0);
    if (closeWrite) await conn.closeWrite().catch(() => {});
    return new TextDecoder().decode(await readAll(conn, 10_000).catch(() => new Uint8Array(0)));
  } finally {
    conn.close();
  }
}

Deno.test("PROXY v1/v2: the header is not echoed, the data with it is; the carried client is the one logged", async () => {
  await using server = await spawnServer([
    ...["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0", "--log-level", "debug"],
    ...["--proxy-protocol", "--proxy-from", "127.0.0.1", "--proxy-timeout", "500ms"],
  ]);
  const metricsPort = await metricsPortOf(server);

  const v1 = text("PROXY TCP4 198.51.100.9 127.0.0.1 4242 40007\r\n");
  assert.equal(await proxiedSession(server.port, v1, "hello ", "world"), "hello world");
  await server.waitFor(
    (r) => /^opened 198\.51\.100\.9:4242 via 127\.0\.0\.1:\d+$/.test(r.message),
    "the v1 client in the log, and the load balancer it came through",
  );
  await server.waitFor(
    (r) => r.message.startsWith("closed 198.51.100.9:4242 after") && r.properties.bytes === 11,
    "the v1 client's close line",
  );

  const v2 = proxyV2Header({ hostname: "2001:db8::7", port: 65000 });
  assert.equal(await proxiedSession(server.port, v2, "over v2", ", two writes"), "over v2, two writes");
  await server.waitFor((r) => r.message.startsWith("opened [2001:db8::7]:65000 via "), "the v2 client in the log");

  // LOCAL (a load balancer's own check): served, under the connection's own address.
  assert.equal(await proxiedSession(server.port, proxyV2Header(), "local", ""), "local");
  await server.waitFor((r) => /^opened 127\.0\.0\.1:\d+$/.test(r.message), "the LOCAL connection in the log");

  const samples = await scrape(metricsPort);
  assert.equal(samples.get("echosrv_connections_accepted_total"), 3);
  assert.equal(samples.get("echosrv_echoed_bytes_total"), 11 + 19 + 5);
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

Deno.test("PROXY: malformed, missing and slow headers close the connection without echo, each counted", async () => {
  await using server = await spawnServer([
    ...["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0"],
    ...["--proxy-protocol", "--proxy-from", "127.0.0.1", "--proxy-timeout", "300ms"],
  ]);
  const metricsPort = await metricsPortOf(server);
  assert.equal(await answerTo(server.port, text("GET / HTTP/1.0\r\n\r\n")), "", "not a PROXY header");
  assert.equal(await answerTo(server.port, text("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\nhi")), "", "bad port");
  assert.equal(await answerTo(server.port, new Uint8Array(0), true), "", "closed before any header");
  // Slow: half a header, then nothing. The server closes it at --proxy-timeout (readAll ends on its close).
  assert.equal(await answerTo(server.port, text("PROXY TCP4 192.0.2.1")), "", "slow header");
  const samples = await scrape(metricsPort);
  assert.equal(samples.get('echosrv_connections_rejected_total{reason="proxy_header"}'), 3);
  assert.equal(samples.get('echosrv_connections_rejected_total{reason="proxy_timeout"}'), 1);
  assert.equal(samples.get("echosrv_connections_accepted_total"), 0);
  assert.equal(samples.get("echosrv_echoed_bytes_total"), 0);
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

Deno.test("PROXY: a header from outside --proxy-from is refused (no forged addresses) and counted", async () => {
  await using server = await spawnServer([
    ...["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0"],
    ...["--proxy-protocol", "--proxy-from", "10.0.0.0/8"],
  ]);
  const metricsPort = await metricsPortOf(server);
  const forged = concat(text("PROXY TCP4 10.1.1.1 127.0.0.1 1234 40007\r\n"), text("let me in"));
  assert.equal(await answerTo(server.port, forged), "");
  const samples = await scrape(metricsPort);
  assert.equal(samples.get('echosrv_connections_rejected_total{reason="proxy_untrusted"}'), 1);
  const refusal = await server.waitFor((r) => r.properties.reason === "proxy_untrusted", "the refusal warning");
  assert.match(String(refusal.properties.latest), /^127\.0\.0\.1:\d+$/, "the log names the real peer");
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

Deno.test("PROXY: --deny and --max-connections-per-ip apply to the carried client, not to the load balancer", async () => {
  await using server = await spawnServer([
    ...["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0"],
    ...["--proxy-protocol", "--proxy-from", "127.0.0.1", "--deny", "203.0.113.0/24", "--max-connections-per-ip", "1"],
  ]);
  const metricsPort = await metricsPortOf(server);
  const header = (hostname: string, port: number) => proxyV2Header({ hostname, port });
  assert.equal(await answerTo(server.port, concat(header("203.0.113.9", 1000), text("x"))), "", "denied client");

  // One connection for 198.51.100.1 is open; a second for the same client is refused, another client is served,
  // although every connection comes from the same load balancer (127.0.0.1).
  const first = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    await writeAll(first, concat(header("198.51.100.1", 1001), text("a")));
    assert.deepEqual(await readExactly(first, 1, 10_000), text("a"));
    assert.equal(await answerTo(server.port, concat(header("198.51.100.1", 1002), text("b"))), "", "same client");
    assert.equal(await answerTo(server.port, concat(header("198.51.100.2", 1003), text("c")), true), "c");
  } finally {
    first.close();
  }
  const samples = await scrape(metricsPort);
  assert.equal(samples.get('echosrv_connections_rejected_total{reason="access_rule"}'), 1);
  assert.equal(samples.get('echosrv_connections_rejected_total{reason="per_client_cap"}'), 1);
  server.signal("SIGTERM");
  assert.equal(await within(30_000, "exit", server.exited()), SIGTERM_EXIT_CODE);
});
