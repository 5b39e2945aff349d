// helpers: what the tests share. Starting echosrv as a process exactly as `deno task start` does (the task's own
// command line, read from deno.json), reading its JSON log, and real TCP clients on loopback. Every wait is
// bounded: a helper that would hang fails with a message instead.

import denoJson from "../deno.json" with { type: "json" };
import { EchoServer } from "../lib/server.ts";
import type { ServerConfig } from "../lib/config.ts";
import { parseMetricsText } from "../lib/stats_command.ts";
import ipaddr from "ipaddr.js";
import { fileURLToPath } from "node:url";

/**
 * The project root, where `deno task start` runs, as a file path ending in the path separator. (A file URL's
 * `pathname` is no path on Windows: `/C:/src/` or, under Wine, `/Z:/w/p/`.)
 */
export const ROOT: string = fileURLToPath(new URL("..", import.meta.url));

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

/** Fails after `ms` with `what` in the message; the timer never outlives the promise. */
export async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The arguments `deno task start` passes to deno, e.g. `run --allow-net ... main.ts`. */
export function startTaskArgs(): string[] {
  return taskArgs("start");
}

/** The environment a task's command line sets before `deno` (`NAME=value deno run ...`), as deno task sets it. */
export function taskEnv(task: keyof typeof denoJson.tasks): Record<string, string> {
  const words = denoJson.tasks[task].split(/\s+/);
  return Object.fromEntries(words.slice(0, words.indexOf("deno")).map((w) => w.split("=", 2) as [string, string]));
}

/** A JSON log record as `--log-format json` writes it. */
export interface LogLine {
  "@timestamp": string;
  level: string;
  logger: string;
  message: string;
  properties: Record<string, unknown>;
}

/** An echosrv process started by a test. */
export class ServerProcess {
  /** Every line of standard output so far. */
  readonly lines: string[] = [];
  /** Standard error so far. */
  stderr = "";
  /** The port from the "echoing on port" line (0 until started). */
  port = 0;
  readonly #child: Deno.ChildProcess;
  readonly #done: Promise<void>;
  #waiters: Array<() => void> = [];
  #status: Deno.CommandStatus | undefined;

