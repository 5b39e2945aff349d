// The command line as a user meets it: help, version, every bad option and environment value (exit 2, a message
// naming the option and the value, no stack trace), flags winning over the environment, and the value readers.

import assert from "node:assert/strict";
import { parseCommandLine } from "../lib/options.ts";
import { parseDuration, parseMask, parseSize } from "../lib/units.ts";
import { VERSION } from "../lib/version.ts";
import { echoSession, runEchosrv, spawnServer } from "./helpers.ts";

const quiet = { out: () => {}, err: () => {} };

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
  [["--idle-timeout", "5 minutes"], /--idle-timeout.*'5 minutes'/],
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
  assert.equal(await server.exited(), 0);
});

Deno.test("ECHOSRV_HOST takes a comma-separated list; a misspelt ECHOSRV_ variable is reported", async () => {
  await using server = await spawnServer(["--port", "0"], {
    env: { ECHOSRV_HOST: "127.0.0.1,::1", ECHOSRV_PROT: "1234" },
  });
  const listening = server.records().filter((r) => r.message.startsWith("listening on"));
  assert.equal(listening.length, 2);
  assert.ok(server.records().some((r) => r.level === "WARN" && r.properties.name === "ECHOSRV_PROT"));
  server.signal("SIGTERM");
  assert.equal(await server.exited(), 0);
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
  for (const bad of ["", "30", "s", "-1s", "1d", "1 h", "NaN", "1e3ms"]) assert.throws(() => parseDuration(bad), bad);
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
