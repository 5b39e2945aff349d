// `echosrv stats` as an operator meets it: totals and rates in bit/s with SI prefixes, a line that fits the
// terminal's width at every sample (fields dropped, then abbreviated; never wrapped, so a rewrite leaves no
// fragment), one line per sample in a pipe, and a one-line error naming the address when nothing answers.

import assert from "node:assert/strict";
import { reasonOf } from "../lib/request_failure.ts";
import { formatBits, formatBytesSI, formatSample, runStats, type StatsSample } from "../lib/stats_command.ts";
import { echoSession, freePort, metricsPortOf, runEchosrv, SIGTERM_EXIT_CODE, spawnServer } from "./helpers.ts";

const sample = (overrides: Partial<StatsSample> = {}): StatsSample => ({
  atMs: Date.UTC(2026, 0, 1, 12, 0, 0),
  version: "0.1.0",
  draining: false,
  active: 12,
  accepted: 340,
  rejected: 3,
  bytes: 1_234_567_890,
  udpEchoed: 0,
  udpDropped: 0,
  errors: 0,
  ...overrides,
});

Deno.test("formatBits and formatBytesSI: SI prefixes, three significant digits", () => {
  assert.deepEqual(
    [0, 999, 1000, 45_100_000, 9_412_000_000, 999_600, 1.5e12].map(formatBits),
    ["0 bit/s", "999 bit/s", "1.00 kbit/s", "45.1 Mbit/s", "9.41 Gbit/s", "1.00 Mbit/s", "1.50 Tbit/s"],
  );
  assert.deepEqual([0, 512, 5000, 1_234_567_890].map(formatBytesSI), ["0 B", "512 B", "5.00 kB", "1.23 GB"]);
});

Deno.test("formatSample: all fields when they fit, then drops the least important, then abbreviates; never wider", () => {
  const before = sample({ accepted: 330, bytes: 1_234_567_890 - 5_637_500 });
  const now = sample({ atMs: before.atMs + 1000 });
  const wide = formatSample(now, before);
  assert.match(wide, /serving \| 12 open \| 45\.1 Mbit\/s \| 10\.0 conn\/s \| 3 rejected \| 0 errors \| 340 accepted/);
  assert.match(wide, /1\.23 GB echoed \| udp 0 echoed, 0 dropped \| echosrv 0\.1\.0$/);
  for (const width of [200, 120, 100, 80, 79, 60, 40, 30, 25, 20, 12]) {
    const line = formatSample(now, before, width);
    assert.ok(line.length <= width, `${width} columns: ${line.length} characters: ${line}`);
    if (width >= 25) assert.match(line, /serving|up/, `${width}: the state stays`);
    if (width >= 25) assert.match(line, /45\.1 ?M/, `${width}: the throughput stays`);
  }
  const eighty = formatSample(now, before, 79);
  assert.match(eighty, /serving \| 12 open \| 45\.1 Mbit\/s/, "80 columns: full words, fewer fields");
  assert.doesNotMatch(eighty, /echosrv 0\.1\.0/, "the version goes first");
  assert.match(eighty, /0 errors/, "errors stay long after totals have gone");
  assert.equal(formatSample(now, before, 25), "up 12 open 45.1Mb/s", "narrower than the essentials: abbreviated");
  assert.match(formatSample(sample({ draining: true }), undefined, 30), /DRAIN|DRAINING/);
});

