// Hostile input everywhere echosrv takes input: the command line and the ECHOSRV_* environment fuzzed with random
// and near-miss values (seeded, bounded; thousands in-process through parseCommandLine, a few dozen as real
// processes), and random bytes on every port it serves. Whatever comes in, the outcome is defined: a value that
// is valid runs with exactly that value; anything else exits 2 with a message naming the option (or variable)
// and the value. Never a stack trace, never a throw, never a lost byte. Seeds are fixed: a failure names its case.

import assert from "node:assert/strict";
import { ENV_VARS, parseCommandLine, type RunConfig } from "../lib/options.ts";
import { Random } from "../stress/rng.ts";
import { readAll, runEchosrv, sameBytes, type ServerProcess, spawnServer, within, writeAll } from "./helpers.ts";

// ---------------------------------------------------------------------------------------------------------------
// The command line and the environment

/** One option as the README documents it: its flags, its variable, and which values it accepts. */
interface OptionSpec {
  long: string;
  short?: string;
  env: string;
  /** The rule from the README, written independently of lib/options.ts and lib/units.ts. */
  valid(value: string): boolean;
  /** Valid values, some in unusual but documented spellings. */
  good: string[];
  /** Invalid values close to valid ones. */
  near: string[];
  /** Where the value lands in the configuration, to check a run took exactly the value given. */
  read(config: RunConfig): unknown;
  /** The configuration value `value` must give (only called for valid values). */
  expect(value: string): unknown;
}

const wholeNumber = (value: string, max: number) => /^\d+$/.test(value.trim()) && Number(value.trim()) <= max;
const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
function durationMs(value: string): number | undefined {
  const text = value.trim().toLowerCase();
  if (text === "0") return 0;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text);
  if (!match) return undefined;
  const ms = Math.round(Number(match[1]) * UNITS[match[2]]);
  return ms <= 2 ** 31 - 1 ? ms : undefined;
}
function hostList(value: string): string[] | undefined {
  const hosts = value.split(",").map((h) => h.trim()).map((h) =>
    h.startsWith("[") && h.endsWith("]") ? h.slice(1, -1) : h
  );
  return hosts.every((h) => h !== "" && h.length <= 253 && /^[A-Za-z0-9._:%-]+$/.test(h)) ? hosts : undefined;
}
function maskValue(value: string): number | undefined {
  const text = value.trim().toLowerCase();
  const n = /^0x[0-9a-f]{1,8}$/.test(text) ? parseInt(text.slice(2), 16) : /^\d{1,10}$/.test(text) ? Number(text) : NaN;
  return n >= 0 && n <= 7 ? n : undefined;
}

