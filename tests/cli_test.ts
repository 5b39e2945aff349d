// The command line as a user meets it: help, version, every bad option and environment value (exit 2, a message
// naming the option and the value, no stack trace), flags winning over the environment, and the value readers.

import assert from "node:assert/strict";
import { parseCommandLine } from "../lib/options.ts";
import { parseDuration, parseMask, parseSize } from "../lib/units.ts";
import { reusePortUnavailable } from "../lib/runtime.ts";
import { VERSION } from "../lib/version.ts";
import {
  cannotRun,
  echoSession,
  hasCommand,
  makeTestCertificate,
  runEchosrv,
  SIGTERM_EXIT_CODE,
  spawnServer,
} from "./helpers.ts";

const quiet = { out: () => {}, err: () => {} };

Deno.test({
  name: "the configuration is plain data, as workers receive it: structuredClone keeps every option whole",
  ignore: cannotRun(
    "the plain-data configuration test",
    await hasCommand("openssl") ? undefined : "openssl is not installed, so no certificate can be made for --tls-cert",
  ),
  async fn() {
    await using cert = await makeTestCertificate();
    const common = ["--port", "0", "--allow", "10.0.0.0/8,::ffff:192.0.2.0/120", "--deny", "10.6.0.0/16"];
    const lines = [
      [...common, "--max-connections-per-ip", "3", "--max-bytes-per-connection", "1MiB", "--udp", "--metrics", "9407"],
      [...common, "--tls-cert", cert!.certFile, "--tls-key", cert!.keyFile, "--max-connection-duration", "1h"],
      [...common, "--proxy-protocol", "--proxy-from", "127.0.0.1,::1", "--proxy-timeout", "2s"],
      [
        ...common,
        ...["--fault-profile", "slow: latency 50ms jitter 10ms, loss 1%; cut: reset after 64KiB"],
        ...["--fault-listen", "0=slow", "--fault-client", "10.1.0.0/16=cut", "--fault-api", "127.0.0.1:0"],
      ],
    ];
    for (const args of lines) {
      const what = parseCommandLine(args, quiet);
      assert.equal(what.kind, "run", args.join(" "));
      if (what.kind !== "run") continue;
      // deepStrictEqual compares prototypes too: a class instance (a parsed network, a key object) would come out of
      // structuredClone as a plain object, or not at all.
      assert.deepStrictEqual(structuredClone(what.config), what.config, args.join(" "));
    }
  },
});

Deno.test("--help lists every option with its default and environment variable, exit 0", async () => {
  const { code, stdout } = await runEchosrv(["--help"]);
  assert.equal(code, 0);
  for (
    const [flag, fallback] of [
      ["--port", "40007"],
      ["--host", "[::] and 0.0.0.0"],
      ["--max-connections", "10000"],
      ["--idle-timeout", "5m"],
      ["--shutdown-timeout", "10s"],
      ["--log-level", '"info"'],
      ["--trace-flags", "0x7"],
      ["--log-format", '"text"'],
      ["--copy", '"loop"'],
    ]
  ) {
    assert.match(stdout, new RegExp(`${flag} <`), flag);
    assert.ok(stdout.replace(/\s+/g, " ").includes(`default: ${fallback}`), `${flag} default ${fallback}`);
  }
  for (const name of ["ECHOSRV_PORT", "ECHOSRV_HOST", "ECHOSRV_IDLE_TIMEOUT", "ECHOSRV_LOG_FILE"]) {
    assert.ok(stdout.includes(name), name);
  }
  assert.match(stdout, /--log-file <path>/);
  assert.match(stdout, /-V, --version/);
  assert.equal((await runEchosrv(["-h"])).code, 0);
  assert.equal((await runEchosrv(["run", "--help"])).code, 0);
});

