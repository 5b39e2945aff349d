// helpers: what the tests share, in one module to import: real TCP clients on loopback, an in-process server, the
// skip rules of this machine (Windows, Wine), and, re-exported from support/ (which the stress run shares), echosrv
// started as a process as `deno task start` does, bounded waits, /proc readings, a test certificate and PROXY
// headers. Every wait is bounded: a helper that would hang fails with a message instead.

import denoJson from "../deno.json" with { type: "json" };
import { EchoServer } from "../lib/server.ts";
import type { ServerConfig } from "../lib/config.ts";
import { parseMetricsText } from "../lib/stats_command.ts";
import { oneLoopUnlessChosen, ROOT, type ServerProcess, taskArgs, taskEnv } from "../support/server_process.ts";
import { sleep, within } from "../support/time.ts";

export { makeTestCertificate, type TestCertificate } from "../support/certificate.ts";
export { descriptorCount, openDescriptors, residentKiB } from "../support/process_info.ts";
export { proxyV2Header } from "../support/proxy_header.ts";
export {
  type LogLine,
  oneLoopUnlessChosen,
  ROOT,
  ServerProcess,
  type SpawnOptions,
  spawnServer,
  startTaskArgs,
  taskArgs,
  taskEnv,
} from "../support/server_process.ts";
export { sleep, waitUntil, within } from "../support/time.ts";
export { hasCommand } from "../support/tools.ts";

/**
 * The exit code of a spawned echosrv sent SIGTERM. On Unix that is the graceful stop: 0. Windows has no signal a
 * test can send to a console program: Deno's kill() ends it at once there (TerminateProcess), and it exits 1.
 */
export const SIGTERM_EXIT_CODE: number = Deno.build.os === "windows" ? 1 : 0;

/** Why a test about stopping echosrv with a signal cannot run here, or undefined where it can. */
export const NO_STOP_SIGNALS: string | undefined = Deno.build.os === "windows"
  ? "Windows has no SIGTERM or SIGINT a test can send: Deno's kill() ends a process at once there " +
    "(TerminateProcess), and Ctrl+C reaches only processes sharing a console. The graceful stop on Windows is the " +
    "service manager's, tested in scm_test.ts and wine_service_test.ts"
  : undefined;

/** True when this is Deno's Windows build running under Wine (Wine's own programs are there). */
export const UNDER_WINE: boolean = Deno.build.os === "windows" && (() => {
  try {
    return Deno.statSync("C:\\windows\\system32\\winecfg.exe").isFile;
  } catch {
    return false;
  }
})();

/**
 * Why a test cannot run under Wine, as measured there, or undefined elsewhere (on Windows itself it runs). The
 * symptoms are Wine's: the server under Wine sends a Linux client exactly what it should (checked by hand), and
 * Wine's sockets, as Windows' do, throw away what a client had received but not read when a reset arrives; under
 * Wine every process is also several times slower, which moves timing-bound checks.
 */
export function underWine(symptom: string): string | undefined {
  return UNDER_WINE ? `under Wine 10: ${symptom}` : undefined;
}

/**
 * `text` without the notice Deno prints at start where `ps` does not exist (Windows): the start task's
 * `--allow-run=ps` is for the quick start's npx watch (lib/stop_requests.ts), which only Linux and macOS need.
 */
