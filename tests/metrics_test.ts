// The --metrics endpoint and `echosrv stats` as an operator uses them: /metrics in the Prometheus text format
// (checked by Prometheus's own promtool where it is installed), counters that follow what clients do, /healthz
// 200 while serving and 503 while draining, and the one-line live view.

import assert from "node:assert/strict";
import { type MetricsSnapshot, renderMetrics, sumSnapshots } from "../lib/metrics.ts";
import { sampleProcess } from "../lib/process_metrics.ts";
import { emptyStats } from "../lib/server.ts";
import { formatSample, parseMetricsText, sampleOf } from "../lib/stats.ts";
import {
  echoSession,
  hasCommand,
  metricsPortOf,
  readAll,
  readExactly,
  residentKiB,
  runEchosrv,
  scrape,
  servedConnection,
  sleep,
  spawnServer,
  within,
  writeAll,
} from "./helpers.ts";

/** Prometheus's promtool: $PROMTOOL (CI unpacks it from Debian's prometheus package), or one on the PATH. */
const PROMTOOL = Deno.env.get("PROMTOOL") ?? "promtool";
const havePromtool = await hasCommand(PROMTOOL, ["--version"]);

async function getText(url: string): Promise<{ status: number; body: string; type: string | null }> {
  const response = await within(10_000, `GET ${url}`, fetch(url));
  return { status: response.status, body: await response.text(), type: response.headers.get("content-type") };
}

Deno.test("/metrics: valid exposition format; counters follow connections, bytes, refusals, idle closes", async () => {
  await using server = await spawnServer([
    ...["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0"],
    ...["--max-connections", "1", "--idle-timeout", "300ms"],
  ]);
  const port = await metricsPortOf(server);
  const base = `http://127.0.0.1:${port}`;

  const page = await getText(`${base}/metrics`);
  assert.equal(page.status, 200);
  assert.equal(page.type, "text/plain; version=0.0.4; charset=utf-8");
  assert.match(page.body, /^echosrv_build_info\{version="[^"]+",deno="[^"]+",os="[^"]+"\} 1$/m);
  if (havePromtool) {
    const check = new Deno.Command(PROMTOOL, { args: ["check", "metrics"], stdin: "piped", stderr: "piped" }).spawn();
    const writer = check.stdin.getWriter();
    await writer.write(new TextEncoder().encode(page.body));
    await writer.close();
    const result = await within(15_000, "promtool check metrics", check.output());
    assert.equal(result.code, 0, `promtool: ${new TextDecoder().decode(result.stderr)}`);
  } else {
    console.log("  (promtool not found: the format is checked by this test's own assertions only)");
  }

  // One session open and moving bytes: the gauge and the live byte count show it before it ends.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    await writeAll(conn, new Uint8Array(1000));
    await readExactly(conn, 1000);
    let samples = await scrape(port);
    assert.equal(samples.get("echosrv_connections_active"), 1);
    assert.equal(samples.get("echosrv_echoed_bytes_total"), 1000, "bytes of an open connection count");
    // Over --max-connections 1: refused, counted by reason.
    assert.equal((await echoSession("127.0.0.1", server.port, Uint8Array.of(1), 10_000)).length, 0);
    samples = await scrape(port);
    assert.equal(samples.get('echosrv_connections_rejected_total{reason="cap"}'), 1);
    // Then silent: the idle timeout closes it (the read ends when the server closes).
    assert.equal((await readAll(conn, 10_000)).length, 0);
  } finally {
    conn.close();
  }
  const samples = await scrape(port);
  assert.equal(samples.get('echosrv_connections_closed_total{reason="idle_timeout"}'), 1);
  assert.equal(samples.get("echosrv_connections_accepted_total"), 1);
  assert.equal(samples.get("echosrv_connections_active"), 0);
  assert.equal((await getText(`${base}/nothing`)).status, 404);
  const post = await within(10_000, "POST", fetch(`${base}/metrics`, { method: "POST", body: "x" }));
  await post.body?.cancel();
  assert.equal(post.status, 405);
  server.signal("SIGTERM");
  assert.equal(await server.exited(), 0);
});