Deno.test("--help lists the operations options with their defaults and environment variables", async () => {
  const { code, stdout } = await runEchosrv(["--help"]);
  assert.equal(code, 0);
  const help = stdout.replace(/\s+/g, " ");
  for (
    const [flag, fallback] of [
      ["--max-connections-per-ip", "0"],
      ["--max-bytes-per-connection", "0"],
      ["--max-connection-duration", "0"],
      ["--udp-rate", "100"],
      ["--proxy-timeout", "5s"],
    ]
  ) {
    assert.match(stdout, new RegExp(`${flag} <`), flag);
    assert.ok(new RegExp(`${flag} <[^>]+> .*?default: ${fallback}`).test(help), `${flag} default ${fallback}`);
  }
  for (const flag of ["--metrics <host:port>", "--allow <cidr>", "--deny <cidr>", "--udp ", "--tls-cert <file>"]) {
    assert.ok(help.includes(flag), flag);
  }
  for (const flag of ["--tls-key <file>", "--proxy-protocol ", "--proxy-from <cidr>"]) {
    assert.ok(help.includes(flag), flag);
  }
  for (const name of ["ECHOSRV_METRICS", "ECHOSRV_ALLOW", "ECHOSRV_UDP=1", "ECHOSRV_PROXY_PROTOCOL=1"]) {
    assert.ok(help.includes(name), name);
  }
  const stats = await runEchosrv(["stats", "--help"]);
  assert.equal(stats.code, 0);
  for (const text of ["--metrics-url <url>", "ECHOSRV_METRICS_URL", "--interval <duration>", "--count <n>"]) {
    assert.ok(stats.stdout.includes(text), text);
  }
});

Deno.test("every new option has its ECHOSRV_ variable, and the environment turns the flags on strictly", () => {
  const env = {
    ECHOSRV_METRICS: "127.0.0.1:0",
    ECHOSRV_ALLOW: "10.0.0.0/8,::1",
    ECHOSRV_DENY: "10.6.0.0/16",
    ECHOSRV_MAX_CONNECTIONS_PER_IP: "3",
    ECHOSRV_MAX_BYTES_PER_CONNECTION: "1MiB",
    ECHOSRV_MAX_CONNECTION_DURATION: "1h",
    ECHOSRV_UDP: "yes",
    ECHOSRV_UDP_RATE: "50",
    ECHOSRV_PROXY_PROTOCOL: "1",
    ECHOSRV_PROXY_FROM: "127.0.0.1",
    ECHOSRV_PROXY_TIMEOUT: "2s",
  };
  for (const [name, value] of Object.entries(env)) Deno.env.set(name, value);
  try {
    const what = parseCommandLine([], quiet);
    assert.equal(what.kind, "run");
    if (what.kind !== "run") return;
    const server = what.config.server;
    assert.deepEqual(what.config.metrics, { hostname: "127.0.0.1", port: 0 });
    assert.deepEqual(server.access?.allow, ["10.0.0.0/8", "::1/128"], "networks in their canonical text");
    assert.deepEqual(server.access?.deny, ["10.6.0.0/16"]);
    assert.equal(server.access?.maxPerClient, 3);
    assert.equal(server.maxBytesPerConnection, 1024 * 1024);
    assert.equal(server.maxConnectionDurationMs, 3_600_000);
    assert.deepEqual(server.udp, { ratePerSource: 50 });
    assert.deepEqual(server.proxyProtocol?.from, ["127.0.0.1/32"]);
    assert.equal(server.proxyProtocol?.timeoutMs, 2000);
    Deno.env.set("ECHOSRV_UDP", "off");
    Deno.env.set("ECHOSRV_PROXY_PROTOCOL", "0");
    Deno.env.delete("ECHOSRV_PROXY_FROM");
    const off = parseCommandLine([], quiet);
    assert.ok(off.kind === "run" && off.config.server.udp === undefined && !off.config.server.proxyProtocol);
  } finally {
    for (const name of Object.keys(env)) Deno.env.delete(name);
  }
  const stats = parseCommandLine(["stats", "--metrics-url", "[::1]:9407", "--interval", "2s", "--count", "5"], quiet);
  assert.deepEqual(stats, { kind: "stats", config: { url: "http://[::1]:9407/metrics", intervalMs: 2000, count: 5 } });
});

Deno.test("--version and -V print the version, exit 0", async () => {
  for (const flag of ["--version", "-V"]) {
    const { code, stdout } = await runEchosrv([flag]);
    assert.equal(code, 0);
    assert.equal(stdout.trim(), VERSION);
  }
});