export function withoutDenoNotices(text: string): string {
  return text.replace(
    // The escape character (\x1b) is meant: Deno colours its notice.
    // deno-lint-ignore no-control-regex
    /^(\x1b\[[0-9;]*m)*Info(\x1b\[[0-9;]*m)* Failed to resolve 'ps' for allow-run: cannot find binary path\r?\n/m,
    "",
  );
}

/** What the clients of the tests below meet under Wine. */
export const CLIENT_RESET = "clients see their connections reset and lose echo they had received but not read " +
  "(Wine, as Windows does, drops it when a reset arrives; the same server sends a Linux client every byte)";

/** Why a test of a dual-stack [::] listener taking IPv4 clients cannot run here, or undefined. */
export const DUAL_STACK: string | undefined = Deno.build.os === "windows"
  ? "Windows turns IPV6_V6ONLY on for every IPv6 socket, so a [::] listener takes no IPv4 clients (echosrv's " +
    "default listeners, [::] and 0.0.0.0, take both)"
  : undefined;

const skipped = new Set<string>();

/**
 * For a test's `ignore`: true when `reason` is set, printing it (once per reason) so that a skip is never silent.
 *
 * @param what the test or tests concerned
 * @param reason why they cannot run here, or undefined
 */
export function cannotRun(what: string, reason: string | undefined): boolean {
  if (reason === undefined) return false;
  const line = `SKIPPED ${what}: ${reason}`;
  if (!skipped.has(line)) console.log(line);
  skipped.add(line);
  return true;
}

/** Runs echosrv to completion with `args` (for option errors, help, version) and returns what it printed. */
export function runEchosrv(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const command = args.find((a) => !a.startsWith("-"));
  const server = command === undefined || command === "run" || !/^[a-z]+$/.test(command);
  return runTask("start", server ? oneLoopUnlessChosen(args, env) : args, env, 30_000);
}

/** Runs a deno.json task's command line plus `args` to completion (bounded by `ms`); returns what it printed. */
async function runTask(
  task: keyof typeof denoJson.tasks,
  args: string[],
  env: Record<string, string>,
  ms: number,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await within(
    ms,
    `deno task ${task} ${args.join(" ")}`,
    new Deno.Command(Deno.execPath(), {
      args: [...taskArgs(task), ...args],
      cwd: ROOT,
      stdin: "null",
      env: { NO_COLOR: "1", ...taskEnv(task), ...env },
    }).output(),
  );
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Deterministic pseudo-random bytes (xorshift), so a failure can be reproduced. */
export function pseudoRandomBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Reads until end of stream (bounded by `ms`); returns every byte received. */
export async function readAll(conn: Deno.Conn, ms = 30_000, limit = 256 * 1024 * 1024): Promise<Uint8Array> {
  return await within(
    ms,
    "reading to end of stream",
    (async () => {
      const chunks: Uint8Array[] = [];
      let total = 0;
      const buffer = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        chunks.push(buffer.slice(0, n));
        total += n;
        if (total > limit) throw new Error(`received more than ${limit} bytes`);
      }
      return concat(chunks, total);
    })(),
  );
}

/** Reads exactly `length` bytes (bounded by `ms`); fails on end of stream. */
export async function readExactly(conn: Deno.Conn, length: number, ms = 30_000): Promise<Uint8Array> {
  return await within(
    ms,
    `reading ${length} bytes`,
    (async () => {
      const out = new Uint8Array(length);
      let got = 0;
      while (got < length) {
        const n = await conn.read(out.subarray(got));
        if (n === null) throw new Error(`end of stream after ${got} of ${length} bytes`);
        got += n;
      }
      return out;
    })(),
  );
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** Writes everything (bounded by `ms`). */
export async function writeAll(conn: Deno.Conn, data: Uint8Array, ms = 30_000, chunk = 256 * 1024): Promise<void> {
  await within(
    ms,
    `writing ${data.length} bytes`,
    (async () => {
      for (let offset = 0; offset < data.length;) {
        offset += await conn.write(data.subarray(offset, Math.min(offset + chunk, data.length)));
      }
    })(),
  );
}

/**
 * One echo session as a careful client runs it: write everything while reading, half-close, read to the end.
 * Returns what came back.
 */
export async function echoSession(
  hostname: string,
  port: number,
  data: Uint8Array,
  ms = 60_000,
): Promise<Uint8Array> {
  const conn = await Deno.connect({ hostname, port });
  try {
    const reading = readAll(conn, ms);
    await writeAll(conn, data, ms);
    await conn.closeWrite();
    return await reading;
  } finally {
    try {
      conn.close();
    } catch {
      // closed already
    }
  }
}

/**
 * True when the two byte arrays are equal; reports the first difference otherwise. The report is a string, which is
 * truthy: assert with `assert.equal(sameBytes(a, b), true)`, never `assert.ok(sameBytes(a, b))`.
 */
export function sameBytes(actual: Uint8Array, expected: Uint8Array): string | true {
  if (actual.length !== expected.length) return `length ${actual.length}, expected ${expected.length}`;
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) return `byte ${i} is ${actual[i]}, expected ${expected[i]}`;
  }
  return true;
}

/** A server configuration for in-process tests: loopback, port 0, the defaults otherwise. */
export function testConfig(overrides: Partial<ServerConfig> = {}): ServerConfig {
  return {
    port: 0,
    hosts: ["127.0.0.1"],
    maxConnections: 10000,
    idleTimeoutMs: 5 * 60_000,
    shutdownTimeoutMs: 10_000,
    copy: "loop",
    ...overrides,
  };
}

/** Runs `body` against an in-process server, then stops it (at once) whatever happened. */
export async function withServer(
  overrides: Partial<ServerConfig>,
  body: (port: number, server: EchoServer) => Promise<void>,
): Promise<void> {
  const server = new EchoServer(testConfig(overrides));
  const { port } = await server.start();
  try {
    await body(port, server);
  } finally {
    await within(15_000, "the server to stop", server.stopNow());
  }
}

/**
 * A loopback port that is free now, for the rare test that must name the port before the server starts. These
 * machines refuse explicit binds of even ports in 32768-60999, so only an odd one is returned.
 */
export function freePort(): number {
  for (let attempt = 0; attempt < 100; attempt++) {
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = probe.addr.port;
    probe.close();
    if (port % 2 === 1) return port;
  }
  throw new Error("no odd free port found in 100 attempts");
}

/** Retries connecting every 50 ms until the server accepts (callers bound it with \`within\`). */
export async function connectWhenUp(port: number, hostname = "127.0.0.1"): Promise<void> {
  for (;;) {
    try {
      (await Deno.connect({ hostname, port })).close();
      return;
    } catch {
      await sleep(50);
    }
  }
}

/**
 * Writes up to `max` bytes without reading; returns how many were written when writes stopped making progress
 * for 500 ms (the server's side is full, so it has stopped reading). The last write stays pending until the
 * caller closes the connection.
 */
export async function writeUntilStalled(conn: Deno.Conn, max: number): Promise<number> {
  const chunk = new Uint8Array(256 * 1024).fill(0x61);
  let written = 0;
  let failed = false;
  const writing = (async () => {
    while (written < max) written += await conn.write(chunk);
  })().catch(() => failed = true);
  let last = -1;
  for (let i = 0; i < 200 && written < max && !failed; i++) {
    await sleep(500);
    if (written === last) break;
    last = written;
  }
  void writing;
  return written;
}

/** Reads the port of `--metrics HOST:0` from a spawned server's log. */
export async function metricsPortOf(server: ServerProcess): Promise<number> {
  const line = await server.waitFor((r) => r.message.startsWith("serving metrics on"), "the metrics endpoint");
  return line.properties.port as number;
}

/** Fetches a spawned server's /metrics and returns the samples by series (`name{labels}` -> value). */
export async function scrape(port: number, hostname = "127.0.0.1"): Promise<Map<string, number>> {
  const response = await within(10_000, "GET /metrics", fetch(`http://${hostname}:${port}/metrics`));
  return parseMetricsText(await response.text());
}

/** Runs `echosrv service <args>` to completion as `deno task service <args>` does; returns what it printed. */
export function runServiceTask(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return runTask("service", args, env, 60_000);
}

/** The text of a file that a `--dry-run` plan would write (between its begin and end lines). */
export function plannedFile(dryRunOutput: string, path: string): string {
  const begin = `----- begin ${path} -----\n`;
  const start = dryRunOutput.indexOf(begin);
  const end = dryRunOutput.indexOf(`\n----- end ${path} -----`);
  if (start < 0 || end < start) throw new Error(`the plan writes no ${path}:\n${dryRunOutput}`);
  return dryRunOutput.slice(start + begin.length, end) + "\n";
}

/** Connects and proves the connection is served by one echoed byte. */
export async function servedConnection(port: number, hostname = "127.0.0.1"): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname, port });
  try {
    await writeAll(conn, Uint8Array.of(42));
    const echo = await readExactly(conn, 1, 10_000);
    if (echo[0] !== 42) throw new Error(`echoed ${echo[0]}, expected 42`);
    return conn;
  } catch (error) {
    conn.close();
    throw error;
  }
}