  constructor(child: Deno.ChildProcess) {
    this.#child = child;
    const out = this.#pump(child.stdout, (text) => {
      for (const line of text.split("\n")) if (line !== "") this.lines.push(line);
    });
    const err = this.#pump(child.stderr, (text) => this.stderr += text);
    this.#done = Promise.all([out, err, child.status.then((s) => this.#status = s)]).then(() => this.#wake());
  }

  /** The process id. */
  get pid(): number {
    return this.#child.pid;
  }

  async #pump(stream: ReadableStream<Uint8Array>, sink: (text: string) => void): Promise<void> {
    let partial = "";
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      const text = partial + decoder.decode(chunk, { stream: true });
      const cut = text.lastIndexOf("\n");
      partial = text.slice(cut + 1);
      if (cut >= 0) sink(text.slice(0, cut + 1));
      this.#wake();
    }
    if (partial) sink(partial);
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  /** The log lines parsed as JSON (throws if one is not JSON: the JSON format promises nothing else). */
  records(): LogLine[] {
    return this.lines.map((line) => JSON.parse(line) as LogLine);
  }

  /** Waits for a log line (parsed as JSON) that satisfies `match`; fails if the process exits first. */
  async waitFor(match: (record: LogLine) => boolean, what: string, ms = 20_000): Promise<LogLine> {
    return await within(
      ms,
      `waiting for ${what}; output so far:\n${this.lines.join("\n")}\n${this.stderr}`,
      (async () => {
        for (let seen = 0;;) {
          for (; seen < this.lines.length; seen++) {
            const record = JSON.parse(this.lines[seen]) as LogLine;
            if (match(record)) return record;
          }
          if (this.#status) {
            throw new Error(
              `echosrv exited (${this.#status.code}) before ${what}:\n${this.lines.join("\n")}\n${this.stderr}`,
            );
          }
          await new Promise<void>((resolve) => this.#waiters.push(resolve));
        }
      })(),
    );
  }

  /** Sends a signal (ignored if the process has already exited). */
  signal(signal: Deno.Signal): void {
    try {
      this.#child.kill(signal);
    } catch {
      // already gone
    }
  }

  /** Waits for the process to exit (all output read) and returns its exit code. */
  async exited(ms = 30_000): Promise<number> {
    await within(ms, "echosrv to exit", this.#done);
    return this.#status!.code;
  }

  /** Kills the process if still running and waits for it: for `finally` blocks. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#status) this.signal("SIGKILL");
    await this.#done;
  }
}

/** Options for {@link spawnServer}. */
export interface SpawnOptions {
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Wrap the command, e.g. `["prlimit", "--nofile=64"]`. */
  wrapper?: string[];
  /** Do not wait for the "echoing on port" line (for tests of startup failures). */
  noWait?: boolean;
  /** Deno's arguments before the server's own, instead of the start task's (e.g. without `--unstable-net`). */
  runArgs?: string[];
  /**
   * The whole command line before the server's own arguments, instead of `deno run` with the start task's flags
   * (e.g. `setsid deno task start`, to run it the way a terminal does).
   */
  command?: string[];
  /**
   * Keep the default `--workers` (one per core on Linux). Otherwise a test that does not choose a worker count runs
   * one loop (`--workers 1`), so that what it checks (log lines, counters) does not depend on the machine's cores;
   * tests/workers_test.ts and tests/default_workers_test.ts run the default and several workers.
   */
  defaultWorkers?: boolean;
}

/** `args` with `--workers 1` in front unless they (or the environment) choose a worker count. */
export function oneLoopUnlessChosen(args: string[], env: Record<string, string> = {}): string[] {
  const chosen = args.some((a) => a === "--workers" || a.startsWith("--workers=")) || "ECHOSRV_WORKERS" in env;
  return chosen ? args : ["--workers", "1", ...args];
}

/**
 * Starts echosrv the way `deno task start <args>` does, with JSON logs, and waits until it serves.
 * Tests pass `--port 0` (never a fixed port) and loopback hosts.
 */
export async function spawnServer(args: string[], options: SpawnOptions = {}): Promise<ServerProcess> {
  if (!options.defaultWorkers) args = oneLoopUnlessChosen(args, options.env);
  const argv = [...(options.runArgs ?? startTaskArgs()), "--log-format", "json", ...args];
  const [cmd, ...rest] = options.command
    ? [...options.command, "--log-format", "json", ...args]
    : options.wrapper
    ? [...options.wrapper, Deno.execPath(), ...argv]
    : [Deno.execPath(), ...argv];
  const child = new Deno.Command(cmd, {
    args: rest,
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...(options.runArgs || options.command ? {} : taskEnv("start")), ...options.env },
  }).spawn();
  const server = new ServerProcess(child);
  if (!options.noWait) {
    const ready = await server.waitFor((r) => r.message.startsWith("echoing on port"), "the server to start");
    server.port = ready.properties.port as number;
  }
  return server;
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

/** True when the two byte arrays are equal; reports the first difference otherwise. */
export function sameBytes(actual: Uint8Array, expected: Uint8Array): string | true {
  if (actual.length !== expected.length) return `length ${actual.length}, expected ${expected.length}`;
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) return `byte ${i} is ${actual[i]}, expected ${expected[i]}`;
  }
  return true;
}

/**
 * Runs a small reader of /proc and returns its standard output, or undefined when it fails. Deno lets only
 * `--allow-all` read /proc/PID/ directly ("Requires all access"); the test task grants `--allow-run` instead.
 */
function procOutput(command: string, args: string[]): string | undefined {
  try {
    const out = new Deno.Command(command, { args, stdin: "null", stdout: "piped", stderr: "null" }).outputSync();
    return out.success ? new TextDecoder().decode(out.stdout) : undefined;
  } catch {
    return undefined;
  }
}

/** The resident memory of a process in KiB (Linux: /proc/PID/status), or undefined elsewhere. */
export function residentKiB(pid: number): number | undefined {
  let status: string | undefined;
  try {
    status = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    status = procOutput("cat", [`/proc/${pid}/status`]);
  }
  const match = /VmRSS:\s+(\d+) kB/.exec(status ?? "");
  return match ? Number(match[1]) : undefined;
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

/** Polls `condition` every 10 ms until true (callers bound it with `within`). */
export async function waitUntil(condition: () => boolean): Promise<void> {
  while (!condition()) await sleep(10);
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

/** True when `command` runs here (`command --version`-style probe with the given arguments). */
export async function hasCommand(command: string, args: string[] = ["version"]): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(command, { args, stdout: "null", stderr: "null" }).output();
    return success;
  } catch {
    return false;
  }
}

