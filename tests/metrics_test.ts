// The --metrics endpoint and `echosrv stats` as an operator uses them: /metrics in the Prometheus text format
// (checked by Prometheus's own promtool where it is installed), counters that follow what clients do, /healthz
// 200 while serving and 503 while draining, and the one-line live view.

import assert from "node:assert/strict";
import { type MetricsSnapshot, renderMetrics, sumSnapshots } from "../lib/metrics.ts";
import { sampleProcess } from "../lib/process_metrics.ts";
import { emptyCounters } from "../lib/counters.ts";
import { reusePortUnavailable } from "../lib/runtime.ts";
import { type Family, namingViolations, parseExposition } from "./exposition.ts";
import { formatSample, parseMetricsText, sampleOf } from "../lib/stats_command.ts";
import {
  cannotRun,
  echoSession,
  hasCommand,
  metricsPortOf,
  NO_STOP_SIGNALS,
  readAll,
  readExactly,
  residentKiB,
  runEchosrv,
  scrape,
  servedConnection,
  SIGTERM_EXIT_CODE,
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
  // The idle close is a lingering one: the connection counts until its socket is closed, just after ours is.
  let samples = await scrape(port);
  for (let i = 0; i < 50 && samples.get("echosrv_connections_active") !== 0; i++) {
    await sleep(100);
    samples = await scrape(port);
  }
  assert.equal(samples.get('echosrv_connections_closed_total{reason="idle_timeout"}'), 1);
  assert.equal(samples.get("echosrv_connections_accepted_total"), 1);
  assert.equal(samples.get("echosrv_connections_active"), 0);
  assert.equal((await getText(`${base}/nothing`)).status, 404);
  const post = await within(10_000, "POST", fetch(`${base}/metrics`, { method: "POST", body: "x" }));
  await post.body?.cancel();
  assert.equal(post.status, 405);
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

Deno.test("/healthz: 200 while serving, 503 while draining open sessions, then the endpoint closes", {
  ignore: cannotRun("the tests of stopping echosrv with a signal", NO_STOP_SIGNALS),
}, async () => {
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
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
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

Deno.test("sumSnapshots adds several servers up (a multi-worker process); stats reads what renderMetrics writes", () => {
  const counters = () => ({ ...emptyCounters(), accepted: 2, refusedOverCap: 1, bytesEchoed: 10 });
  const one: MetricsSnapshot = { connectionsActive: 1, bytesEchoed: 100, draining: false, counters: counters() };
  const two: MetricsSnapshot = { ...one, draining: true, counters: { ...counters(), refusedAccessRule: 3 } };
  const total = sumSnapshots([one, two]);
  assert.equal(total.connectionsActive, 2);
  assert.equal(total.bytesEchoed, 200);
  assert.equal(total.counters.accepted, 4);
  assert.equal(total.counters.refusedAccessRule, 3);
  assert.equal(total.draining, true, "draining if any drains");
  assert.equal(one.counters.accepted, 2, "the sources are not modified");
  const sample = sampleOf(parseMetricsText(renderMetrics(total, sampleProcess())), 0);
  assert.equal(sample.accepted, 4);
  assert.equal(sample.rejected, 2 + 3);
  assert.equal(sample.bytes, 200);
  assert.equal(sample.draining, true);
  assert.match(
    formatSample(sample),
    /DRAINING \| 2 open \| - bit\/s \| - conn\/s \| 5 rejected \| 0 errors \| 4 accepted/,
  );
});

Deno.test("process_* under `deno task start`: CPU, resident memory and start time; no zeros for what Deno cannot read", async () => {
  await using server = await spawnServer(["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0"]);
  const samples = await scrape(await metricsPortOf(server));
  const now = Date.now() / 1000;
  const start = samples.get("process_start_time_seconds")!;
  assert.ok(start <= now && start > now - 60, `start time ${start} is in the last minute (now ${now})`);
  assert.ok(samples.get("process_cpu_seconds_total")! > 0);
  assert.ok(samples.get("process_resident_memory_bytes")! > 0, "resident memory");
  // Deno reads /proc only with --allow-all: these are absent, not 0 (a dashboard then shows "no data").
  for (const name of ["process_open_fds", "process_max_fds", "process_virtual_memory_bytes"]) {
    assert.equal(samples.has(name), false, `${name} is left out without /proc`);
  }
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

/** Why the kernel's figure for a process's memory cannot be read here (support/process_info.ts), or undefined. */
const NO_MEMORY_READING = residentKiB(Deno.pid) === undefined
  ? "a process's resident memory is read from /proc/PID/status, which only Linux has"
  : undefined;

Deno.test({
  name: "process_resident_memory_bytes is the kernel's figure (VmRSS)",
  ignore: cannotRun("the comparison of process_resident_memory_bytes with the kernel's", NO_MEMORY_READING),
}, async () => {
  await using server = await spawnServer(["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0"]);
  const rss = (await scrape(await metricsPortOf(server))).get("process_resident_memory_bytes")!;
  const kernelRss = residentKiB(server.pid);
  assert.ok(kernelRss !== undefined, "the kernel's figure was read");
  // The same figure, within what changes between the two reads.
  assert.ok(Math.abs(rss / 1024 - kernelRss) < kernelRss * 0.25, `${rss / 1024} KiB vs VmRSS ${kernelRss} KiB`);
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

const NO_PRLIMIT = await hasCommand("prlimit", ["--version"])
  ? undefined
  : "prlimit (util-linux) is not installed; it sets the descriptor limit this test checks";

Deno.test({
  name: "process_* from /proc (Linux, deno run -A): descriptors follow connections, the limit is RLIMIT_NOFILE",
  ignore: Deno.build.os !== "linux" || cannotRun("the /proc descriptor metrics test", NO_PRLIMIT),
  fn: async () => {
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
    assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
  },
});

/** Reads /metrics strictly into families. */
async function families(port: number): Promise<Family[]> {
  return parseExposition((await getText(`http://127.0.0.1:${port}/metrics`)).body);
}

/** The samples of one family by their label text, e.g. `le="1024"` -> 3. */
function seriesOf(all: Family[], name: string, series: string): number | undefined {
  const family = all.find((f) => f.name === name);
  const sample = family?.samples.find((s) =>
    s.name === series || `${s.name}{${Object.entries(s.labels).map(([k, v]) => `${k}="${v}"`).join(",")}}` === series
  );
  return sample?.value;
}

Deno.test("every family follows Prometheus's naming rules (not only the parse), with every feature and /proc on", async () => {
  await using server = await spawnServer(
    ["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0", "--udp", "--max-connections-per-ip", "5"],
    Deno.build.os === "linux" ? { runArgs: ["run", "--allow-all", "--unstable-net", "main.ts"] } : {},
  );
  const port = await metricsPortOf(server);
  await echoSession("127.0.0.1", server.port, new Uint8Array(100));
  const all = await families(port);
  assert.deepEqual(namingViolations(all), []);
  const names = all.map((f) => f.name);
  for (
    const expected of ["echosrv_echoed_bytes_total", "echosrv_udp_echoed_bytes_total", "process_cpu_seconds_total"]
  ) {
    assert.ok(names.includes(expected), expected);
  }
  if (Deno.build.os === "linux") assert.ok(names.includes("process_open_fds"), "the /proc metrics are checked too");
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

Deno.test({
  name: "Prometheus's own promtool check metrics accepts /metrics, with every feature and /proc on",
  ignore: cannotRun(
    "the promtool check of /metrics (this file's own parser still checks the format)",
    havePromtool ? undefined : "promtool is not found (CI unpacks it from Debian's prometheus package; see .ci/run)",
  ),
}, async () => {
  await using server = await spawnServer(
    ["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0", "--udp", "--max-connections-per-ip", "5"],
    Deno.build.os === "linux" ? { runArgs: ["run", "--allow-all", "--unstable-net", "main.ts"] } : {},
  );
  const port = await metricsPortOf(server);
  await echoSession("127.0.0.1", server.port, new Uint8Array(100));
  const page = (await getText(`http://127.0.0.1:${port}/metrics`)).body;
  const check = new Deno.Command(PROMTOOL, { args: ["check", "metrics"], stdin: "piped", stderr: "piped" }).spawn();
  const writer = check.stdin.getWriter();
  await writer.write(new TextEncoder().encode(page));
  await writer.close();
  const result = await within(15_000, "promtool check metrics", check.output());
  assert.equal(result.code, 0, `promtool: ${new TextDecoder().decode(result.stderr)}`);
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

Deno.test("the naming check catches each kind of mistake (it can fail)", () => {
  const page = (name: string, type: string, sample = `${name} 1`) =>
    `# HELP ${name} x\n# TYPE ${name} ${type}\n${sample}\n`;
  const cases: Array<[string, RegExp]> = [
    [page("echosrv_bytes_echoed_total", "counter"), /unit "bytes" goes last, just before _total/],
    [page("echosrv_connections_accepted", "counter"), /must end in _total/],
    [page("echosrv_connections_active_total", "gauge"), /only counters end in _total/],
    [page("echosrv_idle_timeout_milliseconds", "gauge"), /not a base unit: use seconds/],
    [page("echosrvConnections", "gauge"), /snake_case/],
    [page("connections_active", "gauge"), /no application prefix/],
    [page("echosrv_build_info", "gauge", "echosrv_build_info 2"), /_info metric is a gauge whose value is 1/],
    [page("echosrv_errors_by_kind_total", "counter"), /label names do not belong/],
    [page("echosrv_x_seconds", "gauge", 'echosrv_x_seconds{le="1"} 1'), /le is reserved/],
    [
      "# HELP echosrv_d_seconds x\n# TYPE echosrv_d_seconds histogram\n" +
      'echosrv_d_seconds_bucket{le="1"} 3\necho' + 'srv_d_seconds_bucket{le="+Inf"} 2\n' +
      "echosrv_d_seconds_sum 1\necho" + "srv_d_seconds_count 3\n",
      /not cumulative[\s\S]*differs from _count/,
    ],
  ];
  for (const [text, problem] of cases) {
    assert.match(namingViolations(parseExposition(text)).join("\n"), problem, text);
  }
  assert.throws(() => parseExposition("echosrv_orphan 1\n"), /no declared family/);
  assert.throws(() => parseExposition(page("echosrv_x", "gauge", "echosrv_x one")), /not a sample value/);
});

Deno.test("histograms: connection duration and bytes per connection, counted into the right buckets when sessions end", async () => {
  await using server = await spawnServer([
    ...["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0", "--idle-timeout", "1500ms"],
  ]);
  const port = await metricsPortOf(server);
  const empty = await families(port);
  assert.equal(seriesOf(empty, "echosrv_connection_duration_seconds", "echosrv_connection_duration_seconds_count"), 0);
  // A health check (connect, close, nothing echoed), a 1000-byte and a 70000-byte session, and one that idles out.
  (await Deno.connect({ hostname: "127.0.0.1", port: server.port })).close();
  await echoSession("127.0.0.1", server.port, new Uint8Array(1000));
  await echoSession("127.0.0.1", server.port, new Uint8Array(70_000));
  const idle = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    await writeAll(idle, new Uint8Array(10));
    assert.equal((await readAll(idle, 10_000)).length, 10, "echoed, then closed by the idle timeout");
  } finally {
    idle.close();
  }
  await within(
    10_000,
    "the four sessions to end",
    (async () => {
      while ((await scrape(port)).get("echosrv_connection_duration_seconds_count") !== 4) await sleep(20);
    })(),
  );
  const all = await families(port);
  assert.deepEqual(namingViolations(all), []);
  const bytes = (le: string) =>
    seriesOf(all, "echosrv_connection_echoed_bytes", `echosrv_connection_echoed_bytes_bucket{le="${le}"}`);
  assert.deepEqual([bytes("0"), bytes("64"), bytes("1024"), bytes("16384"), bytes("262144"), bytes("+Inf")], [
    1,
    2,
    3,
    3,
    4,
    4,
  ]);
  assert.equal(seriesOf(all, "echosrv_connection_echoed_bytes", "echosrv_connection_echoed_bytes_sum"), 71_010);
  const seconds = (le: string) =>
    seriesOf(all, "echosrv_connection_duration_seconds", `echosrv_connection_duration_seconds_bucket{le="${le}"}`);
  assert.equal(seconds("1"), 3, "three sessions ended within a second; the idle one took 1.5 s or more");
  assert.equal(seconds("10"), 4);
  const sum = seriesOf(all, "echosrv_connection_duration_seconds", "echosrv_connection_duration_seconds_sum")!;
  assert.ok(sum >= 1.5 && sum < 10, `the durations add up to ${sum} s`);
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

Deno.test({
  name: "--workers 2: the histograms are summed exactly over the workers",
  ignore: reusePortUnavailable(Deno.build.os, true) !== undefined,
  fn: async () => {
    await using server = await spawnServer([
      ...["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0", "--workers", "2", "--log-level", "debug"],
    ]);
    const port = await metricsPortOf(server);
    const workers = () =>
      new Set(server.records().filter((r) => /^worker \d+: opened /.test(r.message)).map((r) => r.properties.worker));
    let sessions = 0;
    // The kernel spreads connections by their ports: keep going (at most 60) until both workers served some.
    while (sessions < 6 || (workers().size < 2 && sessions < 60)) {
      await echoSession("127.0.0.1", server.port, new Uint8Array(2000));
      sessions++;
    }
    assert.equal(workers().size, 2, `both workers served some of ${sessions} sessions`);
    const all = await families(port);
    const series = (name: string, le?: string) =>
      seriesOf(all, name, le === undefined ? `${name}_count` : `${name}_bucket{le="${le}"}`);
    assert.equal(series("echosrv_connection_echoed_bytes"), sessions);
    assert.equal(series("echosrv_connection_echoed_bytes", "1024"), 0);
    assert.equal(series("echosrv_connection_echoed_bytes", "16384"), sessions);
    assert.equal(
      seriesOf(all, "echosrv_connection_echoed_bytes", "echosrv_connection_echoed_bytes_sum"),
      2000 * sessions,
    );
    assert.equal(series("echosrv_connection_duration_seconds"), sessions);
    assert.equal(series("echosrv_connection_duration_seconds", "+Inf"), sessions);
    assert.deepEqual(namingViolations(all), []);
    server.signal("SIGTERM");
    assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
  },
});