Deno.test("/healthz: 200 while serving, 503 while draining open sessions, then the endpoint closes", async () => {
  await using server = await spawnServer([
    ...["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0", "--shutdown-timeout", "60s"],
  ]);
  const port = await metricsPortOf(server);
  const health = `http://127.0.0.1:${port}/healthz`;
  assert.deepEqual(await getText(health).then((r) => [r.status, r.body]), [200, "serving\n"]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    await writeAll(conn, Uint8Array.of(1));
    await readExactly(conn, 1);
    server.signal("SIGTERM");
    await server.waitFor((r) => r.message.startsWith("stopped accepting"), "the drain to begin");
    const draining = await getText(health);
    assert.deepEqual([draining.status, draining.body], [503, "draining\n"]);
    assert.equal((await scrape(port)).get("echosrv_draining"), 1);
    // The session still echoes while draining.
    await writeAll(conn, Uint8Array.of(2));
    assert.deepEqual(await readExactly(conn, 1), Uint8Array.of(2));
  } finally {
    conn.close();
  }
  assert.equal(await server.exited(), 0);
  await assert.rejects(fetch(health), "the metrics port is closed after the stop");
});

Deno.test("--metrics on a port in use exits 1 naming it; a bad --metrics value exits 2", async () => {
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const { code, stdout } = await runEchosrv([
      "-p",
      "0",
      "-H",
      "127.0.0.1",
      "--metrics",
      `127.0.0.1:${holder.addr.port}`,
    ]);
    assert.equal(code, 1);
    assert.match(stdout, new RegExp(`metrics address 127\\.0\\.0\\.1:${holder.addr.port} is already in use`));
  } finally {
    holder.close();
  }
  const { code, stderr } = await runEchosrv(["--metrics", "9407x"]);
  assert.equal(code, 2);
  assert.match(stderr, /--metrics.*'9407x'/);
});

Deno.test("echosrv stats: one line per sample with totals and rates; exits after --count; 1 when unreachable", async () => {
  await using server = await spawnServer(["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0"]);
  const port = await metricsPortOf(server);
  await echoSession("127.0.0.1", server.port, new Uint8Array(5000));
  const { code, stdout, stderr } = await runEchosrv([
    ...["stats", "--metrics-url", `127.0.0.1:${port}`, "--count", "2", "--interval", "200ms"],
  ]);
  assert.equal(code, 0, stderr);
  const lines = stdout.trim().split("\n");
  assert.equal(lines.length, 2, stdout);
  assert.match(lines[0], /echosrv \S+ serving \| conns 0 open, 1 accepted, 0 rejected \| echoed 5\.0 KB \|/);
  assert.match(lines[1], /1 accepted \(0\.0\/s\)/, "the second sample has rates");
  assert.match(lines[1], /echoed 5\.0 KB \(0 B\/s\)/);
  server.signal("SIGTERM");
  assert.equal(await server.exited(), 0);

  const down = await runEchosrv(["stats", "--metrics-url", `http://127.0.0.1:${port}/metrics`, "--count", "1"]);
  assert.equal(down.code, 1);
  assert.match(down.stdout, /cannot read http:\/\/127\.0\.0\.1:\d+\/metrics/);
  assert.equal((await runEchosrv(["stats", "--interval", "10ms"])).code, 2, "too short an interval");
});