const SPECS: OptionSpec[] = [
  {
    long: "--port",
    short: "-p",
    env: ENV_VARS.port,
    valid: (v) => wholeNumber(v, 65535),
    good: ["0", "1", "7", "40007", "65535", " 8080 ", "00080"],
    near: ["65536", "-1", "1.5", "0x50", "80a", "", "８０", "8080 9090", "99999999999999999999"],
    read: (c) => c.server.port,
    expect: (v) => Number(v.trim()),
  },
  {
    long: "--host",
    short: "-H",
    env: ENV_VARS.host,
    valid: (v) => hostList(v) !== undefined,
    good: ["127.0.0.1", "::1", "[::1]", "0.0.0.0", "localhost", "a.b-c", "127.0.0.1,::1", "fe80::1%lo"],
    near: ["", " ", "a b", "127.0.0.1,,::1", "[", "a/b", "x".repeat(254), "ho$t", "::1,"],
    read: (c) => c.server.hosts,
    expect: (v) => [...new Set(hostList(v))],
  },
  {
    long: "--max-connections",
    env: ENV_VARS.maxConnections,
    valid: (v) => wholeNumber(v, 10_000_000),
    good: ["0", "1", "10000", "10000000"],
    near: ["10000001", "-5", "1e3", "lots", ""],
    read: (c) => c.server.maxConnections,
    expect: (v) => Number(v.trim()),
  },
  {
    long: "--idle-timeout",
    env: ENV_VARS.idleTimeout,
    valid: (v) => durationMs(v) !== undefined,
    good: ["0", "1500ms", "30s", "5m", "1h", "1.5s", "596h", " 2S "],
    near: ["30", "5 minutes", "-1s", "1d", "597h", "1e3ms", "s", "", "1.s", ".5s"],
    read: (c) => c.server.idleTimeoutMs,
    expect: (v) => durationMs(v),
  },
  {
    long: "--shutdown-timeout",
    env: ENV_VARS.shutdownTimeout,
    valid: (v) => durationMs(v) !== undefined,
    good: ["0", "10s", "250ms", "2m"],
    near: ["10", "-1s", "forever", ""],
    read: (c) => c.server.shutdownTimeoutMs,
    expect: (v) => durationMs(v),
  },
  {
    long: "--log-level",
    env: ENV_VARS.logLevel,
    valid: (v) => ["error", "warn", "info", "debug"].includes(v),
    good: ["error", "warn", "info", "debug"],
    near: ["INFO", "verbose", "", "info ", "warning"],
    read: (c) => c.log.level,
    expect: (v) => v,
  },
  {
    long: "--trace-flags",
    env: ENV_VARS.traceFlags,
    valid: (v) => maskValue(v) !== undefined,
    good: ["0", "0x0", "7", "0x7", "0X3", " 4 ", "0000000007"],
    near: ["8", "0x8", "-1", "0x", "zz", "0x100000000", "4294967303", ""],
    read: (c) => c.log.traceFlags,
    expect: (v) => maskValue(v),
  },
  {
    long: "--log-format",
    env: ENV_VARS.logFormat,
    valid: (v) => ["text", "json"].includes(v),
    good: ["text", "json"],
    near: ["xml", "JSON", ""],
    read: (c) => c.log.format,
    expect: (v) => v,
  },
  {
    long: "--log-file",
    env: ENV_VARS.logFile,
    valid: (v) => v.trim() !== "",
    good: ["/var/log/echosrv.log", "echosrv.log", " a "],
    near: ["", "   "],
    read: (c) => c.log.file,
    expect: (v) => v,
  },
  {
    long: "--copy",
    env: ENV_VARS.copy,
    valid: (v) => ["loop", "pipe"].includes(v),
    good: ["loop", "pipe"],
    near: ["splice", "LOOP", ""],
    read: (c) => c.server.copy,
    expect: (v) => v,
  },
];

const CHARS = [
  ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
  ..."0123456789.:,[]%-=_/\\'\"` ~!@#$^&*(){}<>?|+;",
  " ",
  "\t",
  "\n",
  "\r",
  "\v",
  "\f",
  "\u00a0",
  "\u2028",
  "\ufeff",
  "\x01",
  "\x1b",
  "\x7f",
  "é",
  "ß",
  "İ",
  "中",
  "\u202e",
  "😀",
  "\u212a", // Kelvin sign: lower-cases to an ASCII k
  "ﬀ",
];

/** A random string from the characters above (`nul` adds NUL, which no process argument can carry). */
function randomString(rng: Random, nul = false): string {
  const length = rng.logInt(1, 40) - (rng.chance(0.05) ? 1 : 0);
  let text = "";
  for (let i = 0; i < length; i++) text += nul && rng.chance(0.02) ? "\0" : CHARS[rng.int(0, CHARS.length - 1)];
  return text;
}

function pickValue(rng: Random, spec: OptionSpec, nul: boolean): string {
  const r = rng.float();
  if (r < 0.4) return spec.good[rng.int(0, spec.good.length - 1)];
  if (r < 0.7) return spec.near[rng.int(0, spec.near.length - 1)];
  return randomString(rng, nul);
}

/** A generated invocation and what it must do. */
interface Case {
  args: string[];
  env: Record<string, string>;
  /** Exit 2 naming `names` (the first bad option: its flag or its variable, and the value), or run. */
  expect: { kind: "usage"; names: string; value: string } | { kind: "run"; config: Array<[OptionSpec, unknown]> };
}

/** Tokens that are never a valid argument on their own: unknown options and stray words. */
function garbageToken(rng: Random): string {
  const word = randomString(rng).replace(/^[-\s]+/, "");
  const known = new Set(SPECS.flatMap((s) => [s.long, s.short]).concat(["--help", "-h", "--version", "-V"]));
  for (const candidate of [`--x${word}`, `-${word}`, word === "run" || word === "" ? "walk" : word]) {
    // `-p...` and `-H...` carry a value; `-h...` and `-V...` ask for help and version: not garbage.
    const flagCluster = /^-[pHhV]/.test(candidate) && !candidate.startsWith("--");
    if (!known.has(candidate) && !flagCluster && rng.chance(0.5)) return candidate;
  }
  return `--no-such-${rng.int(0, 999)}`;
}