const BAD_OPTIONS: Array<[string[], RegExp]> = [
  [["--port", "abc"], /--port.*'abc'/],
  [["--port", "65536"], /--port.*'65536'.*out of range/],
  [["--port", "-1"], /--port/],
  [["-p", "1.5"], /--port.*'1\.5'/],
  [["--port"], /--port.*argument missing/],
  [["--host", ""], /--host/],
  [["--host", "not a host"], /--host.*'not a host'/],
  [["--max-connections", "-5"], /--max-connections/],
  [["--max-connections", "lots"], /--max-connections.*'lots'/],
  [["--idle-timeout", "30"], /--idle-timeout.*'30'.*unit/],
  [["--idle-timeout", "5 fortnights"], /--idle-timeout.*'5 fortnights'.*not a unit/],
  [["--shutdown-timeout", "-1s"], /--shutdown-timeout.*'-1s'/],
  [["--shutdown-timeout", "1000h"], /--shutdown-timeout.*too long/],
  [["--log-level", "verbose"], /--log-level.*'verbose'.*error, warn, info, debug/],
  [["--trace-flags", "0x10"], /--trace-flags.*'0x10'/],
  [["--trace-flags", "zz"], /--trace-flags.*'zz'/],
  [["--log-format", "xml"], /--log-format.*'xml'/],
  [["--log-file", ""], /--log-file/],
  [["--copy", "splice"], /--copy.*'splice'/],
  [["--bogus"], /unknown option '--bogus'/],
  [["extra"], /unknown command 'extra'|too many arguments/],
  [["run", "--port", "x"], /--port.*'x'/],
  // Operations options (issue 5).
  [["--metrics", "nowhere"], /--metrics.*'nowhere'/],
  [["--metrics", "::1:9407"], /--metrics.*'::1:9407'.*brackets/],
  [["--metrics", "127.0.0.1:70000"], /--metrics.*out of range/],
  [["--allow", "10.0.0.0/33"], /--allow.*'10\.0\.0\.0\/33'.*prefix length/],
  [["--allow", "10.0.0.1/8"], /--allow.*host bits set.*10\.0\.0\.0\/8/],
  [["--deny", "example.com"], /--deny.*'example\.com'/],
  [["--deny", "127.1"], /--deny.*'127\.1'/],
  [["--max-connections-per-ip", "-1"], /--max-connections-per-ip/],
  [["--max-connections-per-ip", "many"], /--max-connections-per-ip.*'many'/],
  [["--max-bytes-per-connection", "1XB"], /--max-bytes-per-connection.*'1XB'/],
  [["--max-connection-duration", "60"], /--max-connection-duration.*'60'.*unit/],
  [["--udp-rate", "0"], /--udp-rate.*'0'.*out of range/],
  [["--udp-rate", "fast"], /--udp-rate.*'fast'/],
  [["--tls-cert", ""], /--tls-cert.*empty/],
  [["--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"], /--tls-cert.*cannot read/],
  [["--tls-key", "/nonexistent/k.pem"], /--tls-key.*needs --tls-cert/],
  [["--proxy-protocol"], /--proxy-protocol.*needs --proxy-from/],
  [["--proxy-from", "10.0.0.0/8"], /--proxy-from.*no effect without --proxy-protocol/],
  [["--proxy-protocol", "--proxy-from", "10.0.0.0/40"], /--proxy-from.*'10\.0\.0\.0\/40'/],
  [["--proxy-protocol", "--proxy-from", "127.0.0.1", "--proxy-timeout", "0"], /--proxy-timeout.*forever/],
  [["--proxy-protocol", "--proxy-from", "127.0.0.1", "--proxy-timeout", "soon"], /--proxy-timeout.*'soon'/],
  [["stats", "--metrics-url", "ftp://x"], /--metrics-url.*'ftp:\/\/x'/],
  [["stats", "--metrics-url", "http://"], /--metrics-url/],
  [["stats", "--interval", "1"], /--interval.*'1'/],
  [["stats", "--count", "-1"], /--count/],
];

Deno.test("every bad option exits 2 with a message naming the option and the value", async () => {
  for (const [args, message] of BAD_OPTIONS) {
    const { code, stdout, stderr } = await runEchosrv(args);
    assert.equal(code, 2, `${args.join(" ")}: exit code (stderr: ${stderr})`);
    assert.match(stderr, message, args.join(" "));
    assert.doesNotMatch(stderr, /\n\s+at /, `${args.join(" ")}: no stack trace`);
    assert.equal(stdout, "", `${args.join(" ")}: nothing on standard output`);
  }
});