Deno.test("sumSnapshots adds several servers up (a multi-worker process); stats reads what renderMetrics writes", () => {
  const stats = () => ({ ...emptyStats(), accepted: 2, refusedOverCap: 1, bytesEchoed: 10 });
  const one: MetricsSnapshot = { connectionsActive: 1, bytesEchoed: 100, draining: false, stats: stats() };
  const two: MetricsSnapshot = { ...one, draining: true, stats: { ...stats(), refusedAccessRule: 3 } };
  const total = sumSnapshots([one, two]);
  assert.equal(total.connectionsActive, 2);
  assert.equal(total.bytesEchoed, 200);
  assert.equal(total.stats.accepted, 4);
  assert.equal(total.stats.refusedAccessRule, 3);
  assert.equal(total.draining, true, "draining if any drains");
  assert.equal(one.stats.accepted, 2, "the sources are not modified");
  const sample = sampleOf(parseMetricsText(renderMetrics(total, sampleProcess())), 0);
  assert.equal(sample.accepted, 4);
  assert.equal(sample.rejected, 2 + 3);
  assert.equal(sample.bytes, 200);
  assert.equal(sample.draining, true);
  assert.match(formatSample(sample), /DRAINING \| conns 2 open, 4 accepted, 5 rejected \| echoed 200 B/);
});

Deno.test("process_* under `deno task start`: CPU, resident memory and start time; no zeros for what Deno cannot read", async () => {
  await using server = await spawnServer(["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0"]);
  const samples = await scrape(await metricsPortOf(server));
  const now = Date.now() / 1000;
  const start = samples.get("process_start_time_seconds")!;
  assert.ok(start <= now && start > now - 60, `start time ${start} is in the last minute (now ${now})`);
  assert.ok(samples.get("process_cpu_seconds_total")! > 0);
  const rss = samples.get("process_resident_memory_bytes")!;
  const kernelRss = residentKiB(server.pid);
  if (kernelRss !== undefined) {
    // The same figure the kernel gives, within what changes between the two reads.
    assert.ok(Math.abs(rss / 1024 - kernelRss) < kernelRss * 0.25, `${rss / 1024} KiB vs VmRSS ${kernelRss} KiB`);
  }
  // Deno reads /proc only with --allow-all: these are absent, not 0 (a dashboard then shows "no data").
  for (const name of ["process_open_fds", "process_max_fds", "process_virtual_memory_bytes"]) {
    assert.equal(samples.has(name), false, `${name} is left out without /proc`);
  }
  server.signal("SIGTERM");
  assert.equal(await server.exited(), 0);
});

Deno.test({
  name: "process_* from /proc (Linux, deno run -A): descriptors follow connections, the limit is RLIMIT_NOFILE",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    if (!(await hasCommand("prlimit", ["--version"]))) {
      console.log("skipped: prlimit (util-linux) is not installed; it sets the descriptor limit this test checks");
      return;
    }
    const runArgs = ["run", "--allow-all", "--unstable-net", "main.ts"];
    await using server = await spawnServer(["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0"], {
      runArgs,
      wrapper: ["prlimit", "--nofile=777:777"],
    });
    const port = await metricsPortOf(server);
    const before = await scrape(port);
    assert.equal(before.get("process_max_fds"), 777);
    assert.ok(before.get("process_virtual_memory_bytes")! > before.get("process_resident_memory_bytes")!);
    const start = before.get("process_start_time_seconds")!;
    assert.ok(Math.abs(start - Date.now() / 1000) < 60, `start time ${start} from /proc is near now`);
    const conns = [];
    try {
      for (let i = 0; i < 20; i++) conns.push(await servedConnection(server.port));
      const during = await scrape(port);
      const added = during.get("process_open_fds")! - before.get("process_open_fds")!;
      assert.ok(added >= 20 && added <= 22, `20 connections open ${added} descriptors`);
    } finally {
      for (const conn of conns) conn.close();
    }
    await within(
      10_000,
      "the descriptors to close",
      (async () => {
        while ((await scrape(port)).get("echosrv_connections_active") !== 0) await sleep(20);
      })(),
    );
    const after = await scrape(port);
    assert.ok(after.get("process_open_fds")! <= before.get("process_open_fds")! + 1, "the descriptors are closed");
    server.signal("SIGTERM");
    assert.equal(await server.exited(), 0);
  },
});