/**
 * A command line and environment built from options whose validity is known, so the outcome can be predicted:
 * flags in every form (`--port 7`, `--port=7`, `-p 7`, `-p7`), `run` anywhere between them, sometimes a stray
 * argument, sometimes variables (which count only for options not given as flags).
 */
function structuredCase(rng: Random, nul: boolean): Case {
  const given: Array<{ spec: OptionSpec; value: string }> = [];
  const args: string[] = [];
  const runAt = rng.chance(0.3) ? rng.int(0, 4) : -1;
  let garbage: string | undefined;
  const count = rng.int(0, 4);
  for (let i = 0; i <= count; i++) {
    if (i === runAt) args.push("run");
    if (i === count) break;
    if (garbage === undefined && rng.chance(0.05)) args.push(garbage = garbageToken(rng));
    const spec = SPECS[rng.int(0, SPECS.length - 1)];
    const value = pickValue(rng, spec, nul);
    const form = rng.int(0, 3);
    if (form === 0 || (form >= 2 && !spec.short) || (form === 3 && value === "")) args.push(spec.long, value);
    else if (form === 1) args.push(`${spec.long}=${value}`);
    else if (form === 2) args.push(spec.short!, value);
    else args.push(`${spec.short}${value}`);
    given.push({ spec, value });
  }
  const env: Record<string, string> = {};
  for (let i = rng.int(0, 2); i > 0; i--) {
    const spec = SPECS[rng.int(0, SPECS.length - 1)];
    env[spec.env] = pickValue(rng, spec, false).replaceAll("\0", "");
  }
  return { args, env, expect: predict(given, env, garbage) };
}

/** What commander must make of it: flags left to right, then variables (in option order) for the rest. */
function predict(given: Array<{ spec: OptionSpec; value: string }>, env: Record<string, string>, garbage?: string) {
  const badFlag = given.find(({ spec, value }) => !spec.valid(value));
  if (badFlag) return { kind: "usage" as const, names: badFlag.spec.long, value: badFlag.value };
  const fromEnv = SPECS.filter((s) => s.env in env && !given.some((g) => g.spec === s));
  const badEnv = fromEnv.find((s) => !s.valid(env[s.env]));
  if (badEnv) return { kind: "usage" as const, names: badEnv.env, value: env[badEnv.env] };
  if (garbage !== undefined) return { kind: "usage" as const, names: "", value: "" };
  const config: Array<[OptionSpec, unknown]> = [];
  for (const spec of SPECS) {
    const values = given.filter((g) => g.spec === spec).map((g) => g.value);
    if (spec.long === "--host" && values.length > 0) {
      config.push([spec, [...new Set(values.flatMap((v) => hostList(v)!))]]);
    } else if (values.length > 0) {
      config.push([spec, spec.expect(values[values.length - 1])]);
    } else if (spec.env in env) {
      config.push([spec, spec.expect(env[spec.env])]);
    }
  }
  return { kind: "run" as const, config };
}

/** Runs parseCommandLine with `env` set (restored afterwards), capturing what it writes. */
function parseWith(args: string[], env: Record<string, string>) {
  const saved = Object.fromEntries(Object.values(ENV_VARS).map((name) => [name, Deno.env.get(name)]));
  const output = { out: "", err: "" };
  try {
    for (const name of Object.values(ENV_VARS)) Deno.env.delete(name);
    for (const [name, value] of Object.entries(env)) Deno.env.set(name, value);
    const result = parseCommandLine(args, { out: (t) => output.out += t, err: (t) => output.err += t });
    return { result, ...output };
  } finally {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) Deno.env.delete(name);
      else Deno.env.set(name, value);
    }
  }
}

function describe(c: { args: string[]; env: Record<string, string> }): string {
  return `args ${JSON.stringify(c.args)} env ${JSON.stringify(c.env)}`;
}

/** A usage error as a user sees it: the message on standard error, nothing on standard output, no stack. */
function assertUsageError(out: string, err: string, what: string): void {
  assert.equal(out, "", `${what}: nothing on standard output`);
  assert.match(err, /^echosrv: error: /, `${what}: a message`);
  assert.doesNotMatch(err, /\n\s+at |Uncaught|TypeError|RangeError/, `${what}: no stack trace`);
}