/** True when the server closes a new connection without echoing anything (EOF or reset before any byte). */
export async function closedWithoutEcho(port: number, hostname = "127.0.0.1"): Promise<boolean> {
  const conn = await Deno.connect({ hostname, port });
  try {
    await conn.write(Uint8Array.of(1, 2, 3)).catch(() => 0);
    const got = await readAll(conn, 10_000).catch(() => new Uint8Array(0));
    return got.length === 0;
  } finally {
    conn.close();
  }
}

/**
 * Reads until the peer closes, by end of stream or by a reset (bounded by `ms`), keeping what arrived before: for
 * clients whose connection the server may refuse with their data unread (which makes the kernel send a reset).
 */
export async function readUntilClosed(
  conn: Deno.Conn,
  ms = 30_000,
  limit = 64 * 1024 * 1024,
): Promise<{ bytes: Uint8Array; reset: boolean }> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  let reset = false;
  await within(
    ms,
    "the server to close the connection",
    (async () => {
      const buffer = new Uint8Array(64 * 1024);
      for (;;) {
        let n: number | null;
        try {
          n = await conn.read(buffer);
        } catch (error) {
          if (!(error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe)) throw error;
          reset = true;
          return;
        }
        if (n === null) return;
        chunks.push(buffer.slice(0, n));
        total += n;
        if (total > limit) throw new Error(`received more than ${limit} bytes`);
      }
    })(),
  );
  return { bytes: concat(chunks, total), reset };
}

/**
 * The server's own TCP sockets on `port` that are still open to a client (ESTABLISHED or CLOSE_WAIT), from
 * /proc/net/tcp and tcp6 (read with cat: Deno reads /proc only under --allow-all). Undefined off Linux.
 */
export async function serverSocketsOpen(port: number): Promise<number | undefined> {
  const out = await new Deno.Command("cat", { args: ["/proc/net/tcp", "/proc/net/tcp6"], stdout: "piped" }).output()
    .catch(() => undefined);
  if (!out?.success) return undefined;
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  let open = 0;
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 4 || !fields[1].endsWith(`:${hexPort}`)) continue;
    if (fields[3] === "01" || fields[3] === "08") open++; // ESTABLISHED, CLOSE_WAIT
  }
  return open;
}