Deno.test("bad environment values exit 2 naming the variable and the value", async () => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ ECHOSRV_PORT: "http" }, /ECHOSRV_PORT.*|'http'.*ECHOSRV_PORT/],
    [{ ECHOSRV_IDLE_TIMEOUT: "soon" }, /'soon'.*ECHOSRV_IDLE_TIMEOUT/],
    [{ ECHOSRV_MAX_CONNECTIONS: "" }, /ECHOSRV_MAX_CONNECTIONS/],
    [{ ECHOSRV_HOST: "::1,,127.0.0.1" }, /ECHOSRV_HOST/],
    [{ ECHOSRV_LOG_LEVEL: "loud" }, /'loud'.*ECHOSRV_LOG_LEVEL/],
    [{ ECHOSRV_COPY: "zero-copy" }, /ECHOSRV_COPY/],
    [{ ECHOSRV_ALLOW: "10.0.0.0/8,bogus" }, /'10\.0\.0\.0\/8,bogus'.*ECHOSRV_ALLOW/],
    [{ ECHOSRV_METRICS: "here" }, /'here'.*ECHOSRV_METRICS/],
    [{ ECHOSRV_UDP: "maybe" }, /ECHOSRV_UDP is 'maybe'/],
    [{ ECHOSRV_PROXY_PROTOCOL: "2" }, /ECHOSRV_PROXY_PROTOCOL is '2'/],
    [{ ECHOSRV_MAX_BYTES_PER_CONNECTION: "lots" }, /'lots'.*ECHOSRV_MAX_BYTES_PER_CONNECTION/],
  ];
  for (const [env, message] of cases) {
    const { code, stderr } = await runEchosrv([], env);
    assert.equal(code, 2, JSON.stringify(env));
    assert.match(stderr, message, JSON.stringify(env));
    assert.doesNotMatch(stderr, /\n\s+at /);
  }
});