Deno.test("fuzzed options and variables: valid ones run with exactly their values, invalid ones exit 2 naming them", () => {
  const rng = new Random(0x0f75);
  let runs = 0;
  let usage = 0;
  for (let i = 0; i < 3000; i++) {
    const c = structuredCase(rng, true);
    const what = `case ${i}: ${describe(c)}`;
    const { result, out, err } = parseWith(c.args, c.env);
    if (c.expect.kind === "usage") {
      usage++;
      assert.deepEqual(result, { kind: "exit", code: 2 }, what);
      assertUsageError(out, err, what);
      if (c.expect.names !== "") assert.ok(err.includes(c.expect.names), `${what}: names ${c.expect.names}\n${err}`);
      if (c.expect.value.trim() !== "") assert.ok(err.includes(c.expect.value), `${what}: shows the value\n${err}`);
    } else {
      runs++;
      assert.equal(result.kind, "run", `${what}\n${err}`);
      assert.equal(out + err, "", what);
      if (result.kind !== "run") continue;
      for (const [spec, value] of c.expect.config) {
        assert.deepEqual(spec.read(result.config), value, `${what}: ${spec.long}`);
      }
    }
  }
  assert.ok(runs > 500 && usage > 500, `both outcomes drawn often: ${runs} runs, ${usage} usage errors`);
});

Deno.test("fuzzed arguments of pure noise never throw: exit 2 with a message, or help/version, or a sane run", () => {
  const rng = new Random(0x4015e);
  const outcomes = { usage: 0, info: 0, run: 0 };
  for (let i = 0; i < 1500; i++) {
    const args = Array.from({ length: rng.int(1, 5) }, () => {
      const text = randomString(rng, true);
      return rng.chance(0.3) ? `-${text}` : rng.chance(0.3) ? `--${text}` : text;
    });
    const what = `case ${i}: ${JSON.stringify(args)}`;
    const { result, out, err } = parseWith(args, {});
    if (result.kind === "run") {
      outcomes.run++;
      const { port, hosts } = result.config.server;
      assert.ok(Number.isInteger(port) && port >= 0 && port <= 65535, what);
      assert.ok(hosts.length > 0 && hosts.every((h) => /^[A-Za-z0-9._:%-]+$/.test(h)), what);
    } else if (result.kind === "stats" || result.kind === "service") {
      // Only when the noise happened to spell a subcommand's name, then valid options for it.
      assert.ok(args.includes(result.kind), `${what}: ${result.kind} only when asked for`);
    } else if (result.code === 0) {
      outcomes.info++;
      assert.ok(out.length > 0 && err === "", `${what}: help or version on standard output`);
      assert.ok(args.some((a) => /^-(-help|-version|[a-zA-Z]*[hV])/.test(a)), `${what}: asked for help or version`);
    } else {
      outcomes.usage++;
      assert.equal(result.code, 2, what);
      assertUsageError(out, err, what);
    }
  }
  assert.ok(outcomes.usage > 1000, JSON.stringify(outcomes));
});

Deno.test("fuzzed options and variables as real processes: exit 2, a message naming them, no stack trace", async () => {
  // A few dozen of the invalid cases above, run as a user runs echosrv. The base environment keeps anything that
  // would start (none should) on loopback and a free port.
  const base = { ECHOSRV_PORT: "0", ECHOSRV_HOST: "127.0.0.1" };
  const rng = new Random(0x9e0c);
  let ran = 0;
  for (let i = 0; i < 2000 && ran < 30; i++) {
    const c = structuredCase(rng, false);
    const env = { ...base, ...c.env };
    if (c.expect.kind !== "usage" || parseWith(c.args, env).result.kind !== "exit") continue;
    ran++;
    const what = `case ${i}: ${describe({ args: c.args, env })}`;
    const { code, stdout, stderr } = await runEchosrv(c.args, env);
    assert.equal(code, 2, `${what}: ${stderr}`);
    assertUsageError(stdout, stderr, what);
    if (c.expect.names !== "") assert.ok(stderr.includes(c.expect.names), `${what}: names ${c.expect.names}`);
  }
  assert.equal(ran, 30);
});