/** A throwaway TLS certificate for localhost/127.0.0.1/::1 made with openssl, and its key, in a temporary folder. */
export interface TestCertificate {
  dir: string;
  certFile: string;
  keyFile: string;
  cert: string;
  /** Removes the folder. */
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Makes a self-signed EC certificate (a leaf: CA:FALSE, so rustls accepts it as a server certificate) valid for a
 * day. Returns undefined when openssl is missing; the caller skips with a message.
 */
export async function makeTestCertificate(): Promise<TestCertificate | undefined> {
  if (!(await hasCommand("openssl"))) return undefined;
  const dir = await Deno.makeTempDir({ prefix: "echosrv-tls-" });
  const certFile = `${dir}/cert.pem`;
  const keyFile = `${dir}/key.pem`;
  const out = await new Deno.Command("openssl", {
    args: [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"],
      ...["-keyout", keyFile, "-out", certFile, "-subj", "/CN=localhost"],
      ...["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"],
      ...["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth"],
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`openssl req failed: ${new TextDecoder().decode(out.stderr)}`);
  return {
    dir,
    certFile,
    keyFile,
    cert: await Deno.readTextFile(certFile),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
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

/**
 * A PROXY v2 header as a load balancer sends it: PROXY command, TCP over IPv4 or IPv6 (by the source address),
 * or LOCAL when `source` is undefined.
 */
export function proxyV2Header(
  source?: { hostname: string; port: number },
  destination = { hostname: "127.0.0.1", port: 40007 },
): Uint8Array {
  const signature = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
  if (!source) return Uint8Array.from([...signature, 0x20, 0x00, 0, 0]);
  const v6 = source.hostname.includes(":");
  const bytes = (hostname: string) => ipaddr.parse(hostname).toByteArray();
  const dst = v6 && !destination.hostname.includes(":") ? `::ffff:${destination.hostname}` : destination.hostname;
  const block = [
    ...bytes(source.hostname),
    ...(v6 ? ipaddr.IPv6.parse(dst).toByteArray() : bytes(dst)),
    source.port >> 8,
    source.port & 0xff,
    destination.port >> 8,
    destination.port & 0xff,
  ];
  return Uint8Array.from([...signature, 0x21, v6 ? 0x21 : 0x11, block.length >> 8, block.length & 0xff, ...block]);
}

/** The arguments a deno.json task passes to deno, e.g. `service`: `run --allow-net ... main.ts service`. */
export function taskArgs(task: keyof typeof denoJson.tasks): string[] {
  const words = denoJson.tasks[task].split(/\s+/);
  return words.slice(words.indexOf("deno") + 1);
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

/** What each open descriptor of a process is, as /proc/PID/fd links say (`socket:[123]`, `pipe:[4]`, ...). */
function descriptorTargets(pid: number): string[] | undefined {
  try {
    const targets: string[] = [];
    for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
      try {
        targets.push(Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`));
      } catch {
        // closed between the listing and the look
      }
    }
    return targets;
  } catch {
    const listing = procOutput("find", [`/proc/${pid}/fd`, "-mindepth", "1", "-printf", "%l\\n"]);
    return listing?.split("\n").filter((line) => line !== "");
  }
}

/**
 * The open file descriptors of a process by what they are (Linux: /proc/PID/fd), e.g. `{ socket: 3, pipe: 2 }`,
 * or undefined elsewhere (or once the process is gone).
 */
export function openDescriptors(pid: number): Record<string, number> | undefined {
  const targets = descriptorTargets(pid);
  if (!targets) return undefined;
  const kinds: Record<string, number> = {};
  for (const target of targets) {
    const kind = target.replace(/[:[].*$/, "");
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  return kinds;
}

/** The number of open file descriptors of a process (Linux), or undefined elsewhere. */
export function descriptorCount(pid: number): number | undefined {
  return descriptorTargets(pid)?.length;
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