Deno.test("on a terminal the line is rewritten in place, fitted to the width read at each sample", async () => {
  await using server = await spawnServer(["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0"]);
  const port = await metricsPortOf(server);
  await echoSession("127.0.0.1", server.port, new Uint8Array(5000));
  const widths = [120, 60, 40];
  let written = "";
  const code = await runStats(
    { url: `http://127.0.0.1:${port}/metrics`, intervalMs: 100, count: 3 },
    {
      isTerminal: true,
      columns: () => widths.shift() ?? 40,
      write: (text) => written += text,
      error: (text) => assert.fail(text),
    },
  );
  assert.equal(code, 0);
  const rewrites = written.split("\r\x1b[2K").slice(1);
  assert.equal(rewrites.length, 3);
  assert.ok(rewrites[0].length <= 119 && rewrites[1].length <= 59, rewrites.join("\n"));
  assert.ok(rewrites[2].replace(/\n$/, "").length <= 39, rewrites[2]);
  assert.ok(!rewrites.slice(0, 2).some((r) => r.includes("\n")), "no line break until the end");
  assert.ok(written.endsWith("\n"), "the last line is ended when it stops");
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

Deno.test("echosrv stats in a pipe: one whole line per sample with totals and rates; exits after --count", async () => {
  await using server = await spawnServer(["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0"]);
  const port = await metricsPortOf(server);
  await echoSession("127.0.0.1", server.port, new Uint8Array(5000));
  const { code, stdout, stderr } = await runEchosrv([
    ...["stats", "--metrics-url", `127.0.0.1:${port}`, "--count", "2", "--interval", "200ms"],
  ]);
  assert.equal(code, 0, stderr);
  const lines = stdout.trim().split("\n");
  assert.equal(lines.length, 2, stdout);
  assert.match(lines[0], /serving \| 0 open \| - bit\/s \| - conn\/s \| 0 rejected \| 0 errors \| 1 accepted/);
  assert.match(lines[0], /5\.00 kB echoed \| udp 0 echoed, 0 dropped \| echosrv \S+$/);
  assert.match(lines[1], /\| 0 bit\/s \| 0\.0 conn\/s \|/, "the second sample has rates");
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

Deno.test("echosrv stats against an address where nothing answers: one line on stderr naming it, exit 1", async () => {
  const port = freePort();
  const down = await runEchosrv(["stats", "--metrics-url", `127.0.0.1:${port}`]); // no --count: it must not retry
  assert.equal(down.code, 1);
  assert.equal(down.stdout, "");
  assert.equal(
    down.stderr,
    `echosrv stats: cannot read http://127.0.0.1:${port}/metrics: connection refused (nothing listens there) ` +
      `(is echosrv running with --metrics 127.0.0.1:${port}?)\n`,
  );
  assert.equal((await runEchosrv(["stats", "--interval", "10ms"])).code, 2, "too short an interval");
});

Deno.test("echosrv stats against something that is not echosrv's /metrics: says so, exit 1", async () => {
  const other = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (request) =>
      new URL(request.url).pathname === "/metrics" ? new Response("# nothing of echosrv\nup 1\n") : new Response("no", {
        status: 404,
        statusText: "Not Found",
      }),
  );
  try {
    const base = `http://127.0.0.1:${other.addr.port}`;
    const foreign = await runEchosrv(["stats", "--metrics-url", `${base}/metrics`, "--count", "1"]);
    assert.equal(foreign.code, 1);
    assert.match(foreign.stderr, /cannot read http:\/\/127\.0\.0\.1:\d+\/metrics: it answered, but not with echosrv's/);
    const missing = await runEchosrv(["stats", "--metrics-url", `${base}/elsewhere`, "--count", "1"]);
    assert.match(missing.stderr, /\/elsewhere: it answered HTTP 404 Not Found/);
  } finally {
    await other.shutdown();
  }
});

Deno.test("reasonOf: fetch's errors in plain words", () => {
  const refused = Object.assign(new TypeError("fetch failed"), {
    cause: new Error("client error (Connect): tcp connect error: Connection refused (os error 111)"),
  });
  assert.equal(reasonOf(refused, 2000), "connection refused (nothing listens there)");
  const dns = Object.assign(new TypeError("fetch failed"), {
    cause: new Error("dns error: failed to lookup address information: Name or service not known"),
  });
  assert.equal(reasonOf(dns, 2000), "the host name does not resolve");
  assert.equal(reasonOf(new DOMException("Signal timed out.", "TimeoutError"), 2000), "no answer within 2 s");
});