// ---------------------------------------------------------------------------------------------------------------
// Bytes on the wire

/**
 * A port echosrv serves and what hostile bytes on it must lead to. Today only the echo port; as they land, the
 * PROXY-protocol port (random and truncated headers), the TLS port (plaintext), the metrics port (garbage requests)
 * and UDP (empty and oversized datagrams) are one entry each.
 */
interface HostileTarget {
  name: string;
  /** echosrv arguments that open this port (on top of `--port 0 -H 127.0.0.1`). */
  serverArgs: string[];
  /** The port to aim at. */
  port(server: ServerProcess): number;
  /** Sends `payload` the way `rng` says; asserts the defined outcome. */
  probe(port: number, payload: Uint8Array, rng: Random): Promise<void>;
}

const HOSTILE_TARGETS: HostileTarget[] = [
  {
    name: "echo port: every byte comes back exactly",
    serverArgs: [],
    port: (server) => server.port,
    async probe(port, payload, rng) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        const reading = readAll(conn, 60_000);
        reading.catch(() => {});
        const tiny = rng.chance(0.2);
        for (let offset = 0; offset < payload.length;) {
          const size = tiny ? rng.int(1, 16) : rng.logInt(1, 64 * 1024);
          await writeAll(conn, payload.subarray(offset, offset + size));
          offset += size;
        }
        await conn.closeWrite();
        assert.equal(sameBytes(await reading, payload), true);
      } finally {
        conn.close();
      }
    },
  },
];

const ascii = (text: string) => new TextEncoder().encode(text);

/** Byte sequences that parsers choke on, each followed by noise, sometimes truncated. */
const PAYLOADS: Array<(rng: Random) => Uint8Array> = [
  (rng) => Uint8Array.from({ length: rng.logInt(1, 256 * 1024) }, () => rng.int(0, 255)),
  (rng) => new Uint8Array(rng.logInt(1, 128 * 1024)),
  (rng) => new Uint8Array(rng.logInt(1, 128 * 1024)).fill(0xff),
  (rng) => ascii("\r\n".repeat(rng.logInt(1, 20_000))),
  () => ascii("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n"),
  () => Uint8Array.of(0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03), // a TLS ClientHello's start
  () => ascii("PROXY TCP4 203.0.113.1 198.51.100.2 65535 40007\r\n"),
  () => Uint8Array.of(0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0xff, 0xff),
  () => Uint8Array.of(0xff, 0xfb, 0x01, 0xff, 0xfd, 0x03, 0xff, 0xf4, 0xff, 0xfd, 0x06), // telnet IAC, Ctrl+C
  () => Uint8Array.of(0xc0, 0x80, 0xed, 0xa0, 0x80, 0xf8, 0x88, 0x80, 0x80, 0x80, 0xfe, 0xff, 0xef, 0xbb, 0xbf),
  () => Uint8Array.of(0x00),
];

function hostilePayload(rng: Random): Uint8Array {
  const head = PAYLOADS[rng.int(0, PAYLOADS.length - 1)](rng);
  const cut = rng.chance(0.3) ? head.subarray(0, rng.int(0, head.length)) : head;
  const tail = Uint8Array.from({ length: rng.chance(0.5) ? rng.logInt(1, 4096) : 0 }, () => rng.int(0, 255));
  const out = new Uint8Array(cut.length + tail.length);
  out.set(cut);
  out.set(tail, cut.length);
  return out;
}

for (const target of HOSTILE_TARGETS) {
  Deno.test(`hostile bytes on the wire, ${target.name}; the server logs no error and stops cleanly`, async () => {
    await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", ...target.serverArgs]);
    const rng = new Random(0xb17e5);
    const port = target.port(server);
    for (let batch = 0; batch < 10; batch++) {
      const payloads = Array.from({ length: 12 }, () => hostilePayload(rng));
      const seeds = payloads.map(() => rng.next32());
      await within(
        120_000,
        `batch ${batch} of hostile sessions`,
        Promise.all(payloads.map((p, i) => target.probe(port, p, new Random(seeds[i])))),
      );
    }
    server.signal("SIGTERM");
    assert.equal(await server.exited(), 0);
    assert.deepEqual(server.records().filter((r) => r.level !== "INFO").map((r) => r.message), []);
    assert.equal(server.stderr, "");
  });
}