Deno.test("environment variables configure the server; a flag wins over its variable", async () => {
  await using server = await spawnServer(["--host", "127.0.0.1", "--port", "0"], {
    env: { ECHOSRV_PORT: "1", ECHOSRV_HOST: "203.0.113.1", ECHOSRV_MAX_CONNECTIONS: "7", ECHOSRV_IDLE_TIMEOUT: "90s" },
  });
  const summary = server.records().find((r) => r.message.startsWith("echoing on port"))!;
  assert.equal(summary.properties.maxConnections, 7, "from ECHOSRV_MAX_CONNECTIONS");
  assert.equal(summary.properties.idleTimeout, "90s", "from ECHOSRV_IDLE_TIMEOUT");
  assert.notEqual(server.port, 1, "--port wins over ECHOSRV_PORT");
  assert.equal((await echoSession("127.0.0.1", server.port, Uint8Array.of(5))).length, 1, "--host wins");
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

Deno.test({
  name: "the startup line names every limit in force as its option is written, for one server and for the workers",
  ignore: cannotRun(
    "the startup line test",
    await hasCommand("openssl") ? undefined : "openssl is not installed, so no certificate can be made for --tls-cert",
  ),
  async fn() {
    const ready = (server: { records(): { message: string }[] }) =>
      server.records().filter((r) => /^(worker \d+: )?echoing on port/.test(r.message)).map((r) => r.message);
    {
      // The defaults: the limits on by default, and nothing else.
      await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1"]);
      assert.deepEqual(ready(server), [
        `echoing on port ${server.port} (copy loop, max connections 10000, idle timeout 5m, send timeout 5m)`,
      ]);
      server.signal("SIGTERM");
      assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
    }
    await using cert = await makeTestCertificate();
    // TLS and the PROXY protocol cannot go together: one server gets one, the workers the other.
    const common = [
      ...["--port", "0", "-H", "127.0.0.1", "--send-timeout", "0", "--max-connections-per-ip", "3"],
      ...["--max-bytes-per-connection", "64KiB", "--max-connection-duration", "1h", "--udp", "--udp-rate", "50"],
    ];
    const limits = (feature: string) =>
      "max connections per IP 3, idle timeout 5m, send timeout never, max bytes per connection 64KiB, " +
      `max connection duration 1h, ${feature}, UDP rate 50`;
    {
      await using server = await spawnServer([
        ...common,
        ...["--max-connections", "0", "--tls-cert", cert!.certFile, "--tls-key", cert!.keyFile],
        ...["--tls-handshake-timeout", "3s"],
      ]);
      assert.deepEqual(ready(server), [
        `echoing on port ${server.port} (copy loop, max connections unlimited, ${limits("TLS handshake timeout 3s")})`,
      ]);
      server.signal("SIGTERM");
      assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
    }
    if (reusePortUnavailable() !== undefined) {
      console.log(`the workers' startup line not checked: ${reusePortUnavailable()}`);
      return;
    }
    // The pool's line and each worker's, made by the same code: the cap is one for all the workers.
    await using pool = await spawnServer([
      ...["--workers", "2", ...common, "--max-connections", "20"],
      ...["--proxy-protocol", "--proxy-from", "127.0.0.1", "--proxy-timeout", "2500ms"],
    ]);
    const proxy = limits("proxy timeout 2500ms");
    assert.deepEqual(
      ready(pool).sort(),
      [
        `echoing on port ${pool.port} with 2 workers (copy loop, max connections 20 in total, ${proxy})`,
        `worker 1: echoing on port ${pool.port} (copy loop, max connections 20, ${proxy})`,
        `worker 2: echoing on port ${pool.port} (copy loop, max connections 20, ${proxy})`,
      ].sort(),
    );
    pool.signal("SIGTERM");
    assert.equal(await pool.exited(), SIGTERM_EXIT_CODE);
  },
});

Deno.test("ECHOSRV_HOST takes a comma-separated list; a misspelt ECHOSRV_ variable is reported", async () => {
  await using server = await spawnServer(["--port", "0"], {
    env: { ECHOSRV_HOST: "127.0.0.1,::1", ECHOSRV_PROT: "1234" },
  });
  const listening = server.records().filter((r) => r.message.startsWith("listening on"));
  assert.equal(listening.length, 2);
  assert.ok(server.records().some((r) => r.level === "WARN" && r.properties.name === "ECHOSRV_PROT"));
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

Deno.test("parseCommandLine: defaults, `run`, repeated and bracketed hosts", () => {
  const bare = parseCommandLine([], quiet);
  assert.equal(bare.kind, "run");
  if (bare.kind !== "run") return;
  assert.deepEqual(bare.config.server, {
    port: 40007,
    hosts: ["::", "0.0.0.0"],
    maxConnections: 10000,
    idleTimeoutMs: 300_000,
    sendTimeoutMs: 300_000,
    shutdownTimeoutMs: 10_000,
    copy: "loop",
  });
  assert.deepEqual(bare.config.log, { level: "info", traceFlags: 7, format: "text", file: undefined });
  const run = parseCommandLine(["run", "-H", "[::1]", "-H", "127.0.0.1,::1", "-p", "7", "--trace-flags", "0x3"], quiet);
  assert.equal(run.kind, "run");
  if (run.kind !== "run") return;
  assert.deepEqual(run.config.server.hosts, ["::1", "127.0.0.1"]);
  assert.equal(run.config.server.port, 7);
  assert.equal(run.config.log.traceFlags, 3);
});

Deno.test("durations, sizes and masks read as documented", () => {
  assert.equal(parseDuration("1500ms"), 1500);
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("5m"), 300_000);
  assert.equal(parseDuration("1h"), 3_600_000);
  assert.equal(parseDuration("1.5s"), 1500);
  assert.equal(parseDuration("0"), 0);
  for (const bad of ["", "30", "s", "-1s", "1 fortnight", "1h 30", "NaN", "1e3ms"]) {
    assert.throws(() => parseDuration(bad), bad);
  }
  assert.equal(parseSize("65536"), 65536);
  assert.equal(parseSize("64KiB"), 65536);
  assert.equal(parseSize("10MB"), 10_000_000);
  assert.equal(parseSize("1g"), 1024 ** 3);
  for (const bad of ["", "-1", "1XB", "lots"]) assert.throws(() => parseSize(bad), bad);
  assert.equal(parseMask("0x3", 7), 3);
  assert.equal(parseMask("7", 7), 7);
  assert.equal(parseMask("0X4", 7), 4);
  for (const bad of ["0x8", "8", "x", "", "0x", "-1"]) assert.throws(() => parseMask(bad, 7), bad);
});
